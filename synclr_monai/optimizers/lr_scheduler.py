"""Learning-rate rules: the linear scaling rule and a per-iteration warm-up + cosine schedule."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupCosineLR", "scaled_lr", "warmup_cosine_for_epochs"]


def scaled_lr(base_lr: float, batch_size: int, reference: int = 256) -> float:
    """Linear scaling rule: ``base_lr * batch_size / reference``.

    Args:
        base_lr: learning rate for a batch of ``reference`` samples (the lab uses 0.001).
        batch_size: the global batch (per-process batch times processes, times accumulation steps).
        reference: the batch size ``base_lr`` is quoted for.

    Returns:
        the scaled learning rate.

    Raises:
        ValueError: for a negative ``base_lr`` or non-positive sizes.
    """
    if base_lr < 0 or batch_size < 1 or reference < 1:
        raise ValueError(f"need base_lr >= 0 and positive sizes, got {base_lr}, {batch_size}, {reference}.")
    return base_lr * batch_size / reference


class WarmupCosineLR(LambdaLR):
    """Linear warm-up to the base learning rate, then cosine decay to ``min_lr_ratio`` of it.

    Step it once per iteration (after ``optimizer.step()``). The factor applied at iteration ``t``
    (the ``t``-th optimiser step, from 0) is::

        (t + 1) / warmup_steps                                    for t < warmup_steps
        m + (1 - m) * (1 + cos(pi * p)) / 2, p = (t - warmup_steps) / (total_steps - warmup_steps)
                                                                  for warmup_steps <= t < total_steps
        m                                                         for t >= total_steps

    with ``m = min_lr_ratio``. Unlike ``monai.optimizers.WarmupCosineSchedule``, the first step does not
    run at lr 0, and the cosine ends at ``min_lr_ratio`` instead of being clipped at an absolute
    ``end_lr`` (which would flatten the curve and ignore per-group learning rates).

    Args:
        optimizer: the optimiser.
        warmup_steps: iterations of linear warm-up (0 for none).
        total_steps: iterations of the whole run (warm-up included).
        min_lr_ratio: final learning rate as a fraction of each group's base rate, in [0, 1].
        last_epoch: index of the last step taken, for resuming (-1 to start).

    Raises:
        ValueError: when ``total_steps < 1``, ``warmup_steps`` is outside [0, total_steps], or
            ``min_lr_ratio`` is outside [0, 1].
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ):
        if total_steps < 1:
            raise ValueError(f"total_steps must be positive, got {total_steps}.")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}.")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}.")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, self.lr_factor, last_epoch)

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier at iteration ``step`` (see the class docstring).

        Args:
            step: iteration index, from 0.

        Returns:
            the factor in [0, 1].
        """
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_for_epochs(
    optimizer: Optimizer,
    max_epochs: int,
    iterations_per_epoch: int,
    accumulation_steps: int = 1,
    warmup_epochs: int = 0,
    min_lr_ratio: float = 0.0,
) -> WarmupCosineLR:
    """A :class:`WarmupCosineLR` sized in epochs: the step arithmetic of the bundle, in one place.

    The schedule is stepped once per optimizer step, and an epoch of ``iterations_per_epoch`` iterations
    steps the optimizer ``ceil(iterations_per_epoch / accumulation_steps)`` times
    (:func:`~synclr_monai.engines.accumulation.total_optimizer_steps`). The warm-up lasts ``warmup_epochs``
    epochs, at most half the run (a short run still gets its cosine).

    Args:
        optimizer: the optimiser.
        max_epochs: epochs of the run.
        iterations_per_epoch: iterations (batches) per epoch (``len(train_loader)``).
        accumulation_steps: iterations per optimizer step.
        warmup_epochs: epochs of linear warm-up.
        min_lr_ratio: see :class:`WarmupCosineLR`.

    Returns:
        the scheduler; its ``total_steps`` is the run's number of optimizer steps.

    Raises:
        ValueError: for non-positive sizes or a negative ``warmup_epochs``.

    Examples:
        100 epochs of 3 iterations with accumulation 2 step the optimizer 200 times; 10 warm-up epochs are
        20 of them.
    """
    from synclr_monai.engines.accumulation import total_optimizer_steps

    if max_epochs < 1 or warmup_epochs < 0:
        raise ValueError(f"need max_epochs >= 1 and warmup_epochs >= 0, got {max_epochs} and {warmup_epochs}.")
    total = total_optimizer_steps(max_epochs, iterations_per_epoch, accumulation_steps)
    warmup = min(total_optimizer_steps(warmup_epochs, iterations_per_epoch, accumulation_steps), total // 2)
    return WarmupCosineLR(optimizer, warmup_steps=warmup, total_steps=total, min_lr_ratio=min_lr_ratio)
