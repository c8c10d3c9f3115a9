"""Resumable checkpoints: every N iterations (keeping the last k), the best by epoch loss, the final one; resume.

Files in ``save_dir`` (all written atomically by Ignite's ``DiskSaver``: temporary file, then rename):

- ``checkpoint_<iteration>.pt``: every ``save_interval`` iterations, the last ``n_saved`` kept;
- ``best_<iteration>_neg_epoch_loss=<score>.pt``: the epoch with the lowest mean loss;
- ``final_<iteration>.pt``: when the run completes;
- ``nan_stop_<iteration>.pt``: written by :class:`~synclr_monai.handlers.nan_guard.NaNGuard`.

Each holds ``model`` (unwrapped from DDP), ``optimizer``, ``trainer`` (iteration, epoch length, max epochs),
and ``scaler`` / ``lr_scheduler`` when the trainer has them, and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from synclr_monai.handlers.utils import get_logger, is_main_process, iteration_step, training_objects

__all__ = [
    "CHECKPOINT_FILE",
    "CheckpointHandler",
    "find_latest_checkpoint",
    "list_checkpoints",
    "make_checkpointer",
    "resume_from",
]

#: file name of a checkpoint written by this module: kind, iteration and, for the best, the score.
CHECKPOINT_FILE = re.compile(
    r"^(?P<kind>checkpoint|best|final|nan_stop)_(?P<iteration>\d+)(?:_(?P<score_name>[^=]+)=(?P<score>[^_]+))?\.pt$"
)
#: names of temporary files left by a ``DiskSaver`` killed while writing (``tempfile`` prefix + 8 characters).
_PARTIAL_FILE = re.compile(r"^tmp[a-z0-9_]{8}$")
_STEP_PATTERN = "{filename_prefix}_{global_step}.{ext}"
_SCORE_PATTERN = "{filename_prefix}_{global_step}_{score_name}={score}.{ext}"

logger = logging.getLogger(__name__)


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
    missing = [name for name in to_load if name not in checkpoint]
    if missing:
        raise KeyError(f"{path} lacks {missing} (it has {sorted(checkpoint)}).")
    Checkpoint.load_objects(to_load=dict(to_load), checkpoint=dict(checkpoint), strict=strict)
    return path


def make_checkpointer(
    save_dir: str | Path,
    to_save: Mapping[str, Any],
    prefix: str,
    n_saved: int | None = 1,
    score_function: Callable[[Engine], float] | None = None,
    score_name: str | None = None,
) -> Checkpoint:
    """An Ignite ``Checkpoint`` writing ``<prefix>_<iteration>[_<score_name>=<score>].pt`` atomically on rank 0.

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
    saver = DiskSaver(save_dir, atomic=True, create_dir=True, require_empty=False)
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
        self.final: Checkpoint | None = None
        self.resumed_from: Path | None = None
        self.objects: dict[str, Any] = {}

    @property
    def score_name(self) -> str:
        """The score's name in best-checkpoint file names (``neg_<metric>`` for ``best_mode="min"``)."""
        return f"neg_{self.best_metric}" if self.best_mode == "min" else self.best_metric

    @property
    def last_checkpoint(self) -> Path | None:
        """The newest periodic checkpoint written by this handler, if any."""
        last = self.periodic.last_checkpoint if self.periodic is not None else None
        return None if last is None else Path(last)

    def attach(self, engine: Engine) -> None:
        """Register resuming (at ``STARTED``) and saving on ``engine``.

        Args:
            engine: a trainer with ``network`` and ``optimizer`` (e.g. ``ContrastiveTrainer``).
        """
        self.logger = get_logger(self._name, engine)
        self.objects = training_objects(engine, self.save_dict)
        steps = getattr(engine, "accumulation_steps", 1)
        if self.save_interval is not None and self.save_interval % steps:
            warnings.warn(
                f"save_interval={self.save_interval} is not a multiple of accumulation_steps={steps}: checkpoints "
                "taken inside an accumulation group lose that group's gradients when resumed.",
                stacklevel=2,
            )
        if is_main_process():
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
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_interval), self.periodic)
        if self.save_best:
            self.best = make_checkpointer(
                self.save_dir, self.objects, "best", n_saved=1, score_function=self._score, score_name=self.score_name
            )
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._save_best)
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
        self.logger.info(
            f"resumed from {path} at iteration {engine.state.iteration} (epoch {engine.state.epoch}/{max_epochs})."
        )

    def _restore_saved_lists(self, iteration: int) -> None:
        """Let the checkpointers know the files of the interrupted run, so ``n_saved`` holds across restarts."""
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
            checkpointer.load_state_dict({"_saved": items[-keep:]})
