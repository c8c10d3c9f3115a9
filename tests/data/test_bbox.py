"""Assembly of the 3-channel bbox volume on generated data in the real layout."""

from __future__ import annotations

import numpy as np
import pytest

from synclr_monai.data.assembly import assemble_bbox
from synclr_monai.data.bbox import find_bboxes, sheet_point, synapse_cube
from synclr_monai.data.io import DataFormatError, read_synapse_sheet, read_tiff_stack
from synclr_monai.data.label_maps import LabelMap, label_map_for


def test_find_bboxes_lists_every_part(synthetic_root):
    sources = find_bboxes(synthetic_root)
    assert [s.name for s in sources] == ["bbox1", "bbox2"]
    s = sources[1]
    assert s.raw == synthetic_root / "raw" / "bbox2"
    assert s.seg == synthetic_root / "seg" / "bbox2"
    assert s.mask == synthetic_root / "bbox_2"
    assert s.sheet == synthetic_root / "bbox2.xlsx"
    assert [x.name for x in find_bboxes(synthetic_root, numbers=[2])] == ["bbox2"]
    with pytest.raises(DataFormatError, match=r"\[5\]"):
        find_bboxes(synthetic_root, numbers=[5])


def test_assembled_channels_match_an_independent_reading(synthetic_root):
    source = find_bboxes(synthetic_root)[0]
    vol = assemble_bbox(source)
    raw_u8 = read_tiff_stack(source.raw)
    sem = read_tiff_stack(source.mask, "label")
    seg = read_tiff_stack(source.seg, "label")
    lm = label_map_for(1)

    assert vol.raw.shape == raw_u8.shape and vol.raw.dtype == np.float16
    # pre-synaptic, cleft and post-synaptic masks
    assert vol.mask.shape == (3, *raw_u8.shape) and vol.mask.dtype == np.uint8
    assert set(np.unique(vol.mask)) <= {0, 1}
    # raw is z-scored over the whole bbox, and a monotone map of the original intensities
    r = vol.raw.astype(np.float64)
    assert abs(r.mean()) < 1e-2 and abs(r.std() - 1) < 1e-2
    expected = (raw_u8 - raw_u8.mean()) / raw_u8.std()
    np.testing.assert_allclose(r, expected, atol=5e-3)
    # cleft channel is exactly cleft | cleft2
    np.testing.assert_array_equal(vol.cleft, np.isin(sem, [lm.cleft, lm.cleft2]))

    # the pre-synaptic channel is the side that holds the vesicles
    sheet = read_synapse_sheet(source.sheet)
    vesicle = sem == lm.vesicle
    assert len(vol.synapses) == len(sheet) and (vol.synapses["pre_side"] > 0).all()
    for _, row in vol.synapses.iterrows():
        side = int(row["pre_side"])
        pre_pt = sheet_point(row, f"side_{side}")
        post_pt = sheet_point(row, f"side_{3 - side}")
        assert vol.pre[pre_pt] == 1
        assert seg[pre_pt] == row["pre_seg_id"] and seg[post_pt] == row["post_seg_id"]
        z, y, x = sheet_point(row, "central")
        win = (slice(max(z - 20, 0), z + 21), slice(max(y - 20, 0), y + 21), slice(max(x - 20, 0), x + 21))
        in_pre = np.count_nonzero(vesicle[win] & (seg[win] == row["pre_seg_id"]))
        in_post = np.count_nonzero(vesicle[win] & (seg[win] == row["post_seg_id"]))
        assert in_pre > in_post
    # the post-synaptic segments are not in the channel (unless also pre of another synapse)
    pre_ids = set(vol.synapses["pre_seg_id"])
    for _, row in vol.synapses.iterrows():
        if row["post_seg_id"] not in pre_ids:
            assert vol.pre[sheet_point(row, f"side_{3 - int(row['pre_side'])}")] == 0
    # the post-synaptic channel is exactly the union of the post-synaptic segments
    post_ids = sorted({int(i) for i in vol.synapses["post_seg_id"] if i != 0})
    assert post_ids
    np.testing.assert_array_equal(vol.post, np.isin(seg, post_ids))
    for _, row in vol.synapses.iterrows():
        assert vol.post[sheet_point(row, f"side_{3 - int(row['pre_side'])}")] == 1


