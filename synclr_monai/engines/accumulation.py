"""Where an iteration falls in a gradient-accumulation group, and how many optimizer steps a run takes."""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["AccumulationPhase", "accumulation_phase", "total_optimizer_steps"]


class AccumulationPhase(NamedTuple):
    """The role of one iteration in its accumulation group.

    Attributes:
        zero_grad: the first iteration of the group: clear the gradients before its backward pass.
        step: the last iteration of the group: step the optimizer after its backward pass.
        group_size: the number of iterations in the group; each loss is divided by it so that the
            accumulated gradient is that of the mean loss over the group.
    """

    zero_grad: bool
    step: bool
    group_size: int


def accumulation_phase(iteration: int, epoch_length: int | None, steps: int) -> AccumulationPhase:
    """Place 1-based ``iteration`` in its group of ``steps`` iterations.

    Groups restart at every epoch when the epoch length is known, and the last group of an epoch is
    shortened when ``epoch_length`` is not a multiple of ``steps`` (so no gradient is carried into the
    next epoch or dropped); it is then weighted by its real size, unlike MONAI's ``SupervisedTrainer``,
    which divides that group's losses by ``steps`` too.

    Args:
        iteration: the engine's iteration counter (1 for the first iteration).
        epoch_length: iterations per epoch, or ``None`` when unknown (groups then run across epochs).
        steps: iterations per optimizer step (1: no accumulation).

    Returns:
        the :class:`AccumulationPhase`.

    Raises:
        ValueError: when ``iteration`` or ``steps`` is below 1.
    """
    if steps < 1 or iteration < 1:
        raise ValueError(f"iteration and steps must be positive, got iteration={iteration}, steps={steps}.")
    if steps == 1:
        return AccumulationPhase(True, True, 1)
    index = iteration - 1 if epoch_length is None else (iteration - 1) % epoch_length
    start = index - index % steps
    size = steps if epoch_length is None else min(steps, epoch_length - start)
    return AccumulationPhase(index == start, index == start + size - 1, size)


def total_optimizer_steps(epochs: int, iterations_per_epoch: int, accumulation_steps: int = 1) -> int:
    """The number of optimizer steps of a run: ``epochs * ceil(iterations_per_epoch / accumulation_steps)``.

    Accumulation groups restart with every epoch and the last group of an epoch is shortened (see
    :func:`accumulation_phase`), so an epoch steps the optimizer ``ceil(iterations / accumulation_steps)``
    times. This is the one place that counts the steps: the bundle config sizes the learning-rate schedule
    with it, :func:`~synclr_monai.engines.config_checks.check_training_config` reports it and
    :class:`~synclr_monai.engines.ContrastiveTrainer` refuses a schedule shorter than it.

    Args:
        epochs: epochs of the run (0 allowed, e.g. for a warm-up of no epochs).
        iterations_per_epoch: iterations (batches) per epoch, at least 1.
        accumulation_steps: iterations per optimizer step, at least 1.

    Returns:
        the number of optimizer steps.

    Raises:
        ValueError: for a negative ``epochs`` or non-positive ``iterations_per_epoch`` / ``accumulation_steps``.

    Examples:
        >>> total_optimizer_steps(100, 3, 2)
        200
    """
    if epochs < 0 or iterations_per_epoch < 1 or accumulation_steps < 1:
        raise ValueError(
            "need epochs >= 0, iterations_per_epoch >= 1 and accumulation_steps >= 1, got "
            f"{epochs}, {iterations_per_epoch}, {accumulation_steps}."
        )
    return epochs * math.ceil(iterations_per_epoch / accumulation_steps)
