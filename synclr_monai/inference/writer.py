"""The embeddings writer of the inference workflow: collects every batch's features and ids, writes the file once."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from synclr_monai.evaluation.embeddings import write_embeddings

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["EmbeddingsWriter"]

logger = logging.getLogger(__name__)


class EmbeddingsWriter:
    """Ignite handler: the ``[B, F]`` predictions of an evaluator, with the batch's synapse ids, to ``embeddings.h5``.

    MONAI's writers (``SaveImage``, ``ClassificationSaver``) write images or one CSV of class scores, not the
    embeddings file (string ids, a float32 matrix and provenance attributes in one HDF5 file), hence this handler.
    On every iteration it takes ``engine.state.output["pred"]`` and the ``bbox_name`` / ``Var1`` lists of
    ``engine.state.batch`` (the evaluator runs with ``decollate=False``); when the run completes it writes
    ``embeddings.h5`` and ``embeddings.csv`` (:func:`~synclr_monai.evaluation.embeddings.write_embeddings`,
    atomically) in the order the batches came, which is the dataset's order.

    Under torch.distributed (inference under ``torchrun``, each rank embedding one contiguous block of the
    synapses, :class:`~synclr_monai.data.synapse_cubes.SynapseCubeDataset`) the blocks are gathered to rank 0,
    which writes the one file in rank order, i.e. in sheet order; the other ranks write nothing.

    Args:
        output_dir: folder of the files.
        attrs: provenance stored as attributes (``cube_size``, ``backbone``, ``checkpoint``, ...).
        pred_key: key of the features in the engine's output.
        id_keys: the batch keys of the synapse ids.

    Raises:
        ValueError: (at the end of the run) when no batch was seen, or at an iteration whose output is not
            ``[B, F]`` or whose batch lacks the ids.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        attrs: Mapping[str, Any] | None = None,
        pred_key: str = "pred",
        id_keys: tuple[str, str] = ("bbox_name", "Var1"),
    ) -> None:
        self.output_dir = Path(output_dir)
        self.attrs = dict(attrs or {})
        self.pred_key = pred_key
        self.id_keys = tuple(id_keys)
        self.path: Path | None = None
        self._ids: list[tuple[str, str]] = []
        self._vectors: list[np.ndarray] = []

    def attach(self, engine: Engine) -> None:
        """Collect at every iteration, write at the end, start afresh with every run.

        Args:
            engine: the evaluator.
        """
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._ids, self._vectors = [], []

    def _collect(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        pred = output[self.pred_key] if isinstance(output, Mapping) else output
        pred = torch.as_tensor(pred).detach().float().cpu()
        missing = [k for k in self.id_keys if not isinstance(batch, Mapping) or k not in batch]
        if missing:
            raise ValueError(
                f"EmbeddingsWriter: the batch lacks the id key(s) {missing} (run the evaluator with decollate=False)"
            )
        names, var1s = (list(map(str, batch[k])) for k in self.id_keys)
        if pred.ndim != 2 or pred.shape[0] != len(names):
            raise ValueError(
                f"EmbeddingsWriter: expected [B, F] features for B={len(names)} ids, got {tuple(pred.shape)}"
            )
        self._ids.extend(zip(names, var1s))
        self._vectors.append(pred.numpy())

    def _write(self, engine: Engine) -> None:
        if not self._vectors:
            raise ValueError("EmbeddingsWriter: no synapse was embedded")
        ids, vectors = list(self._ids), np.concatenate(self._vectors)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
            dist.gather_object((ids, vectors), parts, dst=0)
            if dist.get_rank() != 0:
                return
            ids = [i for part_ids, _ in parts for i in part_ids]
            vectors = np.concatenate([part_vectors for _, part_vectors in parts])
        frame = pd.DataFrame(ids, columns=list(self.id_keys))
        self.path, _ = write_embeddings(self.output_dir, frame, vectors, self.attrs)
        logger.info("wrote %d embeddings to %s", len(frame), self.path)
