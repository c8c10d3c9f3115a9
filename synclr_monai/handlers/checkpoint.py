"""Resumable checkpoints: every N iterations (keeping the last k), the best by epoch loss, the final one; resume.

Files in ``save_dir`` (each written to a temporary name, fsynced and renamed by :class:`SafeDiskSaver`; a
file that rotation replaces is deleted only after its successor is complete, so a kill at any instant
leaves the latest complete checkpoint in place):

- ``checkpoint_<iteration>.pt``: every ``save_interval`` iterations, the last ``n_saved`` kept;
- ``best_<iteration>_neg_epoch_loss=<score>.pt``: the epoch with the lowest mean loss;
- ``final_<iteration>.pt``: when the run completes;
- ``nan_stop_<iteration>.pt``: written by :class:`~synclr_monai.handlers.nan_guard.NaNGuard`.

Each holds ``model`` (unwrapped from DDP), ``optimizer``, ``trainer`` (iteration, epoch length, max epochs),
and ``scaler`` / ``lr_scheduler`` when the trainer has them, and loads with ``torch.load(weights_only=True)``.
For an exact resume mid-epoch it also holds ``rng`` (the torch, NumPy and Python random states),
``epoch_metrics`` (the running sums of the epoch's metrics, e.g. the epoch loss) and ``run_config`` (the
settings the run was started with, compared on resume). The data order of the interrupted epoch is
restored by :class:`~synclr_monai.data.sampler.ResumableSampler`, which skips the batches already done.

The handler holds a :class:`~synclr_monai.run_guard.RunLock` on ``save_dir``: a second run on the same
folder stops at start instead of resuming from, and rotating away, the first run's live checkpoints.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import random
import re
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from synclr_monai.errors import ConfigError, OutputError
from synclr_monai.handlers.utils import get_logger, is_main_process, iteration_step, training_objects
from synclr_monai.run_guard import RunLock
from synclr_monai.utils import atomic_output

__all__ = [
    "CHECKPOINT_FILE",
    "CheckpointHandler",
    "EpochMetricsState",
    "RandomStates",
    "ResumeMismatchError",
    "RunConfig",
    "SafeDiskSaver",
    "find_latest_checkpoint",
    "list_checkpoints",
    "make_checkpointer",
    "resume_from",
]

#: file name of a checkpoint written by this module: kind, iteration and, for the best, the score.
CHECKPOINT_FILE = re.compile(
    r"^(?P<kind>checkpoint|best|final|nan_stop)_(?P<iteration>\d+)(?:_(?P<score_name>[^=]+)=(?P<score>[^_]+))?\.pt$"
)
#: names of temporary files left by a writer killed mid-write: ours (``atomic_output``: ``.<name>.<hex>.tmp``)
#: and those of Ignite's ``DiskSaver`` in older runs (``tmp`` + 8 characters).
_PARTIAL_FILE = re.compile(r"^(tmp[a-z0-9_]{8}|\..+\.pt\.[0-9a-f]{32}\.tmp)$")
#: entries added for an exact resume; checkpoints without them (older, or NaN-stop ones) still resume.
OPTIONAL_ENTRIES = ("rng", "epoch_metrics", "run_config")
_STEP_PATTERN = "{filename_prefix}_{global_step}.{ext}"
_SCORE_PATTERN = "{filename_prefix}_{global_step}_{score_name}={score}.{ext}"

logger = logging.getLogger(__name__)


class ResumeMismatchError(ConfigError):
    """A checkpoint that does not fit the configured run (e.g. another architecture)."""


def _fsync_dir(directory: Path) -> None:
    """Flush a folder's entries, so that a rename survives a power cut (not possible on every platform)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SafeDiskSaver(DiskSaver):
    """Ignite save handler: write, fsync, rename, and only then delete the file the new one replaces.

    Ignite's ``Checkpoint`` asks its handler to remove the oldest file *before* it saves the new one; with
    Ignite's ``DiskSaver`` a kill during the write of ``best_8`` left no best checkpoint at all. Here
    :meth:`remove` only records the file, and it is deleted once the next save is complete on disk.
    A failed write (disk full) leaves the previous files as they were and raises :class:`OutputError`
    naming the file and the free space. Writes happen on rank 0 only.

    A ``DiskSaver`` subclass (Ignite then reports full paths, e.g. ``Checkpoint.last_checkpoint``), but none
    of ``DiskSaver``'s own writing is used.

    Args:
        dirname: the checkpoint folder (created when missing).
    """

    def __init__(self, dirname: str | Path) -> None:  # DiskSaver.__init__ is not called: it checks the folder
        self.dirname = Path(dirname)
        self.save_on_rank = 0
        self._pending: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if not is_main_process():
            return
        path = self.dirname / filename
        try:
            with atomic_output(path) as tmp:
                torch.save(checkpoint, tmp)
        except OSError as err:
            self._pending.clear()  # the files the new one would have replaced stay
            try:
                free = f"{shutil.disk_usage(self.dirname).free / 2**20:.1f} MiB free"
            except OSError:
                free = "free space unknown"
            hint = "free some space" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "fix the folder"
            raise OutputError(
                f"cannot write checkpoint {path}: {err.strerror or err} ({free} in {self.dirname}); the previous "
                f"checkpoints are intact: {hint}, then rerun to resume from the latest"
            ) from err
        _fsync_dir(self.dirname)
        for old in self._pending:
            if old != filename:
                (self.dirname / old).unlink(missing_ok=True)
        self._pending.clear()

    def remove(self, filename: str) -> None:
        """Delete ``filename`` once the next checkpoint is completely written (see the class docstring)."""
        if is_main_process():
            self._pending.append(filename)


