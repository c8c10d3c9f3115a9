"""Online evaluation during training: kNN accuracy of the encoder on a small labelled set.

Every ``interval_epochs`` epochs the handler embeds a fixed set of labelled cubes with the current
encoder (eval mode, no gradients; the previous train/eval mode is restored afterwards) and writes
the cross-validated kNN accuracy (cosine) to ``engine.state.metrics[metric_name]`` and the log, where
the stats/W&B handlers pick it up. When training completes it evaluates once more, fully: kNN and
linear-probe accuracy as ``final/knn_accuracy`` and ``final/linear_probe_accuracy`` and a 2-D map of the
embeddings coloured by label (``plot_dir/final_embedding_2d.png``, its path in
``engine.state.final_embedding_plot``), which the W&B handler logs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from synclr_monai.evaluation.embeddings import compute_embeddings
from synclr_monai.evaluation.metrics import knn_accuracy, linear_probe_accuracy
from synclr_monai.networks.utils import unwrap_parallel

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["EmbeddingEvalHandler"]


class EmbeddingEvalHandler:
    """Ignite handler writing the kNN accuracy of the current encoder on a labelled set.

    Under DDP every rank evaluates (the set is small, and the unwrapped module's eval-mode forward
    needs no collective, so ranks cannot deadlock); every rank then holds the same metric.

    Args:
        cubes: ``[N, C, S, S, S]`` labelled cubes (array or tensor; kept on the CPU, moved per batch).
        labels: ``[N]`` class of each cube.
        interval_epochs: evaluate every this many epochs (at ``EPOCH_COMPLETED``).
        k: kNN neighbours.
        cv: stratified folds (or ``"loo"``) of the kNN estimate.
        batch_size: cubes per forward pass.
        encode_fn: maps ``[B, C, S, S, S]`` to ``[B, F]`` features; default ``engine.network.encode``
            (unwrapping DDP's ``.module``).
        metric_name: key in ``engine.state.metrics``.
        amp: mixed-precision forward pass.
        exec_at_start: also evaluate once when the run starts (the untrained encoder's baseline).
        logger_name: name of the logger the result goes to.
        final_eval: evaluate at ``COMPLETED`` too (kNN, linear probe, 2-D plot; see the module docstring).
        plot_dir: folder of the final 2-D plot (``None``: no plot).

    Raises:
        ValueError: if cubes are not 5-D, labels do not match them, ``interval_epochs`` < 1, or the
            labels do not allow cross-validation (fewer than two classes, or a class of one).
    """

    def __init__(
        self,
        cubes: torch.Tensor | np.ndarray,
        labels: Sequence | np.ndarray,
        interval_epochs: int = 1,
        k: int = 5,
        cv: int | str = 5,
        batch_size: int = 16,
        encode_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        metric_name: str = "knn_accuracy",
        amp: bool = False,
        exec_at_start: bool = False,
        logger_name: str = "synclr_monai.handlers.embedding_eval",
        final_eval: bool = True,
        plot_dir: str | os.PathLike | None = None,
    ) -> None:
        self.cubes = torch.as_tensor(cubes, dtype=torch.float32)
        self.labels = np.asarray(labels)
        if self.cubes.ndim != 5:
            raise ValueError(f"cubes must be [N, C, S, S, S], got shape {tuple(self.cubes.shape)}")
        if self.labels.ndim != 1 or len(self.labels) != len(self.cubes):
            raise ValueError(f"labels must be [N] with N = {len(self.cubes)}, got shape {self.labels.shape}")
        classes, counts = np.unique(self.labels, return_counts=True)
        if len(classes) < 2 or counts.min() < 2:
            sizes = dict(zip(classes.tolist(), counts.tolist()))
            raise ValueError(f"the labelled set needs at least two classes with two members each, got {sizes}")
        if interval_epochs < 1:
            raise ValueError(f"interval_epochs must be >= 1, got {interval_epochs}")
        self.interval_epochs = interval_epochs
        self.k = k
        self.cv = cv
        self.batch_size = batch_size
        self.encode_fn = encode_fn
        self.metric_name = metric_name
        self.amp = amp
        self.exec_at_start = exec_at_start
        self.logger = logging.getLogger(logger_name)
        self.final_eval = final_eval
        self.plot_dir = plot_dir
        self._last: tuple[int, np.ndarray] | None = None  # (iteration, embeddings) of the last evaluation

    @classmethod
    def from_dataset(
        cls,
        dataset_dir: str | os.PathLike,
        labels_csv: str | os.PathLike,
        cube_size: int,
        cache_dir: str | os.PathLike | None = None,
        label_maps: Mapping | None = None,
        label_column: str | None = None,
        input_mode: str = "channels",
        voxel_size: Sequence[float] | None = None,
        az_radius: int = 2,
        pose: str = "native",
        **kwargs: Any,
    ) -> EmbeddingEvalHandler:
        """Build the handler from a dataset root and a labels CSV (convenient in bundle configs).

        Args:
            dataset_dir, labels_csv, cube_size, cache_dir, label_maps, label_column, input_mode,
                voxel_size, az_radius, pose: see :func:`~synclr_monai.data.synapse_cubes.labelled_cubes_from_dataset`.
            kwargs: the remaining ``EmbeddingEvalHandler`` arguments.

        Returns:
            The handler.
        """
        # imported here: the data reader is needed only when the handler is built from a dataset
        from synclr_monai.data.synapse_cubes import labelled_cubes_from_dataset

        cubes, labels = labelled_cubes_from_dataset(
            dataset_dir, labels_csv, cube_size, cache_dir, label_maps, label_column, input_mode, voxel_size, az_radius,
            pose,
        )
        return cls(cubes, labels, **kwargs)

    def attach(self, engine: Engine) -> None:
        """Register the evaluation on ``engine`` every ``interval_epochs`` epochs.

        Args:
            engine: the trainer (an Ignite ``Engine``, e.g. MONAI's ``SupervisedTrainer``).
        """
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval_epochs), self)
        if self.exec_at_start:
            engine.add_event_handler(Events.STARTED, self)
        if self.final_eval:
            engine.add_event_handler(Events.COMPLETED, self.final_evaluation)

    def _device(self, engine: Engine, network: nn.Module | None) -> torch.device:
        device = getattr(engine.state, "device", None)
        if device is not None:
            return torch.device(device)
        if network is not None:
            param = next(network.parameters(), None)
            if param is not None:
                return param.device
        return torch.device("cpu")

    def _embed(self, engine: Engine) -> np.ndarray:
        """The labelled cubes' embeddings by the current encoder (eval mode, restored afterwards).

        The encoder only changes with iterations: a second call at the same iteration (the final evaluation
        right after the last epoch's) reuses the embeddings.
        """
        iteration = engine.state.iteration
        if self._last is not None and self._last[0] == iteration:
            return self._last[1]
        network = unwrap_parallel(getattr(engine, "network", None))
        encode = self.encode_fn
        if encode is None:
            if network is None or not hasattr(network, "encode"):
                raise AttributeError(
                    "EmbeddingEvalHandler needs encode_fn, or an engine.network with an encode() method"
                )
            encode = network.encode
        was_training = network.training if network is not None else False
        try:
            if network is not None:
                network.eval()
            _, vectors = compute_embeddings(
                encode,
                self.cubes,
                batch_size=self.batch_size,
                device=self._device(engine, network),
                amp=self.amp,
                progress=False,
            )
        finally:
            # Training continues right after this handler: BN/dropout must be back in train mode.
            if network is not None:
                network.train(was_training)
        self._last = (iteration, vectors)
        return vectors

    def __call__(self, engine: Engine) -> float:
        """Embed the labelled set, score it and record the score.

        Args:
            engine: the trainer.

        Returns:
            The kNN accuracy (mean over folds).

        Raises:
            AttributeError: if no ``encode_fn`` was given and ``engine.network`` has no ``encode``.
        """
        vectors = self._embed(engine)
        score = knn_accuracy(vectors, self.labels, k=self.k, metric="cosine", cv=self.cv)
        engine.state.metrics[self.metric_name] = score.mean
        self.logger.info(
            "epoch %d: %s = %.4f ± %.4f (N=%d)",
            engine.state.epoch,
            self.metric_name,
            score.mean,
            score.std,
            len(self.labels),
        )
        return score.mean

    def final_evaluation(self, engine: Engine) -> dict[str, float]:
        """kNN and linear-probe accuracy of the final encoder and its 2-D plot (a ``COMPLETED`` handler).

        Args:
            engine: the trainer.

        Returns:
            ``{"final/knn_accuracy": ..., "final/linear_probe_accuracy": ...}`` (also in ``engine.state.metrics``).
        """
        from synclr_monai.handlers.utils import is_main_process

        vectors = self._embed(engine)
        knn = knn_accuracy(vectors, self.labels, k=self.k, metric="cosine", cv=self.cv)
        probe = linear_probe_accuracy(vectors, self.labels, cv=self.cv)
        final = {"final/knn_accuracy": knn.mean, "final/linear_probe_accuracy": probe.mean}
        engine.state.metrics.update(final)
        self.logger.info(
            "final encoder: kNN %.4f ± %.4f, linear probe %.4f ± %.4f (N=%d)", *knn, *probe, len(self.labels)
        )
        if self.plot_dir is not None and is_main_process():
            from pathlib import Path

            from synclr_monai.evaluation.plots import plot_embedding_2d

            engine.state.final_embedding_plot = plot_embedding_2d(
                vectors, self.labels, Path(self.plot_dir) / "final_embedding_2d.png",
                title=f"final encoder, epoch {engine.state.epoch} (N={len(self.labels)})",
            )
        return final