def test_label_map_override_changes_the_cleft_channel(synthetic_root):
    source = find_bboxes(synthetic_root)[0]
    lm = label_map_for(1)
    swapped = {1: LabelMap(mito=lm.mito, vesicle=lm.vesicle, cleft=lm.mito, cleft2=lm.mito)}
    vol = assemble_bbox(source, swapped)
    sem = read_tiff_stack(source.mask, "label")
    np.testing.assert_array_equal(vol.cleft, sem == lm.mito)


def test_nifti_roles_assemble_like_tiff(synthetic_root, tmp_path):
    import nibabel as nib
    import shutil

    root = tmp_path / "nii"
    (root / "raw").mkdir(parents=True)
    (root / "seg").mkdir()
    src = find_bboxes(synthetic_root, numbers=[1])[0]
    for folder, target, role in ((src.raw, root / "raw" / "bbox1.nii.gz", "raw"),
                                  (src.seg, root / "seg" / "bbox1.nii.gz", "label"),
                                  (src.mask, root / "bbox_1.nii.gz", "label")):
        vol = read_tiff_stack(folder, role)
        nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), np.eye(4)), target)
    shutil.copy(src.sheet, root / "bbox1.xlsx")
    (nii_src,) = find_bboxes(root)
    assert nii_src.raw.name == "bbox1.nii.gz"
    a, b = assemble_bbox(src), assemble_bbox(nii_src)
    np.testing.assert_array_equal(a.raw, b.raw)
    np.testing.assert_array_equal(a.mask, b.mask)


def test_synapse_cube_is_centred_and_zero_padded(synthetic_root):
    vol = assemble_bbox(find_bboxes(synthetic_root)[0])
    row = vol.synapses.iloc[0]
    z, y, x = sheet_point(row, "central")
    cube = synapse_cube(vol, row, 16)
    assert cube.shape == (3, 16, 16, 16) and cube.dtype == np.float32
    # the channels input: raw, pre, cleft (the post-synaptic mask only feeds the masked mode)
    np.testing.assert_array_equal(cube[1:], vol.mask[:2, z - 8 : z + 8, y - 8 : y + 8, x - 8 : x + 8])
    assert cube[2, 8, 8, 8] == vol.cleft[z, y, x] == 1
    assert abs(cube[0].mean()) < 1e-4 and abs(cube[0].std() - 1) < 1e-3
    # a cube larger than the volume: zero padding past every border
    big = synapse_cube(vol, row, 2 * max(vol.shape))
    assert big.shape[1:] == (2 * max(vol.shape),) * 3
    assert big[1:].sum() == vol.mask[:2].sum()
    assert np.all(big[1:, 0] == 0) and np.all(big[1:, -1] == 0)


def test_sheet_point_outside_volume_is_rejected(dataset_copy):
    import pandas as pd

    sheet = dataset_copy / "bbox1.xlsx"
    df = pd.read_excel(sheet, dtype={"Var1": str})
    df.loc[0, "central_coord_1"] = 10_000
    df.to_excel(sheet, index=False)
    with pytest.raises(DataFormatError, match=r"bbox1.xlsx.*outside"):
        assemble_bbox(find_bboxes(dataset_copy)[0])


def test_shape_mismatch_is_rejected(dataset_copy):
    first = sorted((dataset_copy / "seg" / "bbox1").iterdir())[0]
    first.unlink()
    with pytest.raises(DataFormatError, match=r"seg/bbox1"):
        assemble_bbox(find_bboxes(dataset_copy)[0])
