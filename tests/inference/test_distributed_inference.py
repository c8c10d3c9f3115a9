"""Inference split over processes (torchrun) equals one process; the shards of the synapse list."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synclr_monai.data.synapse_cubes import SynapseCubeDataset, sheet_ids
from synclr_monai.evaluation.embeddings import read_embeddings
from synclr_monai.inference import run_inference
from synclr_monai.networks import build_simclr, save_encoder

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"


def test_shards_are_contiguous_blocks_in_sheet_order(synthetic_root):
    ids = sheet_ids(synthetic_root)
    blocks = [SynapseCubeDataset(synthetic_root, 16, shard=r, num_shards=4).ids for r in range(4)]
    assert sum(len(b) for b in blocks) == len(ids) and all(len(b) > 0 for b in blocks)
    merged = [tuple(x) for b in blocks for x in b[["bbox_name", "Var1"]].itertuples(index=False)]
    assert merged == [tuple(x) for x in ids.itertuples(index=False)]
    with pytest.raises(ValueError, match="cannot be split over"):
        SynapseCubeDataset(synthetic_root, 16, shard=0, num_shards=len(ids) + 1)


@pytest.mark.slow
def test_two_process_inference_equals_one(synthetic_root, tmp_path):
    encoder = save_encoder(
        build_simclr("resnet10", projection_hidden=16, projection_dim=4), tmp_path / "model.pt",
        metadata={"cube_size": 16, "input_mode": "channels"},
    )  # fmt: skip
    single = run_inference(synthetic_root, encoder, tmp_path / "one", progress=False, rotations=1)
    one_ids, one_vectors, _ = read_embeddings(single)

    configs = f"['{CONFIGS / 'inference.yaml'}','{CONFIGS / 'multi_gpu_inference.yaml'}']"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
        "run", "inference", "--config_file", configs, "--dataset_dir", str(synthetic_root), "--output_dir",
        str(tmp_path / "two"), "--encoder_path", str(encoder), "--cache_dir", str(tmp_path / "cache"), "--rotations", "1",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    two_ids, two_vectors, _ = read_embeddings(tmp_path / "two" / "embeddings.h5")
    assert two_ids.equals(one_ids)  # one file, in sheet order
    np.testing.assert_allclose(two_vectors, one_vectors, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if p.suffix in (".h5", ".csv")) == [
        "embeddings.csv",
        "embeddings.h5",
    ]
