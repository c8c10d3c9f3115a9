"""The MONAI bundle end to end: `python -m monai.bundle run training|inference`, metadata, DDP, bad configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"
TINY = [
    "--cube_size", "16", "--backbone", "resnet10", "--batch_size", "4", "--accumulation_steps", "1",
    "--cubes_per_bbox", "4", "--max_epochs", "2", "--warmup_epochs", "1", "--num_workers", "0",
    "--projection_hidden", "16", "--projection_dim", "8", "--progress_bar", "False", "--wandb_mode", "offline",
    "--log_every", "1", "--device", "cpu", "--amp", "False", "--save_interval", "2",
]


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _bundle(tmp_path: Path, *args: str, runner: list[str] | None = None, timeout: int = 300):
    cmd = [*(runner or [sys.executable, "-m"]), "monai.bundle", *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def _train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run", "training", "--config_file", str(CONFIGS / "train.yaml"), "--dataset_dir", str(root),
        "--output_dir", str(out), "--encoder_path", str(out / "model.pt"), *TINY, *extra,
    ]


def test_metadata_verifies_offline():
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(REPO / "bundle" / "docs" / "meta_schema.json"))


def test_training_then_inference_through_monai_bundle(synthetic_root, tmp_path):
    out = tmp_path / "run"
    res = _bundle(tmp_path, *_train_args(synthetic_root, out))
    assert res.returncode == 0, res.stderr[-3000:]
    ckpts = {p.name for p in (out / "checkpoints").glob("*.pt")}
    # 2 bboxes x 4 cubes / batch 4 = 2 iterations per epoch, 2 epochs
    assert "final_4.pt" in ckpts and "checkpoint_4.pt" in ckpts
    final = torch.load(out / "checkpoints" / "final_4.pt", weights_only=True)
    assert {"model", "optimizer", "trainer", "lr_scheduler"} <= set(final)
    assert final["trainer"]["iteration"] == 4
    meta = json.loads((out / "model.json").read_text())
    assert meta["backbone"] == "resnet10"
    # the sidecar records the encoder's input: inference reads it from there
    # (train.yaml's default input: raw, pre-synaptic and cleft masks, in the canonical pose)
    assert meta["cube_size"] == 16 and meta["input_mode"] == "channels" and meta["in_channels"] == 3
    assert meta["pose"] == "canonical"
    assert list((out / "wandb").glob("offline-run-*")), "W&B runs offline by default"

    # inference with the exported encoder: one embedding per sheet row, ids as in the sheets
    emb_dir = tmp_path / "emb"
    res = _bundle(
        tmp_path, "run", "inference", "--config_file", str(CONFIGS / "inference.yaml"),
        "--dataset_dir", str(synthetic_root), "--output_dir", str(emb_dir), "--encoder_path", str(out / "model.pt"),
        "--backbone", "resnet10", "--device", "cpu",  # an agreeing backbone; the cube size from the sidecar
    )
    assert res.returncode == 0, res.stderr[-3000:]
    from synclr_monai.evaluation.embeddings import read_embeddings

    ids, vectors, _ = read_embeddings(emb_dir / "embeddings.h5")
    sheets = pd.concat(
        [pd.read_excel(synthetic_root / f"bbox{n}.xlsx", dtype={"Var1": str}).assign(bbox_name=f"bbox{n}") for n in (1, 2)]
    )
    assert sorted(zip(ids["bbox_name"], ids["Var1"])) == sorted(zip(sheets["bbox_name"], sheets["Var1"]))
    assert vectors.shape == (len(sheets), 512) and torch.isfinite(torch.from_numpy(vectors)).all()
    csv = pd.read_csv(emb_dir / "embeddings.csv", dtype={"Var1": str})
    assert list(csv.columns[:3]) == ["bbox_name", "Var1", "e0"] and len(csv) == len(sheets)
    # the workflow of inference.yaml and the Python call build the same thing: same vectors, same order
    from synclr_monai.inference import run_inference

    py_ids, py_vectors, attrs = read_embeddings(run_inference(synthetic_root, out / "model.pt", tmp_path / "py", progress=False))
    assert py_ids.equals(ids) and attrs["rotations"] == 4 and attrs["pose"] == "canonical"  # 4 turns about the normal
    assert torch.allclose(torch.from_numpy(py_vectors), torch.from_numpy(vectors), atol=1e-5)

    # restarting a finished run (through the model zoo's `run` entry) resumes from its last checkpoint and
    # trains no further
    args = _train_args(synthetic_root, out)
    args[args.index("training")] = "run"
    res = _bundle(tmp_path, *args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resum" in (res.stdout + res.stderr).lower()


@pytest.mark.parametrize(
    "override, message",
    [
        (["--backbone", "resnet99"], "backbone: unknown 'resnet99'"),
        (["--cube_size", "64"], "cube_size: 64 is larger than the volume"),
        (["--pose", "upright"], "pose: must be one of native, canonical, got 'upright'"),
    ],
)
def test_bad_config_fails_at_start_with_a_clear_message(synthetic_root, tmp_path, override, message):
    out = tmp_path / "bad"
    res = _bundle(tmp_path, *_train_args(synthetic_root, out, *override), timeout=120)
    assert res.returncode != 0
    assert message in res.stderr
    assert not (out / "checkpoints").exists()  # nothing was trained or written


def test_two_process_ddp_through_the_bundle(synthetic_root, tmp_path):
    out = tmp_path / "ddp"
    configs = f"['{CONFIGS / 'train.yaml'}','{CONFIGS / 'multi_gpu_train.yaml'}']"
    # out of core: each rank builds (once, under the cache's lock) and reads only the cubes its sampler asks for
    args = _train_args(synthetic_root, out, "--cubes_per_bbox", "8", "--data_mode", "chunked")
    args[args.index("--config_file") + 1] = configs
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    res = _bundle(tmp_path, *args, runner=runner, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    # 2 bboxes x 8 cubes / 2 ranks / batch 4 = 2 iterations per epoch on each rank
    final = torch.load(out / "checkpoints" / "final_4.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 4
    assert (out / "model.pt").is_file()
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1  # rank 0 only
    # the missing caches were built once each, by one rank, while the other waited on the lock
    log = res.stdout + res.stderr
    assert log.count(": assembling from") == 2, log[-3000:]
    assert sorted(p.name for p in (out / "cache").glob("*.h5")) == ["bbox1.h5", "bbox2.h5"]
    assert not list((out / "cache").glob("*.tmp"))


def test_training_in_chunked_mode_through_the_bundle(synthetic_root, tmp_path):
    """``--data_mode chunked``: cubes read from the HDF5 caches by two workers, mask-aware from the component table;
    in the canonical pose (the components' frames read out of the caches), which the sidecar hands to inference."""
    out = tmp_path / "chunked"
    args = _train_args(
        synthetic_root, out, "--data_mode", "chunked", "--sampling", "mask_aware", "--min_component_size", "20",
        "--num_workers", "2", "--max_epochs", "1", "--pose", "canonical",
    )  # fmt: skip
    res = _bundle(tmp_path, *args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "final_2.pt" in {p.name for p in (out / "checkpoints").glob("*.pt")}
    assert sorted(p.name for p in (out / "cache").glob("*.h5")) == ["bbox1.h5", "bbox2.h5"]
    assert json.loads((out / "model.json").read_text())["pose"] == "canonical"
    from synclr_monai.evaluation.embeddings import read_embeddings
    from synclr_monai.inference import run_inference

    _, vectors, attrs = read_embeddings(run_inference(synthetic_root, out / "model.pt", tmp_path / "emb", progress=False))
    assert attrs["pose"] == "canonical" and attrs["rotations"] == 4 and np.isfinite(vectors).all()


def test_train_config_resolves_the_data_mode(synthetic_root, tmp_path):
    from monai.bundle import ConfigParser

    from synclr_monai.data.lazy import H5Volume

    def dataset(**overrides):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.yaml"))
        parser.update(
            {"dataset_dir": str(synthetic_root), "output_dir": str(tmp_path / "out"), "cube_size": 16,
             "cubes_per_bbox": 2, "num_workers": 0, "progress_bar": False, **overrides}
        )  # fmt: skip
        return parser.get_parsed_content("train#data_mode"), parser.get_parsed_content("train#dataset")

    mode, ds = dataset()  # auto: two small bboxes fit in the default budget
    assert mode == "memory" and isinstance(ds.cache[0]["raw"], np.ndarray)
    mode, ds = dataset(max_cache_gb=0.0001)
    assert mode == "chunked" and isinstance(ds.cache[0]["raw"], H5Volume) and isinstance(ds.cache[1]["mask"], H5Volume)


def test_train_config_plans_every_optimizer_step(synthetic_root):
    from monai.bundle import ConfigParser

    from synclr_monai.engines.config_checks import check_training_config

    # 2 bboxes x 3 cubes / batch 2 = 3 iterations per epoch
    summary = check_training_config(
        synthetic_root, cube_size=16, backbone="resnet10", batch_size=2, accumulation_steps=2, max_epochs=100,
        cubes_per_bbox=3,
    )
    assert summary["iterations_per_epoch"] == 3 and summary["optimizer_steps"] == 200

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    # 3 iterations per epoch, accumulation 2: the trainer steps twice an epoch ([1, 2] [3])
    parser.update(
        {"lr_scheduler#iterations_per_epoch": 3, "accumulation_steps": 2, "max_epochs": 100, "warmup_epochs": 10,
         "lr_scheduler#optimizer": torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)}
    )  # fmt: skip
    schedule = parser.get_parsed_content("lr_scheduler")
    assert schedule.total_steps == 200 and schedule.warmup_steps == 20


def test_train_config_cuts_every_batch_from_one_bbox(synthetic_root, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser.update(
        {"dataset_dir": str(synthetic_root), "output_dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"),
         "cube_size": 16, "cubes_per_bbox": 4, "batch_size": 2, "num_workers": 0, "progress_bar": False}
    )  # fmt: skip
    sampler = parser.get_parsed_content("train#sampler")
    n_bboxes = parser.get_parsed_content("train#dataset").n_bboxes
    assert n_bboxes == 2 and sampler.groups == n_bboxes and sampler.group_batch == 2
    indices = list(iter(sampler))
    assert sorted(indices) == list(range(8))
    assert all(len({i % n_bboxes for i in indices[j : j + 2]}) == 1 for j in range(0, 8, 2))
    # switched off: plain shuffling
    parser.update({"same_bbox_batches": False})
    assert parser.get_parsed_content("train#sampler", lazy=False).groups is None


def test_train_config_has_the_model_zoo_ids():
    from monai.bundle import ConfigParser
    from monai.bundle.properties import TrainProperties

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    # MONAI's list of what a training bundle defines: train#trainer, train#dataset, train#inferer, ...
    required = [p["id"] for p in TrainProperties.values() if p["required"]]
    assert "train::trainer" in required
    assert [i for i in required if i.replace("::", "#") not in parser] == []
    for name in ("train#preprocessing", "train#dataloader", "train#handlers", "initialize", "training", "finalize"):
        assert name in parser, name
    assert parser["run"] == "@training"  # the model zoo's entry name runs the same list


def test_train_config_wires_mask_same_synapse_into_the_loss():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    loss = parser.get_parsed_content("loss")
    assert not loss.mask_same_synapse and not loss.uses_synapse_ids  # off by default
    parser.update({"mask_same_synapse": True})
    loss = parser.get_parsed_content("loss", lazy=False)
    assert loss.mask_same_synapse and loss.uses_synapse_ids
