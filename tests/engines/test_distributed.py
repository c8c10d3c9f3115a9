"""A 2-process gloo DDP run (CPU): completes, ranks agree, and only rank 0 writes logs and files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"


def test_two_process_ddp(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path)], env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-4000:]

    rank0 = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "weights_rank1.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    torch.manual_seed(0)
    from toy_training import TinyNet

    assert not torch.equal(TinyNet().conv.weight, rank0["conv.weight"])  # it trained

    summaries = [json.loads((tmp_path / f"summary_rank{r}.json").read_text()) for r in (0, 1)]
    # 16 samples / 2 ranks / batch 2 = 4 iterations per epoch, 2 epochs; the epoch loss is all-reduced
    assert summaries[0] == summaries[1] and summaries[0]["iteration"] == 8

    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints_rank0").glob("*.pt"))
    assert {"checkpoint_6.pt", "checkpoint_8.pt", "final_8.pt"} <= set(checkpoints)
    assert any(name.startswith("best_") for name in checkpoints)
    assert not (tmp_path / "checkpoints_rank1").exists() or not any((tmp_path / "checkpoints_rank1").iterdir())
    assert list((tmp_path / "wandb_rank0" / "wandb").glob("offline-run-*"))
    assert not (tmp_path / "wandb_rank1").exists()
    assert (tmp_path / "encoder_rank0.pt").is_file() and not (tmp_path / "encoder_rank1.pt").exists()
    log0 = (tmp_path / "log_rank0.txt").read_text()
    log1 = (tmp_path / "log_rank1.txt").read_text()
    assert "Epoch: 2/2, Iter: 4/4" in log0
    assert log1 == ""
