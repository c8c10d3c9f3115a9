"""Guards of a run's output folder: one run per folder (a lock file), and every output location checked at start.

Two trainings writing one output folder destroy each other's work: the second resumes from the first's
live checkpoint, deletes the first's temporary files and rotates its checkpoints away. :class:`RunLock`
holds ``OUTPUT_DIR/.synclr_run.lock`` for the run's life; a second run gets :class:`RunLockedError` naming
the folder and the other run (pid, host, start time, command). A lock left by a killed run is detected
(same host, and its pid is gone or now belongs to a process started later) and taken over with a warning.

An output that cannot be written is found at start, not after hours of training:
:func:`check_output_locations` creates each folder, writes, fsyncs and removes a probe file, and names the
config key and path that failed. :func:`start_run` does both for the bundle's ``initialize``.
"""

from __future__ import annotations

import atexit
import datetime
import json
import logging
import os
import socket
import sys
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synclr_monai.errors import OutputError

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "check_output_locations", "start_run"]

logger = logging.getLogger(__name__)

#: the lock file's name inside the guarded folder.
LOCK_NAME = ".synclr_run.lock"


class RunLockedError(OutputError):
    """Another live run holds the folder's lock."""


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: the fields after its closing parenthesis are fixed
    return stat.rsplit(")", 1)[-1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RunLock:
    """An exclusive lock on a folder for one run (a process), held until :meth:`release` or process exit.

    The lock file holds ``{"pid", "host", "proc_start", "started", "command"}`` and is created atomically
    (written under a temporary name, then hard-linked to :data:`LOCK_NAME`, which fails if it exists), so a
    reader never sees a half-written lock. Re-acquiring a lock this process already holds is allowed (a
    program may build several trainers in turn on one folder).

    Args:
        folder: the folder to guard (created if missing).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def _info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "proc_start": _process_start(os.getpid()),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:500],
        }

    def read(self) -> dict[str, Any] | None:
        """The current lock's content (None when there is no lock)."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _is_stale(self, info: Mapping[str, Any]) -> bool:
        if info.get("host") != socket.gethostname():
            return False  # a process on another machine cannot be checked: assume it is alive
        pid = int(info.get("pid", -1))
        if pid <= 0 or not _pid_alive(pid):
            return True
        recorded, now = info.get("proc_start"), _process_start(pid)
        return recorded is not None and now is not None and recorded != now  # the pid was reused

    def _describe(self, info: Mapping[str, Any]) -> str:
        return (
            f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}: "
            f"{info.get('command', '?')}"
        )

    def acquire(self) -> RunLock:
        """Take the lock.

        Returns:
            self.

        Raises:
            RunLockedError: another live run holds it (or one on another host, which cannot be checked).
            OutputError: the folder cannot be created or written.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{self.folder}: cannot create the output folder ({err.strerror or err})") from err
        for _ in range(5):
            tmp = self.folder / f".synclr_run.{uuid.uuid4().hex}.tmp"
            try:
                tmp.write_text(json.dumps(self._info()))
                try:
                    os.link(tmp, self.path)  # atomic: fails when the lock exists
                    created = True
                except FileExistsError:
                    created = False
            except OSError as err:
                raise OutputError(f"{self.path}: cannot write the run lock ({err.strerror or err})") from err
            finally:
                tmp.unlink(missing_ok=True)
            if created:
                self.held = True
                atexit.register(self.release)
                return self
            info = self.read()
            if info is None:
                continue  # released meanwhile: try again
            if info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
                self.held = True  # this process holds it already (e.g. a second trainer on the same folder)
                return self
            if info and not self._is_stale(info):
                raise RunLockedError(
                    f"{self.folder} is in use by another run ({self._describe(info)}). One run per output "
                    f"folder: wait for it to finish, or choose another output_dir. If that run is dead (e.g. on "
                    f"another machine), delete {self.path}."
                )
            if not info:
                raise RunLockedError(
                    f"{self.path}: unreadable run lock; if no other run uses {self.folder}, delete the file"
                )
            # a stale lock: move it aside (only one of several contenders succeeds), then retry
            aside = self.folder / f".synclr_run.stale.{uuid.uuid4().hex}"
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            aside.unlink(missing_ok=True)
            message = f"{self.path}: taking over the lock of a run that is gone ({self._describe(info)})"
            logger.warning(message)
            warnings.warn(message, stacklevel=2)
        raise RunLockedError(f"{self.path}: could not take the run lock (other runs keep racing for it)")

    def release(self) -> None:
        """Remove the lock file if this process holds it (safe to call more than once)."""
        if not self.held:
            return
        self.held = False
        info = self.read()
        if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _probe(folder: Path, key: str) -> None:
    hint = f"choose a writable location (--{key} PATH)"
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{key}: {folder} is a file, not a folder; {hint}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{key}: cannot create the folder {folder} ({err.strerror or err}); {hint}") from err
    probe = folder / f".synclr_probe_{uuid.uuid4().hex}"
    try:
        with open(probe, "wb") as f:
            f.write(b"probe")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise OutputError(f"{key}: cannot write in {folder} ({err.strerror or err}); {hint}") from err
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def check_output_locations(folders: Mapping[str, Any] | None = None, files: Mapping[str, Any] | None = None) -> None:
    """Check at start that every output can be written: create each folder, write and remove a probe file.

    Args:
        folders: ``{config key: folder}`` (e.g. ``output_dir``, ``cache_dir``); None values are skipped.
        files: ``{config key: file path}`` (e.g. ``encoder_path``): its folder is probed and the path must not
            be a folder.

    Raises:
        OutputError: naming the config key, the path and the reason.
    """
    for key, folder in (folders or {}).items():
        if folder is not None:
            _probe(Path(folder), key)
    for key, path in (files or {}).items():
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise OutputError(f"{key}: {path} is a folder; give a file path (--{key} PATH)")
        _probe(path.parent, key)


def start_run(
    output_dir: str | os.PathLike,
    folders: Mapping[str, Any] | None = None,
    files: Mapping[str, Any] | None = None,
    rank: int | None = None,
) -> RunLock | None:
    """Start-up of a bundle run: check every output location, then lock ``output_dir`` (rank 0).

    Args:
        output_dir: the run's output folder.
        folders: more output folders to check, ``{config key: folder}``.
        files: output files to check, ``{config key: path}``.
        rank: this process's rank (default ``$RANK`` or 0); only rank 0 takes the lock.

    Returns:
        The held lock on rank 0, else None.

    Raises:
        OutputError: an output location cannot be written.
        RunLockedError: another run uses ``output_dir``.
    """
    check_output_locations({"output_dir": output_dir, **dict(folders or {})}, files)
    rank = int(os.environ.get("RANK", "0")) if rank is None else int(rank)
    if rank != 0:
        return None
    return RunLock(output_dir).acquire()
