"""Fine-tuning as a MONAI bundle: `python -m monai.bundle run --config_file bundle/configs/finetune.yaml`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from synclr_monai.finetune import finetune_cleft_segmentation
from synclr_monai.networks import build_simclr, save_encoder

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "bundle" / "configs" / "finetune.yaml"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIG), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_finetune_bundle_equals_the_python_workflow(synthetic_root, tmp_path):
    encoder = save_encoder(build_simclr("resnet10", projection_hidden=16, projection_dim=4), tmp_path / "model.pt")
    settings = {"iterations": 3, "batch_size": 2, "crop_size": 32, "seed": 1}
    out = tmp_path / "bundle"
    res = _run(
        tmp_path, "--dataset_dir", str(synthetic_root), "--encoder_path", str(encoder), "--output_dir", str(out),
        "--device", "cpu", "--cache_dir", str(tmp_path / "cache"),
        *[x for k, v in settings.items() for x in (f"--{k}", str(v))],
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["init"] == "pretrained" and summary["backbone"] == "resnet10"  # from model.json
    assert set(summary["dice_per_bbox"]) == {"bbox2"} and summary["train_bboxes"] == ["bbox1"]
    state = torch.load(out / "segmentation.pt", weights_only=True)  # MONAI's CheckpointSaver, final model
    assert any(k.startswith("encoder") or "resnet" in k for k in state)

    # the same seed through the Python workflow (what the `finetune` command runs): the same Dice
    python = finetune_cleft_segmentation(
        synthetic_root, encoder, cache_dir=tmp_path / "cache", progress=False, **settings
    )
    assert python["dice_per_bbox"]["bbox2"] == pytest.approx(summary["dice_per_bbox"]["bbox2"], abs=1e-6)

    # from scratch: same architecture, no encoder weights; a bad key is refused at start
    res = _run(
        tmp_path,
        "--dataset_dir",
        str(synthetic_root),
        "--encoder_path",
        str(encoder),
        "--output_dir",
        str(tmp_path / "scratch"),
        "--device",
        "cpu",
        "--pretrained",
        "False",
        "--iterations",
        "1",
        "--batch_size",
        "2",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "scratch" / "finetune.json").read_text())["init"] == "scratch"
    res = _run(
        tmp_path, "--dataset_dir", str(synthetic_root), "--output_dir", str(tmp_path / "bad"), "--iterationz", "1"
    )
    assert res.returncode == 2 and "iterationz" in res.stderr


def test_finetune_bundle_names_a_missing_encoder_in_one_line(synthetic_root, tmp_path):
    missing = tmp_path / "none.pt"
    res = _run(
        tmp_path,
        "--dataset_dir",
        str(synthetic_root),
        "--encoder_path",
        str(missing),
        "--output_dir",
        str(tmp_path / "o"),
    )
    assert res.returncode == 2, res.stderr[-3000:]
    assert f"error: encoder file {missing} does not exist" in res.stderr and "Traceback" not in res.stderr