class RandomStates:
    """The torch (CPU and CUDA), NumPy and Python random states, saved and restored with a checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        """The current states, as tensors and plain numbers (loadable with ``weights_only=True``)."""
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, py_gauss = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": int(version), "internal": list(internal), "gauss": py_gauss},
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the states (the CUDA ones only when this process has the same number of devices)."""
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
        cuda = state.get("cuda")
        if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _engine_metrics(engine: Engine) -> dict[str, Any]:
    """The engine's epoch-wise Ignite metrics (``engine.train_metrics`` or found among its handlers)."""
    from ignite.metrics import Metric

    metrics = getattr(engine, "train_metrics", None)
    if isinstance(metrics, Mapping):
        return dict(metrics)
    found = {}
    for handler, *_ in getattr(engine, "_event_handlers", {}).get(Events.EPOCH_STARTED, []):
        owner = getattr(handler, "__self__", None)
        if isinstance(owner, Metric):
            found[f"metric_{len(found)}"] = owner
    return found


class EpochMetricsState:
    """The running state of the engine's epoch metrics (e.g. the epoch-loss sum and count), for a mid-epoch resume.

    Without it, a run resumed at iteration 11 of 12 would average its epoch loss over the last iteration only,
    and that one-iteration "epoch" could win the best checkpoint. :meth:`load_state_dict` keeps the state
    until the resumed epoch starts (after the metrics reset themselves); :meth:`apply` then loads it.

    Args:
        engine: the trainer.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pending: Mapping[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """``{metric name: metric.state_dict()}``."""
        return {name: metric.state_dict() for name, metric in _engine_metrics(self.engine).items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Keep ``state`` for :meth:`apply`."""
        self.pending = dict(state)

    def apply(self, engine: Engine | None = None) -> None:
        """Load the kept state into the metrics (an ``EPOCH_STARTED`` handler of the resumed epoch)."""
        if not self.pending:
            return
        metrics = _engine_metrics(self.engine)
        for name, state in self.pending.items():
            if name in metrics:
                metrics[name].load_state_dict(state)
        self.pending = None


class RunConfig:
    """The settings a run was started with, saved in its checkpoints and compared when resuming.

    Args:
        config: JSON-like settings (backbone, cube size, ...).
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config = dict(config or {})
        self.loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """The settings (plain values: they load with ``weights_only=True``)."""
        return _plain(self.config)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Keep the checkpoint's settings in ``loaded`` (the current ones are not changed)."""
        self.loaded = dict(state)

    def differences(self, saved: Mapping[str, Any] | None = None) -> list[str]:
        """``key: <saved> in the checkpoint, <now> now`` for every setting that differs."""
        saved = self.loaded if saved is None else saved
        if saved is None:
            return []
        now = self.state_dict()
        keys = sorted(set(saved) | set(now))
        return [
            f"{k}: {saved.get(k, '(absent)')!r} in the checkpoint, {now.get(k, '(absent)')!r} now"
            for k in keys
            if saved.get(k, "(absent)") != now.get(k, "(absent)")
        ]


