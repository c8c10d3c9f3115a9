"""Tell the dataset which epoch starts, for per-epoch sampling seeds."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events

from synclr_monai.handlers.utils import resolve_dataset

__all__ = ["DatasetEpochSetter"]


class DatasetEpochSetter:
    """Call ``dataset.set_epoch(epoch)`` when each epoch starts (like ``DistributedSampler.set_epoch``).

    It runs at ``EPOCH_STARTED``, before the epoch's data-loader workers are created, so they inherit it.

    Args:
        dataset: the dataset with ``set_epoch``; default the one behind the trainer's data loader.
    """

    def __init__(self, dataset: Any | None = None) -> None:
        self.dataset = dataset

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``.

        Args:
            engine: the trainer.

        Raises:
            TypeError: when no dataset with ``set_epoch`` is found.
        """
        self.dataset = resolve_dataset(engine, self.dataset, "set_epoch")
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Pass the starting epoch to the dataset.

        Args:
            engine: the trainer.
        """
        self.dataset.set_epoch(engine.state.epoch)
