"""Training cubes read out of core (issue 12): the cache's component table, H5Volume, data_mode chunked."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from synclr_monai.data import lazy
from synclr_monai.data.bbox import find_bboxes
from synclr_monai.data.bbox_loading import LoadBBoxd, bbox_data_list
from synclr_monai.data.cache import (
    COMPONENT_TABLE_MIN_SIZE,
    load_bbox,
    open_cached_bbox,
    read_cache_header,
    read_component_table,
)
from synclr_monai.data.dataset import ContrastiveCubeDataset
from synclr_monai.data.lazy import H5Volume, assembled_nbytes, choose_data_mode
from synclr_monai.transforms import cut_cube, find_cleft_components
from synclr_monai.transforms import sampling as sampling_module

CUBE = 16


@pytest.fixture(scope="module")
def cache_dir(synthetic_root, tmp_path_factory):
    """Caches of both synthetic bboxes (built once for the module)."""
    path = tmp_path_factory.mktemp("cache")
    for source in find_bboxes(synthetic_root):
        load_bbox(source, path)
    return path


def _datasets(root, cache_dir, **kw):
    args = dict(cube_size=CUBE, cubes_per_bbox=6, min_component_size=20, seed=3)
    args.update(kw)
    data = bbox_data_list(root)
    memory = ContrastiveCubeDataset(data, LoadBBoxd(cache_dir=cache_dir), **args)
    chunked = ContrastiveCubeDataset(data, LoadBBoxd(cache_dir=cache_dir, data_mode="chunked"), **args)
    return memory, chunked


def _assert_same_samples(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, b[key], rtol=0, atol=0)
        elif isinstance(value, dict):
            _assert_same_samples(value, b[key])
        else:
            np.testing.assert_array_equal(value, b[key])


def test_component_table_equals_components_of_the_whole_cleft(synthetic_root, cache_dir):
    for source in find_bboxes(synthetic_root):
        volume = load_bbox(source, cache_dir)
        path = cache_dir / f"{source.name}.h5"
        for min_size in (COMPONENT_TABLE_MIN_SIZE, 20, 100):
            table = read_component_table(path, min_size)
            whole = find_cleft_components(volume.cleft, min_size)
            assert table.shape == whole.shape and len(table) == len(whole)
            np.testing.assert_array_equal(table.starts, whole.starts)
            np.testing.assert_array_equal(table.stops, whole.stops)
            np.testing.assert_array_equal(table.sizes, whole.sizes)
            for m, w in zip(table.masks, whole.masks):
                np.testing.assert_array_equal(m, w)
        assert len(read_component_table(path, COMPONENT_TABLE_MIN_SIZE)) > 0
        # what the table cannot give
        assert read_component_table(path, COMPONENT_TABLE_MIN_SIZE - 1) is None
        assert read_component_table(path, 20, connectivity=6) is None
        header = read_cache_header(path)
        assert header.cleft_voxels == int(np.count_nonzero(volume.cleft)) > 0
        assert header.shape == volume.shape and header.mask_channels == 3
        assert header.nbytes == volume.raw.nbytes + volume.mask.nbytes == assembled_nbytes(source)


def test_h5volume_indexes_like_the_array(synthetic_root, cache_dir):
    source = find_bboxes(synthetic_root)[0]
    volume = load_bbox(source, cache_dir)
    header = read_cache_header(cache_dir / "bbox1.h5")
    raw = H5Volume(header.path, "raw", header.shape, header.raw_dtype, add_channel=True)
    mask = H5Volume(header.path, "mask", (3, *header.shape), "uint8", packed_bits=True)
    assert (raw.shape, mask.shape) == tuple(v.shape for v in header.volumes())
    arrays = {"raw": volume.raw[None], "mask": volume.mask}
    keys = [
        (0, slice(3, 20), slice(10, 40), slice(0, 96)),
        (slice(None), slice(3, 20), slice(10, 40), slice(5, 9)),
        (slice(0, 0),),  # the empty selection CheckBBoxd-style code makes: no read
        (-1, 5),
        (slice(None), 39, slice(None, None, 7)),
        (slice(2, 0, -1), slice(1, 30)),  # channels in reverse
    ]
    for name, lazy_volume in (("raw", raw), ("mask", mask)):
        assert lazy_volume.shape == arrays[name].shape and lazy_volume.dtype == arrays[name].dtype
        for key in keys:
            np.testing.assert_array_equal(lazy_volume[key], arrays[name][key])
        with pytest.raises(TypeError, match="out of core"):
            np.asarray(lazy_volume)
        with pytest.raises(TypeError, match="ints and slices"):
            lazy_volume[..., 0]
    for start in ((0, 0, 0), (24, 80, 80), (10, 33, 57)):
        for context in (None, 24):
            np.testing.assert_array_equal(
                cut_cube(raw, mask, start, CUBE, context=context, pad=True),
                cut_cube(volume.raw[None], volume.mask, start, CUBE, context=context, pad=True),
            )


@pytest.mark.parametrize("sampling", ["random", "mask_aware"])
@pytest.mark.parametrize("views", [True, False])
def test_chunked_samples_equal_memory_samples(synthetic_root, cache_dir, sampling, views):
    memory, chunked = _datasets(synthetic_root, cache_dir, sampling=sampling, views=views)
    for i in range(chunked.n_bboxes):
        item = chunked.cache[i]
        assert isinstance(item["raw"], H5Volume) and isinstance(item["mask"], H5Volume)
        assert len(pickle.dumps({k: item[k] for k in ("raw", "mask", "cleft_components")})) < 50_000
    for index in range(len(memory)):
        _assert_same_samples(memory[index], chunked[index])


def test_mask_aware_sampling_from_the_table_picks_valid_components(synthetic_root, cache_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("chunked mode labelled a whole cleft channel")

    monkeypatch.setattr(sampling_module, "find_cleft_components", refuse)
    monkeypatch.setattr(lazy, "_POOL", lazy.OrderedDict())
    min_size = 40
    ds = ContrastiveCubeDataset(
        bbox_data_list(synthetic_root),
        LoadBBoxd(cache_dir=cache_dir, data_mode="chunked"),
        cube_size=CUBE,
        cubes_per_bbox=8,
        sampling="mask_aware",
        views=False,
        min_component_size=min_size,
        min_shared_fraction=0.5,
    )
    assert not lazy._POOL, "building the dataset opened no cache file for reading"
    for i in range(ds.n_bboxes):
        item = ds.cache[i]
        comps = item["cleft_components"]
        assert len(comps) > 0 and (comps.sizes >= min_size).all()
        for k in range(len(comps)):  # each component lies on cleft voxels of the cache
            box = tuple(slice(a, b) for a, b in zip(comps.starts[k], comps.stops[k]))
            cleft = item["mask"][(1, *box)]
            assert cleft[comps.masks[k]].all() and comps.masks[k].sum() == comps.sizes[k]
    for index in range(len(ds)):
        s = ds[index]
        assert s["fallback"] == 0
        cleft_in_cube = int(s["image"][2].sum())  # the cube's cleft channel (views made on the device later)
        assert cleft_in_cube >= 0.5 * min_size


def test_a_lower_min_size_than_the_table_rebuilds_with_a_warning(synthetic_root, cache_dir):
    source = find_bboxes(synthetic_root)[0]
    item = LoadBBoxd(cache_dir=cache_dir, data_mode="chunked")({"bbox": source})
    with pytest.warns(UserWarning, match=rf"holds components of >= {COMPONENT_TABLE_MIN_SIZE} voxels.*min_component_size 2"):
        comps = item["mask"].cleft_components(1, 2, 26)
    whole = find_cleft_components(load_bbox(source, cache_dir).cleft, 2)
    np.testing.assert_array_equal(comps.sizes, whole.sizes)
    with pytest.raises(ValueError, match="cleft channel"):
        item["mask"].cleft_components(0, 20, 26)


def test_workers_open_their_own_handles(synthetic_root, cache_dir, monkeypatch):
    _, chunked = _datasets(synthetic_root, cache_dir, sampling="mask_aware")
    serial = [chunked[i] for i in range(len(chunked))]  # the parent opens the files before forking ...
    assert lazy._POOL and lazy._POOL_PID is not None
    loader = DataLoader(chunked, batch_size=1, num_workers=2, collate_fn=lambda b: b[0])
    parallel = list(loader)  # ... the workers do not use its handles
    for a, b in zip(serial, parallel):
        _assert_same_samples(a, b)
    assert len(lazy._POOL) <= lazy.MAX_OPEN_FILES


def test_the_pool_keeps_few_files_open(synthetic_root, cache_dir, monkeypatch):
    monkeypatch.setattr(lazy, "MAX_OPEN_FILES", 1)
    lazy.close_open_files()
    _, chunked = _datasets(synthetic_root, cache_dir)
    for i in range(4):  # alternating bboxes: each read reopens the other file
        chunked[i]
        assert len(lazy._POOL) == 1
    lazy.close_open_files()
    assert not lazy._POOL


def test_choose_data_mode(synthetic_root):
    data = bbox_data_list(synthetic_root)
    total = sum(assembled_nbytes(item["bbox"]) for item in data)
    assert total == 2 * 40 * 96 * 96 * 5
    assert choose_data_mode("auto", data, max_cache_gb=total / 1e9) == "memory"
    assert choose_data_mode("auto", data, max_cache_gb=total / 2e9) == "chunked"
    assert choose_data_mode("chunked", data, max_cache_gb=100) == "chunked"
    assert choose_data_mode("memory", data, max_cache_gb=0) == "memory"
    with pytest.raises(ValueError, match="data_mode"):
        choose_data_mode("disk", data)
    with pytest.raises(ValueError, match="max_cache_gb"):
        choose_data_mode("auto", data, max_cache_gb=-1)
    with pytest.raises(ValueError, match="cache_dir"):
        LoadBBoxd(data_mode="chunked")
    with pytest.raises(ValueError, match="choose_data_mode"):
        LoadBBoxd(cache_dir="c", data_mode="auto")


def test_chunked_mode_applies_the_label_checks_from_the_header(dataset_copy, tmp_path):
    from synclr_monai.data.io import DataFormatError
    from synclr_monai.data.label_maps import LabelMap, label_map_for

    source = find_bboxes(dataset_copy)[0]
    lm = label_map_for(1)
    wrong = {1: LabelMap(lm.mito, lm.vesicle, 99, 99)}  # a cleft value the mask does not hold
    with pytest.raises(DataFormatError, match="no cleft voxel"):
        open_cached_bbox(source, tmp_path / "cache", wrong)
    cached = open_cached_bbox(source, tmp_path / "cache", wrong, require_labels=False)
    assert cached.cleft_voxels == 0
    assert len(read_component_table(cached.path, 20)) == 0
