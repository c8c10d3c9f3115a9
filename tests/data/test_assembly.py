"""Slab-wise assembly (issue 12): a bbox's cache is built without holding a whole volume, with the same voxels."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from synclr_monai.data import assembly as assembly_module
from synclr_monai.data.assembly import ASSEMBLY_SLAB, assemble_bbox
from synclr_monai.data.bbox import VESICLE_SEARCH_RADIUS, assign_pre_synaptic, find_bboxes, sheet_point
from synclr_monai.data.cache import build_cache, write_cache
from synclr_monai.data.io import (
    DataFormatError,
    NiftiVolume,
    TiffStackVolume,
    open_volume,
    read_synapse_sheet,
    read_volume,
)
from synclr_monai.data.label_maps import label_map_for
from synclr_monai.data.lazy import pack_mask_bits, unpack_mask_bits
from synclr_monai.data.synthetic import generate_dataset
from synclr_monai.transforms import find_cleft_components

SHAPE = (150, 48, 56)  # three slabs of 64 planes, the last one partial


@pytest.fixture(scope="module")
def deep_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("assembly") / "data"
    generate_dataset(root, n_bboxes=1, shape=SHAPE, synapses_per_bbox=4, seed=5)
    return root


@pytest.fixture(scope="module")
def nifti_root(deep_root, tmp_path_factory) -> Path:
    """The same bbox with its three volumes as NIfTI files (stored x, y, z)."""
    import nibabel as nib

    root = tmp_path_factory.mktemp("nifti")
    (root / "raw").mkdir()
    (root / "seg").mkdir()
    (source,) = find_bboxes(deep_root)
    parts = ((source.raw, "raw", "raw/bbox1.nii.gz"), (source.seg, "label", "seg/bbox1.nii.gz"),
             (source.mask, "label", "bbox_1.nii.gz"))  # fmt: skip
    for src, role, dst in parts:
        vol = read_volume(src, role)
        nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), np.eye(4)).to_filename(root / dst)
    shutil.copy(source.sheet, root / source.sheet.name)
    return root


def _whole_volume_reference(source):
    """DESIGN.md's assembly on whole in-memory volumes, written out independently of the slab code."""
    raw, seg, sem = read_volume(source.raw), read_volume(source.seg, "label"), read_volume(source.mask, "label")
    label_map = label_map_for(source.number)
    pre, post = set(), set()
    for _, row in read_synapse_sheet(source.sheet).iterrows():
        centre, p1, p2 = (sheet_point(row, k) for k in ("central", "side_1", "side_2"))
        ids = (int(seg[p1]), int(seg[p2]))
        side = assign_pre_synaptic(seg, sem == label_map.vesicle, centre, ids, (p1, p2), VESICLE_SEARCH_RADIUS)
        if side and ids[side - 1]:
            pre.add(ids[side - 1])
            post.add(ids[2 - side]) if ids[2 - side] else None
    values = raw.astype(np.float64)
    zscored = (values - values.mean()) / values.std()
    mask = np.stack([np.isin(seg, sorted(pre)), np.isin(sem, label_map.cleft_values), np.isin(seg, sorted(post))])
    return zscored, mask.astype(np.uint8), tuple(int(v) for v in np.unique(sem) if v != 0)


@pytest.mark.parametrize("fmt", ["tiff", "nifti"])
def test_slab_assembly_equals_the_whole_volume_reference(deep_root, nifti_root, fmt):
    (source,) = find_bboxes(deep_root if fmt == "tiff" else nifti_root)
    zscored, mask, values = _whole_volume_reference(source)
    volume = assemble_bbox(source, raw_dtype="float32")
    assert volume.shape == SHAPE
    np.testing.assert_allclose(volume.raw, zscored, atol=1e-5)
    np.testing.assert_array_equal(volume.mask, mask)
    assert volume.label_values == values
    assert mask[0].any() and mask[1].any() and mask[2].any()  # the test covers every channel
    assert (volume.synapses["pre_seg_id"] != 0).all()


