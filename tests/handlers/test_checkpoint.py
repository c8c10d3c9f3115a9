"""CheckpointHandler: periodic (last k), best and final files, atomic and loadable; resume (explicit and auto)."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Events
from toy_training import assert_same_weights, make_loader, make_trainer, snapshot

from synclr_monai.handlers import CheckpointHandler, find_latest_checkpoint, list_checkpoints, resume_from
from synclr_monai.handlers.utils import training_objects


def trainer_with_checkpoints(tmp_path, max_epochs=2, seed=0, resume=None, **handler_kwargs):
    """TinyNet, 4 iterations per epoch, SGD with momentum and a per-step LR schedule."""
    trainer = make_trainer(max_epochs=max_epochs, loader=make_loader(n=16, batch_size=4), momentum=0.9, seed=seed)
    trainer.lr_scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, step_size=1, gamma=0.9)
    handler = CheckpointHandler(tmp_path / "ckpt", resume=resume, **handler_kwargs)
    handler.attach(trainer)
    return trainer, handler


def first_iteration(trainer) -> list[int]:
    seen: list[int] = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(e.state.iteration) if not seen else None)
    return seen


def test_periodic_best_final_files(tmp_path):
    trainer, handler = trainer_with_checkpoints(tmp_path, max_epochs=3, save_interval=2, n_saved=2)
    epoch_losses: list[float] = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epoch_losses.append(e.state.metrics["epoch_loss"]))
    trainer.run()

    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    best_epoch = epoch_losses.index(min(epoch_losses)) + 1
    best = [n for n in names if n.startswith("best_")]
    assert best == [f"best_{4 * best_epoch}_neg_epoch_loss={-min(epoch_losses):.4f}.pt"]
    assert set(names) == {"checkpoint_10.pt", "checkpoint_12.pt", "final_12.pt", *best}  # last 2 periodic kept
    for iteration, path in list_checkpoints(tmp_path / "ckpt"):
        state = torch.load(path, weights_only=True)
        assert set(state) == {"model", "optimizer", "trainer", "lr_scheduler", "rng", "epoch_metrics"}
        assert state["trainer"]["iteration"] == iteration
    assert handler.last_checkpoint == tmp_path / "ckpt" / "checkpoint_12.pt"
    assert find_latest_checkpoint(tmp_path / "ckpt").name in {"checkpoint_12.pt", "final_12.pt"}


def test_an_epochs_best_is_on_disk_before_its_last_periodic_checkpoint(tmp_path, monkeypatch):
    """A kill between the two files must never leave "epoch done" on disk without that epoch's best."""
    import synclr_monai.handlers.checkpoint as module

    written: list[str] = []
    real = module.SafeDiskSaver.__call__

    def recording(saver, checkpoint, filename, metadata=None):
        out = real(saver, checkpoint, filename, metadata)
        written.append(filename)  # complete on disk
        return out

    monkeypatch.setattr(module.SafeDiskSaver, "__call__", recording)
    trainer, _ = trainer_with_checkpoints(tmp_path, max_epochs=2, save_interval=1, n_saved=2, save_final=False)
    trainer.run()
    assert written[:3] == ["checkpoint_1.pt", "checkpoint_2.pt", "checkpoint_3.pt"]
    assert written[3].startswith("best_4_") and written[4] == "checkpoint_4.pt"  # epoch 1's best, then its end
    bests = [w for w in written if w.startswith("best_8_")]  # epoch 2's best, written only when it is better
    assert written[-1] == "checkpoint_8.pt" and written[-2] == (bests[0] if bests else "checkpoint_7.pt")
    assert len(written) == 8 + 1 + len(bests)  # every periodic checkpoint is still written, once


def test_resume_restores_everything_and_continues(tmp_path):
    reference, _ = trainer_with_checkpoints(tmp_path, save_interval=2, n_saved=10, save_best=False)
    reference.run()
    # resume a differently initialised trainer from the end of epoch 1 (iteration 4)
    resumed, handler = trainer_with_checkpoints(
        tmp_path / "second", seed=1, resume=tmp_path / "ckpt" / "checkpoint_4.pt", save_interval=None
    )
    seen = first_iteration(resumed)
    resumed.run()
    assert handler.resumed_from == tmp_path / "ckpt" / "checkpoint_4.pt"
    assert seen == [5] and resumed.state.iteration == 8
    # momentum buffers, schedule and weights restored: the continuation reproduces the reference run
    assert_same_weights(snapshot(resumed.network), snapshot(reference.network))
    assert resumed.lr_scheduler.last_epoch == reference.lr_scheduler.last_epoch == 8


