"""The standard handler set of a training run, in the order they must be attached."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine

from synclr_monai.handlers.checkpoint import CheckpointHandler
from synclr_monai.handlers.dataset_epoch import DatasetEpochSetter
from synclr_monai.handlers.encoder_export import EncoderExportHandler
from synclr_monai.handlers.nan_guard import NaNGuard
from synclr_monai.handlers.progress import ProgressHandler
from synclr_monai.handlers.sampling_switch import SamplingModeSwitch
from synclr_monai.handlers.wandb import WandBHandler

__all__ = ["attach_default_handlers", "default_train_handlers"]


def default_train_handlers(
    output_dir: str | Path,
    save_interval: int | None = 1000,
    n_saved: int = 3,
    resume: str | Path | None = None,
    log_every: int = 10,
    progress_bar: bool = True,
    wandb: bool = True,
    wandb_project: str = "synclr-monai",
    wandb_mode: str | None = None,
    wandb_config: Mapping[str, Any] | None = None,
    sampling_switch_epoch: int | None = None,
    encoder_path: str | Path | None = "bundle/models/model.pt",
) -> list[Any]:
    """The handlers of a training run, ready for ``ContrastiveTrainer(train_handlers=...)``.

    Order matters, as Ignite calls an event's handlers in attachment order: the NaN guard checks the loss
    before a periodic checkpoint can be taken of that iteration, the checkpoint handler restores a resumed
    state before the others read the epoch at ``STARTED``, and W&B closes its run on an exception before
    MONAI's StatsHandler re-raises it (the first ``EXCEPTION_RAISED`` handler to raise ends the chain).

    Files: ``output_dir/checkpoints/`` (checkpoints, NaN-stop state), ``output_dir/wandb/`` (offline run),
    and the exported encoder at ``encoder_path``.

    Args:
        output_dir: the run's output directory.
        save_interval: checkpoint every this many iterations (``None``: only best and final).
        n_saved: periodic checkpoints to keep.
        resume: ``None``, ``"auto"`` or a checkpoint path.
        log_every: iterations between logged lines.
        progress_bar: show a progress bar.
        wandb: log to W&B.
        wandb_project: W&B project.
        wandb_mode: ``None`` (``$WANDB_MODE`` or offline), ``"offline"``, ``"online"``, ``"disabled"``.
        wandb_config: hyper-parameters to record in W&B.
        sampling_switch_epoch: epoch at which to switch the dataset to mask-aware sampling (``None``: never).
        encoder_path: where to export the encoder at the end (``None``: no export).

    Returns:
        the handlers, in attachment order.
    """
    output_dir = Path(output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    handlers: list[Any] = [
        NaNGuard(save_dir=checkpoint_dir),
        CheckpointHandler(checkpoint_dir, save_interval=save_interval, n_saved=n_saved, resume=resume),
        # after the checkpoint handler, so that a resumed run reseeds its dataset with the restored epoch
        DatasetEpochSetter(),
    ]
    if sampling_switch_epoch is not None:
        handlers.append(SamplingModeSwitch(epoch=sampling_switch_epoch))
    if wandb:
        handlers.append(
            WandBHandler(
                project=wandb_project,
                mode=wandb_mode,
                config=wandb_config,
                dir=output_dir,
                log_every=log_every,
                checkpoint_dir=checkpoint_dir,
                encoder_path=encoder_path,
            )
        )
    handlers.append(ProgressHandler(log_every=log_every, progress_bar=progress_bar))
    if encoder_path is not None:
        handlers.append(EncoderExportHandler(encoder_path))
    return handlers


def attach_default_handlers(trainer: Engine, output_dir: str | Path, **kwargs: Any) -> list[Any]:
    """Build :func:`default_train_handlers` and attach them to ``trainer``.

    Args:
        trainer: the trainer.
        output_dir: the run's output directory.
        kwargs: more :func:`default_train_handlers` arguments.

    Returns:
        the attached handlers.
    """
    handlers = default_train_handlers(output_dir, **kwargs)
    for handler in handlers:
        handler.attach(trainer)
    return handlers
