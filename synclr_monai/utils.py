"""File helpers shared across the package: every cache, checkpoint, export and report is written through
:func:`atomic_output`, so no reader ever sees a half-written file."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output"]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    Readers never see a half-written file: an interrupted or failing writer leaves the previous
    ``path`` (if any) untouched and the temporary file is removed.

    Args:
        path: the final file path; its parent folder is created when missing.

    Yields:
        The temporary path to write to (same folder, so the rename is atomic on POSIX).

    Raises:
        Whatever the ``with`` block raises, after removing the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A random suffix (not a fixed ".tmp" name) so that concurrent writers of one file cannot collide;
    # not mkstemp, whose 0600 mode would leak into the final file.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        # flush to disk before the rename, so a crash cannot leave a renamed but empty file
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
