"""Readers: natural sort, RGB(A) and multi-channel slices, sheets, NIfTI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from synclr_monai.data.io import (
    DataFormatError,
    list_slices,
    read_nifti,
    read_slice,
    read_synapse_sheet,
    read_tiff_stack,
    SHEET_COLUMNS,
)


def test_natural_sort_orders_unpadded_numbers(tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    for z in range(1, 12):  # consecutive (a gap is an error), unpadded
        tifffile.imwrite(folder / f"slice_{z}.tif", np.full((4, 5), z, dtype=np.uint8))
    vol = read_tiff_stack(folder)
    # lexicographic order would put 10 and 11 before 2
    assert vol[:, 0, 0].tolist() == list(range(1, 12))
    assert [p.name for p in list_slices(folder)][-1] == "slice_11.tif"


@pytest.mark.parametrize("channels", [3, 4])
def test_rgb_raw_slices_become_luminosity_gray(tmp_path, channels):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(6, 7, channels), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", rgb, photometric="rgb")
    gray = read_slice(tmp_path / "s.tif", "raw")
    expected = 0.2989 * rgb[..., 0] + 0.5870 * rgb[..., 1] + 0.1140 * rgb[..., 2]
    assert gray.shape == (6, 7)
    np.testing.assert_allclose(gray, expected, rtol=1e-5)


def test_planar_rgb_and_multichannel_labels(tmp_path):
    rgb = np.stack([np.full((6, 8), v, dtype=np.uint8) for v in (10, 20, 30)])  # (3, Y, X) planar
    tifffile.imwrite(tmp_path / "p.tif", rgb, photometric="rgb", planarconfig="separate")
    np.testing.assert_allclose(read_slice(tmp_path / "p.tif", "raw"), 0.2989 * 10 + 0.5870 * 20 + 0.1140 * 30, rtol=1e-5)
    lab = np.stack([np.full((6, 8), 5), np.full((6, 8), 9)], axis=-1).astype(np.uint16)  # (Y, X, 2)
    tifffile.imwrite(tmp_path / "l.tif", lab, photometric="minisblack", planarconfig="contig")
    out = read_slice(tmp_path / "l.tif", "label")
    assert out.shape == (6, 8) and np.all(out == 5)


def test_unreadable_and_mismatched_slices_name_the_file(tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    tifffile.imwrite(folder / "slice_1.tif", np.zeros((4, 4), np.uint8))
    (folder / "slice_2.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(DataFormatError, match="slice_2.tif"):
        read_tiff_stack(folder)
    tifffile.imwrite(folder / "slice_2.tif", np.zeros((4, 5), np.uint8))
    with pytest.raises(DataFormatError, match=r"slice_2.tif.*differs"):
        read_tiff_stack(folder)
    with pytest.raises(DataFormatError, match="does not exist"):
        read_tiff_stack(tmp_path / "nope")


def _sheet(rows=2):
    data = {c: np.arange(rows, dtype=float) + 1 for c in SHEET_COLUMNS}
    data["Var1"] = [f"spine_synapse_{i:03d}" for i in range(rows)]
    return pd.DataFrame(data)


def test_sheet_keeps_string_ids_and_validates_columns(tmp_path):
    df = _sheet()
    df.loc[1, "Var1"] = "007"  # numeric-looking ids stay strings, with their zeros
    df.to_excel(tmp_path / "bbox1.xlsx", index=False)
    out = read_synapse_sheet(tmp_path / "bbox1.xlsx")
    assert out["Var1"].tolist() == ["spine_synapse_000", "007"]
    assert out["central_coord_1"].dtype == float

    df.drop(columns=["side_2_coord_3"]).to_excel(tmp_path / "bad.xlsx", index=False)
    with pytest.raises(DataFormatError, match=r"bad.xlsx.*side_2_coord_3"):
        read_synapse_sheet(tmp_path / "bad.xlsx")
    df2 = _sheet()
    df2["central_coord_2"] = df2["central_coord_2"].astype(object)
    df2.loc[0, "central_coord_2"] = "abc"
    df2.to_excel(tmp_path / "nan.xlsx", index=False)
    with pytest.raises(DataFormatError, match="central_coord_2"):
        read_synapse_sheet(tmp_path / "nan.xlsx")


def test_nifti_is_read_as_zyx(tmp_path):
    import nibabel as nib

    vol_zyx = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(vol_zyx.transpose(2, 1, 0), np.eye(4)), tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(read_nifti(tmp_path / "v.nii.gz"), vol_zyx)
    (tmp_path / "broken.nii").write_bytes(b"\x00" * 10)
    with pytest.raises(DataFormatError, match="broken.nii"):
        read_nifti(tmp_path / "broken.nii")
