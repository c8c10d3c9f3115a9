"""WandBHandler: offline by default, writes a local run directory, rank 0 only."""

from __future__ import annotations

import time

import ignite.distributed as idist
import pytest
from toy_training import make_trainer

from synclr_monai.handlers import WandBHandler, resolve_wandb_mode


def test_offline_run_writes_local_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline must be the default, not the environment's doing
    monkeypatch.setenv("WANDB_SILENT", "true")
    trainer = make_trainer(max_epochs=2)
    handler = WandBHandler(project="test", dir=tmp_path, config={"batch_size": 4})
    handler.attach(trainer)
    assert handler.logger.run.settings.mode == "offline"
    run_dir = handler.run_dir
    trainer.run()

    assert handler.logger is None  # finished at COMPLETED
    assert run_dir.parent == tmp_path / "wandb" and run_dir.name.startswith("offline-run-")
    (records,) = run_dir.glob("run-*.wandb")
    # The W&B service process writes the run's record file and may still hold the last block after finish();
    # stopping the service makes it close the file.
    import wandb

    wandb.teardown()
    keys = (b"train/loss", b"train/lr", b"train/top1", b"train/epoch_loss")
    deadline = time.monotonic() + 30
    while not all(key in records.read_bytes() for key in keys) and time.monotonic() < deadline:
        time.sleep(0.2)
    data = records.read_bytes()
    assert all(key in data for key in keys), data[:200]


def test_not_created_on_other_ranks(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    monkeypatch.setattr(wandb, "init", lambda *a, **k: pytest.fail("wandb.init called on rank 1"))
    trainer = make_trainer()
    handler = WandBHandler(dir=tmp_path / "wandb_dir", mode="offline")
    handler.attach(trainer)
    trainer.run()
    assert handler.logger is None and not (tmp_path / "wandb_dir").exists()


def test_mode_resolution(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_wandb_mode() == "online"  # the user's choice
    assert resolve_wandb_mode("disabled") == "disabled"  # an explicit mode wins
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="WANDB_MODE"):
        resolve_wandb_mode()
    with pytest.raises(ValueError, match="mode"):
        WandBHandler(mode="loud")
    with pytest.raises(ValueError, match="log_every"):
        WandBHandler(log_every=0)
