"""The synthetic generator's hard-data options: per-bbox staining, anisotropic voxels, difficulty."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage

from synclr_monai.__main__ import main as cli
from synclr_monai.data.label_maps import label_map_for
from synclr_monai.data.synthetic import STAINING_COLUMNS, TYPE_NAMES, generate_bbox, generate_dataset
from synclr_monai.data.synthetic_imaging import STAINING_CENTRE, Staining, block_edges, downsample_labels
from synclr_monai.data.synthetic_synapse import MIN_SEPARATION, SYNAPSE_TYPES, synapse_types

SHAPE = (32, 64, 64)
SEED = 0  # its two bboxes draw clearly different stainings (noise 12.9 vs 5.3, mid-gray +2 vs +29)
MID_GRAY = 148.5  # centre of the cytoplasm gray range before staining


def _stack(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("slice_*.tif"), key=lambda p: int(re.search(r"(\d+)", p.stem).group(1)))
    return np.stack([tifffile.imread(f) for f in files])


def _point(row: pd.Series, prefix: str) -> tuple[int, int, int]:
    return tuple(int(row[f"{prefix}_coord_{i}"]) for i in (3, 2, 1))


def _interior(seg: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Cytoplasm away from cell walls and annotated structures."""
    walls = np.zeros(seg.shape, bool)
    for axis in range(3):
        d = np.diff(seg, axis=axis) != 0
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        walls[tuple(lo)] |= d
        walls[tuple(hi)] |= d
    return (seg > 0) & ~ndimage.binary_dilation(walls | (mask > 0), iterations=3)


def _measure(raw: np.ndarray, interior: np.ndarray) -> tuple[float, float]:
    """Median gray of the cytoplasm and a noise estimate (robust std of neighbour differences).

    The cytoplasm's gray also depends on the bbox's cells (each draws its own), so it is compared
    across stainings of the same tissue; :func:`_dark_gray` compares across bboxes.
    """
    raw = raw.astype(np.float32)
    pair = interior[..., 1:] & interior[..., :-1]
    d = (raw[..., 1:] - raw[..., :-1])[pair]
    noise = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0)
    return float(np.median(raw[interior])), noise


def _dark_gray(root: Path, n: int) -> float:
    """Median gray of the extracellular space and membranes (seg 0): the same gray in every bbox before staining."""
    return float(np.median(_stack(root / "raw" / f"bbox{n}")[_stack(root / "seg" / f"bbox{n}") == 0]))


def _measure_bbox(root: Path, n: int) -> tuple[float, float]:
    seg, mask = _stack(root / "seg" / f"bbox{n}"), _stack(root / f"bbox_{n}")
    return _measure(_stack(root / "raw" / f"bbox{n}"), _interior(seg, mask))


# ----------------------------------------------------------------------------------------------
# staining


@pytest.fixture(scope="module")
def stained(tmp_path_factory) -> dict[float, Path]:
    """The same seed written with staining strength 1 (default) and 0."""
    base = tmp_path_factory.mktemp("stain")
    out = {}
    for strength in (1.0, 0.0):
        out[strength] = base / f"s{strength:g}"
        generate_dataset(
            out[strength], n_bboxes=2, shape=SHAPE, synapses_per_bbox=2, seed=SEED, staining_strength=strength
        )
    return out


def test_staining_differs_between_bboxes(stained):
    table = pd.read_csv(stained[1.0] / "bbox_staining.csv")
    assert list(table.columns) == list(STAINING_COLUMNS) and table["bbox_name"].tolist() == ["bbox1", "bbox2"]
    profiles = [Staining(**row.drop("bbox_name").to_dict()) for _, row in table.iterrows()]
    assert all(getattr(profiles[0], f) != getattr(profiles[1], f) for f in STAINING_COLUMNS[1:])
    # the seed's two profiles differ clearly (a guard: the margins below rely on it)
    assert abs(profiles[0].noise_std - profiles[1].noise_std) > 5
    shifts = [float(p.tone(MID_GRAY)) - MID_GRAY for p in profiles]
    assert abs(shifts[0] - shifts[1]) > 20

    for n, profile, shift in zip((1, 2), profiles, shifts):
        median, noise = _measure_bbox(stained[1.0], n)
        median_alike, _ = _measure_bbox(stained[0.0], n)  # the same tissue, stained like every bbox
        # what the TIFFs show follows the drawn profile
        assert noise == pytest.approx(profile.noise_std, abs=1.0)
        assert median - median_alike == pytest.approx(shift, abs=5.0)
    # and the two bboxes look clearly different: noise level and the gray of the dark extracellular space
    assert abs(_measure_bbox(stained[1.0], 1)[1] - _measure_bbox(stained[1.0], 2)[1]) > 4
    assert abs(_dark_gray(stained[1.0], 1) - _dark_gray(stained[1.0], 2)) > 15


