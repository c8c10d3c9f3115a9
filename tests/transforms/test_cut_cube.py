"""cut_cube's normalisation: the statistics of the cube's voxels inside the volume, zero padding, contexts."""

from __future__ import annotations

import numpy as np
import pytest

from synclr_monai.transforms.functional import cut_cube, zscore_

SHAPE = (20, 24, 28)


def volume(seed: int = 0, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    # a trend along z, so that statistics over different regions differ clearly
    raw = rng.randn(1, *SHAPE) * 2 + 5 + np.linspace(0, 8, SHAPE[0])[None, :, None, None]
    mask = (rng.random_sample((channels, *SHAPE)) < 0.2).astype(np.uint8)
    return raw.astype(np.float16), mask


def _zscored(src: np.ndarray, stats_src: np.ndarray) -> np.ndarray:
    s = stats_src.astype(np.float64)
    return (src.astype(np.float64) - s.mean()) / s.std()


def test_partly_outside_cube_uses_its_in_volume_voxels_and_pads_with_zero():
    raw, mask = volume(1)
    start, size = (-3, 18, 5), 10  # 3 slices before z = 0, 4 columns past y = 23
    cube = cut_cube(raw, mask, start, size, pad=True)
    assert cube.shape == (4, size, size, size)
    inside = (slice(3, 10), slice(0, 6), slice(0, 10))
    src = raw[0, 0:7, 18:24, 5:15]
    np.testing.assert_allclose(cube[0][inside], _zscored(src, src), atol=2e-5)
    region = cube[0][inside].astype(np.float64)
    assert abs(region.mean()) < 1e-5 and abs(region.std() - 1) < 1e-5
    pad = np.ones((size,) * 3, bool)
    pad[inside] = False
    assert np.all(cube[:, pad] == 0)  # the raw padding is 0 (the in-volume mean), the masks' too
    np.testing.assert_array_equal(cube[1:][(slice(None), *inside)], mask[:, 0:7, 18:24, 5:15])
    with pytest.raises(ValueError, match="does not fit"):
        cut_cube(raw, mask, start, size)  # without pad the cube must lie inside


def test_context_is_normalised_with_the_cube_statistics():
    raw, mask = volume(2)
    start, size, context = (4, 6, 8), 10, 16
    cube = cut_cube(raw, mask, start, size, context=context)
    assert cube.shape == (4, context, context, context)
    lo = [s - (context - size) // 2 for s in start]  # (1, 3, 5): the context lies inside the volume
    ctx_src = raw[0, lo[0] : lo[0] + context, lo[1] : lo[1] + context, lo[2] : lo[2] + context]
    cube_src = raw[0, 4:14, 6:16, 8:18]
    # every context voxel normalised with the S-cube's statistics, not the context's
    np.testing.assert_allclose(cube[0], _zscored(ctx_src, cube_src), atol=2e-5)
    assert not np.allclose(cube[0], _zscored(ctx_src, ctx_src), atol=1e-2)
    # so the central S-cube of the context is the plain cube
    m = (context - size) // 2
    np.testing.assert_allclose(cube[:, m : m + size, m : m + size, m : m + size], cut_cube(raw, mask, start, size), atol=1e-6)


def test_context_past_the_border_pads_with_zero():
    raw, mask = volume(3)
    start, size, context = (0, 0, 0), 8, 14
    cube = cut_cube(raw, mask, start, size, context=context, pad=True)
    m = (context - size) // 2
    assert np.all(cube[:, :m] == 0) and np.all(cube[:, :, :, :m] == 0)
    src = raw[0, : context - m, : context - m, : context - m]
    np.testing.assert_allclose(cube[0, m:, m:, m:], _zscored(src, raw[0, :8, :8, :8]), atol=2e-5)


def test_zscore_stats_region_and_constant():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    region = (slice(0, 1),)
    zscore_(x, region)
    assert abs(x[0].mean()) < 1e-6 and abs(x[0].std() - 1) < 1e-6 and x[1].min() > x[0].max()
    c = np.full((3, 3, 3), 2.0, np.float32)
    assert np.all(zscore_(c) == 0)
