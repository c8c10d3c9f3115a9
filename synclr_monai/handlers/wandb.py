"""Weights & Biases logging through Ignite's ``WandBLogger``: offline unless asked otherwise, rank 0 only.

Besides metrics, a completed run logs its files as W&B artefacts (as the seed's training did): the periodic
checkpoints, the best checkpoint, the final checkpoint and the exported encoder, and the final embedding
evaluation (kNN, linear probe, the 2-D plot) when an :class:`~synclr_monai.handlers.EmbeddingEvalHandler`
computed one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from synclr_monai.handlers.utils import is_main_process, iteration_step

__all__ = ["WANDB_MODES", "WandBHandler", "resolve_wandb_mode"]

logger = logging.getLogger(__name__)

#: checkpoint kinds (file-name prefixes of CheckpointHandler) and the artefact each goes to
_CHECKPOINT_ARTIFACTS = (("checkpoint", "checkpoints"), ("best", "best-checkpoint"), ("final", "final-checkpoint"))

#: accepted W&B modes.
WANDB_MODES = ("offline", "online", "disabled")


def resolve_wandb_mode(mode: str | None = None) -> str:
    """The W&B mode to use: ``mode`` if given, else the ``WANDB_MODE`` environment variable, else offline.

    Offline is the default because training machines often have no internet access; the run directory can
    be uploaded later with ``wandb sync``.

    Args:
        mode: ``"offline"``, ``"online"``, ``"disabled"`` or ``None``.

    Returns:
        the mode.

    Raises:
        ValueError: for any other mode (from the argument or the environment).
    """
    chosen = mode if mode is not None else os.environ.get("WANDB_MODE") or "offline"
    if chosen not in WANDB_MODES:
        source = "mode" if mode is not None else "WANDB_MODE"
        raise ValueError(f"{source} must be one of {WANDB_MODES}, got {chosen!r}.")
    return chosen


class WandBHandler:
    """Log the trainer's per-iteration output and per-epoch metrics to W&B, from rank 0 only.

    Per iteration (every ``log_every``): ``train/loss``, ``train/lr``, ``train/top1`` (``output_keys``); per
    epoch: every entry of ``engine.state.metrics`` (e.g. ``train/epoch_loss``, ``train/fallback_count``). The
    W&B step is the engine's iteration. On other ranks, ``attach`` does nothing and no run is created.
    The run is finished when training completes or fails.

    When the run completes, after every other ``COMPLETED`` handler (the final checkpoint and the encoder
    export happen there), it logs artefacts named after the run (``<kind>-<run id>``, so each run has its
    own versions): ``checkpoints`` (the periodic checkpoints left in ``checkpoint_dir``), ``best-checkpoint``,
    ``final-checkpoint`` (type ``checkpoint``) and ``encoder`` (type ``model``: the export and its JSON
    sidecar), and the final embedding evaluation: ``final/*`` metrics of ``engine.state.metrics`` and the
    plot at ``engine.state.final_embedding_plot``. Offline runs keep them for ``wandb sync``.

    Args:
        project: W&B project.
        mode: ``"offline"`` / ``"online"`` / ``"disabled"``; ``None``: ``$WANDB_MODE`` or ``"offline"``.
        config: the run's configuration (hyper-parameters) to record.
        dir: parent directory of the local ``wandb/`` run folder (created if needed).
        name: run name.
        log_every: log the output every this many iterations.
        output_keys: keys of ``engine.state.output`` to log (those present).
        tag: prefix of the logged names.
        checkpoint_dir: where the checkpoints are (``None``: no checkpoint artefacts).
        encoder_path: the exported encoder (``None``: no encoder artefact).
        log_artifacts: log the artefacts at the end of a completed run.
        init_kwargs: more ``wandb.init`` arguments (``entity``, ``tags``, ``id``, ``resume``...).

    Raises:
        ValueError: for an invalid ``mode`` or ``log_every``.
    """

    def __init__(
        self,
        project: str = "synclr-monai",
        mode: str | None = None,
        config: Mapping[str, Any] | None = None,
        dir: str | Path | None = None,
        name: str | None = None,
        log_every: int = 1,
        output_keys: Sequence[str] = ("loss", "lr", "top1"),
        tag: str = "train",
        checkpoint_dir: str | Path | None = None,
        encoder_path: str | Path | None = None,
        log_artifacts: bool = True,
        **init_kwargs: Any,
    ) -> None:
        if log_every < 1:
            raise ValueError(f"log_every must be positive, got {log_every}.")
        if mode is not None:
            resolve_wandb_mode(mode)  # fail at construction, not at the start of training
        self.project = project
        self.mode = mode
        self.config = dict(config) if config is not None else None
        self.dir = None if dir is None else Path(dir)
        self.name = name
        self.log_every = log_every
        self.output_keys = tuple(output_keys)
        self.tag = tag
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.encoder_path = None if encoder_path is None else Path(encoder_path)
        self.log_artifacts = log_artifacts
        self.init_kwargs = init_kwargs
        self.logged_artifacts: list[str] = []  # names of the artefacts logged by the last completed run
        self.logger: Any = None  # the ignite WandBLogger, on rank 0 once attached

    def _select(self, output: Any) -> dict[str, Any]:
        if not isinstance(output, Mapping):
            return {}
        return {key: output[key] for key in self.output_keys if key in output}

    def attach(self, engine: Engine) -> None:
        """Start the W&B run (rank 0) and register the logging on ``engine``.

        Args:
            engine: the trainer.
        """
        if not is_main_process():
            return
        from ignite.handlers.wandb_logger import WandBLogger

        kwargs: dict[str, Any] = {"project": self.project, "mode": resolve_wandb_mode(self.mode), **self.init_kwargs}
        if self.config is not None:
            kwargs["config"] = self.config
        if self.name is not None:
            kwargs["name"] = self.name
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            kwargs["dir"] = str(self.dir)
        self.logger = WandBLogger(**kwargs)
        self.logger.attach_output_handler(
            engine,
            event_name=Events.ITERATION_COMPLETED(every=self.log_every),
            tag=self.tag,
            output_transform=self._select,
            global_step_transform=iteration_step,
        )
        self.logger.attach_output_handler(
            engine,
            event_name=Events.EPOCH_COMPLETED,
            tag=self.tag,
            metric_names="all",
            global_step_transform=iteration_step,
        )
        # The final checkpoint and the encoder export are written by COMPLETED handlers attached after this
        # one, and Ignite calls handlers in attachment order: registering the end of the run when the run
        # starts (every handler is attached by then) puts it after them.
        engine.add_event_handler(Events.STARTED, self._register_completion)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._close_and_reraise)

    def _register_completion(self, engine: Engine) -> None:
        if not engine.has_event_handler(self._complete, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self._complete)

    def _complete(self, engine: Engine) -> None:
        """Log the final evaluation and the artefacts, then finish the run."""
        if self.logger is None:
            return
        try:
            self._log_final_evaluation(engine)
            if self.log_artifacts:
                self._log_artifacts()
        finally:
            self.close(engine)

    def _log_final_evaluation(self, engine: Engine) -> None:
        final = {k: v for k, v in engine.state.metrics.items() if str(k).startswith("final/")}
        plot = getattr(engine.state, "final_embedding_plot", None)
        if plot is not None and Path(plot).is_file():
            final["final/embedding_2d"] = self.logger._wandb.Image(str(plot))
        if final:
            self.logger.log(final, step=iteration_step(engine))

    def _log_artifacts(self) -> None:
        wandb = self.logger._wandb
        run = self.logger.run
        self.logged_artifacts = []
        groups: list[tuple[str, str, list[Path], list[str]]] = []
        if self.checkpoint_dir is not None and self.checkpoint_dir.is_dir():
            for prefix, name in _CHECKPOINT_ARTIFACTS:
                files = sorted(self.checkpoint_dir.glob(f"{prefix}_*.pt"))
                groups.append((name, "checkpoint", files, [prefix] if prefix != "checkpoint" else []))
        if self.encoder_path is not None:
            sidecar = self.encoder_path.with_suffix(".json")
            files = [p for p in (self.encoder_path, sidecar) if p.is_file()]
            groups.append(("encoder", "model", files if self.encoder_path.is_file() else [], []))
        for name, kind, files, aliases in groups:
            if not files:
                logger.info("W&B: no files for the %s artefact", name)
                continue
            artifact = wandb.Artifact(f"{name}-{run.id}", type=kind, metadata={"run": run.id, "files": [f.name for f in files]})
            for path in files:
                artifact.add_file(str(path), name=path.name)
            run.log_artifact(artifact, aliases=["latest", *aliases])
            self.logged_artifacts.append(artifact.name)

    @property
    def run_dir(self) -> Path | None:
        """The local run directory (rank 0, while the run is open), else ``None``."""
        run = getattr(self.logger, "run", None) if self.logger is not None else None
        return None if run is None else Path(run.dir).parent

    def close(self, engine: Engine | None = None, exit_code: int = 0) -> None:
        """Finish the W&B run (idempotent).

        Args:
            engine: the engine (unused; lets this be an event handler).
            exit_code: 0 for success.
        """
        if self.logger is not None:
            self.logger.finish(exit_code=exit_code)
            self.logger = None

    def _close_and_reraise(self, engine: Engine, error: BaseException) -> None:
        # Ignite stops re-raising once an EXCEPTION_RAISED handler exists, so re-raise after closing.
        self.close(engine, exit_code=1)
        raise error
