"""Errors a user can fix (bad data, bad config, unusable output folder), and how the command lines show them.

Every error the pipeline raises because of its *input* (rather than a bug) derives from :class:`UserError`.
Its message is complete on its own: the file or key, what is wrong and what to do. The command lines
(``python -m synclr_monai ...`` and the bundle's ``python -m monai.bundle run ...``) print such an error as
one short message and exit with code :data:`EXIT_USER_ERROR` (2), instead of the 60-100 lines of
``monai.bundle`` config-resolution traceback that wrap it. The full traceback goes to a log file, or to the
terminal with ``--debug True`` (bundle) / ``--debug`` (``synclr_monai`` commands) or ``SYNCLR_DEBUG=1``.
Any other exception (a failure while running, or a bug) keeps Python's normal traceback and exits with
:data:`EXIT_FAILURE` (1).

Exit codes of every command line, one convention: 0 success; 2 bad usage (argparse) or bad input
(:data:`INPUT_ERRORS`); 1 a failure while running. :func:`run_command` applies it to a command.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USER_ERROR",
    "INPUT_ERRORS",
    "UserError",
    "DataError",
    "ConfigError",
    "OutputError",
    "MissingFileError",
    "find_user_error",
    "user_error_message",
    "debug_enabled",
    "install_error_handler",
    "report_user_error",
    "run_command",
]

#: exit status of a command that stopped on bad usage or bad input (argparse's code for bad usage too).
EXIT_USER_ERROR = 2
#: exit status of a command that failed while running (Python's own status for an uncaught exception).
EXIT_FAILURE = 1


class UserError(Exception):
    """An error in the user's data, configuration or environment; its message says what to do."""


class DataError(UserError, ValueError):
    """A data file is missing, unreadable, inconsistent or does not fit the run (the message names the file)."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work (the message names the key and what would work)."""


class OutputError(UserError, OSError):
    """An output location that cannot be used: not writable, full, or in use by another run."""

    def __init__(self, message: str) -> None:
        # OSError's own formatting ("[Errno ..]") is for (errno, strerror) pairs; keep the plain message.
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class MissingFileError(UserError, FileNotFoundError):
    """An input file or folder that does not exist (a ``FileNotFoundError`` too)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


#: what the command lines report as bad input (exit 2): user errors, and the ``ValueError`` /
#: ``FileNotFoundError`` / ``FileExistsError`` that the readers and builders raise on a bad file or argument.
INPUT_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError, FileExistsError)


def find_user_error(error: BaseException | None) -> UserError | None:
    """The :class:`UserError` behind ``error``: itself, or one in its ``__cause__``/``__context__`` chain.

    ``monai.bundle`` wraps what a config expression raises in ``RuntimeError("Failed to evaluate ...")``,
    MONAI transforms in ``RuntimeError("applying transform ...")``; the user's error is inside.

    Args:
        error: the exception that ended the program.

    Returns:
        The first user error found, or None.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, UserError):
            return error
        error = error.__cause__ or error.__context__
    return None


def user_error_message(error: BaseException) -> str:
    """The user-facing text of ``error``, without a DataLoader worker's embedded traceback.

    A DataLoader re-raises a worker's exception as ``type("Caught X in DataLoader worker process 0.
    Original Traceback ...: <message>")``; only the original message is kept.
    """
    text = str(error)
    if "Original Traceback" in text:
        marker = f"{type(error).__module__}.{type(error).__qualname__}: "
        cut = text.rfind(marker)
        if cut < 0:
            marker = f"{type(error).__name__}: "
            cut = text.rfind(marker)
        if cut >= 0:
            text = text[cut + len(marker) :]
    return text.strip()


def debug_enabled(flag: object = None) -> bool:
    """Whether full tracebacks were asked for: ``flag`` true, or ``SYNCLR_DEBUG`` set to a true value."""
    if isinstance(flag, str):
        flag = flag.strip().lower() in ("1", "true", "yes", "on")
    env = os.environ.get("SYNCLR_DEBUG", "").strip().lower()
    return bool(flag) or env in ("1", "true", "yes", "on")