def test_staining_off_stains_every_bbox_alike(stained):
    table = pd.read_csv(stained[0.0] / "bbox_staining.csv")
    for _, row in table.iterrows():
        assert Staining(**row.drop("bbox_name").to_dict()) == STAINING_CENTRE
    (_, n1), (_, n2) = _measure_bbox(stained[0.0], 1), _measure_bbox(stained[0.0], 2)
    assert abs(n1 - n2) < 0.5 and n1 == pytest.approx(STAINING_CENTRE.noise_std, abs=1.0)
    assert abs(_dark_gray(stained[0.0], 1) - _dark_gray(stained[0.0], 2)) < 4
    settings = json.loads((stained[0.0] / "dataset.json").read_text())
    assert settings["staining_strength"] == 0.0 and settings["voxel_size_nm"] == [8.0, 8.0, 8.0]


def test_staining_leaves_the_tissue_alone(stained):
    """Strength changes the gray levels only: segmentation, masks and sheets are the same bytes."""
    a, b = stained[1.0], stained[0.0]
    for rel in ("seg/bbox1/slice_016.tif", "bbox_2/slice_016.tif", "bbox1.xlsx", "bbox2.xlsx", "synapse_types.csv"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "raw/bbox2/slice_016.tif").read_bytes() != (b / "raw/bbox2/slice_016.tif").read_bytes()


def test_explicit_profiles_on_the_same_tissue():
    pale = Staining(brightness=-20, contrast=0.7, gamma=1.25, noise_std=4, blur_sigma=1.2, illumination=4)
    dark = Staining(brightness=20, contrast=1.3, gamma=0.8, noise_std=14, blur_sigma=0.5, illumination=16)
    a = generate_bbox(1, SHAPE, 2, np.random.default_rng(3), staining=pale)
    b = generate_bbox(1, SHAPE, 2, np.random.default_rng(3), staining=dark)
    np.testing.assert_array_equal(a["seg"], b["seg"])
    interior = _interior(a["seg"], a["mask"])
    (ma, na), (mb, nb) = _measure(a["raw"], interior), _measure(b["raw"], interior)
    assert mb - ma > 60  # predicted: 197 - 109
    assert ma == pytest.approx(float(pale.tone(MID_GRAY)), abs=10)
    assert mb == pytest.approx(float(dark.tone(MID_GRAY)), abs=10)
    assert na == pytest.approx(4, abs=1.0) and nb == pytest.approx(14, abs=1.0)
    assert a["staining"] is pale


# ----------------------------------------------------------------------------------------------
# difficulty


def _geometry_hash(bbox: dict) -> str:
    """seg, mask, cleft centres and the two side points (as a set: which is side_1 may change)."""
    h = hashlib.sha256()
    for key in ("seg", "mask"):
        h.update(np.ascontiguousarray(bbox[key]).tobytes())
    for _, r in bbox["sheet"].iterrows():
        sides = sorted(tuple(r[f"side_{k}_coord_{i}"] for i in (1, 2, 3)) for k in (1, 2))
        h.update(repr((r["Var1"], [r[f"central_coord_{i}"] for i in (1, 2, 3)], sides)).encode())
    return h.hexdigest()[:16]


def test_difficulty_zero_is_the_generator_as_before():
    assert synapse_types(0.0) == SYNAPSE_TYPES
    bbox = generate_bbox(1, SHAPE, 2, np.random.default_rng(0), difficulty=0.0)
    # recorded from the generator before the difficulty/staining/voxel options existed (numpy 2 /
    # scipy streams); a deliberate change of the geometry must update it
    assert _geometry_hash(bbox) == "58f265481a18e3b9"
    assert bbox["synapse_types"] == SYNAPSE_TYPES


def test_difficulty_pulls_the_classes_together():
    graded = [f.name for f in dataclasses.fields(SYNAPSE_TYPES[TYPE_NAMES[0]]) if f.name != "name"]
    spread = {d: {f: np.ptp([getattr(t, f) for t in synapse_types(d).values()]) for f in graded} for d in (0, 0.5, 1)}
    for f in graded:
        assert spread[0][f] > 0
        assert spread[1][f] == pytest.approx(MIN_SEPARATION * spread[0][f])  # still differ, slightly
        assert spread[1][f] < spread[0.5][f] < spread[0][f]
    hard = synapse_types(1.0)
    assert hard["mito_adjacent"].mito_near_cleft > hard["curved_spine"].mito_near_cleft > 0
    assert hard["many_small_vesicles"].vesicle_count > hard["few_large_vesicles"].vesicle_count

    bbox = generate_bbox(3, (48, 96, 96), 4, np.random.default_rng(1), types=list(TYPE_NAMES), difficulty=1.0)
    assert bbox["synapse_types"] == hard and bbox["types"] == list(TYPE_NAMES)
    counts = bbox["synapses"].set_index("type")["n_vesicles"]
    # at difficulty 0 the same call gives more than twice as many small vesicles (test_synthetic)
    assert counts["many_small_vesicles"] < 2 * counts["few_large_vesicles"]
    # the per-synapse draws of the graded probabilities are seeded like everything else
    first, again = (generate_bbox(2, SHAPE, 2, np.random.default_rng(4), difficulty=0.7) for _ in range(2))
    np.testing.assert_array_equal(first["raw"], again["raw"])
    pd.testing.assert_frame_equal(first["synapses"], again["synapses"])