def _plain(value: Any) -> Any:
    """``value`` with mappings/sequences as dicts/lists and other objects as strings (safe to unpickle)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _state_dict_differences(model: torch.nn.Module, saved: Mapping[str, Any], limit: int = 3) -> list[str]:
    """Missing, unexpected and differently shaped parameters of ``saved`` against ``model``."""
    module = getattr(model, "module", model)  # unwrap DDP
    current = module.state_dict()
    out = []
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    shapes = [
        f"{k} {tuple(saved[k].shape)} vs {tuple(current[k].shape)}"
        for k in current
        if k in saved and hasattr(saved[k], "shape") and tuple(saved[k].shape) != tuple(current[k].shape)
    ]
    for label, items in (("missing in the checkpoint", missing), ("not in the model", unexpected),
                         ("shape in the checkpoint vs the model", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            out.append(f"{len(items)} parameter(s) {label}: {', '.join(items[:limit])}{more}")
    return out



def list_checkpoints(checkpoint_dir: str | Path, kinds: tuple[str, ...] | None = None) -> list[tuple[int, Path]]:
    """The checkpoint files of ``checkpoint_dir`` with their iteration, oldest first.

    Args:
        checkpoint_dir: the directory (a missing one has no checkpoints).
        kinds: keep only these kinds (``"checkpoint"``, ``"best"``, ``"final"``, ``"nan_stop"``); default all.

    Returns:
        ``[(iteration, path), ...]`` sorted by iteration (ties: by name).
    """
    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = CHECKPOINT_FILE.match(path.name)
        if match and path.is_file() and (kinds is None or match["kind"] in kinds):
            found.append((int(match["iteration"]), path))
    return sorted(found, key=lambda item: (item[0], item[1].name))


def find_latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The checkpoint with the highest iteration in ``checkpoint_dir`` (any kind: all hold a full state).

    Args:
        checkpoint_dir: the directory.

    Returns:
        its path, or ``None`` when there is none.
    """
    found = list_checkpoints(checkpoint_dir)
    return found[-1][1] if found else None


def _read(path: Path, map_location: Any) -> Mapping:
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path}: not a checkpoint dict (got {type(checkpoint).__name__}).")
    return checkpoint


