"""Baselines: random-weights encoder and PCA of the raw channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from synclr_monai.evaluation.baselines import (
    pca_embeddings,
    random_encoder,
    random_encoder_embeddings,
    raw_channel_matrix,
)
from synclr_monai.evaluation.metrics import knn_accuracy, linear_probe_accuracy


def _tiny_factory() -> nn.Module:
    return nn.Sequential(nn.Conv3d(3, 4, 3), nn.AdaptiveAvgPool3d(1), nn.Flatten())


def _toy_cubes(n_per_class: int = 10, s: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 is bright in the lower z half, class 1 in the upper half; masks identical."""
    rng = np.random.default_rng(seed)
    cubes = rng.normal(scale=0.5, size=(2 * n_per_class, 3, s, s, s)).astype(np.float32)
    cubes[:n_per_class, 0, : s // 2] += 2.0
    cubes[n_per_class:, 0, s // 2 :] += 2.0
    cubes[:, 1:] = 0.0
    cubes[:, 2, s // 2, s // 2, s // 2] = 1.0
    return cubes, np.repeat([0, 1], n_per_class)


def test_random_encoder_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = random_encoder(_tiny_factory, seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)  # building the encoder did not consume the caller's stream
    b = random_encoder(_tiny_factory, seed=5)
    c = random_encoder(_tiny_factory, seed=6)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0].weight, c[0].weight)
    assert not a.training


def test_random_encoder_embeddings_shape_and_determinism():
    cubes, _ = _toy_cubes(3)
    ids, v1 = random_encoder_embeddings(cubes, _tiny_factory, seed=0, batch_size=4)
    _, v2 = random_encoder_embeddings(cubes, _tiny_factory, seed=0, batch_size=2)
    assert v1.shape == (6, 4) and v1.dtype == np.float32 and len(ids) == 6
    np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-6)


def test_random_backbone_by_name():
    pytest.importorskip("synclr_monai.networks")
    cubes, _ = _toy_cubes(2, s=16)
    _, v = random_encoder_embeddings(cubes, "resnet10", seed=0, batch_size=4)
    assert v.shape == (4, 512)


def test_raw_channel_matrix_and_pca_shapes():
    cubes, _ = _toy_cubes(5)
    raw = raw_channel_matrix(cubes)
    assert raw.shape == (10, 512) and raw.dtype == np.float32
    np.testing.assert_array_equal(raw[3], cubes[3, 0].ravel())
    np.testing.assert_array_equal(raw_channel_matrix(iter(cubes)), raw)  # an iterable works the same
    assert pca_embeddings(raw, n_components=4).shape == (10, 4)
    assert pca_embeddings(raw, n_components=32).shape == (10, 10)  # capped at N
    with pytest.raises(ValueError, match="differ in size"):
        raw_channel_matrix([cubes[0], cubes[1][:, :4]])


def test_pca_baseline_separates_raw_intensity_difference():
    cubes, y = _toy_cubes(10)
    emb = pca_embeddings(raw_channel_matrix(cubes), n_components=3)
    # the intensity difference is the main variance direction: the first component splits the classes
    first = emb[:, 0]
    assert (first[y == 0].max() < first[y == 1].min()) or (first[y == 1].max() < first[y == 0].min())
    assert knn_accuracy(emb, y, k=3).mean == 1.0
    assert linear_probe_accuracy(emb, y).mean == 1.0
