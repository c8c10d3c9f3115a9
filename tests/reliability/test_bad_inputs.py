"""Issue 13, items 1-4 and 6: inputs that used to give a silently wrong model now give a clear error or a correct result."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from synclr_monai.data.assembly import assemble_bbox
from synclr_monai.data.bbox import find_bboxes
from synclr_monai.data.bbox_loading import LoadBBoxd, bbox_data_list
from synclr_monai.data.cache import load_bbox, read_cache, source_fingerprint, write_cache
from synclr_monai.data.checks import check_dataset
from synclr_monai.data.dataset import ContrastiveCubeDataset
from synclr_monai.data.io import SHEET_COLUMNS, DataFormatError, read_tiff_stack
from synclr_monai.data.label_maps import label_map_for, resolve_label_maps
from synclr_monai.engines.config_checks import check_training_config


def _source(root, number=1):
    return next(s for s in find_bboxes(root) if s.number == number)


# ---- 1. NaN / inf voxels --------------------------------------------------------------------------------------------
def test_nonfinite_raw_voxels_are_reported_and_left_out_of_the_zscore(synthetic_root, dataset_copy):
    clean = assemble_bbox(_source(synthetic_root), raw_dtype="float32")
    path = dataset_copy / "raw" / "bbox1" / "slice_005.tif"
    sl = tifffile.imread(path).astype(np.float32)
    sl[10, 10], sl[20, 30] = np.nan, np.inf
    tifffile.imwrite(path, sl)

    report = check_dataset(dataset_copy)
    assert not report.ok
    assert any("slice_005.tif" in p and "2 non-finite voxel" in p for p in report.problems), report.problems

    with pytest.warns(UserWarning, match=r"2 non-finite raw voxel.*slice_005.tif \(2\)"):
        vol = assemble_bbox(_source(dataset_copy), raw_dtype="float32")
    assert np.isfinite(vol.raw).all()
    assert vol.raw[4, 10, 10] == 0 and vol.raw[4, 20, 30] == 0  # the documented replacement: the bbox mean
    # every other voxel is z-scored as in the clean volume (the statistics ignore the two bad voxels)
    keep = np.ones(vol.shape, bool)
    keep[4, 10, 10] = keep[4, 20, 30] = False
    np.testing.assert_allclose(vol.raw[keep], clean.raw[keep], atol=0.02)
    assert vol.raw.std() > 0.9  # before the fix the whole channel was zeros


# ---- 2. gaps in the slice numbering ---------------------------------------------------------------------------------
def test_a_slice_missing_from_all_three_stacks_is_an_error_naming_it(dataset_copy):
    for folder in ("raw/bbox1", "seg/bbox1", "bbox_1"):
        (dataset_copy / folder / "slice_009.tif").unlink()
    report = check_dataset(dataset_copy)
    gaps = [p for p in report.problems if "slice numbers 9 are missing" in p]
    assert len(gaps) == 3, report.problems  # raw, seg and mask, each named
    assert any("raw/bbox1" in p for p in gaps) and any("bbox_1" in p for p in gaps)
    with pytest.raises(DataFormatError, match=r"raw/bbox1: slice numbers 9 are missing"):
        read_tiff_stack(dataset_copy / "raw" / "bbox1")
    with pytest.raises(DataFormatError, match="slice numbers 9 are missing"):
        check_training_config(dataset_copy, cube_size=16, backbone="resnet10", batch_size=2)


def test_a_gap_in_one_stack_is_named_too(dataset_copy):
    (dataset_copy / "seg" / "bbox2" / "slice_017.tif").unlink()
    report = check_dataset(dataset_copy)
    assert any("seg/bbox2: slice numbers 17 are missing" in p for p in report.problems), report.problems


# ---- 3. label map that does not fit the masks -----------------------------------------------------------------------
def test_training_refuses_a_bbox_without_cleft_voxels_naming_the_values_found(synthetic_root, tmp_path):
    wrong = {2: {"mito": 1, "vesicle": 3, "cleft": 11, "cleft2": 12}}  # bbox2's masks hold 1..4
    data = bbox_data_list(synthetic_root)
    with pytest.raises(DataFormatError, match=r"bbox_2: bbox2 has no cleft voxel.*\(11, 12\).*values \[1, 2, 3, 4\]"):
        ContrastiveCubeDataset(data, load_transform=LoadBBoxd(cache_dir=tmp_path, label_maps=wrong), cube_size=16,
                               cubes_per_bbox=2)
    # the cache does not bypass the rule, and the user may opt out
    table = resolve_label_maps(wrong)
    vol = load_bbox(_source(synthetic_root, 2), cache_dir=tmp_path, label_maps=table, require_labels=False)
    assert not vol.cleft.any()
    with pytest.raises(DataFormatError, match="no cleft voxel"):
        load_bbox(_source(synthetic_root, 2), cache_dir=tmp_path, label_maps=table)


def test_training_refuses_a_bbox_where_no_synapse_has_a_presynaptic_segment(synthetic_root):
    lm = label_map_for(1).as_dict()
    wrong = {1: {**lm, "vesicle": 42}}  # no vesicle cloud anywhere: no synapse gets a pre-synaptic side
    with pytest.raises(DataFormatError, match=r"bbox1: none of its 3 synapses has a pre-synaptic segment.*42"):
        load_bbox(_source(synthetic_root, 1), label_maps=resolve_label_maps(wrong))


# ---- 4. a sheet with a header and no rows ---------------------------------------------------------------------------
def test_an_empty_sheet_is_a_check_warning_and_an_error_where_synapses_are_needed(dataset_copy):
    pd.DataFrame(columns=list(SHEET_COLUMNS)).to_excel(dataset_copy / "bbox2.xlsx", index=False)
    report = check_dataset(dataset_copy)
    assert report.ok and any("bbox2.xlsx" in w and "no synapse" in w for w in report.warnings), report.format()
    assert "1 warning(s)" in report.format()

    # random sampling does not need synapses; mask-aware sampling and inference do
    check_training_config(dataset_copy, cube_size=16, backbone="resnet10", batch_size=2)
    with pytest.raises(DataFormatError, match=r"bbox2.xlsx: bbox2's sheet lists no synapse.*mask-aware"):
        check_training_config(dataset_copy, cube_size=16, backbone="resnet10", batch_size=2, sampling="mask_aware")
    from synclr_monai.data.synapse_cubes import iter_dataset_cubes

    with pytest.raises(DataFormatError, match=r"bbox2.xlsx: bbox2's sheet lists no synapse"):
        list(iter_dataset_cubes(dataset_copy, 16))


# ---- 6. in-place corruption of the HDF5 cache -----------------------------------------------------------------------
def test_flipped_bytes_in_the_cache_never_load_as_data(synthetic_root, tmp_path):
    source = _source(synthetic_root)
    volume = assemble_bbox(source)
    fingerprint = source_fingerprint(source, label_map_for(1), "float16")
    path = write_cache(volume, tmp_path / "bbox1.h5", fingerprint)
    original = path.read_bytes()
    rng = np.random.default_rng(0)
    caught = 0
    for _trial in range(20):
        data = bytearray(original)
        for offset in rng.choice(len(data), size=64, replace=False):
            data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            loaded = read_cache(path, fingerprint)
        except Exception:  # what load_bbox turns into a rebuild
            caught += 1
            continue
        if loaded is None:  # a changed fingerprint/version: stale, rebuilt too
            caught += 1
            continue
        # whatever loads must be exactly what was written
        np.testing.assert_array_equal(loaded.raw, volume.raw)
        np.testing.assert_array_equal(loaded.mask, volume.mask)
        pd.testing.assert_frame_equal(loaded.synapses, volume.synapses)
    assert caught >= 15  # most trials hit the data (the unprotected cache loaded 18 of 20 silently)

    # through load_bbox a damaged cache is rebuilt (with a warning) and rewritten sound
    data = bytearray(original)
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])  # inside the volume data
    path.write_bytes(bytes(data))
    with pytest.raises(OSError):
        read_cache(path, fingerprint)
    with pytest.warns(UserWarning, match="unreadable cache"):
        rebuilt = load_bbox(source, cache_dir=tmp_path)
    np.testing.assert_array_equal(rebuilt.raw, volume.raw)
    assert read_cache(path, fingerprint) is not None