# ----------------------------------------------------------------------------------------------
# anisotropic voxels


def test_block_reduction_keeps_the_cleft_and_valid_labels():
    edges = [block_edges(10, 2), block_edges(2, 2), block_edges(1, 1)]
    assert edges[0].tolist() == [0, 5, 10] and block_edges(15, 4).tolist() == [0, 4, 8, 11, 15]
    vol = np.zeros((10, 2, 1), np.uint8)
    vol[:5, 0, 0] = [3, 3, 3, 7, 0]  # one cleft voxel (7) among a majority of 3: cleft wins
    vol[:5, 1, 0] = [3, 3, 0, 0, 0]  # majority 0
    vol[5:, 0, 0] = [1, 2, 2, 1, 2]  # majority 2
    vol[5:, 1, 0] = [4, 7, 4, 4, 6]  # two cleft values: the more frequent one
    out = downsample_labels(vol, edges, priority=(7, 4))
    assert out[:, :, 0].tolist() == [[7, 0], [2, 4]] and out.dtype == np.uint8


@pytest.fixture(scope="module")
def sections(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aniso") / "data"
    generate_dataset(
        root, n_bboxes=2, shape=SHAPE, synapses_per_bbox=2, seed=1, voxel_size=(40, 8, 8), difficulty=0.5
    )
    return root


def test_anisotropic_dataset(sections, capsys):
    assert json.loads((sections / "dataset.json").read_text())["voxel_size_nm"] == [40.0, 8.0, 8.0]
    for n in (1, 2):
        lm = label_map_for(n)
        folders = (sections / "raw" / f"bbox{n}", sections / "seg" / f"bbox{n}", sections / f"bbox_{n}")
        raw, seg, mask = (_stack(f) for f in folders)
        assert raw.shape == seg.shape == mask.shape == SHAPE
        assert set(np.unique(mask).tolist()) <= {0, lm.mito, lm.vesicle, lm.cleft, lm.cleft2}
        ratios = []
        for _, row in pd.read_excel(sections / f"bbox{n}.xlsx").iterrows():
            assert mask[_point(row, "central")] in lm.cleft_values
            cells = seg[_point(row, "side_1")], seg[_point(row, "side_2")]
            assert 0 not in cells and cells[0] != cells[1]
            for cell in cells:  # physical size kept: a cell spans ~5x fewer slices than pixels
                zz, yy, xx = np.nonzero(seg == cell)
                ratios.append(5 * np.ptp(zz) / (0.5 * (np.ptp(yy) + np.ptp(xx))))
        assert 0.5 < np.mean(ratios) < 2.0, ratios
    assert cli(["check", str(sections)]) == 0
    assert "bbox2" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# bad option values


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"difficulty": -0.1}, r"difficulty must be in \[0, 1\]"),
        ({"difficulty": 1.5}, r"difficulty must be in \[0, 1\]"),
        ({"difficulty": float("nan")}, r"difficulty must be in \[0, 1\]"),
        ({"voxel_size": (0, 8, 8)}, "voxel_size must be three positive numbers"),
        ({"voxel_size": (8, 8)}, "voxel_size must be three positive numbers"),
        ({"voxel_size": (400, 8, 8)}, "at most 20"),
        ({"staining_strength": -1.0}, r"staining_strength must be in \[0, 2\]"),
    ],
)
def test_bad_option_values_raise_before_writing(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_dataset(tmp_path / "bad", n_bboxes=1, shape=SHAPE, synapses_per_bbox=1, **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "option, match",
    [
        (["--difficulty", "2"], "difficulty must be in [0, 1]"),
        (["--voxel-size", "40", "0", "8"], "voxel_size must be three positive numbers"),
        (["--voxel-size", "-8", "8", "8"], "voxel_size must be three positive numbers"),
        (["--staining", "-0.5"], "staining_strength must be in [0, 2]"),
    ],
)
def test_cli_rejects_bad_option_values(tmp_path, capsys, option, match):
    assert cli(["synth", "--out", str(tmp_path / "x"), "--shape", *map(str, SHAPE), *option]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_side_point_lost_in_a_thick_section_moves_into_its_cell():
    from synclr_monai.data.synthetic import _written_point

    seg = np.full((4, 10, 10), 6, np.uint16)
    seg[:, :, :4] = 5  # cell 5 holds x < 4 on the written grid
    edges = [block_edges(20, 4), block_edges(10, 10), block_edges(10, 10)]
    window = (slice(0, 20), slice(0, 10), slice(0, 10))
    voxel = np.array([5.0, 1.0, 1.0])
    # generation point (z=7, y=5, x=4) falls into written voxel (1, 5, 4), which is cell 6
    q = _written_point(np.array([7, 5, 4]), 5, seg, edges, window, voxel)
    assert seg[tuple(q)] == 5 and tuple(q[:2]) == (1, 5) and q[2] <= 3
    assert _written_point(np.array([7, 5, 6]), 6, seg, edges, window, voxel).tolist() == [1, 5, 6]
