"""A training run killed with SIGKILL resumes (resume="auto") at its last checkpoint, with no corrupt file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from synclr_monai.handlers import find_latest_checkpoint, list_checkpoints

WORKER = Path(__file__).resolve().parent / "resume_worker.py"


def test_sigkill_then_resume_auto(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), "0.15"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list_checkpoints(tmp_path / "checkpoints", ("checkpoint",))) < 3:
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoints were written"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "report.json").exists()  # it really died mid-run

    for iteration, path in list_checkpoints(tmp_path / "checkpoints"):  # every file loads and is consistent
        assert torch.load(path, weights_only=True)["trainer"]["iteration"] == iteration
    latest = find_latest_checkpoint(tmp_path / "checkpoints")
    last_iteration = list_checkpoints(tmp_path / "checkpoints")[-1][0]
    assert 6 <= last_iteration < 40

    result = subprocess.run([sys.executable, str(WORKER), str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == {"first_iteration": last_iteration + 1, "iteration": 40, "epoch": 10, "resumed_from": latest.name}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("checkpoint_")) == [
        "checkpoint_36.pt", "checkpoint_38.pt", "checkpoint_40.pt"]
