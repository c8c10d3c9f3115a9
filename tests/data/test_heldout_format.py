"""The held-out generator (benchmarks/heldout_synth.py) writes data that the package's own reader accepts.

The generator was written from DESIGN.md's format alone, so this is also a test of the reader on data it was not
developed against: ``check`` passes, and assembly finds each synapse's cleft and its pre-synaptic side.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synclr_monai.__main__ import main as cli
from synclr_monai.data.assembly import assemble_bbox
from synclr_monai.data.bbox import find_bboxes, sheet_point
from synclr_monai.data.checks import check_dataset
from synclr_monai.data.io import read_synapse_sheet, read_tiff_stack

ROOT = Path(__file__).resolve().parents[2]
# the smallest volume that reliably holds two synapses (centres 24 voxels from the faces, 32 apart)
SHAPE = (64, 96, 128)


def _heldout():
    spec = importlib.util.spec_from_file_location("heldout_synth", ROOT / "benchmarks" / "heldout_synth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> tuple[Path, dict]:
    """A 2-bbox held-out dataset (bbox 1 has one cleft value, bbox 2 two) and its ground truth."""
    root = tmp_path_factory.mktemp("heldout") / "data"
    truth = _heldout().generate(root, seed=0, bboxes=2, synapses_per_bbox=2, shape=SHAPE)
    return root, truth


def test_check_accepts_the_heldout_data(heldout, capsys):
    root, _ = heldout
    report = check_dataset(root)
    assert report.ok, report.problems
    assert [b.name for b in report.bboxes] == ["bbox1", "bbox2"]
    for b in report.bboxes:
        assert b.shape == SHAPE and b.dtype == "uint8" and b.synapses == 2 and b.cleft_voxels > 0
    assert cli(["check", str(root)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_assembly_finds_the_cleft_and_the_true_presynaptic_side(heldout):
    root, truth = heldout
    types = pd.read_csv(root / "synapse_types.csv", dtype=str)
    for source in find_bboxes(root):
        vol = assemble_bbox(source)
        sheet = read_synapse_sheet(source.sheet)
        seg = read_tiff_stack(source.seg, "label")
        assert vol.shape == SHAPE and vol.mask.shape == (3, *SHAPE)
        assert len(vol.synapses) == len(sheet) == 2
        bbox_truth = truth[source.number]
        for _, row in vol.synapses.iterrows():
            name = row["Var1"]
            # the cleft channel holds the sheet's centre (within a few voxels: the centre is rounded)
            z, y, x = sheet_point(row, "central")
            assert vol.cleft[z - 3 : z + 4, y - 3 : y + 4, x - 3 : x + 4].any(), name
            # exactly one side point is pre-synaptic, and it is the generator's pre-synaptic side
            covered = [int(vol.pre[sheet_point(row, f"side_{k}")]) for k in (1, 2)]
            assert sorted(covered) == [0, 1], (name, covered)
            true_side = bbox_truth[name]["pre_side"]
            assert covered[true_side - 1] == 1, (name, covered, true_side)
            assert int(row["pre_side"]) == true_side
            pre_pt, post_pt = sheet_point(row, f"side_{true_side}"), sheet_point(row, f"side_{3 - true_side}")
            assert row["pre_seg_id"] == seg[pre_pt] == bbox_truth[name]["pre_id"]
            assert row["post_seg_id"] == seg[post_pt] == bbox_truth[name]["post_id"]
            assert vol.post[post_pt] == 1 and vol.post[pre_pt] == 0
            # every synapse has its type, under the ids that representation.py merges on
            match = types[(types.bbox_name == source.name) & (types.Var1 == name)]["type"].tolist()
            assert match == [bbox_truth[name]["type"]]
    assert np.isin(types["type"], ["perforated", "dense_core", "thick_psd", "mito_bouton"]).all()


def test_overwrite_replaces_only_its_own_layout(tmp_path):
    module = _heldout()
    stale = tmp_path / "bbox_9"  # a bbox of an earlier, larger dataset
    stale.mkdir()
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        module.generate(tmp_path, seed=0, bboxes=1, synapses_per_bbox=1, shape=(56, 56, 56))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        module.generate(tmp_path, seed=0, bboxes=1, synapses_per_bbox=1, shape=(56, 56, 56), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bbox_9", "notes.txt"]  # nothing was touched
    (tmp_path / "notes.txt").unlink()
    module.generate(tmp_path, seed=0, bboxes=1, synapses_per_bbox=1, shape=(56, 56, 56), overwrite=True, check=False)
    # the stale bbox is gone, and no staging folder is left beside the dataset
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bbox1.xlsx", "bbox_1", "raw", "seg", "synapse_types.csv"]
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.tmp-*"))
