"""A 2-process gloo DDP run (CPU): completes, ranks agree, and only rank 0 writes logs and files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from synclr_monai.engines import shutdown_distributed

RUNS = 10  # of the clean-exit test below
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


def _ddp_step_then_shutdown(rank: int, store: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 3))
    ddp(torch.randn(2, 4)).sum().backward()
    shutdown_distributed(ddp)
    assert not dist.is_initialized() and ddp.reducer is None
    # `ddp` is still alive here, as it is in a bundle's config parser, when the interpreter exits


def test_shutdown_distributed_lets_every_rank_exit_cleanly(tmp_path):
    # Without the helper (destroy_process_group alone, DDP wrapper alive) the gloo threads are torn down at
    # interpreter exit: spawned ranks died with SIGABRT in ~1 run of 7, forked ones hung in ~1 of 6.
    # 10 runs catch that regression with probability ~0.8; forked workers inherit the imports (~1 s a run).
    for run in range(RUNS):
        context = mp.start_processes(
            _ddp_step_then_shutdown, args=(str(tmp_path / f"store{run}"),), nprocs=2, join=False, start_method="fork"
        )
        deadline = time.monotonic() + 60
        while not context.join(timeout=1):  # raises if a rank failed or died from a signal
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                pytest.fail(f"run {run}: a rank did not exit within 60 s after shutdown_distributed")


def test_shutdown_distributed_without_a_process_group_does_nothing():
    shutdown_distributed(torch.nn.Linear(2, 2))
    assert not dist.is_initialized()
