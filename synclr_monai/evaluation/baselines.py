"""Reference embeddings that a learned encoder has to beat.

- ``random_init``: the same architecture with random (fixed-seed) weights, encoding the same cubes.
  It measures how much the architecture plus the masks alone give away.
- ``pca_raw``: PCA of the flattened raw EM channel of the same cubes, fitted on the set itself.
  It measures how much plain intensity statistics give away.

Both return ``[N, F]`` arrays aligned with the cubes, to be scored with the same metrics as the
learned embeddings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from torch import nn

from synclr_monai.evaluation.embeddings import compute_embeddings

__all__ = ["random_encoder", "random_encoder_embeddings", "raw_channel_matrix", "pca_embeddings"]

logger = logging.getLogger(__name__)


def random_encoder(
    backbone: str | Callable[[], nn.Module] = "resnet18",
    backbone_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> nn.Module:
    """A randomly initialised encoder, identical for the same seed.

    Args:
        backbone: a ``build_backbone`` name, or a zero-argument factory returning the module.
        backbone_kwargs: extra ``build_backbone`` arguments (ignored for a factory).
        seed: torch seed of the initialisation.

    Returns:
        The module, in eval mode.
    """
    # fork_rng: seeding must not disturb the caller's random stream (e.g. a training run).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if callable(backbone):
            network = backbone()
        else:
            from synclr_monai.networks import build_backbone

            network = build_backbone(backbone, in_channels=3, **dict(backbone_kwargs or {}))
    return network.eval()


def random_encoder_embeddings(
    cubes: Iterable[Any] | np.ndarray | torch.Tensor,
    backbone: str | Callable[[], nn.Module] = "resnet18",
    backbone_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    amp: bool = False,
    progress: bool = False,
    rotations: int = 1,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Embeddings of the cubes from a randomly initialised encoder of the given architecture.

    Args:
        cubes: anything :func:`~synclr_monai.evaluation.embeddings.compute_embeddings` accepts.
        backbone: ``build_backbone`` name or zero-argument factory.
        backbone_kwargs: extra ``build_backbone`` arguments.
        seed: initialisation seed.
        batch_size: cubes per forward pass.
        device: where to run.
        amp: mixed-precision forward pass.
        progress: show a progress bar.
        rotations: 1, or 24 to average over the cube's rotations as ``run_inference`` does.

    Returns:
        ``(ids, vectors)`` as from ``compute_embeddings``.
    """
    from synclr_monai.networks.rotation_average import RotationAveragedEncoder

    network = RotationAveragedEncoder(random_encoder(backbone, backbone_kwargs, seed), rotations)
    return compute_embeddings(network, cubes, batch_size=batch_size, device=device, amp=amp, progress=progress)


def raw_channel_matrix(cubes: Iterable[np.ndarray | torch.Tensor] | np.ndarray, channel: int = 0) -> np.ndarray:
    """Flatten one channel of each cube into the rows of a matrix.

    Args:
        cubes: ``[N, C, S, S, S]`` array or an iterable of ``[C, S, S, S]`` cubes.
        channel: the channel to keep (0: raw EM).

    Returns:
        float32 ``[N, S**3]``.

    Raises:
        ValueError: if the cubes have different shapes or there are none.
    """
    rows = [np.asarray(c[channel], dtype=np.float32).ravel() for c in cubes]
    if not rows:
        raise ValueError("no cubes given")
    sizes = {r.size for r in rows}
    if len(sizes) != 1:
        raise ValueError(f"cubes differ in size: {sorted(sizes)} voxels")
    return np.stack(rows)


def pca_embeddings(raw: np.ndarray, n_components: int = 32, seed: int = 0) -> np.ndarray:
    """PCA of flattened raw cubes, fitted on the set itself.

    Args:
        raw: ``[N, D]`` (e.g. from :func:`raw_channel_matrix`).
        n_components: wanted dimension; capped at ``min(N, D)``.
        seed: seed of the randomised SVD solver scikit-learn may choose.

    Returns:
        float32 ``[N, min(n_components, N, D)]``.

    Raises:
        ValueError: if ``raw`` is not 2-D or ``n_components`` < 1.
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 2:
        raise ValueError(f"raw must be [N, D], got shape {raw.shape}")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    n = min(n_components, *raw.shape)
    if n < n_components:
        logger.info("PCA baseline: %d components instead of %d (N=%d, D=%d)", n, n_components, *raw.shape)
    return PCA(n_components=n, random_state=seed).fit_transform(raw).astype(np.float32)
