"""The batched torch path equals the per-sample MONAI path for the same random parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.layers.convutils import gaussian_1d

from synclr_monai.transforms import (
    AugmentConfig,
    BatchedTwoViewAugment,
    apply_view_params,
    batched_apply_view,
    gaussian_kernels_1d,
    sample_two_view_params,
)
from synclr_monai.transforms.batched import batched_crop_resize, batched_rotate90


def _batch(cube_factory, n: int, size: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([cube_factory(size, seed=s) for s in range(n)]))


def _reference(cubes: torch.Tensor, params) -> tuple[torch.Tensor, torch.Tensor]:
    v1 = torch.stack([apply_view_params(cubes[b], params.view1.select(b)) for b in range(len(cubes))])
    v2 = torch.stack([apply_view_params(cubes[b], params.view2.select(b)) for b in range(len(cubes))])
    return v1, v2


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"chunk_size": 8, "crop_method": "gather"},
        {"chunk_size": 3, "crop_method": "interpolate"},
        {"chunk_size": 2, "crop_method": "gather"},
    ],
)
def test_batched_equals_per_sample_monai_path(cube_factory, kwargs):
    cubes = _batch(cube_factory, 8, 20)
    cfg = AugmentConfig(blur_prob=0.7, crop_fraction=(0.6, 1.0), mask_dropout_prob=0.5)
    params = sample_two_view_params(np.random.RandomState(3), 8, 20, cfg)
    before = cubes.clone()
    v1, v2 = BatchedTwoViewAugment(cfg, **kwargs)(cubes, params)
    r1, r2 = _reference(cubes, params)
    assert v1.shape == v2.shape == cubes.shape and v1.dtype == torch.float32
    torch.testing.assert_close(v1, r1, rtol=0, atol=1e-5)
    torch.testing.assert_close(v2, r2, rtol=0, atol=2e-5)
    # masks: exactly equal (permutations, nearest neighbour, dropout)
    assert torch.equal(v1[:, 1:], r1[:, 1:]) and torch.equal(v2[:, 1:], r2[:, 1:])
    assert torch.equal(cubes, before)  # the input batch is left unchanged


def test_batched_covers_every_step():
    """The equality test above is meaningful: its parameters exercise every branch."""
    cfg = AugmentConfig(blur_prob=0.7, crop_fraction=(0.6, 1.0), mask_dropout_prob=0.5)
    p = sample_two_view_params(np.random.RandomState(3), 8, 20, cfg)
    assert len(set(zip(p.view1.rot_plane[p.view1.rot_k > 0], p.view1.rot_k[p.view1.rot_k > 0]))) >= 3
    assert 0 < p.view1.blur.sum() < 8 and 0 < p.view2.dropout.sum() < 8
    cropped = p.view2.crop_size[:, 0] < 20
    assert cropped.sum() >= 4
    assert (cropped & p.view2.blur).any() and (cropped & (p.view2.rot_k > 0)).any() and (~cropped).any()


@pytest.mark.parametrize("sigma", [0.1, 0.3, 0.6, 1.0, 2.2])
def test_gaussian_kernels_equal_monai(sigma):
    ker = gaussian_kernels_1d(np.array([sigma, 2.5]))[0]
    ref = gaussian_1d(torch.tensor(sigma), truncated=4.0, approx="erf")
    t = (len(ker) - len(ref)) // 2
    torch.testing.assert_close(ker[t : len(ker) - t], ref, rtol=0, atol=1e-7)
    assert torch.all(ker[:t] == 0) and torch.all(ker[len(ker) - t :] == 0)


@pytest.mark.parametrize("use_numpy", [True, False])
def test_batched_rotation_exact(cube_factory, use_numpy):
    cubes = _batch(cube_factory, 7, 12)
    k, plane = np.array([0, 1, 2, 3, 1, 3, 1]), np.array([2, 0, 1, 2, 2, 0, 0])
    out = batched_rotate90(cubes, k, plane, use_numpy=use_numpy)
    for b in range(7):
        a, c = ((0, 1), (0, 2), (1, 2))[plane[b]]
        assert torch.equal(out[b], torch.rot90(cubes[b], int(k[b]), (a + 1, c + 1)))
    # one group for the whole batch
    same = batched_rotate90(cubes, np.full(7, 3), np.full(7, 1), use_numpy=use_numpy)
    assert torch.equal(same, torch.rot90(cubes, 3, (2, 4)))
    with pytest.raises(ValueError, match="must not be the input"):
        batched_rotate90(cubes, k, plane, out=cubes)


@pytest.mark.parametrize("method", ["gather", "interpolate"])
def test_batched_crop_resize_keeps_shape_and_identity(cube_factory, method):
    cubes = _batch(cube_factory, 3, 12)
    same = batched_crop_resize(cubes, np.zeros((3, 3), int), np.full((3, 3), 12), method=method)
    assert torch.equal(same, cubes)
    out = batched_crop_resize(cubes, [[0, 1, 2], [3, 3, 3], [0, 0, 0]], [[9] * 3, [8] * 3, [12] * 3], method=method)
    assert out.shape == cubes.shape and torch.equal(out[2], cubes[2])
    with pytest.raises(ValueError, match="do not fit"):
        batched_crop_resize(cubes, [[5, 0, 0]] * 3, [[9] * 3] * 3, method=method)


def test_batched_reproducible_and_collated_params(cube_factory):
    cubes = _batch(cube_factory, 4, 16)
    a = BatchedTwoViewAugment().set_random_state(7)(cubes)
    b = BatchedTwoViewAugment().set_random_state(7)(cubes)
    c = BatchedTwoViewAugment().set_random_state(8)(cubes)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    params = sample_two_view_params(np.random.RandomState(0), 4, 16)
    as_tensors = {v: {k: torch.as_tensor(x) for k, x in d.items()} for v, d in params.to_dict().items()}
    x = BatchedTwoViewAugment()(cubes, params)
    y = BatchedTwoViewAugment()(cubes, as_tensors)
    assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])


def test_batched_bad_input(cube_factory):
    cubes = _batch(cube_factory, 2, 12)
    aug = BatchedTwoViewAugment()
    with pytest.raises(ValueError, match="parameter sets"):
        aug(cubes, sample_two_view_params(np.random.RandomState(0), 3, 12))
    # 4-channel cubes (raw, pre, cleft, post) are accepted since the post-synaptic channel; 2 and 5 are not
    with pytest.raises(ValueError, match=r"\[B, 3 or 4, S, S, S\]"):
        aug(cubes[:, :2])
    with pytest.raises(ValueError, match=r"\[B, 3 or 4, S, S, S\]"):
        aug(torch.cat([cubes, cubes[:, :2]], dim=1))
    with pytest.raises(ValueError, match=r"\[B, 3 or 4, S, S, S\]"):
        aug(cubes[..., :8])
    with pytest.raises(TypeError):
        aug(cubes.numpy())
    with pytest.raises(ValueError, match="exceed"):
        batched_apply_view(cubes, sample_two_view_params(np.random.RandomState(0), 2, 16).view2)
    with pytest.raises(ValueError, match="chunk_size"):
        BatchedTwoViewAugment(chunk_size=0)
