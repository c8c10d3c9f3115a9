"""Inference cubes read out of core (data_mode chunked) equal the cubes of assembled bboxes."""

from __future__ import annotations

import numpy as np
import pytest

from synclr_monai.data.bbox import find_bboxes
from synclr_monai.data.synapse_cubes import (
    LazyBBox,
    SynapseCubeDataset,
    iter_dataset_cubes,
    open_lazy_bbox,
    resolve_data_mode,
)


@pytest.mark.parametrize("input_mode", ["channels", "masked"])
def test_chunked_cubes_equal_memory_cubes(synthetic_root, tmp_path, input_mode):
    cache = tmp_path / "cache"
    memory = list(iter_dataset_cubes(synthetic_root, 24, cache, input_mode=input_mode, data_mode="memory"))
    chunked = list(iter_dataset_cubes(synthetic_root, 24, cache, input_mode=input_mode, data_mode="chunked"))
    assert [(b, v) for b, v, _ in memory] == [(b, v) for b, v, _ in chunked] and len(memory) == 6
    for (_, _, a), (_, _, b) in zip(memory, chunked):
        np.testing.assert_array_equal(a, b)


def test_chunked_cubes_with_anisotropic_voxels_equal_memory_cubes(synthetic_root, tmp_path):
    kw = {"voxel_size": (16.0, 8.0, 8.0), "cache_dir": tmp_path / "cache"}
    memory = [c for _, _, c in iter_dataset_cubes(synthetic_root, 16, data_mode="memory", **kw)]
    chunked = [c for _, _, c in iter_dataset_cubes(synthetic_root, 16, data_mode="chunked", **kw)]
    for a, b in zip(memory, chunked):
        np.testing.assert_array_equal(a, b)


def test_lazy_bbox_holds_no_voxels(synthetic_root, tmp_path):
    lazy = open_lazy_bbox(find_bboxes(synthetic_root)[0], tmp_path / "cache")
    assert isinstance(lazy, LazyBBox) and lazy.raw.shape == (1, *lazy.shape) and lazy.mask.shape == (3, *lazy.shape)
    with pytest.raises(TypeError, match="out of core"):
        np.asarray(lazy.raw)


def test_dataset_items_equal_in_both_modes(synthetic_root, tmp_path):
    cache = tmp_path / "cache"
    a = list(SynapseCubeDataset(synthetic_root, 16, cache, data_mode="memory"))
    ds = SynapseCubeDataset(synthetic_root, 16, cache, data_mode="auto", max_cache_gb=0)
    assert ds.data_mode == "chunked"  # nothing fits a budget of 0 GB
    b = list(ds)
    assert len(a) == len(b) == len(ds)
    for x, y in zip(a, b):
        assert (x["bbox_name"], x["Var1"]) == (y["bbox_name"], y["Var1"])
        np.testing.assert_array_equal(x["image"].numpy(), y["image"].numpy())


def test_data_mode_resolution(synthetic_root, tmp_path):
    sources = find_bboxes(synthetic_root)
    assert resolve_data_mode("auto", sources, tmp_path, max_cache_gb=8) == "memory"
    assert resolve_data_mode("auto", sources, tmp_path, max_cache_gb=0) == "chunked"
    assert resolve_data_mode("auto", sources, None, max_cache_gb=0) == "memory"  # no cache to read from
    with pytest.raises(ValueError, match="cache_dir"):
        resolve_data_mode("chunked", sources, None)
    with pytest.raises(ValueError, match="data_mode"):
        resolve_data_mode("lazy", sources, tmp_path)