def resume_from(
    resume: str | Path | None,
    to_load: Mapping[str, Any],
    checkpoint_dir: str | Path | None = None,
    map_location: Any = "cpu",
    strict: bool = True,
) -> Path | None:
    """Restore ``to_load`` from a checkpoint.

    With ``resume="auto"`` the newest checkpoint of ``checkpoint_dir`` is used (none: nothing is loaded); a
    file that cannot be read is reported and the next newest is tried. Under torch.distributed, rank 0
    chooses the file and every rank loads it (the directory must be visible to all ranks).

    Loading the engine (``to_load["trainer"]``) restores its iteration, so ``engine.run()`` continues from
    the saved iteration.

    Args:
        resume: ``None`` (do nothing), ``"auto"``, or a checkpoint path.
        to_load: ``{name: object with load_state_dict}``, as saved (see :func:`training_objects`).
        checkpoint_dir: where ``"auto"`` looks.
        map_location: ``torch.load``'s ``map_location`` (default CPU: ``load_state_dict`` copies to each
            object's device, so ranks never load onto another rank's GPU).
        strict: ``strict`` of ``nn.Module.load_state_dict``.

    Returns:
        the file loaded, or ``None``.

    Raises:
        ValueError: for ``"auto"`` without ``checkpoint_dir``, or a file that is not a checkpoint dict.
        FileNotFoundError: when an explicit path does not exist.
        KeyError: when the checkpoint lacks one of the objects of ``to_load``.
    """
    if resume is None or resume == "":
        return None
    if str(resume) == "auto":
        if checkpoint_dir is None:
            raise ValueError("resume='auto' needs the checkpoint directory.")
        candidates = [path for _, path in reversed(list_checkpoints(checkpoint_dir))]
        # Rank 0 chooses, so that every rank restores the same state even if files change meanwhile.
        if idist.get_world_size() > 1:
            candidates = [Path(p) for p in idist.broadcast("\n".join(map(str, candidates)), src=0).split("\n") if p]
        checkpoint, path = None, None
        for candidate in candidates:
            try:
                checkpoint, path = _read(candidate, map_location), candidate
                break
            except Exception as error:  # a truncated/corrupt file: fall back to the previous one
                logger.warning(f"cannot read checkpoint {candidate} ({error}); trying an older one.")
        if checkpoint is None:
            logger.info(f"resume='auto': no readable checkpoint in {checkpoint_dir}; starting from scratch.")
            return None
    else:
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint to resume from not found: {path}")
        checkpoint = _read(path, map_location)
    optional = [name for name in OPTIONAL_ENTRIES if name in to_load and name not in checkpoint]
    if optional:
        logger.warning(f"{path} has no {optional}: the resumed run may not repeat the interrupted one exactly.")
    missing = [name for name in to_load if name not in checkpoint and name not in OPTIONAL_ENTRIES]
    if missing:
        raise KeyError(f"{path} lacks {missing} (it has {sorted(checkpoint)}).")
    run_config = to_load.get("run_config")
    if isinstance(run_config, RunConfig) and "run_config" in checkpoint:
        run_config.load_state_dict(checkpoint["run_config"])
    objects = {name: obj for name, obj in to_load.items() if name in checkpoint}
    try:
        Checkpoint.load_objects(to_load=objects, checkpoint=dict(checkpoint), strict=strict)
    except (RuntimeError, ValueError, KeyError) as error:
        raise _mismatch(path, to_load, checkpoint, error) from error
    return path


def _mismatch(path: Path, to_load: Mapping[str, Any], checkpoint: Mapping, error: Exception) -> ResumeMismatchError:
    """The error for a checkpoint that does not load into the configured objects: what differs and the ways out."""
    details: list[str] = []
    run_config = to_load.get("run_config")
    if isinstance(run_config, RunConfig):
        details += run_config.differences()
    model = to_load.get("model")
    if isinstance(model, torch.nn.Module) and isinstance(checkpoint.get("model"), Mapping):
        details += _state_dict_differences(model, checkpoint["model"])
    if not details:
        details = [str(error).strip().splitlines()[0][:300]]
    return ResumeMismatchError(
        f"cannot resume from {path}: it does not fit the configured run; "
        + "; ".join(details)
        + ". Either start afresh with resume: null (--resume None; the folder's checkpoints will be replaced) "
        "or train into another output_dir."
    )


def make_checkpointer(
    save_dir: str | Path,
    to_save: Mapping[str, Any],
    prefix: str,
    n_saved: int | None = 1,
    score_function: Callable[[Engine], float] | None = None,
    score_name: str | None = None,
) -> Checkpoint:
    """An Ignite ``Checkpoint`` writing ``<prefix>_<iteration>[_<score_name>=<score>].pt`` with :class:`SafeDiskSaver`.

    Args:
        save_dir: the directory (created on rank 0).
        to_save: the objects to save.
        prefix: the file kind (see :data:`CHECKPOINT_FILE`).
        n_saved: files of this kind to keep (``None``: all).
        score_function: keeps the highest-scoring files instead of the newest.
        score_name: the score's name in the file name.

    Returns:
        the checkpointer; call it with the engine to save.
    """
    saver = SafeDiskSaver(save_dir)
    return Checkpoint(
        dict(to_save),
        saver,
        filename_prefix=prefix,
        score_function=score_function,
        score_name=score_name,
        n_saved=n_saved,
        global_step_transform=iteration_step,
        filename_pattern=_SCORE_PATTERN if score_function is not None else _STEP_PATTERN,
    )