def test_build_cache_writes_what_write_cache_writes_for_the_assembled_bbox(deep_root, tmp_path):
    (source,) = find_bboxes(deep_root)
    streamed = build_cache(source, tmp_path / "streamed.h5", "fp")
    whole = write_cache(assemble_bbox(source), tmp_path / "whole.h5", "fp")
    with h5py.File(streamed) as a, h5py.File(whole) as b:
        for key in ("raw", "mask", "cleft_components/table", "cleft_components/masks"):
            np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=key)
        assert dict(a.attrs) == dict(b.attrs)
        # the table written slab by slab is cc3d's labelling of the whole cleft
        expected = find_cleft_components(unpack_mask_bits(b["mask"][()], 1), 10, 26)
        table = a["cleft_components/table"][()]
        np.testing.assert_array_equal(table[:, :3], expected.starts)
        np.testing.assert_array_equal(table[:, 6], expected.sizes)
        assert (table[:, 3] - table[:, 0] > 1).any()  # components span several planes


def test_building_a_cache_reads_slabs_and_windows_never_a_volume(deep_root, tmp_path, monkeypatch):
    reads: list[tuple[str, tuple[int, ...]]] = []

    class Recording:
        def __init__(self, volume, role):
            self.volume, self.role = volume, role
            self.shape, self.dtype, self.ndim = volume.shape, volume.dtype, 3

        def __getitem__(self, key):
            out = self.volume[key]
            reads.append((self.role, out.shape))
            return out

    real = assembly_module.open_volume
    monkeypatch.setattr(
        assembly_module, "open_volume", lambda path, role="raw", **kw: Recording(real(path, role, **kw), role)
    )
    (source,) = find_bboxes(deep_root)
    build_cache(source, tmp_path / "bbox1.h5", "fp")
    window = 2 * VESICLE_SEARCH_RADIUS + 1
    assert reads and all(np.prod(shape) <= max(ASSEMBLY_SLAB, window) * SHAPE[1] * SHAPE[2] for _, shape in reads)
    assert max(len(shape) and shape[0] for _, shape in reads) < SHAPE[0]
    planes_of_raw = sum(shape[0] for role, shape in reads if role == "raw")
    assert planes_of_raw == 2 * SHAPE[0]  # one pass for the z-score, one for the slabs


def test_lazy_readers_equal_whole_reads(deep_root, nifti_root):
    (tiff,) = find_bboxes(deep_root)
    (nifti,) = find_bboxes(nifti_root)
    keys = [np.s_[:], np.s_[3], np.s_[-1, 5:9], np.s_[..., 7], np.s_[70:130, 2:40, -20:], np.s_[149:200, :, 0]]
    for path, role in ((tiff.raw, "raw"), (tiff.seg, "label"), (nifti.raw, "raw"), (nifti.mask, "label")):
        whole = read_volume(path, role)
        lazy = open_volume(path, role, cache_slices=4)
        assert isinstance(lazy, (TiffStackVolume, NiftiVolume)) and lazy.shape == whole.shape
        for key in keys:
            np.testing.assert_array_equal(lazy[key], whole[key], err_msg=f"{path} {key}")
        with pytest.raises(IndexError):
            lazy[0, 0, 0, 0]
        with pytest.raises(IndexError):
            lazy[::2]


def test_a_slice_of_another_shape_is_named_when_read(deep_root, tmp_path):
    import tifffile

    root = tmp_path / "data"
    shutil.copytree(deep_root, root)
    (source,) = find_bboxes(root)
    bad = sorted(source.raw.iterdir())[100]
    tifffile.imwrite(bad, np.zeros((10, 10), dtype=np.uint8))
    lazy = open_volume(source.raw)
    lazy[:64]  # the slices before it read fine
    with pytest.raises(DataFormatError, match=bad.name):
        lazy[64:128]
    with pytest.raises(DataFormatError, match=bad.name):
        build_cache(source, tmp_path / "bbox1.h5", "fp")
    assert list(tmp_path.glob("*.h5")) == [] and list(tmp_path.glob(".*.tmp")) == []


def test_mask_bits_round_trip():
    rng = np.random.default_rng(0)
    mask = (rng.random((3, 5, 6, 7)) < 0.4).astype(np.uint8)
    bits = pack_mask_bits(mask)
    assert bits.dtype == np.uint8 and bits.shape == (5, 6, 7) and bits.max() <= 7
    np.testing.assert_array_equal(unpack_mask_bits(bits, range(3)), mask)
    np.testing.assert_array_equal(unpack_mask_bits(bits, [2, 0]), mask[[2, 0]])
    np.testing.assert_array_equal(unpack_mask_bits(bits, 1), mask[1])
    with pytest.raises(ValueError, match="8 mask channels"):
        pack_mask_bits(np.zeros((9, 2, 2, 2)))
