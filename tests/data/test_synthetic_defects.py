"""Defects planted by ``synth --defects``: each kind changes exactly what it claims, and is listed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from synclr_monai.data.synthetic import generate_bbox, main
from synclr_monai.data.synthetic_defects import DEFECT_KINDS, NO_DEFECT, choose_defects, inject_defect

SHAPE = (40, 96, 96)


@pytest.fixture(scope="module")
def clean_bbox() -> dict:
    return generate_bbox(1, SHAPE, 4, np.random.default_rng(11))


def _copy(bbox: dict) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in bbox.items()}


def _cleft(bbox: dict) -> np.ndarray:
    lm = bbox["label_map"]
    return np.isin(bbox["mask"], [lm.cleft, lm.cleft2])


def _centre(bbox: dict, index: int) -> tuple[int, int, int]:
    row = bbox["sheet"].iloc[index]
    return tuple(int(row[f"central_coord_{i}"]) for i in (3, 2, 1))


def test_choose_defects_counts_and_cycles():
    plan = choose_defects(40, 0.2, np.random.default_rng(0))
    corrupted = [d for d in plan if d != NO_DEFECT]
    assert len(corrupted) == 8
    assert set(corrupted) == set(DEFECT_KINDS)
    assert choose_defects(5, 0.01, np.random.default_rng(0)).count(NO_DEFECT) == 4  # at least one
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        choose_defects(5, 1.5, np.random.default_rng(0))


def test_missing_cleft_removes_only_that_synapse_cleft(clean_bbox):
    bbox = _copy(clean_bbox)
    inject_defect(bbox, 0, "missing_cleft", np.random.default_rng(0))
    before, after = _cleft(clean_bbox), _cleft(bbox)
    z, y, x = _centre(bbox, 0)
    win = (slice(z - 3, z + 4), slice(y - 3, y + 4), slice(x - 3, x + 4))
    assert before[win].any() and not after[win].any()
    assert after.sum() > 0  # the other synapses keep theirs
    np.testing.assert_array_equal(bbox["raw"], clean_bbox["raw"])  # the EM still shows the cleft


def test_shifted_mask_moves_the_cleft_off_the_centre(clean_bbox):
    bbox = _copy(clean_bbox)
    inject_defect(bbox, 1, "shifted_mask", np.random.default_rng(0))
    assert _cleft(bbox).sum() >= 0.5 * _cleft(clean_bbox).sum()
    z, y, x = _centre(bbox, 1)
    assert _cleft(clean_bbox)[z, y, x] and not _cleft(bbox)[z, y, x]


def test_merged_pre_grows_the_pre_segment_by_a_touching_cell(clean_bbox):
    bbox = _copy(clean_bbox)
    pre = int(bbox["pre_ids"][2])
    inject_defect(bbox, 2, "merged_pre", np.random.default_rng(0))
    original = clean_bbox["seg"] == pre
    labels, _ = ndimage.label(bbox["seg"] == pre)
    # the merged cell touches the pre-synaptic one: the connected segment holding it has grown
    merged = np.isin(labels, np.unique(labels[original]))
    assert merged.sum() > original.sum() + 100
    assert (bbox["seg"] == int(bbox["post_ids"][2])).sum() == (clean_bbox["seg"] == int(bbox["post_ids"][2])).sum()


def test_truncated_blanks_one_side_but_keeps_the_side_points(clean_bbox):
    bbox = _copy(clean_bbox)
    inject_defect(bbox, 3, "truncated", np.random.default_rng(0))
    blank = (bbox["seg"] == 0) & (clean_bbox["seg"] != 0)
    assert blank.sum() > 500
    assert np.unique(bbox["raw"][blank]).size == 1  # a flat "outside the volume" grey
    row = bbox["sheet"].iloc[3]
    for side in ("side_1", "side_2"):
        z, y, x = (int(row[f"{side}_coord_{i}"]) for i in (3, 2, 1))
        assert bbox["seg"][z, y, x] == clean_bbox["seg"][z, y, x] != 0


def test_unknown_defect_is_refused(clean_bbox):
    with pytest.raises(ValueError, match="unknown defect 'typo'"):
        inject_defect(_copy(clean_bbox), 0, "typo", np.random.default_rng(0))


def test_synth_cli_lists_defects_in_the_ground_truth(tmp_path, capsys):
    out = tmp_path / "data"
    args = ["--out", str(out), "--bboxes", "1", "--shape", *map(str, SHAPE), "--synapses-per-bbox", "4"]
    assert main([*args, "--defects", "1.0", "--seed", "5"]) == 0
    table = pd.read_csv(out / "synapse_types.csv")
    assert list(table.columns) == ["bbox_name", "Var1", "type", "defect"]
    assert sorted(table["defect"]) == sorted(DEFECT_KINDS)
    assert main([*args, "--defects", "-0.5", "--out", str(tmp_path / "bad")]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
