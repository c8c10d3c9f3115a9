"""Export the trained encoder (backbone state dict) when training completes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from synclr_monai.handlers.utils import get_logger, is_main_process

__all__ = ["EncoderExportHandler"]


def _default_save_fn() -> Callable[..., Any]:
    # Imported when used: the networks package is only needed once there is an encoder to export.
    from synclr_monai.networks.export import save_encoder

    return save_encoder


class EncoderExportHandler:
    """At ``COMPLETED``, save the trainer's encoder with ``save_encoder`` (rank 0 only).

    The file is a plain state dict of the backbone (keys of the MONAI network it wraps) with a JSON sidecar;
    the sidecar records the training iteration and epoch besides ``metadata``. Runs stopped early (e.g. by
    :class:`~synclr_monai.handlers.nan_guard.NaNGuard`) do not export.

    Args:
        path: destination, by default the bundle's ``bundle/models/model.pt``.
        metadata: extra JSON-serialisable entries for the sidecar.
        save_fn: ``save_fn(network, path, metadata=...)``; default
            :func:`synclr_monai.networks.export.save_encoder`.
        name: logger name (default: the engine's logger).
    """

    def __init__(
        self,
        path: str | Path = "bundle/models/model.pt",
        metadata: Mapping[str, Any] | None = None,
        save_fn: Callable[..., Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        self.save_fn = save_fn
        self._name = name
        self.logger = logging.getLogger(name or __name__)
        self.exported: Path | None = None

    def attach(self, engine: Engine) -> None:
        """Register the export at ``COMPLETED``.

        Args:
            engine: a trainer with a ``network``.
        """
        self.logger = get_logger(self._name, engine)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Export ``engine.network``'s encoder (rank 0).

        Args:
            engine: the trainer.

        Raises:
            TypeError: when the engine has no ``network``.
        """
        if not is_main_process():
            return
        network = getattr(engine, "network", None)
        if network is None:
            raise TypeError(f"{type(engine).__name__} has no network to export.")
        metadata = {"iteration": engine.state.iteration, "epoch": engine.state.epoch, **self.metadata}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save = self.save_fn if self.save_fn is not None else _default_save_fn()
        save(network, self.path, metadata=metadata)
        self.exported = self.path
        self.logger.info(f"encoder exported to {self.path} (iteration {engine.state.iteration}).")
