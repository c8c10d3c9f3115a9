"""Zarr / OME-Zarr volumes and CSV / Parquet tables beside TIFF stacks and xlsx sheets (issue 12)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

zarr = pytest.importorskip("zarr")

from synclr_monai.__main__ import main as cli  # noqa: E402
from synclr_monai.data.assembly import assemble_bbox
from synclr_monai.data.bbox import find_bboxes  # noqa: E402
from synclr_monai.data.cache import load_bbox, read_cache, source_fingerprint  # noqa: E402
from synclr_monai.data.checks import check_dataset  # noqa: E402
from synclr_monai.data.io import (  # noqa: E402
    SHEET_COLUMNS,
    DataFormatError,
    ZarrVolume,
    open_volume,
    read_synapse_sheet,
    read_tiff_stack,
    read_volume,
    write_zarr_volume,
)
from synclr_monai.data.label_maps import label_map_for  # noqa: E402
from synclr_monai.data.synthetic import generate_dataset  # noqa: E402

SHAPE = (32, 48, 48)
SEED = 5


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """The same synthetic bbox written as TIFF + xlsx and as Zarr + CSV (read-only: copy before changing)."""
    base = tmp_path_factory.mktemp("formats")
    tiff, zarr_root = base / "tiff", base / "zarr"
    generate_dataset(tiff, n_bboxes=1, shape=SHAPE, synapses_per_bbox=2, seed=SEED)
    generate_dataset(zarr_root, n_bboxes=1, shape=SHAPE, synapses_per_bbox=2, seed=SEED, volume_format="zarr",
                     table_format="csv")
    return tiff, zarr_root


@pytest.fixture()
def zarr_copy(pair, tmp_path) -> Path:
    dst = tmp_path / "zarr"
    shutil.copytree(pair[1], dst)
    return dst


def test_synth_zarr_layout_and_identical_side_files(pair):
    tiff, root = pair
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["raw", "seg", "bbox_1.zarr", "bbox1.csv", "synapse_types.csv", "bbox_staining.csv", "dataset.json"]
    )
    (source,) = find_bboxes(root)
    assert source.raw == root / "raw" / "bbox1.zarr" and source.seg == root / "seg" / "bbox1.zarr"
    assert source.mask == root / "bbox_1.zarr" and source.sheet == root / "bbox1.csv"
    for role, stack in (("raw", "raw/bbox1"), ("label", "seg/bbox1"), ("label", "bbox_1")):
        zarr_path = root / f"{stack}.zarr"
        volume = open_volume(zarr_path, role)
        assert isinstance(volume, ZarrVolume) and volume.shape == SHAPE and max(volume.chunks) <= 64
        np.testing.assert_array_equal(read_volume(zarr_path, role), read_tiff_stack(tiff / stack, role))
    for name in ("synapse_types.csv", "bbox_staining.csv"):
        assert (root / name).read_bytes() == (tiff / name).read_bytes(), name
    settings = json.loads((root / "dataset.json").read_text())
    assert settings.pop("volume_format") == "zarr" and settings.pop("table_format") == "csv"
    tiff_settings = json.loads((tiff / "dataset.json").read_text())
    assert (tiff_settings.pop("volume_format"), tiff_settings.pop("table_format")) == ("tiff", "xlsx")
    assert settings == tiff_settings


def test_zarr_and_tiff_assemble_and_cache_the_same_volume(pair, tmp_path):
    (tiff_source,), (zarr_source,) = find_bboxes(pair[0]), find_bboxes(pair[1])
    a, b = assemble_bbox(tiff_source), assemble_bbox(zarr_source)
    np.testing.assert_array_equal(a.raw, b.raw)
    np.testing.assert_array_equal(a.mask, b.mask)
    pd.testing.assert_frame_equal(a.synapses, b.synapses)
    assert b.synapses["Var1"].map(type).eq(str).all()
    load_bbox(tiff_source, tmp_path / "c_tiff")
    load_bbox(zarr_source, tmp_path / "c_zarr")
    ca, cb = read_cache(tmp_path / "c_tiff" / "bbox1.h5"), read_cache(tmp_path / "c_zarr" / "bbox1.h5")
    np.testing.assert_array_equal(ca.raw, cb.raw)
    np.testing.assert_array_equal(ca.mask, cb.mask)
    pd.testing.assert_frame_equal(ca.synapses, cb.synapses)
    assert ca.label_values == cb.label_values


def test_fingerprint_covers_zarr_chunk_files(zarr_copy):
    (source,) = find_bboxes(zarr_copy)
    lm = label_map_for(1)
    before = source_fingerprint(source, lm, "float16")
    store = zarr_copy / "seg" / "bbox1.zarr"
    chunk = next(p for p in sorted(store.rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes() + b"\0")  # a chunk deep in the store's nested folders
    assert source_fingerprint(source, lm, "float16") != before


def test_csv_table_equals_xlsx_table(pair, tmp_path):
    tiff, root = pair
    pd.testing.assert_frame_equal(read_synapse_sheet(root / "bbox1.csv"), read_synapse_sheet(tiff / "bbox1.xlsx"))
    data = {c: [1.0, 2.0] for c in SHEET_COLUMNS}
    data["Var1"] = ["007", "spine_synapse_002"]  # a numeric-looking id keeps its zeros
    pd.DataFrame(data).to_csv(tmp_path / "bbox3.csv", index=False)
    assert read_synapse_sheet(tmp_path / "bbox3.csv")["Var1"].tolist() == ["007", "spine_synapse_002"]


def test_parquet_table_needs_pyarrow_and_says_so(pair, tmp_path, monkeypatch):
    table = read_synapse_sheet(pair[0] / "bbox1.xlsx")
    path = tmp_path / "bbox1.parquet"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        path.write_bytes(b"PAR1 not really")
    else:
        table.to_parquet(path, index=False)
        pd.testing.assert_frame_equal(read_synapse_sheet(path), table)

    def no_engine(*args, **kwargs):
        raise ImportError("Unable to find a usable engine; tried using: 'pyarrow', 'fastparquet'.")

    monkeypatch.setattr(pd, "read_parquet", no_engine)
    with pytest.raises(DataFormatError, match=r"bbox1.parquet: reading a Parquet synapse table needs pyarrow"):
        read_synapse_sheet(path)


def test_bboxes_are_announced_by_zarr_volumes_and_csv_tables(zarr_copy):
    (zarr_copy / "bbox1.csv").rename(zarr_copy / "bbox2.csv")  # a table alone announces bbox2
    numbers = {s.number: s for s in find_bboxes(zarr_copy, strict=False)}
    assert sorted(numbers) == [1, 2]
    assert numbers[1].missing() == [f"{zarr_copy / 'bbox1.xlsx'}: missing synapse sheet"]
    assert f"{zarr_copy / 'raw' / 'bbox2'}: missing raw slice folder" in numbers[2].missing()


def test_two_tables_or_two_volumes_for_one_bbox_are_an_error(pair, zarr_copy):
    shutil.copy(pair[0] / "bbox1.xlsx", zarr_copy / "bbox1.xlsx")
    with pytest.raises(DataFormatError) as err:
        find_bboxes(zarr_copy)
    both = f"{zarr_copy / 'bbox1.xlsx'} and {zarr_copy / 'bbox1.csv'}"
    assert f"{both}: bbox1 has 2 synapse tables; keep exactly one" in str(err.value)
    shutil.copytree(pair[0] / "seg" / "bbox1", zarr_copy / "seg" / "bbox1")
    problems = "\n".join(check_dataset(zarr_copy).problems)
    assert both in problems
    assert f"{zarr_copy / 'seg' / 'bbox1'} and {zarr_copy / 'seg' / 'bbox1.zarr'}: bbox1 has 2 seg volumes" in problems


def test_synth_zarr_round_trip_through_the_cli(tmp_path, capsys):
    out = tmp_path / "data"
    args = ["--out", str(out), "--bboxes", "1", "--shape", *map(str, SHAPE), "--synapses-per-bbox", "1"]
    assert cli(["synth", *args, "--format", "zarr", "--table", "csv"]) == 0
    assert (out / "raw" / "bbox1.zarr").is_dir() and (out / "bbox1.csv").is_file()
    assert cli(["check", str(out)]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert cli(["synth", *args, "--format", "zarr", "--overwrite"]) == 0  # replaces its own Zarr dataset
    assert (out / "bbox1.xlsx").is_file() and not (out / "bbox1.csv").exists()


def test_check_names_a_zarr_of_the_wrong_shape_and_damaged_chunks(zarr_copy, capsys):
    seg = zarr_copy / "seg" / "bbox1.zarr"
    good = read_volume(seg, "label")
    shutil.rmtree(seg)
    write_zarr_volume(seg, good[:-1])  # one slice short
    with pytest.raises(DataFormatError, match=rf"{seg}: volume shape \(31, 48, 48\)"):
        assemble_bbox(find_bboxes(zarr_copy)[0])
    mask = zarr_copy / "bbox_1.zarr"
    chunk = next(p for p in sorted(mask.rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"garbage")
    problems = "\n".join(check_dataset(zarr_copy).problems)
    assert f"{seg}: slice count mismatch: seg is (31, 48, 48)" in problems
    assert f"{mask}: unreadable Zarr chunk data" in problems
    assert cli(["check", str(zarr_copy)]) == 2


def _ome_image(path: Path, levels: list[np.ndarray], axes: list[str], nested: bool = False) -> None:
    group = zarr.open_group(str(path), mode="w")
    multiscales = [{
        "version": "0.4",
        "axes": [{"name": a, "type": "channel" if a == "c" else "time" if a == "t" else "space"} for a in axes],
        "datasets": [{"path": str(i)} for i in range(len(levels))],
    }]
    if nested:  # OME-Zarr 0.5 keeps its metadata under "ome"
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
    else:
        group.attrs["multiscales"] = multiscales
    for i, level in enumerate(levels):
        group.create_array(str(i), shape=level.shape, dtype=level.dtype, chunks=level.shape)[...] = level


@pytest.mark.parametrize("nested", [False, True])
def test_ome_zarr_reads_level_0(tmp_path, nested):
    rng = np.random.default_rng(0)
    full = rng.integers(0, 9, size=(8, 12, 16)).astype(np.uint16)
    _ome_image(tmp_path / "seg.zarr", [full[None], full[None, ::2, ::2, ::2]], ["c", "z", "y", "x"], nested)
    volume = open_volume(tmp_path / "seg.zarr", "label")
    assert volume.shape == (8, 12, 16) and volume.dtype == np.uint16
    np.testing.assert_array_equal(volume[2:5, :, 3], full[2:5, :, 3])  # lazy region read
    np.testing.assert_array_equal(read_volume(tmp_path / "seg.zarr", "label"), full)
    # level 0 is the first dataset the metadata names, whatever the folder is called
    group = zarr.open_group(str(tmp_path / "seg.zarr"), mode="r+")
    attrs = dict(group.attrs)
    image = (attrs["ome"] if nested else attrs)["multiscales"][0]
    image["datasets"] = image["datasets"][::-1]
    group.attrs.update(attrs)
    assert read_volume(tmp_path / "seg.zarr", "label").shape == (4, 6, 8)


def test_zarr_channels_dtypes_and_bad_stores(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, size=(3, 4, 5, 6)).astype(np.uint8)
    write_zarr_volume(tmp_path / "rgb.zarr", rgb)  # [c, z, y, x]: raw becomes luminosity gray
    gray = read_volume(tmp_path / "rgb.zarr", "raw")
    expected = 0.2989 * rgb[0] + 0.5870 * rgb[1] + 0.1140 * rgb[2]
    assert gray.dtype == np.float32 and gray.shape == (4, 5, 6)
    np.testing.assert_allclose(gray, expected, rtol=1e-5)
    np.testing.assert_array_equal(read_volume(tmp_path / "rgb.zarr", "label"), rgb[0])  # labels: channel 0
    write_zarr_volume(tmp_path / "float.zarr", np.full((2, 3, 4), 3.0, np.float32))
    labels = read_volume(tmp_path / "float.zarr", "label")
    assert labels.dtype == np.int64 and np.all(labels == 3)
    write_zarr_volume(tmp_path / "frac.zarr", np.full((2, 3, 4), 0.5, np.float32))
    with pytest.raises(DataFormatError, match=r"frac.zarr: label volume holds non-integer values"):
        read_volume(tmp_path / "frac.zarr", "label")
    write_zarr_volume(tmp_path / "flat.zarr", np.zeros((3, 4), np.uint8))
    with pytest.raises(DataFormatError, match=r"flat.zarr: expected a 3-D"):
        read_volume(tmp_path / "flat.zarr")
    write_zarr_volume(tmp_path / "time.zarr", np.zeros((2, 1, 3, 4, 5), np.uint8))  # [t, c, z, y, x], two times
    with pytest.raises(DataFormatError, match=r"time.zarr: .* 2 entries on leading axis 0"):
        open_volume(tmp_path / "time.zarr")
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    with pytest.raises(DataFormatError, match=r"group.zarr: a Zarr group without OME-Zarr 'multiscales'"):
        read_volume(tmp_path / "group.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(DataFormatError, match=r"empty.zarr: unreadable Zarr store"):
        read_volume(tmp_path / "empty.zarr")
    with pytest.raises(DataFormatError, match=r"absent.zarr: Zarr store does not exist"):
        read_volume(tmp_path / "absent.zarr")


def test_training_config_reads_zarr_shapes_from_metadata(pair):
    from synclr_monai.data.io import volume_shape

    assert volume_shape(pair[1] / "raw" / "bbox1.zarr") == SHAPE == volume_shape(pair[0] / "raw" / "bbox1")
