"""HDF5 cache: hit, staleness after a source change or label-map change, corrupt files, atomicity."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile

from synclr_monai.data import bbox as bbox_module
from synclr_monai.data import cache as cache_module
from synclr_monai.data.bbox import find_bboxes
from synclr_monai.data.cache import load_bbox
from synclr_monai.data.label_maps import LabelMap, label_map_for


def _count_assemblies(monkeypatch):
    calls = []
    real = cache_module.plan_assembly

    def counting(*args, **kwargs):
        calls.append(args[0].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "plan_assembly", counting)
    return calls


def test_cache_hit_returns_the_same_volume(dataset_copy, tmp_path, monkeypatch):
    calls = _count_assemblies(monkeypatch)
    source = find_bboxes(dataset_copy)[0]
    cache_dir = tmp_path / "cache"
    first = load_bbox(source, cache_dir)
    second = load_bbox(source, cache_dir)
    assert calls == ["bbox1"]
    np.testing.assert_array_equal(first.raw, second.raw)
    np.testing.assert_array_equal(first.mask, second.mask)
    assert second.raw.dtype == np.float16 and second.mask.dtype == np.uint8
    assert second.synapses["Var1"].tolist() == first.synapses["Var1"].tolist()
    assert second.synapses["Var1"].map(type).eq(str).all()
    # no temporary left behind; the build lock's file stays (deleting it would race with a waiting process)
    assert sorted(p.name for p in cache_dir.iterdir()) == ["bbox1.h5", "bbox1.h5.lock"]


def test_changed_slice_rebuilds(dataset_copy, tmp_path, monkeypatch):
    calls = _count_assemblies(monkeypatch)
    source = find_bboxes(dataset_copy)[0]
    cache_dir = tmp_path / "cache"
    before = load_bbox(source, cache_dir)
    slice_path = sorted((dataset_copy / "raw" / "bbox1").iterdir())[3]
    img = tifffile.imread(slice_path)
    tifffile.imwrite(slice_path, 255 - img)
    st = slice_path.stat()
    os.utime(slice_path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    after = load_bbox(source, cache_dir)
    assert calls == ["bbox1", "bbox1"]
    assert not np.array_equal(before.raw[3], after.raw[3])


def test_label_map_and_dtype_are_part_of_the_fingerprint(dataset_copy, tmp_path, monkeypatch):
    calls = _count_assemblies(monkeypatch)
    source = find_bboxes(dataset_copy)[0]
    cache_dir = tmp_path / "cache"
    load_bbox(source, cache_dir)
    lm = label_map_for(1)
    load_bbox(source, cache_dir, {1: LabelMap(lm.mito, lm.vesicle, lm.mito, lm.mito)})
    vol32 = load_bbox(source, cache_dir, raw_dtype="float32")
    assert len(calls) == 3 and vol32.raw.dtype == np.float32


def test_corrupt_cache_is_rebuilt_with_a_warning(dataset_copy, tmp_path, monkeypatch):
    source = find_bboxes(dataset_copy)[0]
    cache_dir = tmp_path / "cache"
    good = load_bbox(source, cache_dir)
    path = cache_dir / "bbox1.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a truncated file, as after a crash of another writer
    calls = _count_assemblies(monkeypatch)
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = load_bbox(source, cache_dir)
    assert calls == ["bbox1"]
    np.testing.assert_array_equal(good.mask, again.mask)
    assert load_bbox(source, cache_dir).raw.shape == good.raw.shape  # and the rebuilt cache is valid


def test_failed_write_leaves_no_cache(dataset_copy, tmp_path, monkeypatch):
    source = find_bboxes(dataset_copy)[0]
    cache_dir = tmp_path / "cache"
    vol = bbox_module.assemble_bbox(source)
    import h5py

    real_create = h5py.Group.create_dataset

    def failing(self, name, *a, **k):
        if name == "mask":
            raise OSError("disk full")
        return real_create(self, name, *a, **k)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError, match="disk full"):
        cache_module.write_cache(vol, cache_dir / "bbox1.h5", "fp")
    assert list(cache_dir.iterdir()) == []
