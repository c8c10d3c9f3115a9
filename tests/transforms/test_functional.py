"""The fixed-parameter operations, against independent NumPy/SciPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.transforms import Rotate90, SpatialCrop
from scipy import ndimage

from synclr_monai.transforms import (
    ROTATION_PLANES,
    ViewParams,
    apply_view_params,
    crop_resize,
    cut_cube,
    mask_dropout,
    raw_gaussian_smooth,
    raw_intensity,
    retained_voxels,
    rotate90,
)


def is_binary(x) -> bool:
    a = np.asarray(x)
    return bool(np.all((a == 0) | (a == 1)))


def _identity_params(s: int, **over) -> ViewParams:
    base = dict(
        rot_plane=[0],
        rot_k=[0],
        scale=[1.0],
        shift=[0.0],
        blur=[False],
        sigma=[[0.5] * 3],
        crop_start=[[0, 0, 0]],
        crop_size=[[s] * 3],
        dropout=[False],
    )
    base.update(over)
    return ViewParams(**base)


def _linear_ref(a: np.ndarray, out: int, axis: int) -> np.ndarray:
    """Half-pixel (align_corners=False) linear resampling along one axis, with edge clamping."""
    n = a.shape[axis]
    src = np.clip((np.arange(out) + 0.5) * n / out - 0.5, 0, None)
    return np.apply_along_axis(lambda v: np.interp(src, np.arange(n), v), axis, a)


def _erf_kernel(sigma: float) -> np.ndarray:
    tail = int(max(sigma * 4.0, 0.5) + 0.5)
    c = 1.0 / (math.sqrt(2.0) * sigma)
    return np.array([0.5 * (math.erf(c * (x + 0.5)) - math.erf(c * (x - 0.5))) for x in range(-tail, tail + 1)])


def test_cut_cube_values_and_zscore():
    rng = np.random.RandomState(0)
    raw = (rng.randn(1, 20, 24, 28) * 3 + 5).astype(np.float16)
    mask = (rng.random_sample((2, 20, 24, 28)) < 0.2).astype(np.uint8)
    cube = cut_cube(raw, mask, (2, 3, 4), 16)
    assert cube.shape == (3, 16, 16, 16) and cube.dtype == np.float32
    sl = (slice(2, 18), slice(3, 19), slice(4, 20))
    src = raw[0][sl].astype(np.float64)
    np.testing.assert_allclose(cube[0], (src - src.mean()) / src.std(), atol=1e-5)
    np.testing.assert_array_equal(cube[1:], mask[(slice(None), *sl)])
    assert not np.shares_memory(cube, raw)
    with pytest.raises(ValueError, match="does not fit"):
        cut_cube(raw, mask, (5, 0, 0), 16)


def test_cut_cube_constant_raw_gives_zeros():
    raw = np.full((1, 16, 16, 16), 3.0, dtype=np.float16)
    cube = cut_cube(raw, np.zeros((2, 16, 16, 16), np.uint8), (0, 0, 0), 16)
    assert np.all(cube[0] == 0)


@pytest.mark.parametrize("plane", range(3))
@pytest.mark.parametrize("k", range(4))
def test_rotate90_is_numpy_rot90(cube_factory, plane, k):
    cube = cube_factory(12, seed=plane * 4 + k)
    out = rotate90(cube, k, plane).numpy()
    a, b = ROTATION_PLANES[plane]
    np.testing.assert_array_equal(out, np.rot90(cube, k, axes=(a + 1, b + 1)))
    # an exact permutation of every channel's voxels
    for c in range(3):
        np.testing.assert_array_equal(np.sort(out[c], axis=None), np.sort(cube[c], axis=None))


def test_raw_intensity_touches_raw_only(cube):
    out = raw_intensity(cube, 1.3, -0.2).numpy()
    np.testing.assert_allclose(out[0], cube[0] * 1.3 - 0.2, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[1:], cube[1:])


@pytest.mark.parametrize("sigma", [0.1, 0.45, 1.0])
def test_raw_gaussian_smooth_matches_erf_kernel_reference(cube, sigma):
    out = raw_gaussian_smooth(cube, sigma).numpy()
    ref = cube[0].astype(np.float64)
    ker = _erf_kernel(sigma)
    for axis in range(3):
        ref = ndimage.correlate1d(ref, ker, axis=axis, mode="constant", cval=0.0)
    np.testing.assert_allclose(out[0], ref, atol=2e-5)
    np.testing.assert_array_equal(out[1:], cube[1:])


def test_crop_resize_matches_half_pixel_reference(cube):
    start, size = (1, 2, 0), (13, 13, 13)
    out = crop_resize(cube, start, size, out_size=16).numpy()
    assert out.shape == cube.shape
    crop = cube[:, 1:14, 2:15, 0:13].astype(np.float64)
    ref = crop[0]
    for axis in range(3):
        ref = _linear_ref(ref, 16, axis)
    np.testing.assert_allclose(out[0], ref, atol=1e-5)
    # nearest: output voxel j reads floor(j * n / S)
    idx = np.floor(np.arange(16) * (13 / 16)).astype(int)
    np.testing.assert_array_equal(out[1:], crop[1:][:, idx][:, :, idx][:, :, :, idx])
    assert is_binary(out[1:])


def test_crop_resize_identity_and_errors(cube):
    np.testing.assert_array_equal(crop_resize(cube, (0, 0, 0), (16, 16, 16)).numpy(), cube)
    with pytest.raises(ValueError, match="does not fit"):
        crop_resize(cube, (4, 0, 0), (13, 13, 13))


def test_mask_dropout(cube):
    out = mask_dropout(cube).numpy()
    assert not out[2].any()
    np.testing.assert_array_equal(out[:2], cube[:2])


def test_apply_view_params_identity_copies(cube):
    out = apply_view_params(cube, _identity_params(16))
    np.testing.assert_array_equal(out.numpy(), cube)
    out[0] += 1
    assert not np.array_equal(out.numpy(), cube)  # never a view of the input


def test_apply_view_params_rejects_bad_input(cube):
    with pytest.raises(ValueError, match="one cube"):
        apply_view_params(cube, ViewParams.concat([_identity_params(16)] * 2))
    with pytest.raises(ValueError, match="3 channels"):
        apply_view_params(cube[:2], _identity_params(16))
    with pytest.raises(ValueError, match="cube"):
        apply_view_params(cube[:, :8], _identity_params(16))


@pytest.mark.parametrize("seed", range(6))
def test_retained_voxels_matches_monai_tracking(seed):
    """Track voxel identities through MONAI's Rotate90 and SpatialCrop and count the component's."""
    rng = np.random.RandomState(seed)
    s = 16
    comp = np.zeros((s, s, s), dtype=bool)
    comp[3:9, 5:14, 2:7] = rng.random_sample((6, 9, 5)) < 0.7
    plane, k, edge = rng.randint(3), rng.randint(4), rng.randint(8, 16)
    start = rng.randint(0, s - edge + 1, size=3)
    params = _identity_params(s, rot_plane=[plane], rot_k=[k], crop_start=[start], crop_size=[[edge] * 3])
    ids = torch.arange(s**3, dtype=torch.float64).reshape(1, s, s, s)
    seen = SpatialCrop(roi_start=start, roi_end=start + edge)(Rotate90(k, ROTATION_PLANES[plane])(ids))
    expected = int(np.isin(np.flatnonzero(comp), np.asarray(seen).astype(np.int64).ravel()).sum())
    assert retained_voxels(comp, params) == expected
