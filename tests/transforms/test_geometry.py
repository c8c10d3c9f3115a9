"""One resample per view: MONAI's Affine (the reference), its batched twin and the context's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synclr_monai.transforms import AugmentConfig
from synclr_monai.transforms.functional import apply_view_params
from synclr_monai.transforms.geometry import (
    affine_resample,
    batched_affine_resample,
    batched_affine_resample_split,
    retained_voxels_affine,
)
from synclr_monai.transforms.params import random_rotations, sample_view_params, view_matrices


def smooth_volume(size: int, seed: int = 0) -> np.ndarray:
    """A ``[Z, Y, X]`` sum of a few long-wavelength plane waves (period >= 12 voxels)."""
    rng = np.random.RandomState(seed)
    grid = np.stack(np.meshgrid(*(np.arange(size, dtype=np.float64),) * 3, indexing="ij"), axis=-1)
    out = np.zeros((size,) * 3)
    for _ in range(4):
        k = rng.normal(size=3)
        k *= 2 * np.pi / (rng.uniform(12, 20) * np.linalg.norm(k))
        out += np.cos(grid @ k + rng.uniform(0, 2 * np.pi))
    return out.astype(np.float32)


def context_cube(size: int, seed: int = 0, p_mask: float = 0.3, channels: int = 4) -> np.ndarray:
    """``[K, C, C, C]``: a smooth raw channel and random binary masks."""
    rng = np.random.RandomState(seed)
    cube = np.empty((channels, size, size, size), dtype=np.float32)
    cube[0] = smooth_volume(size, seed) + 0.1 * rng.randn(size, size, size)
    cube[1:] = rng.random_sample((channels - 1, size, size, size)) < p_mask
    return cube


def _rot90_matrix(plane: tuple[int, int]) -> np.ndarray:
    """The map of ``np.rot90(m, 1, axes=plane)`` from output to input voxels, centred: out[.., i, .., j] = m[.., j, .., -i]."""
    a, b = plane
    m = np.eye(3)
    m[a, a] = m[b, b] = 0.0
    m[a, b] = 1.0  # input axis a reads output axis b
    m[b, a] = -1.0  # input axis b reads minus output axis a
    return m


@pytest.mark.parametrize("plane", [(0, 1), (0, 2), (1, 2)])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_turn_as_a_matrix_equals_rot90(plane, k):
    cube = context_cube(13, seed=k)
    matrix = np.linalg.matrix_power(_rot90_matrix(plane), k)
    out = affine_resample(cube, matrix, np.zeros(3), 13, linear_channels=0).numpy()
    ref = np.rot90(cube, k, axes=(plane[0] + 1, plane[1] + 1))
    np.testing.assert_array_equal(out[1:], ref[1:])  # masks: exactly the permutation
    np.testing.assert_allclose(out[0], ref[0], rtol=0, atol=1e-5)  # raw: on the grid, so no interpolation
    batched = batched_affine_resample(torch.from_numpy(cube)[None], matrix[None], np.zeros((1, 3)), 13)[0].numpy()
    np.testing.assert_array_equal(batched[1:], ref[1:])


def test_integer_offset_is_a_shift_and_the_centre_crop():
    cube = context_cube(16, seed=1)
    # offset (1, -2, 0): output voxel o reads context voxel o + (C - S) / 2 + offset
    out = affine_resample(cube, np.eye(3), np.array([1.0, -2.0, 0.0]), 10).numpy()
    np.testing.assert_array_equal(out[1:], cube[1:, 4:14, 1:11, 3:13])
    np.testing.assert_allclose(out[0], cube[0, 4:14, 1:11, 3:13], atol=1e-5)


def test_rotation_then_inverse_returns_the_cube():
    size = 33
    vol = smooth_volume(size, seed=3)
    rotations = random_rotations(np.random.RandomState(0), 4)
    c = (size - 1) / 2
    dist = np.linalg.norm(np.indices((size,) * 3).reshape(3, -1).T - c, axis=1).reshape((size,) * 3)
    # no padding reaches a voxel whose ball of the interpolation's reach lies inside both volumes
    central = dist < c - 2
    assert central.sum() > 1000
    for r in rotations:
        there = affine_resample(vol[None], r, np.zeros(3), size)
        back = affine_resample(there, r.T, np.zeros(3), size)[0].numpy()
        err = np.abs(back - vol)[central]
        assert err.mean() < 0.05 * vol.std(), (err.mean(), vol.std())
        assert err.max() < 0.25 * vol.std()
        # and it did turn: the rotated volume is not the original
        assert np.abs(there[0].numpy() - vol)[central].mean() > 0.2 * vol.std()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_affine_equals_monai_affine(seed):
    rng = np.random.RandomState(seed)
    b, c, s = 4, 21, 13
    cubes = np.stack([context_cube(c, seed=10 * seed + i) for i in range(b)])
    rot = random_rotations(rng, b)
    rot[0] = np.eye(3)  # one cube without rotation: flips, zoom and shift only
    flips = rng.random_sample((b, 3)) < 0.5
    zoom = rng.uniform(0.8, 1.25, size=b)
    voxel = (2.0, 1.0, 1.0) if seed == 2 else (1.0, 1.0, 1.0)
    affine = view_matrices(rot, flips, zoom, voxel)
    offset = rng.uniform(-2.0, 2.0, size=(b, 3))
    got = batched_affine_resample(torch.from_numpy(cubes), affine, offset, s)
    assert got.shape == (b, 4, s, s, s) and got.dtype == torch.float32
    for i in range(b):
        ref = affine_resample(cubes[i], affine[i], offset[i], s)
        torch.testing.assert_close(got[i, 0], ref[0], rtol=0, atol=1e-4)
        assert torch.equal(got[i, 1:], ref[1:]), f"cube {i}: masks differ in {(got[i, 1:] != ref[1:]).sum()} voxels"
        assert set(torch.unique(got[i, 1:]).tolist()) <= {0.0, 1.0}


def test_split_resample_equals_the_resample_of_the_joined_contexts():
    rng = np.random.RandomState(5)
    b, c, s = 3, 19, 11
    cubes = torch.from_numpy(np.stack([context_cube(c, seed=40 + i) for i in range(b)]))
    flips = rng.random_sample((b, 3)) < 0.5
    affine = view_matrices(random_rotations(rng, b), flips, rng.uniform(0.9, 1.1, b), (1, 1, 1))
    offset = rng.uniform(-1.5, 1.5, size=(b, 3))
    raw = cubes[:, :1].clone() * 2  # e.g. a jittered copy of the raw beside the caller's masks
    got = batched_affine_resample_split(raw, cubes[:, 1:], affine, offset, s)
    ref = batched_affine_resample(torch.cat([raw, cubes[:, 1:]], 1), affine, offset, s)
    assert got.shape == (b, 4, s, s, s) and torch.equal(got, ref)
    with pytest.raises(ValueError, match="do not match"):
        batched_affine_resample_split(raw, cubes[:2, 1:], affine, offset, s)


def test_retained_voxels_affine_counts_a_permutation_exactly():
    rng = np.random.RandomState(4)
    c, s = 20, 12
    mask = rng.random_sample((c, c, c)) < 0.2
    for flips, offset in (((False, False, False), (0, 0, 0)), ((True, False, True), (2, -3, 1)), ((True,) * 3, (-4, 4, 0))):
        affine = np.diag(np.where(flips, -1.0, 1.0))
        view = affine_resample(mask[None].astype(np.float32), affine, np.asarray(offset, float), s, linear_channels=())
        assert retained_voxels_affine(mask, affine, np.asarray(offset, float), s) == int(view.sum())


def _spatial_config(**kw) -> AugmentConfig:
    """Only the spatial step: no intensity jitter, blur or dropout."""
    return AugmentConfig(intensity_prob=0.0, blur_prob=0.0, mask_dropout_prob=0.0, **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"rotate3d_prob": 1.0, "flip_prob": 0.5, "zoom_range": (0.8, 1.2), "translate_fraction": 0.1},
        {"rotate3d_prob": 1.0, "zoom_range": (0.7, 0.7), "translate_fraction": 0.15},
        {"rotate3d_prob": 1.0, "zoom_range": (0.9, 1.1), "voxel_size": (3.0, 1.0, 1.0)},
        {"flip_prob": 0.5, "translate_fraction": 0.2},
        {"rotate3d_prob": 0.5},
    ],
)
@pytest.mark.parametrize("size", [12, 13])
def test_context_holds_every_output_voxel(kw, size):
    cfg = _spatial_config(**kw)
    c = cfg.context_size(size)
    assert c >= size and (c - size) % 2 == 0
    n = 200
    p = sample_view_params(np.random.RandomState(size), n, size, cfg, second_view=True)
    assert p.resampled.all()
    # the affine maths directly: every output voxel's source lies in [0, C - 1] (corners suffice: convexity)
    corners = np.array(np.meshgrid(*([0.0, size - 1.0],) * 3, indexing="ij")).reshape(3, -1).T - (size - 1) / 2
    src = np.einsum("nij,kj->nki", p.affine, corners) + p.offset[:, None, :] + (c - 1) / 2
    assert src.min() >= 0 and src.max() <= c - 1, (src.min(), src.max(), c)
    # the worst case of the draws is not far inside (the context is not needlessly large)
    if kw.get("rotate3d_prob", 0) == 1.0 and "voxel_size" not in kw:
        assert src.min() < 0.25 * c
    # so a view of an all-ones context has no zero voxel, in any channel
    ones = np.ones((4, c, c, c), dtype=np.float32)
    for i in range(0, n, 40):
        view = apply_view_params(ones, p.select(i))
        assert view.shape == (4, size, size, size)
        assert torch.all(view[1:] == 1)
        torch.testing.assert_close(view[0], torch.ones_like(view[0]), rtol=0, atol=1e-5)


def test_identity_draw_of_a_context_is_its_centre_cube():
    # flips only: an unflipped cube still yields the S-cube at the context's centre (not the context)
    cfg = _spatial_config(flip_prob=0.5)
    s = 10
    c = cfg.context_size(s)
    cube = context_cube(c, seed=5)
    p = sample_view_params(np.random.RandomState(0), 64, s, cfg)
    m = (c - s) // 2
    centre = cube[:, m : m + s, m : m + s, m : m + s]
    seen = set()
    for i in range(64):
        flips = tuple(ax + 1 for ax in range(3) if p.affine[i, ax, ax] < 0)
        seen.add(flips)
        view = apply_view_params(cube, p.select(i)).numpy()
        ref = np.flip(centre, flips) if flips else centre
        np.testing.assert_array_equal(view[1:], ref[1:])
        np.testing.assert_allclose(view[0], ref[0], rtol=0, atol=1e-5)
    assert () in seen and len(seen) == 8
