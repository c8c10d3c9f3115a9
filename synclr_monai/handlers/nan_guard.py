"""Stop training on a NaN/inf loss, after saving the last good state."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from synclr_monai.handlers.checkpoint import make_checkpointer
from synclr_monai.handlers.utils import get_logger, training_objects

__all__ = ["NaNGuard", "NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite.

    Args:
        message: the explanation (iteration, epoch, value, saved checkpoint).
        iteration: the iteration whose loss was not finite.
        checkpoint: the checkpoint written before stopping, if any.
    """

    def __init__(self, message: str, iteration: int, checkpoint: Path | None = None) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.checkpoint = checkpoint


def _is_finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    if isinstance(value, numbers.Number):
        return bool(torch.isfinite(torch.tensor(float(value))))
    raise TypeError(f"NaNGuard: the loss must be a tensor or a number, got {type(value).__name__}.")


class NaNGuard:
    """Check the loss after every iteration; on NaN/inf, save a checkpoint, log the cause and stop.

    The saved state is the last good one: :class:`~synclr_monai.engines.ContrastiveTrainer` applies no update
    whose gradients are not finite, so the weights, optimizer and scheduler are those from before the bad
    iteration. The file is ``save_dir/nan_stop_<iteration>.pt`` (resumable like any checkpoint;
    ``resume="auto"`` continues after the bad iteration).

    Ignite's ``TerminateOnNan`` only terminates; this handler also saves, agrees across ranks and raises.
    Under torch.distributed every rank stops at the same iteration (the check is all-reduced, one small
    collective per iteration); rank 0 writes the file.

    Args:
        save_dir: where to save (normally the checkpoint directory); ``None``: do not save.
        output_key: key of the loss in ``engine.state.output``.
        raise_error: raise :class:`NonFiniteLossError` (the run fails); ``False``: terminate the run quietly
            with ``engine.terminate(skip_completed=True)``, so ``COMPLETED`` handlers (final checkpoint,
            encoder export) do not run.
        save_dict: more objects to save, as in :class:`~synclr_monai.handlers.checkpoint.CheckpointHandler`.
        name: logger name (default: the engine's logger).
    """

    def __init__(
        self,
        save_dir: str | Path | None = None,
        output_key: str = "loss",
        raise_error: bool = True,
        save_dict: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.output_key = output_key
        self.raise_error = raise_error
        self.save_dict = dict(save_dict or {})
        self._name = name
        self.logger = logging.getLogger(name or __name__)
        self.checkpoint: Path | None = None

    def attach(self, engine: Engine) -> None:
        """Check ``engine``'s loss at every ``ITERATION_COMPLETED`` (attach before checkpoint handlers).

        Args:
            engine: the trainer.
        """
        self.logger = get_logger(self._name, engine)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Stop ``engine`` if its loss is not finite.

        Args:
            engine: the trainer.

        Raises:
            NonFiniteLossError: when the loss is NaN/inf and ``raise_error``.
            KeyError: when the output has no ``output_key``.
        """
        output = engine.state.output
        if not isinstance(output, Mapping) or self.output_key not in output:
            raise KeyError(
                f"NaNGuard: engine.state.output has no {self.output_key!r} entry (got {type(output).__name__})."
            )
        value = output[self.output_key]
        local_bad = not _is_finite(value)
        bad = local_bad
        if idist.get_world_size() > 1:
            bad = idist.all_reduce(float(local_bad), op="MAX") > 0
        if not bad:
            return
        iteration, epoch = engine.state.iteration, engine.state.epoch
        if local_bad:
            shown = float(value.float().mean()) if isinstance(value, torch.Tensor) else value
            what = f"non-finite loss ({shown})"
        else:
            what = "non-finite loss on another process"
        message = f"{what} at iteration {iteration} (epoch {epoch}); training stopped."
        if self.save_dir is not None:
            checkpointer = make_checkpointer(self.save_dir, training_objects(engine, self.save_dict), "nan_stop")
            checkpointer(engine)
            self.checkpoint = Path(checkpointer.last_checkpoint)  # type: ignore[arg-type]
            message += (
                f" The state before this iteration's update was saved to {self.checkpoint}; lower the learning "
                "rate or check the data, then resume from it."
            )
        self.logger.error(message)
        if self.raise_error:
            raise NonFiniteLossError(message, iteration, self.checkpoint)
        engine.terminate(skip_completed=True)
