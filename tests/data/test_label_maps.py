"""Label maps: the default table, a dataset root's label_maps.json (written by synth past 7 bboxes), config overrides."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from synclr_monai.data.bbox import find_bboxes
from synclr_monai.data.bbox_loading import LoadBBoxd
from synclr_monai.data.cache import load_bbox, open_cached_bbox
from synclr_monai.data.checks import check_dataset
from synclr_monai.data.io import DataFormatError, read_volume
from synclr_monai.data.label_maps import (
    DATASET_LABEL_MAPS_FILE,
    DEFAULT_LABEL_MAPS,
    LabelMap,
    label_map_for,
    resolve_label_maps,
)
from synclr_monai.data.synapse_cubes import iter_dataset_cubes
from synclr_monai.data.synthetic import generate_dataset
from synclr_monai.errors import DataError


@pytest.fixture(scope="module")
def nine_bboxes(tmp_path_factory):
    root = tmp_path_factory.mktemp("nine") / "data"
    generate_dataset(root, n_bboxes=9, shape=(32, 48, 48), synapses_per_bbox=1, seed=2)
    return root


def test_synth_past_seven_bboxes_writes_their_label_maps(nine_bboxes):
    entries = json.loads((nine_bboxes / DATASET_LABEL_MAPS_FILE).read_text())
    assert sorted(entries) == ["bbox8", "bbox9"]
    assert entries["bbox9"] == DEFAULT_LABEL_MAPS[2].as_dict()
    table = resolve_label_maps(None, nine_bboxes)
    assert table[8] == DEFAULT_LABEL_MAPS[1] and table[3] == DEFAULT_LABEL_MAPS[3]
    # the file is what makes bbox9's masks readable: its cleft is where the file says
    source = find_bboxes(nine_bboxes, numbers=[9])[0]
    sem = read_volume(source.mask, "label")
    assert np.isin(sem, label_map_for(9, root=nine_bboxes).cleft_values).any()
    with pytest.raises(KeyError, match="label_maps.json"):
        label_map_for(9)  # the default table alone has no bbox9


def test_every_reader_takes_the_dataset_label_maps(nine_bboxes, tmp_path):
    report = check_dataset(nine_bboxes)
    assert report.ok, report.problems
    assert [b.name for b in report.bboxes][-2:] == ["bbox8", "bbox9"] and report.bboxes[-1].cleft_voxels > 0
    (source,) = find_bboxes(nine_bboxes, numbers=[9])
    volume = load_bbox(source, tmp_path / "cache")
    assert volume.cleft.any() and volume.pre.any()
    assert open_cached_bbox(source, tmp_path / "cache").cleft_voxels == int(volume.cleft.sum())
    item = LoadBBoxd(cache_dir=tmp_path / "cache")({"bbox": source})
    np.testing.assert_array_equal(item["mask"], volume.mask)
    names = {bbox for bbox, _, _ in iter_dataset_cubes(nine_bboxes, 16, tmp_path / "cache")}
    assert {"bbox8", "bbox9"} <= names


def test_config_overrides_win_over_the_dataset_file(nine_bboxes, tmp_path):
    wrong = {"bbox9": {"mito": 100, "vesicle": 101, "cleft": 102}}  # values the mask does not hold
    assert resolve_label_maps(wrong, nine_bboxes)[9] == LabelMap(100, 101, 102, 102)
    (source,) = find_bboxes(nine_bboxes, numbers=[9])
    with pytest.raises(DataFormatError, match="no cleft voxel"):
        LoadBBoxd(cache_dir=tmp_path / "cache", label_maps=wrong)({"bbox": source})
    assert not check_dataset(nine_bboxes, label_maps=wrong).ok


def test_a_bad_label_maps_file_is_named(nine_bboxes, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(nine_bboxes, root)
    (root / DATASET_LABEL_MAPS_FILE).write_text('{"bbox8": {"mito": 1}}')
    (source,) = find_bboxes(root, numbers=[8])
    with pytest.raises(DataError, match=r"label_maps\.json.*'vesicle', 'cleft'"):
        load_bbox(source)
    report = check_dataset(root)
    assert not report.ok and any(DATASET_LABEL_MAPS_FILE in p for p in report.problems)
    (root / DATASET_LABEL_MAPS_FILE).write_text("[1, 2]")
    with pytest.raises(DataError, match="expected an object"):
        resolve_label_maps(None, root)


def test_finetune_merges_partial_overrides_into_the_table(nine_bboxes):
    from synclr_monai.finetune.data import load_cleft_volumes

    # an override for bbox1 alone (as a YAML config gives it: a string key) leaves bbox2..9 to the dataset's table
    volumes = load_cleft_volumes(nine_bboxes, label_maps={"bbox1": DEFAULT_LABEL_MAPS[1].as_dict()})
    assert [v.name for v in volumes] == [f"bbox{n}" for n in range(1, 10)]
    assert all(v.cleft.any() for v in volumes)
