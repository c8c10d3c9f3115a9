"""NaNGuard: a NaN loss stops the run with a clear error, after saving the last good state."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Events
from toy_training import assert_same_weights, make_loader, make_trainer, mean_pair_loss, snapshot

from synclr_monai.handlers import CheckpointHandler, EncoderExportHandler, NaNGuard, NonFiniteLossError


class NaNAt:
    """mean_pair_loss, but NaN on the given call (1-based)."""

    def __init__(self, bad_call: int | None) -> None:
        self.bad_call, self.calls = bad_call, 0

    def __call__(self, z1, z2):
        self.calls += 1
        loss = mean_pair_loss(z1, z2)
        return loss * float("nan") if self.calls == self.bad_call else loss


def guarded_trainer(tmp_path, raise_error=True, bad_call=3, resume=None):
    exported: list[int] = []
    trainer = make_trainer(max_epochs=2, loader=make_loader(n=16, batch_size=4), loss_function=NaNAt(bad_call),
                           momentum=0.9)
    handlers = [
        NaNGuard(save_dir=tmp_path, raise_error=raise_error),
        CheckpointHandler(tmp_path, save_interval=1, n_saved=10, resume=resume),
        EncoderExportHandler(tmp_path / "model.pt", save_fn=lambda net, path, metadata: exported.append(1)),
    ]
    for handler in handlers:
        handler.attach(trainer)
    weights: dict[int, dict] = {}
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: weights.update({e.state.iteration: snapshot(e.network)})
    )
    return trainer, handlers[0], weights, exported


def test_nan_loss_raises_after_saving_last_good_state(tmp_path, caplog):
    trainer, guard, weights, exported = guarded_trainer(tmp_path)
    with caplog.at_level(logging.ERROR), pytest.raises(NonFiniteLossError, match=r"iteration 3 \(epoch 1\)") as error:
        trainer.run()
    assert trainer.state.iteration == 3
    assert "non-finite loss (nan) at iteration 3" in caplog.text and "nan_stop_3.pt" in caplog.text
    assert error.value.iteration == 3 and error.value.checkpoint == tmp_path / "nan_stop_3.pt" == guard.checkpoint

    saved = torch.load(tmp_path / "nan_stop_3.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert_same_weights(saved["model"], weights[2])  # the bad iteration did not update the weights
    # the guard runs before the periodic checkpoint of the bad iteration; nothing final, no export
    names = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert names == ["checkpoint_1.pt", "checkpoint_2.pt", "nan_stop_3.pt"]
    assert exported == []


def test_nan_loss_terminates_quietly_when_asked(tmp_path):
    trainer, _, _, exported = guarded_trainer(tmp_path, raise_error=False)
    trainer.run()
    assert trainer.state.iteration == 3 and trainer.state.epoch == 1
    assert (tmp_path / "nan_stop_3.pt").is_file() and not list(tmp_path.glob("final_*"))
    assert exported == []


def test_resume_after_nan_stop_continues_after_the_bad_iteration(tmp_path):
    trainer, *_ = guarded_trainer(tmp_path)
    with pytest.raises(NonFiniteLossError):
        trainer.run()
    resumed, _, weights, exported = guarded_trainer(tmp_path, bad_call=None, resume="auto")
    resumed.run()
    assert min(weights) == 4 and resumed.state.iteration == 8 and exported == [1]


def test_guard_without_save_dir_and_bad_output():
    trainer = make_trainer(loss_function=NaNAt(1))
    NaNGuard().attach(trainer)
    with pytest.raises(NonFiniteLossError, match="iteration 1") as error:
        trainer.run()
    assert error.value.checkpoint is None

    class Engine:
        class state:
            output = {"value": 1.0}

    with pytest.raises(KeyError, match="'loss'"):
        NaNGuard()(Engine())
