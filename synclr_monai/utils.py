"""Helpers shared across the package: every cache, checkpoint, export and report is written through
:func:`atomic_output`, so no reader ever sees a half-written file; the commands print their results with
:func:`text_table`."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["atomic_output", "text_table"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A plain-text table: columns as wide as their widest cell, ``" | "`` between them, a rule under the header.

    Args:
        header: the column titles.
        rows: the cells, already formatted as strings, one sequence per row.
        right: indices of the columns aligned right (numbers); the others are aligned left.

    Returns:
        the table (no trailing newline, no trailing spaces).
    """
    table = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    fmt = " | ".join(f"{{:{'>' if i in right else '<'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*row).rstrip() for row in table]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


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