def _write_log(log_file: str | os.PathLike | None, exc: tuple) -> Path | None:
    """Append the full traceback to ``log_file`` (or a temporary file when that cannot be written)."""
    text = "".join(traceback.format_exception(*exc))
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    candidates = [Path(log_file)] if log_file else []
    candidates.append(Path(tempfile.gettempdir()) / f"synclr_monai_error_{os.getpid()}.log")
    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"--- {stamp} {' '.join(sys.argv)}\n{text}\n")
            return path
        except OSError:
            continue
    return None


def report_user_error(
    error: BaseException,
    log_file: str | os.PathLike | None = None,
    debug: object = None,
    exc_info: tuple | None = None,
    stream=None,
) -> None:
    """Print ``error`` as one short message (or the full traceback when debugging), logging the traceback.

    Args:
        error: a :class:`UserError` (or an exception wrapping one).
        log_file: where the full traceback is appended.
        debug: show the full traceback too (see :func:`debug_enabled`).
        exc_info: ``(type, value, traceback)`` of the exception that ended the program (default ``error``'s).
        stream: where to print (default ``sys.stderr``).
    """
    stream = sys.stderr if stream is None else stream
    exc_info = exc_info or (type(error), error, error.__traceback__)
    user = find_user_error(error) or error
    if debug_enabled(debug):
        traceback.print_exception(*exc_info, file=stream)
    logged = _write_log(log_file, exc_info)
    print(f"error: {user_error_message(user)}", file=stream)
    if not debug_enabled(debug):
        where = f"full traceback in {logged}; " if logged else ""
        print(f"({where}rerun with --debug True or SYNCLR_DEBUG=1 to print it)", file=stream)
    stream.flush()


_installed: dict[str, object] = {}


def install_error_handler(log_file: str | os.PathLike | None = None, debug: object = None) -> Callable:
    """Make an uncaught :class:`UserError` end the program with one short message and exit code 2.

    Installs a ``sys.excepthook`` (the bundle's configs call this first in ``initialize``); other
    exceptions still print Python's full traceback. Calling it again updates ``log_file``/``debug``.

    Python exits with status 1 after any excepthook, so for a user error the hook runs the ``atexit``
    handlers (logging, W&B), flushes the streams and ends the process with ``os._exit(2)``.

    Args:
        log_file: where the full traceback of a user error is appended (e.g. ``OUTPUT_DIR/error.log``).
        debug: print the full traceback too (also ``SYNCLR_DEBUG=1``).

    Returns:
        The installed hook.
    """
    _installed.update(log_file=log_file, debug=debug)
    previous = _installed.setdefault("previous", sys.excepthook)

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if find_user_error(exc) is None:
            previous(exc_type, exc, tb)  # type: ignore[operator]
            return
        report_user_error(exc, _installed.get("log_file"), _installed.get("debug"), (exc_type, exc, tb))
        try:
            atexit._run_exitfuncs()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # a closed stream must not turn exit 2 into a crash
                    pass
            os._exit(EXIT_USER_ERROR)

    sys.excepthook = hook
    return hook


def run_command(
    parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None], argv: list[str] | None = None
) -> int:
    """Parse ``argv`` and run a command with the exit-code convention of every command line.

    Args:
        parser: the command's parser (its ``prog`` ends with the command name, used in messages).
        run: the command, called with the parsed arguments; returns an exit code (None: 0).
        argv: the arguments after the command name (default ``sys.argv[1:]``).

    Returns:
        0 on success (and for ``--help``); :data:`EXIT_USER_ERROR` (2) for bad usage or for bad input
        (:data:`INPUT_ERRORS`: one line ``<command>: error: <message>`` naming the file or value); ``run``'s
        own code otherwise. Any other exception propagates: a failure while running, which the dispatcher
        (``python -m synclr_monai``) ends with :data:`EXIT_FAILURE` (1) and the traceback.
    """
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as stop:  # argparse exits on --help (0) and on usage errors (2)
        return stop.code if isinstance(stop.code, int) else EXIT_USER_ERROR if stop.code else 0
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(run(args) or 0)
    except INPUT_ERRORS as err:
        print(f"{parser.prog.split()[-1]}: error: {user_error_message(err)}", file=sys.stderr)
        if debug_enabled():
            traceback.print_exc()
        return EXIT_USER_ERROR
