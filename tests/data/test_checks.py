"""`python -m synclr_monai check`: every bad input is reported with its file named."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import tifffile

from synclr_monai.__main__ import main as cli
from synclr_monai.data.checks import check_dataset
from synclr_monai.data.label_maps import label_map_for


def test_clean_dataset_passes_with_summary(synthetic_root, capsys):
    report = check_dataset(synthetic_root)
    assert report.ok, report.problems
    b1 = report.bboxes[0]
    assert b1.name == "bbox1" and b1.shape == (40, 96, 96) and b1.dtype == "uint8"
    assert b1.synapses == 3 and b1.cleft_voxels > 0
    lm = label_map_for(1)
    assert set(b1.label_values) <= {lm.mito, lm.vesicle, lm.cleft, lm.cleft2}
    assert lm.cleft in b1.label_values and lm.vesicle in b1.label_values
    assert cli(["check", str(synthetic_root)]) == 0
    out = capsys.readouterr().out
    assert "bbox1" in out and "no problems found" in out


def _problems(root):
    report = check_dataset(root)
    assert not report.ok
    return "\n".join(report.problems)


def test_missing_folder_and_sheet(dataset_copy):
    shutil.rmtree(dataset_copy / "seg" / "bbox2")
    (dataset_copy / "bbox1.xlsx").unlink()
    text = _problems(dataset_copy)
    assert "seg/bbox2: missing seg slice folder" in text
    assert "bbox1.xlsx: missing synapse sheet" in text


def test_slice_count_and_shape_mismatch(dataset_copy):
    sorted((dataset_copy / "seg" / "bbox1").iterdir())[-1].unlink()
    mask_slice = sorted((dataset_copy / "bbox_2").iterdir())[5]
    tifffile.imwrite(mask_slice, np.zeros((10, 10), np.uint8))
    text = _problems(dataset_copy)
    assert "seg/bbox1: slice count mismatch" in text
    assert f"{mask_slice}: slice shape (10, 10) differs" in text


def test_unreadable_tiff(dataset_copy):
    bad = sorted((dataset_copy / "raw" / "bbox1").iterdir())[2]
    bad.write_bytes(b"garbage")
    assert f"{bad}: unreadable TIFF" in _problems(dataset_copy)


def test_sheet_columns_coordinates_and_background_sides(dataset_copy):
    sheet1 = dataset_copy / "bbox1.xlsx"
    pd.read_excel(sheet1).drop(columns=["side_1_coord_2"]).to_excel(sheet1, index=False)
    sheet2 = dataset_copy / "bbox2.xlsx"
    df = pd.read_excel(sheet2, dtype={"Var1": str})
    df.loc[0, "central_coord_3"] = 999  # z beyond the 40 slices
    # move side_2 of the second synapse onto a background voxel of the segmentation
    from synclr_monai.data.io import read_tiff_stack

    seg = read_tiff_stack(dataset_copy / "seg" / "bbox2", "label")
    z, y, x = np.argwhere(seg == 0)[0]
    df.loc[1, ["side_2_coord_1", "side_2_coord_2", "side_2_coord_3"]] = [x, y, z]
    df.to_excel(sheet2, index=False)
    text = _problems(dataset_copy)
    assert "bbox1.xlsx: missing sheet columns ['side_1_coord_2']" in text
    assert f"bbox2.xlsx: synapse {df.loc[0, 'Var1']!r}: central point" in text and "outside the volume" in text
    assert f"synapse {df.loc[1, 'Var1']!r}: side_2 point" in text and "background (seg id 0)" in text


def test_bbox_without_cleft_voxels_fails_the_cli(dataset_copy, capsys):
    lm = label_map_for(2)
    for f in (dataset_copy / "bbox_2").iterdir():
        sl = tifffile.imread(f)
        sl[np.isin(sl, [lm.cleft, lm.cleft2])] = 0
        tifffile.imwrite(f, sl)
    assert cli(["check", str(dataset_copy)]) == 2  # exit code 2: a data problem
    out = capsys.readouterr().out
    assert "bbox_2: no cleft voxels" in out


def test_missing_root(tmp_path):
    assert "does not exist" in _problems(tmp_path / "absent")


def test_check_reads_zarr_volumes_slab_by_slab(tmp_path, monkeypatch):
    from synclr_monai.data import checks as checks_module
    from synclr_monai.data.synthetic import generate_dataset

    root = tmp_path / "zarr"
    generate_dataset(root, n_bboxes=1, shape=(150, 40, 40), synapses_per_bbox=2, seed=3, volume_format="zarr",
                     table_format="csv")  # fmt: skip
    real = checks_module.open_volume
    largest = []

    def recording(path, role="raw", **kw):
        volume = real(path, role, **kw)
        get = volume.__getitem__

        class Recorded:
            shape, dtype, ndim = volume.shape, volume.dtype, 3

            def __getitem__(self, key):
                out = get(key)
                largest.append(out.size)
                return out

        return Recorded()

    monkeypatch.setattr(checks_module, "open_volume", recording)
    report = check_dataset(root)
    assert report.ok, report.problems
    (summary,) = report.bboxes
    assert summary.shape == (150, 40, 40) and summary.cleft_voxels > 0
    assert max(largest) <= checks_module.CHECK_SLAB * 40 * 40  # never a whole volume
    lm = label_map_for(1)
    assert lm.cleft in summary.label_values and lm.vesicle in summary.label_values
