"""Progress bar and logged statistics (rank 0): Ignite's ProgressBar and MONAI's StatsHandler."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ignite.engine import Engine

from synclr_monai.handlers.utils import is_main_process

__all__ = ["ProgressHandler"]


class ProgressHandler:
    """Show a progress bar and log the trainer's output and metrics, from rank 0 only.

    The bar (Ignite ``ProgressBar``) shows ``output_keys`` of every iteration; MONAI's ``StatsHandler`` logs
    them every ``log_every`` iterations and ``engine.state.metrics`` (``epoch_loss``, ``fallback_count``...)
    after each epoch, to the logger ``name`` (configure it at INFO, as ``bundle/configs/logging.conf`` does).

    Args:
        output_keys: keys of ``engine.state.output`` to show.
        log_every: log every this many iterations (0: no per-iteration log lines).
        progress_bar: show the bar (turn off for non-interactive jobs).
        stats: log with ``StatsHandler``.
        name: the ``StatsHandler`` logger name.

    Raises:
        ValueError: for a negative ``log_every``.
    """

    def __init__(
        self,
        output_keys: Sequence[str] = ("loss", "lr", "top1"),
        log_every: int = 10,
        progress_bar: bool = True,
        stats: bool = True,
        name: str = "synclr_monai.train",
    ) -> None:
        if log_every < 0:
            raise ValueError(f"log_every must be >= 0, got {log_every}.")
        self.output_keys = tuple(output_keys)
        self.log_every = log_every
        self.progress_bar = progress_bar
        self.stats = stats
        self.name = name
        self.bar: Any = None
        self.stats_handler: Any = None

    def _select(self, output: Any) -> dict[str, Any]:
        if not isinstance(output, Mapping):
            return {}
        return {key: output[key] for key in self.output_keys if key in output}

    def _log_iteration(self, engine: Engine, event: int) -> bool:
        return self.log_every > 0 and event % self.log_every == 0

    def attach(self, engine: Engine) -> None:
        """Attach the bar and the stats logging (on rank 0; a no-op elsewhere).

        Args:
            engine: the trainer.
        """
        if not is_main_process():
            return
        if self.progress_bar:
            from ignite.handlers import ProgressBar

            self.bar = ProgressBar(persist=False)
            self.bar.attach(engine, output_transform=self._select)
        if self.stats:
            from monai.handlers import StatsHandler

            self.stats_handler = StatsHandler(
                iteration_log=self._log_iteration,
                epoch_log=True,
                output_transform=self._select,
                name=self.name,
            )
            self.stats_handler.attach(engine)
