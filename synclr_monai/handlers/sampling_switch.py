"""Switch the dataset's cube sampling (random -> mask-aware) at a given epoch, and count fallbacks."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from synclr_monai.handlers.utils import get_logger, resolve_dataset

__all__ = ["FallbackCount", "SamplingModeSwitch"]


def _count(value: Any) -> tuple[int, int]:
    """(fallbacks, samples) in a batch's fallback entry: a 0/1 tensor/array/list, or one number."""
    tensor = torch.as_tensor(value).reshape(-1)
    return int(tensor.sum().item()), int(tensor.numel())


class FallbackCount(Metric):
    """Per epoch, how many samples fell back to random sampling (batch key ``fallback`` = 1).

    Mask-aware sampling retries a limited number of times to find a cube with enough cleft voxels and
    otherwise falls back to a random cube, marking the sample. The count is read from the batch, so it is
    right with data-loader workers, and it is summed over processes under torch.distributed. Batches
    without the key count nothing.

    Args:
        key: the batch key.
        device: where the counts are all-reduced.
    """

    def __init__(self, key: str = "fallback", device: str | torch.device = "cpu") -> None:
        self.key = key
        super().__init__(output_transform=lambda output: output, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        """Zero the counts."""
        self._fallbacks = 0
        self._samples = 0

    @reinit__is_reduced
    def update(self, batch: Any) -> None:
        """Add a batch's fallbacks.

        Args:
            batch: a batch dict, or a decollated list of sample dicts.
        """
        items = batch if isinstance(batch, list) else [batch]
        for item in items:
            if isinstance(item, Mapping) and item.get(self.key) is not None:
                fallbacks, samples = _count(item[self.key])
                self._fallbacks += fallbacks
                self._samples += samples

    def iteration_completed(self, engine: Engine) -> None:
        """Read the fallbacks from ``engine.state.batch`` (not the output, which the trainer reduces to scalars).

        Args:
            engine: the trainer.
        """
        self.update(engine.state.batch)

    @sync_all_reduce("_fallbacks", "_samples")
    def compute(self) -> float:
        """The epoch's number of fallbacks (all processes).

        Returns:
            the count.
        """
        return float(self._fallbacks)


class SamplingModeSwitch:
    """Call ``dataset.set_sampling_mode(mode)`` when epoch ``epoch`` starts, and log the fallback count.

    The switch happens at ``EPOCH_STARTED``, before the epoch's batches are drawn. The dataset must carry the
    mode to its DataLoader workers: :class:`~synclr_monai.data.dataset.ContrastiveCubeDataset` keeps it in
    shared memory, so persistent workers see it too. A run resumed past ``epoch`` switches when it starts.
    The per-epoch fallback count is ``engine.state.metrics[metric_name]`` (logged by the stats and W&B
    handlers).

    Args:
        epoch: the first epoch (1-based) with the new mode.
        dataset: the dataset with ``set_sampling_mode``; default the one behind the trainer's data loader.
        mode: the mode to switch to.
        fallback_key: batch key flagging fallback samples.
        metric_name: name of the fallback-count metric (``None``: do not count).
        name: logger name (default: the engine's logger).

    Raises:
        ValueError: when ``epoch`` is below 1.
    """

    def __init__(
        self,
        epoch: int,
        dataset: Any | None = None,
        mode: str = "mask_aware",
        fallback_key: str = "fallback",
        metric_name: str | None = "fallback_count",
        name: str | None = None,
    ) -> None:
        if int(epoch) < 1:
            raise ValueError(f"epoch must be at least 1 (epochs count from 1), got {epoch}.")
        self.epoch = int(epoch)
        self.dataset = dataset
        self.mode = mode
        self.fallback_key = fallback_key
        self.metric_name = metric_name
        self._name = name
        self.logger = logging.getLogger(name or __name__)
        self.switched = False

    def attach(self, engine: Engine) -> None:
        """Register the switch and the fallback metric on ``engine``.

        Args:
            engine: the trainer.

        Raises:
            TypeError: when no dataset with ``set_sampling_mode`` is found.
        """
        self.logger = get_logger(self._name, engine)
        self.dataset = resolve_dataset(engine, self.dataset, "set_sampling_mode")
        engine.add_event_handler(Events.EPOCH_STARTED, self)
        if self.metric_name is not None:
            FallbackCount(self.fallback_key).attach(engine, self.metric_name)

    def __call__(self, engine: Engine) -> None:
        """Switch the mode if the epoch has come (once).

        Args:
            engine: the trainer.
        """
        if self.switched or engine.state.epoch < self.epoch:
            return
        self.dataset.set_sampling_mode(self.mode)
        self.switched = True
        self.logger.info(f"epoch {engine.state.epoch}: dataset sampling mode set to {self.mode!r}.")