def _remove_partial_files(directory: Path, log: logging.Logger) -> None:
    """Delete temporary files left by a process killed while writing a checkpoint (never valid checkpoints)."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if _PARTIAL_FILE.match(path.name) and path.is_file():
            log.info(f"removing {path}, an unfinished checkpoint of an interrupted run.")
            path.unlink(missing_ok=True)


class CheckpointHandler:
    """Save resumable checkpoints and resume from one (see the module docstring for the files).

    Attach it (``handler.attach(trainer)``) before the run; the saved objects are taken from the trainer
    (:func:`~synclr_monai.handlers.utils.training_objects`) plus ``save_dict``. With ``resume``, the state
    is restored when the run starts and training continues at the saved iteration; the trainer's
    ``max_epochs`` stays as configured, so a finished run can be extended. Writing happens on rank 0 only.

    Args:
        save_dir: the checkpoint directory, e.g. ``OUTPUT_DIR/checkpoints``.
        save_interval: save every this many iterations (``None``: never). Use a multiple of the trainer's
            ``accumulation_steps``: gradients of an unfinished accumulation group are not saved.
        n_saved: periodic checkpoints to keep (older ones are deleted, also those of a resumed run).
        save_best: keep the checkpoint of the epoch with the best ``best_metric``.
        save_final: save when the run completes.
        best_metric: name in ``engine.state.metrics`` (``ContrastiveTrainer`` provides ``"epoch_loss"``).
        best_mode: ``"min"`` (a loss) or ``"max"``.
        resume: ``None``, ``"auto"`` (the newest checkpoint in ``save_dir``, if any) or a checkpoint path.
        save_dict: more objects to save and restore, ``{name: obj with state_dict/load_state_dict}``.
        map_location: ``torch.load``'s ``map_location`` when resuming.
        strict: strict model loading when resuming.
        name: logger name (default: the engine's logger).
        run_config: the run's settings (backbone, cube size, ...), saved in each checkpoint and compared with the
            checkpoint's when resuming: a checkpoint that does not load names what differs.
        exact_resume: also save the random states and the epoch metrics' running sums, and on a mid-epoch resume
            make the data loader's :class:`~synclr_monai.data.sampler.ResumableSampler` skip the batches done.
        lock: hold a :class:`~synclr_monai.run_guard.RunLock` on ``save_dir`` from ``attach`` until the run
            completes (or the process ends), so that two runs cannot share the folder.

    Raises:
        ValueError: for a non-positive ``save_interval``/``n_saved`` or an unknown ``best_mode``.
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_interval: int | None = 1000,
        n_saved: int = 3,
        save_best: bool = True,
        save_final: bool = True,
        best_metric: str = "epoch_loss",
        best_mode: Literal["min", "max"] = "min",
        resume: str | Path | None = None,
        save_dict: Mapping[str, Any] | None = None,
        map_location: Any = "cpu",
        strict: bool = True,
        name: str | None = None,
        run_config: Mapping[str, Any] | None = None,
        exact_resume: bool = True,
        lock: bool = True,
    ) -> None:
        if save_interval is not None and save_interval < 1:
            raise ValueError(f"save_interval must be a positive number of iterations or None, got {save_interval}.")
        if n_saved < 1:
            raise ValueError(f"n_saved must be positive, got {n_saved}.")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}.")
        self.save_dir = Path(save_dir)
        self.save_interval = save_interval
        self.n_saved = n_saved
        self.save_best = save_best
        self.save_final = save_final
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.resume = resume
        self.save_dict = dict(save_dict or {})
        self.map_location = map_location
        self.strict = strict
        self._name = name
        self.logger = logging.getLogger(name or __name__)
        self.periodic: Checkpoint | None = None
        self.best: Checkpoint | None = None
        self._deferred: int | None = None  # an epoch-end periodic save waiting for the best one
        self.final: Checkpoint | None = None
        self.resumed_from: Path | None = None
        self.objects: dict[str, Any] = {}
        self.run_config = RunConfig(run_config) if run_config is not None else None
        self.exact_resume = exact_resume
        self.lock = RunLock(self.save_dir) if lock else None
        self.epoch_metrics: EpochMetricsState | None = None

    @property
    def score_name(self) -> str:
        """The score's name in best-checkpoint file names (``neg_<metric>`` for ``best_mode="min"``)."""
        return f"neg_{self.best_metric}" if self.best_mode == "min" else self.best_metric

    @property
    def last_checkpoint(self) -> Path | None:
        """The newest periodic checkpoint written by this handler, if any."""
        last = self.periodic.last_checkpoint if self.periodic is not None else None
        return None if last is None else self.save_dir / Path(last).name

    def attach(self, engine: Engine) -> None:
        """Register resuming (at ``STARTED``) and saving on ``engine``.

        Args:
            engine: a trainer with ``network`` and ``optimizer`` (e.g. ``ContrastiveTrainer``).
        """
        self.logger = get_logger(self._name, engine)
        extra: dict[str, Any] = {}
        if self.exact_resume:
            self.epoch_metrics = EpochMetricsState(engine)
            extra.update(rng=RandomStates(), epoch_metrics=self.epoch_metrics)
        if self.run_config is not None:
            extra["run_config"] = self.run_config
        self.objects = training_objects(engine, {**extra, **self.save_dict})
        steps = getattr(engine, "accumulation_steps", 1)
        if self.save_interval is not None and self.save_interval % steps:
            warnings.warn(
                f"save_interval={self.save_interval} is not a multiple of accumulation_steps={steps}: checkpoints "
                "taken inside an accumulation group lose that group's gradients when resumed.",
                stacklevel=2,
            )
        if is_main_process():
            if self.lock is not None:
                # before anything in the folder is touched: another live run's files are not ours to clean
                self.lock.acquire()
                engine.add_event_handler(Events.COMPLETED, lambda _: self.lock.release())
            _remove_partial_files(self.save_dir, self.logger)
            if self.resume is None and list_checkpoints(self.save_dir):
                self.logger.warning(
                    f"{self.save_dir} already holds checkpoints and resume is off: new files may replace them "
                    "(set resume='auto' to continue that run)."
                )
        if self.resume is not None:
            engine.add_event_handler(Events.STARTED, self.restore)
        if self.save_interval is not None:
            self.periodic = make_checkpointer(self.save_dir, self.objects, "checkpoint", n_saved=self.n_saved)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._save_periodic)
        if self.save_best:
            self.best = make_checkpointer(
                self.save_dir, self.objects, "best", n_saved=1, score_function=self._score, score_name=self.score_name
            )
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._save_best)
        if self.save_interval is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._save_deferred)  # after the best
        if self.save_final:
            self.final = make_checkpointer(self.save_dir, self.objects, "final", n_saved=1)
            engine.add_event_handler(Events.COMPLETED, self.final)

    def _score(self, engine: Engine) -> float:
        metrics = engine.state.metrics
        if self.best_metric not in metrics:
            raise KeyError(
                f"best checkpoint: metric {self.best_metric!r} is not in engine.state.metrics ({sorted(metrics)}); "
                "attach it to the trainer or set save_best=False."
            )
        value = float(metrics[self.best_metric])
        return -value if self.best_mode == "min" else value

    def _save_periodic(self, engine: Engine) -> None:
        """Every ``save_interval`` iterations; at an epoch's last iteration deferred until its best is saved.

        A periodic checkpoint of the epoch's end written before that epoch's best one leaves a window (a kill
        between the two files) in which the newest checkpoint says the epoch is done and no best exists, and a
        run resumed from it never writes that epoch's best. Best first: a kill in between leaves the best, which
        is itself a complete checkpoint of that iteration, and the resumed run continues from it.
        """
        iteration, epoch_length = engine.state.iteration, engine.state.epoch_length
        if iteration % self.save_interval:
            return
        if self.save_best and epoch_length and iteration % epoch_length == 0:
            self._deferred = iteration
            return
        assert self.periodic is not None
        self.periodic(engine)

    def _save_deferred(self, engine: Engine) -> None:
        if self._deferred == engine.state.iteration:
            self._deferred = None
            assert self.periodic is not None
            self.periodic(engine)

    def _save_best(self, engine: Engine) -> None:
        score = self._score(engine)
        if not math.isfinite(score):
            # Ignite would keep a NaN score forever (nothing compares greater than NaN).
            self.logger.warning(f"epoch {engine.state.epoch}: {self.best_metric} is not finite; best checkpoint kept.")
            return
        assert self.best is not None
        self.best(engine)

    def restore(self, engine: Engine) -> None:
        """Load the ``resume`` checkpoint into the training objects (an ``Events.STARTED`` handler).

        Args:
            engine: the trainer.

        Raises:
            ValueError: when the checkpoint's epoch is beyond the trainer's ``max_epochs``.
        """
        max_epochs = engine.state.max_epochs
        path = resume_from(self.resume, self.objects, self.save_dir, self.map_location, self.strict)
        self.resumed_from = path
        if path is None:
            return
        if max_epochs is not None:
            if engine.state.epoch > max_epochs:
                raise ValueError(
                    f"{path} is at epoch {engine.state.epoch}, beyond max_epochs={max_epochs}: "
                    "raise max_epochs to train further."
                )
            # The configured number of epochs wins over the saved one, so a finished run can be extended.
            engine.state.max_epochs = max_epochs
        self._restore_saved_lists(engine.state.iteration)
        if self.run_config is not None and self.run_config.differences():
            self.logger.warning(
                f"{path} was written with other settings ({'; '.join(self.run_config.differences())}); resuming anyway."
            )
        iteration, epoch_length = engine.state.iteration, engine.state.epoch_length
        done = iteration % epoch_length if epoch_length else 0
        if done:
            self._resume_mid_epoch(engine, done)
            where = f"epoch {iteration // epoch_length + 1}/{max_epochs}, after {done} of its {epoch_length} iterations"
        else:
            where = f"the end of epoch {engine.state.epoch}/{max_epochs}"
        self.logger.info(f"resumed from {path} at iteration {iteration} ({where}).")

    def _resume_mid_epoch(self, engine: Engine, done: int) -> None:
        """Continue the interrupted epoch where it stopped: skip its done batches, keep its running metrics."""
        loader = getattr(engine, "data_loader", None)
        sampler = getattr(loader, "sampler", None)
        batch_size = getattr(loader, "batch_size", None)
        if callable(getattr(sampler, "skip_next", None)) and batch_size:
            sampler.skip_next(done * batch_size)
        else:
            self.logger.warning(
                f"resuming inside an epoch ({done} iterations done) with a {type(sampler).__name__}: the epoch's "
                "remaining batches will not be those of the interrupted run (use ResumableSampler for an exact resume)."
            )
        if self.epoch_metrics is not None and self.epoch_metrics.pending:
            # after the metrics' own reset at EPOCH_STARTED, which was registered first
            engine.add_event_handler(Events.EPOCH_STARTED, self._apply_metrics_once)

    def _apply_metrics_once(self, engine: Engine) -> None:
        # a no-op after the first call (not removed while Ignite iterates over the event's handlers)
        assert self.epoch_metrics is not None
        self.epoch_metrics.apply(engine)

    def _restore_saved_lists(self, iteration: int) -> None:
        """Let the checkpointers know the files of the interrupted run, so ``n_saved`` holds across restarts.

        A run killed between writing a new file and deleting the one it replaces leaves one file too many;
        it is a complete, superseded file and is deleted now (only rank 0, which holds the folder's lock).
        """
        kinds = ((self.periodic, "checkpoint", self.n_saved), (self.best, "best", 1), (self.final, "final", 1))
        for checkpointer, kind, keep in kinds:
            if checkpointer is None:
                continue
            items = []
            for step, path in list_checkpoints(self.save_dir, (kind,)):
                if step > iteration:
                    self.logger.warning(f"{path} is newer than the resumed state (iteration {iteration}); left as is.")
                    continue
                score = CHECKPOINT_FILE.match(path.name)["score"]  # type: ignore[index]
                items.append((float(score) if kind == "best" else step, path.name))
            items.sort(key=lambda item: item[0])
            if is_main_process():
                for _, name in items[:-keep]:
                    self.logger.info(f"removing {self.save_dir / name}, superseded before the interrupted run ended.")
                    (self.save_dir / name).unlink(missing_ok=True)
            checkpointer.load_state_dict({"_saved": items[-keep:]})
