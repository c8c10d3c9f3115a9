"""Issue 13, items 7, 8, 11 and 12: one run per output folder, checkpoints that survive a kill at any instant,
disk full, and resuming with a changed architecture."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # kill_worker (imported by the forkserver too)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines"))  # toy_training

import kill_worker  # noqa: E402
from toy_training import make_loader, make_trainer  # noqa: E402

from synclr_monai.errors import OutputError  # noqa: E402
from synclr_monai.handlers import CheckpointHandler, list_checkpoints  # noqa: E402
from synclr_monai.handlers.checkpoint import ResumeMismatchError  # noqa: E402
from synclr_monai.run_guard import LOCK_NAME, RunLock, RunLockedError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


# ---- 7. one run per output folder ------------------------------------------------------------------------------------
def test_a_second_run_on_a_live_folder_stops_naming_the_other_run(tmp_path):
    folder = tmp_path / "checkpoints"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from synclr_monai.run_guard import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)", str(folder)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        partial = folder / ".checkpoint_8.pt.0123456789abcdef0123456789abcdef.tmp"  # the other run's write
        partial.write_bytes(b"being written")
        trainer = make_trainer(max_epochs=1, loader=make_loader(n=8, batch_size=4))
        with pytest.raises(RunLockedError, match=rf"{folder} is in use by another run \(pid {holder.pid} on host "):
            CheckpointHandler(folder, save_interval=1, resume="auto").attach(trainer)
        assert partial.exists()  # nothing of the other run was touched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder was killed: its lock is stale (pid gone) and is taken over with a warning
    with pytest.warns(UserWarning, match="taking over the lock of a run that is gone"):
        lock = RunLock(folder).acquire()
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (folder / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    tmp_path.joinpath(LOCK_NAME).write_text(json.dumps({"pid": 1, "host": socket.gethostname() + "-other"}))
    with pytest.raises(RunLockedError, match=r"on host .*-other.*delete .*\.synclr_run\.lock"):
        RunLock(tmp_path).acquire()


def test_a_stale_lock_with_a_reused_pid_is_taken_over(tmp_path):
    # pid 1 is alive, but it started long before the (fake) run recorded in the lock
    tmp_path.joinpath(LOCK_NAME).write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "proc_start": "-1"}))
    with pytest.warns(UserWarning, match="taking over"):
        RunLock(tmp_path).acquire().release()


# ---- 8. kills at random instants during saves ------------------------------------------------------------------------
def _check_folder(checkpoints: Path) -> int:
    """Every checkpoint file is complete; returns the newest iteration (0 when there is none)."""
    found = list_checkpoints(checkpoints)
    for iteration, path in found:
        state = torch.load(path, weights_only=True)
        assert state["trainer"]["iteration"] == iteration, path
        assert torch.equal(state["ballast"]["data"], torch.arange(2**20, dtype=torch.float32)), path
    # a kill between a new file's rename and the old one's deletion leaves one extra (complete) file
    assert len(list_checkpoints(checkpoints, ("checkpoint",))) <= 2 + 1
    latest = found[-1][0] if found else 0
    if latest >= kill_worker.EPOCH_LENGTH:  # an epoch was completed: a best checkpoint must exist
        assert list_checkpoints(checkpoints, ("best",)), sorted(p.name for p in checkpoints.iterdir())
    return latest


def test_kills_at_random_instants_never_lose_the_latest_checkpoint(tmp_path):
    ctx = multiprocessing.get_context("forkserver")
    # torch._dynamo: imported lazily by the first optimizer, 3 s a child otherwise
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "ignite.engine", "monai.engines", "kill_worker"])
    warm_up = ctx.Process(target=kill_worker.noop)  # the forkserver's imports: ~15 s, more on a busy machine
    warm_up.start()
    warm_up.join()
    checkpoints = tmp_path / "checkpoints"
    rng = random.Random(13)
    latest, kills, deadline = 0, 0, time.monotonic() + 45
    while kills < 12 and time.monotonic() < deadline:
        ready = ctx.Event()
        child = ctx.Process(target=kill_worker.train, args=(str(tmp_path), 1000, ready))
        child.start()
        assert ready.wait(timeout=60), "the child did not start training"
        time.sleep(rng.uniform(0.0, 0.4))  # iterations and saves alternate: kills land in both
        child.kill()
        child.join()
        assert child.exitcode == -signal.SIGKILL
        kills += 1
        newest = _check_folder(checkpoints)
        assert newest >= latest  # resume continued from the latest complete checkpoint, nothing was lost
        latest = newest
    assert kills >= 6 and latest > 2 * kill_worker.EPOCH_LENGTH

    # a final child resumes from the latest checkpoint and completes its epoch
    epochs = latest // kill_worker.EPOCH_LENGTH + 1
    child = ctx.Process(target=kill_worker.train, args=(str(tmp_path), epochs))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert json.loads((tmp_path / "report.json").read_text())["iteration"] == epochs * kill_worker.EPOCH_LENGTH
    assert list_checkpoints(checkpoints, ("final",))
    assert len(list_checkpoints(checkpoints, ("checkpoint",))) == 2 and len(list_checkpoints(checkpoints, ("best",))) == 1
    assert not [p for p in checkpoints.iterdir() if p.name.endswith(".tmp")]  # leftovers cleaned at start


# ---- 11. disk full while saving --------------------------------------------------------------------------------------
def test_disk_full_names_the_file_and_keeps_previous_checkpoints(tmp_path, monkeypatch):
    trainer = make_trainer(max_epochs=2, loader=make_loader(n=16, batch_size=4), momentum=0.9)
    CheckpointHandler(tmp_path, save_interval=1, n_saved=2).attach(trainer)
    real_save, calls = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 3:
            Path(f).write_bytes(b"half")  # the write got this far
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OutputError, match=r"cannot write checkpoint .*checkpoint_3\.pt: No space left on device "
                                          r"\([0-9.]+ MiB free in .*\); the previous checkpoints are intact"):
        trainer.run()
    monkeypatch.undo()
    assert [p.name for _, p in list_checkpoints(tmp_path)] == ["checkpoint_1.pt", "checkpoint_2.pt"]
    for iteration, path in list_checkpoints(tmp_path):
        assert torch.load(path, weights_only=True)["trainer"]["iteration"] == iteration
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---- 12. resuming with a changed architecture ------------------------------------------------------------------------
class WiderNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 6, 3, stride=2)
        self.head = nn.Linear(6, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))


def test_resuming_another_architecture_names_the_checkpoint_the_difference_and_the_ways_out(tmp_path):
    trainer = make_trainer(max_epochs=1, loader=make_loader(n=8, batch_size=4))
    CheckpointHandler(tmp_path, save_interval=2, run_config={"backbone": "tiny", "width": 4}).attach(trainer)
    trainer.run()

    wider = make_trainer(max_epochs=2, loader=make_loader(n=8, batch_size=4), network=WiderNet())
    CheckpointHandler(tmp_path, save_interval=2, resume="auto", run_config={"backbone": "tiny", "width": 6}).attach(wider)
    with pytest.raises(ResumeMismatchError) as error:
        wider.run()
    message = str(error.value)
    assert f"cannot resume from {tmp_path / 'final_2.pt'}" in message
    assert "width: 4 in the checkpoint, 6 now" in message
    assert "conv.weight (4, 3, 3, 3, 3) vs (6, 3, 3, 3, 3)" in message
    assert "resume: null" in message and "another output_dir" in message
