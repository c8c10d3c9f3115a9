"""Small helpers shared by the handlers: the objects a training run saves, the dataset behind an engine."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import ignite.distributed as idist

__all__ = ["get_logger", "is_main_process", "iteration_step", "resolve_dataset", "training_objects"]


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only process): the one that writes logs and files.

    Returns:
        ``idist.get_rank() == 0``.
    """
    return idist.get_rank() == 0


def iteration_step(engine: Any, _event: Any = None) -> int:
    """The engine's iteration counter, as an Ignite ``global_step_transform`` (for every event).

    Args:
        engine: the engine.
        _event: the event being handled (unused).

    Returns:
        ``engine.state.iteration``.
    """
    return int(engine.state.iteration)


def training_objects(engine: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The objects of a resumable training state, found on a MONAI trainer.

    ``model`` (``engine.network``; Ignite's ``Checkpoint`` unwraps DDP), ``optimizer``, ``trainer`` (the engine:
    iteration, epoch length, max epochs), and ``scaler`` / ``lr_scheduler`` when the engine has them.

    Args:
        engine: a trainer with ``network`` and ``optimizer`` attributes.
        extra: more objects with ``state_dict``/``load_state_dict``; they override same-named entries.

    Returns:
        ``{name: object}``.

    Raises:
        TypeError: when the engine lacks ``network`` or ``optimizer``.
    """
    missing = [name for name in ("network", "optimizer") if getattr(engine, name, None) is None]
    if missing:
        raise TypeError(
            f"{type(engine).__name__} has no {missing}: expected a MONAI trainer such as ContrastiveTrainer."
        )
    objects: dict[str, Any] = {"model": engine.network, "optimizer": engine.optimizer, "trainer": engine}
    for name in ("scaler", "lr_scheduler"):
        obj = getattr(engine, name, None)
        if obj is not None:
            objects[name] = obj
    objects.update(extra or {})
    return objects


def resolve_dataset(engine: Any, dataset: Any, method: str) -> Any:
    """The dataset a handler acts on: ``dataset`` or the one behind the engine's data loader.

    Follows ``.dataset`` links (``DataLoader`` -> ``Subset`` -> ...) until an object with ``method`` is found.

    Args:
        engine: the engine (its ``data_loader`` is searched when ``dataset`` is ``None``).
        dataset: the dataset, or ``None``.
        method: the method the dataset must have, e.g. ``"set_sampling_mode"``.

    Returns:
        the dataset.

    Raises:
        TypeError: when no object with a callable ``method`` is found.
    """
    start = dataset if dataset is not None else getattr(engine, "data_loader", None)
    obj, seen = start, 0
    while obj is not None and seen < 8:
        if callable(getattr(obj, method, None)):
            return obj
        obj, seen = getattr(obj, "dataset", None), seen + 1
    raise TypeError(
        f"no dataset with a {method}() method found (from {type(start).__name__}); pass the dataset explicitly."
    )


def get_logger(name: str | None, engine: Any) -> logging.Logger:
    """``logging.getLogger(name)``, or the engine's logger when ``name`` is ``None`` (MONAI handler convention).

    Args:
        name: logger name or ``None``.
        engine: the engine.

    Returns:
        the logger.
    """
    return engine.logger if name is None else logging.getLogger(name)