def test_resume_auto_takes_latest_and_keeps_n_saved(tmp_path):
    first, _ = trainer_with_checkpoints(tmp_path, save_interval=2, n_saved=2, save_final=False)
    first.run()
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("checkpoint_*")) == ["checkpoint_6.pt", "checkpoint_8.pt"]

    second, handler = trainer_with_checkpoints(tmp_path, max_epochs=3, seed=1, resume="auto", save_interval=2,
                                               n_saved=2, save_final=False)
    seen = first_iteration(second)
    second.run()
    assert handler.resumed_from.name == "checkpoint_8.pt"
    assert seen == [9] and second.state.iteration == 12 and second.state.max_epochs == 3
    # the files of the first run count towards n_saved: still 2 periodic and 1 best
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("checkpoint_*")) == ["checkpoint_10.pt", "checkpoint_12.pt"]
    assert len(list((tmp_path / "ckpt").glob("best_*"))) == 1


def test_resume_auto_without_checkpoints_starts_fresh(tmp_path):
    trainer, handler = trainer_with_checkpoints(tmp_path, max_epochs=1, resume="auto", save_interval=None)
    seen = first_iteration(trainer)
    trainer.run()
    assert handler.resumed_from is None and seen == [1]


def test_resume_auto_skips_an_unreadable_file(tmp_path, caplog):
    trainer, _ = trainer_with_checkpoints(tmp_path, max_epochs=1, save_interval=2, save_best=False, save_final=False)
    trainer.run()
    (tmp_path / "ckpt" / "checkpoint_100.pt").write_bytes(b"PK\x03\x04 truncated")
    fresh, _ = trainer_with_checkpoints(tmp_path / "other", seed=1, save_interval=None)
    with caplog.at_level(logging.WARNING):
        path = resume_from("auto", training_objects(fresh), tmp_path / "ckpt")
    assert path.name == "checkpoint_4.pt" and fresh.state.iteration == 4
    assert "checkpoint_100.pt" in caplog.text


def test_resume_errors(tmp_path):
    trainer, _ = trainer_with_checkpoints(tmp_path, max_epochs=1, save_interval=None)
    objects = training_objects(trainer)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        resume_from(tmp_path / "missing.pt", objects)
    with pytest.raises(ValueError, match="checkpoint directory"):
        resume_from("auto", objects)
    torch.save({"model": trainer.network.state_dict()}, tmp_path / "partial.pt")
    with pytest.raises(KeyError, match="optimizer"):
        resume_from(tmp_path / "partial.pt", objects)
    assert resume_from(None, objects) is None


def test_checkpoint_beyond_max_epochs_is_refused(tmp_path):
    trainer, _ = trainer_with_checkpoints(tmp_path, max_epochs=2, save_interval=None, save_best=False)
    trainer.run()
    shorter, _ = trainer_with_checkpoints(tmp_path / "b", max_epochs=1, resume=tmp_path / "ckpt" / "final_8.pt",
                                          save_interval=None)
    with pytest.raises(ValueError, match="beyond max_epochs=1"):
        shorter.run()


def test_leftover_temporary_files_are_removed(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "tmpab12cd_4").write_bytes(b"half a checkpoint")
    (folder / "notes.txt").write_text("kept")
    trainer_with_checkpoints(tmp_path, save_interval=2)
    # the run's lock is held from attach until the run completes
    assert sorted(p.name for p in folder.iterdir()) == [".synclr_run.lock", "notes.txt"]


def test_interval_not_multiple_of_accumulation_warns(tmp_path):
    trainer = make_trainer(accumulation_steps=2)
    with pytest.warns(UserWarning, match="accumulation_steps=2"):
        CheckpointHandler(tmp_path, save_interval=3).attach(trainer)


@pytest.mark.parametrize("kwargs", [{"save_interval": 0}, {"n_saved": 0}, {"best_mode": "lowest"}])
def test_invalid_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        CheckpointHandler(tmp_path, **kwargs)


def test_grad_scaler_state_is_saved_and_restored(tmp_path):
    def with_scaler(trainer, scale):
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=scale)  # stands in for the float16/CUDA scaler
        return trainer

    first = with_scaler(make_trainer(max_epochs=1), 2.0**5)
    CheckpointHandler(tmp_path, save_interval=None, save_best=False).attach(first)
    first.run()
    saved = torch.load(tmp_path / "final_2.pt", weights_only=True)
    assert saved["scaler"]["scale"] == 2.0**5

    second = with_scaler(make_trainer(max_epochs=2), 2.0**16)
    CheckpointHandler(tmp_path, save_interval=None, save_best=False, resume="auto").attach(second)
    second.run()
    assert second.scaler.get_scale() == 2.0**5 and second.state.iteration == 4
