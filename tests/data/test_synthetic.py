"""The synthetic EM generator: exact on-disk layout, geometry ground truth, determinism, CLI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage

from synclr_monai.__main__ import main as cli
from synclr_monai.data.label_maps import label_map_for
from synclr_monai.data.synthetic import SHEET_COLUMNS, TYPE_NAMES, generate_bbox, generate_dataset

SHAPE = (32, 64, 64)
N_BBOXES = 2
PER_BBOX = 2
SEED = 0


def _stack(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("slice_*.tif"), key=lambda p: int(re.search(r"(\d+)", p.stem).group(1)))
    return np.stack([tifffile.imread(f) for f in files])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _point(row: pd.Series, prefix: str) -> tuple[int, int, int]:
    """Sheet (x, y, z) -> array index (z, y, x)."""
    return tuple(int(row[f"{prefix}_coord_{i}"]) for i in (3, 2, 1))


def _bbox_in_memory(number: int, seed: int = SEED) -> dict:
    """What generate_dataset draws for bbox ``number`` (its own SeedSequence child stream)."""
    stream = np.random.SeedSequence(seed).spawn(N_BBOXES)[number - 1]
    return generate_bbox(number, SHAPE, PER_BBOX, np.random.default_rng(stream))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    types = generate_dataset(out, n_bboxes=N_BBOXES, shape=SHAPE, synapses_per_bbox=PER_BBOX, seed=SEED)
    assert list(types.columns) == ["bbox_name", "Var1", "type"]
    return out


@pytest.fixture(scope="module")
def big_bbox() -> dict:
    """One 48x96x96 bbox with one synapse of each class."""
    return generate_bbox(3, (48, 96, 96), 4, np.random.default_rng(1), types=list(TYPE_NAMES))


def test_layout_names_and_counts(root):
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["raw", "seg", "bbox_1", "bbox_2", "bbox1.xlsx", "bbox2.xlsx"]
        + ["synapse_types.csv", "bbox_staining.csv", "dataset.json"]
    )
    expected = [f"slice_{z:03d}.tif" for z in range(1, SHAPE[0] + 1)]
    for n in (1, 2):
        for folder in (root / "raw" / f"bbox{n}", root / "seg" / f"bbox{n}", root / f"bbox_{n}"):
            assert sorted(p.name for p in folder.iterdir()) == expected
    # written through a temporary folder that is renamed into place: nothing is left beside it
    assert [p.name for p in root.parent.iterdir()] == ["data"]


def test_slice_dtypes_and_shapes(root):
    raw = tifffile.imread(root / "raw" / "bbox1" / "slice_001.tif")
    seg = tifffile.imread(root / "seg" / "bbox1" / "slice_001.tif")
    mask = tifffile.imread(root / "bbox_1" / "slice_001.tif")
    assert raw.dtype == np.uint8 and raw.shape == SHAPE[1:]
    assert seg.dtype in (np.uint16, np.uint32) and seg.shape == SHAPE[1:]
    assert mask.dtype == np.uint8 and mask.shape == SHAPE[1:]
    assert _stack(root / "raw" / "bbox2").shape == SHAPE


def test_disk_matches_generate_bbox(root):
    bbox = _bbox_in_memory(2)
    np.testing.assert_array_equal(_stack(root / "raw" / "bbox2"), bbox["raw"])
    np.testing.assert_array_equal(_stack(root / "seg" / "bbox2"), bbox["seg"])
    np.testing.assert_array_equal(_stack(root / "bbox_2"), bbox["mask"])
    sheet = pd.read_excel(root / "bbox2.xlsx", dtype={"Var1": str})
    pd.testing.assert_frame_equal(sheet, bbox["sheet"])


def test_sheet_columns_and_ids(root):
    for n in (1, 2):
        sheet = pd.read_excel(root / f"bbox{n}.xlsx")
        assert list(sheet.columns) == list(SHEET_COLUMNS)
        assert len(sheet) == PER_BBOX
        assert all(isinstance(v, str) and re.fullmatch(r"(non_)?spine_synapse_\d{3}", v) for v in sheet["Var1"])
        assert sheet["Var1"].is_unique


def test_points_lie_on_cleft_and_in_partner_cells(root):
    for n in (1, 2):
        lm = label_map_for(n)
        mask, seg = _stack(root / f"bbox_{n}"), _stack(root / "seg" / f"bbox{n}")
        sheet = pd.read_excel(root / f"bbox{n}.xlsx")
        for _, row in sheet.iterrows():
            centre = _point(row, "central")
            assert all(10 <= c < s - 10 for c, s in zip(centre, SHAPE))  # border margin
            assert mask[centre] in lm.cleft_values
            a, b = seg[_point(row, "side_1")], seg[_point(row, "side_2")]
            assert a != 0 and b != 0 and a != b


def test_vesicles_lie_in_the_pre_synaptic_cell(root):
    pre_sides = []
    for n in (1, 2):
        bbox = _bbox_in_memory(n)
        vesicle = _stack(root / f"bbox_{n}") == label_map_for(n).vesicle
        seg = _stack(root / "seg" / f"bbox{n}")
        sheet = pd.read_excel(root / f"bbox{n}.xlsx")
        truth = zip(bbox["pre_side"], bbox["pre_ids"], bbox["post_ids"])
        for (_, row), (side, pre_id, post_id) in zip(sheet.iterrows(), truth):
            pre_sides.append(side)
            assert seg[_point(row, f"side_{side}")] == pre_id
            assert seg[_point(row, f"side_{3 - side}")] == post_id
            z, y, x = _point(row, "central")
            win = tuple(slice(max(c - 16, 0), c + 17) for c in (z, y, x))
            near = vesicle[win]
            assert near.sum() > 20
            assert np.count_nonzero(near & (seg[win] == pre_id)) >= 0.9 * near.sum()
            assert not np.any(near & (seg[win] == post_id))
    # readers must not be able to assume which side is pre-synaptic
    assert set(pre_sides) == {1, 2}


def test_label_values_follow_the_default_map(root):
    for n in (1, 2):
        lm = label_map_for(n)
        values = set(np.unique(_stack(root / f"bbox_{n}")).tolist())
        assert values <= {0, lm.mito, lm.vesicle, lm.cleft, lm.cleft2}
        assert {lm.vesicle, lm.cleft, lm.cleft2} <= values
    # bbox2 has two distinct cleft values and both are used
    assert label_map_for(2).cleft != label_map_for(2).cleft2


def test_synapse_types_table(root):
    types = pd.read_csv(root / "synapse_types.csv", dtype=str)
    assert list(types.columns) == ["bbox_name", "Var1", "type"]
    sheets = pd.concat(
        [pd.read_excel(root / f"bbox{n}.xlsx").assign(bbox_name=f"bbox{n}") for n in (1, 2)], ignore_index=True
    )
    assert sorted(zip(types.bbox_name, types.Var1)) == sorted(zip(sheets.bbox_name, sheets.Var1))
    assert set(types["type"]) == set(TYPE_NAMES) and len(TYPE_NAMES) >= 4
    assert types["type"].tolist() == _bbox_in_memory(1)["types"] + _bbox_in_memory(2)["types"]


def test_same_seed_same_bytes_other_seed_differs(root, tmp_path):
    generate_dataset(tmp_path / "again", n_bboxes=N_BBOXES, shape=SHAPE, synapses_per_bbox=PER_BBOX, seed=SEED)
    first, again = _files(root), _files(tmp_path / "again")
    assert list(first) == list(again)
    assert [k for k in first if first[k] != again[k]] == []
    generate_dataset(tmp_path / "other", n_bboxes=N_BBOXES, shape=SHAPE, synapses_per_bbox=PER_BBOX, seed=SEED + 1)
    other = _files(tmp_path / "other")
    assert first["bbox1.xlsx"] != other["bbox1.xlsx"]
    assert first["raw/bbox1/slice_016.tif"] != other["raw/bbox1/slice_016.tif"]
    assert not np.array_equal(_stack(root / "seg" / "bbox2"), _stack(tmp_path / "other" / "seg" / "bbox2"))


def test_membranes_are_darker_than_cytoplasm(root):
    raw = _stack(root / "raw" / "bbox1").astype(float)
    seg = _stack(root / "seg" / "bbox1")
    structures = _stack(root / "bbox_1") > 0
    walls = np.zeros(seg.shape, bool)
    for axis in range(3):
        walls |= np.diff(seg, axis=axis, prepend=np.take(seg, [0], axis=axis)) != 0
    interior = np.zeros(seg.shape, bool)
    for cell in np.unique(seg[seg > 0]):
        interior |= ndimage.distance_transform_edt(seg == cell) >= 3
    interior &= ~ndimage.binary_dilation(structures, iterations=2)
    assert walls.sum() > 1000 and interior.sum() > 1000
    assert raw[interior].mean() - raw[walls].mean() > 25
    assert 100 < raw[interior].mean() < 200  # mid-gray cytoplasm, not saturated


def test_types_differ_in_structure(big_bbox):
    lm = label_map_for(3)
    mask, seg = big_bbox["mask"], big_bbox["seg"]
    cleft = np.isin(mask, lm.cleft_values)
    info = big_bbox["synapses"].set_index("type")
    sizes, normals, pre_mito = {}, [], {}
    for (_, row), tname, pre_id in zip(big_bbox["sheet"].iterrows(), big_bbox["types"], big_bbox["pre_ids"]):
        centre = _point(row, "central")
        lab, _ = ndimage.label(cleft)
        pts = np.argwhere(lab == lab[centre])
        sizes[tname] = len(pts)
        # cleft normal = direction of least spread; random orientation means not axis aligned
        evals, evecs = np.linalg.eigh(np.cov((pts - pts.mean(0)).T))
        normals.append(np.abs(evecs[:, 0]).max())
        mito_pre = np.argwhere((mask == lm.mito) & (seg == pre_id))
        pre_mito[tname] = np.linalg.norm(mito_pre - centre, axis=1).min() if len(mito_pre) else np.inf
    assert sizes["few_large_vesicles"] > 2 * sizes["many_small_vesicles"]
    assert info.loc["many_small_vesicles", "n_vesicles"] > 2 * info.loc["few_large_vesicles", "n_vesicles"]
    assert pre_mito["mito_adjacent"] < 6
    assert min(v for k, v in pre_mito.items() if k != "mito_adjacent") >= 6
    assert min(normals) < 0.95


def test_cli_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--bboxes", "1", "--shape", "32", "48", "48"]
    assert cli([*args, "--synapses-per-bbox", "1", "--seed", "3"]) == 0
    assert (out / "bbox1.xlsx").is_file() and len(list((out / "bbox_1").glob("*.tif"))) == 32
    assert "wrote 1 bboxes" in capsys.readouterr().out
    # a non-empty target is refused unless --overwrite is given, and only for a generated dataset
    assert cli([*args, "--seed", "4"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli([*args, "--seed", "4", "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli"]
    (out / "notes.txt").write_text("mine")
    assert cli([*args, "--overwrite"]) == 2
    assert (out / "notes.txt").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_bboxes": 0}, "positive integer"),
        ({"shape": (16, 64, 64)}, "too small"),
        ({"shape": (32, 64)}, "three integers"),
        ({"synapses_per_bbox": 40}, "do not fit"),
        ({"seed": -1}, "non-negative"),
    ],
)
def test_bad_arguments_raise_before_writing(tmp_path, kwargs, match):
    args = {"n_bboxes": 1, "shape": SHAPE, "synapses_per_bbox": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate_dataset(tmp_path / "bad", **args)
    assert list(tmp_path.iterdir()) == []


def test_generate_bbox_past_the_default_label_maps_reuses_them_in_turn():
    eighth = generate_bbox(8, SHAPE, 1, np.random.default_rng(0))
    assert eighth["label_map"] == label_map_for(1) and eighth["name"] == "bbox8"
    with pytest.raises(ValueError, match="start at 1"):
        generate_bbox(0, SHAPE, 1, np.random.default_rng(0))


def test_generate_bbox_warns_when_synapses_fall_below_reference_scale(caplog):
    # (64, 64, 64) with 1 synapse: a 64-voxel region, the reference scale; 8 synapses: 32-voxel regions,
    # every dimension halved (vesicles under a voxel)
    with caplog.at_level("WARNING", logger="synclr_monai.data.synthetic"):
        generate_bbox(1, (64, 64, 64), 1, np.random.default_rng(0))
    assert "below the reference" not in caplog.text
    with caplog.at_level("WARNING", logger="synclr_monai.data.synthetic"):
        generate_bbox(1, (64, 64, 64), 8, np.random.default_rng(0))
    assert "bbox 1: 8 synapses in (64, 64, 64) leave each a scale of 16 voxels, below the reference 32" in caplog.text
    assert "2.0x smaller" in caplog.text
