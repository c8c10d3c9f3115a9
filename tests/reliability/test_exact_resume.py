"""Issue 13, item 9: a run stopped mid-epoch and resumed gives the same losses, epoch losses, best checkpoint and
final weights as the uninterrupted run (the real pipeline: cached bboxes, cubes, views, ResNet-10, LARS, NT-Xent)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from torch.utils.data import DataLoader

from synclr_monai.data.bbox_loading import LoadBBoxd, bbox_data_list
from synclr_monai.data.dataset import ContrastiveCubeDataset
from synclr_monai.data.sampler import ResumableSampler
from synclr_monai.engines import ContrastiveTrainer
from synclr_monai.handlers import CheckpointHandler, DatasetEpochSetter, list_checkpoints
from synclr_monai.losses import NTXentLoss
from synclr_monai.networks import build_simclr
from synclr_monai.optimizers import LARS, WarmupCosineLR, lars_param_groups

EPOCHS, EPOCH_LENGTH, STOP_AT = 3, 4, 7  # 2 bboxes x 8 cubes / batch 4; checkpoints every 3 iterations: 3, 6, 9, 12


class Stop(Exception):
    """Stands in for a kill: the run ends without any of its end-of-run handlers."""


def _trainer(root: Path, out: Path, cache: Path, stop_at: int | None, record: dict) -> ContrastiveTrainer:
    dataset = ContrastiveCubeDataset(bbox_data_list(root), load_transform=LoadBBoxd(cache_dir=cache), cube_size=16,
                                     cubes_per_bbox=8, seed=3)
    loader = DataLoader(dataset, batch_size=4, sampler=ResumableSampler(dataset, seed=3), drop_last=True)
    torch.manual_seed(0)  # the same initial weights in every run (resumed runs overwrite them anyway)
    network = build_simclr("resnet10", projection_hidden=16, projection_dim=8)
    optimizer = LARS(lars_param_groups(network, 1e-6), lr=0.05, momentum=0.9, eta=0.02)
    trainer = ContrastiveTrainer(
        device="cpu", max_epochs=EPOCHS, train_data_loader=loader, network=network, optimizer=optimizer,
        loss_function=NTXentLoss(temperature=0.5), clip_grad_norm=1.0,
        lr_scheduler=WarmupCosineLR(optimizer, warmup_steps=2, total_steps=EPOCHS * EPOCH_LENGTH),
        train_handlers=[CheckpointHandler(out, save_interval=3, n_saved=2, resume="auto"), DatasetEpochSetter()],
    )

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        record["loss"][engine.state.iteration] = float(engine.state.output["loss"])
        if engine.state.iteration == stop_at:
            raise Stop()

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch(engine):
        record["epoch_loss"][engine.state.epoch] = float(engine.state.metrics["epoch_loss"])

    return trainer


def _run(root, out, cache, stop_at=None):
    record = {"loss": {}, "epoch_loss": {}}
    trainer = _trainer(root, out, cache, stop_at, record)
    if stop_at is None:
        trainer.run()
    else:
        with pytest.raises(Stop):
            trainer.run()
    return trainer, record


def test_stop_mid_epoch_and_resume_repeats_the_uninterrupted_run(synthetic_root, tmp_path, caplog):
    torch.set_num_threads(1)  # identical float summation order in every run
    cache = tmp_path / "cache"
    straight, full = _run(synthetic_root, tmp_path / "straight", cache)
    assert sorted(full["loss"]) == list(range(1, EPOCHS * EPOCH_LENGTH + 1))

    _, first = _run(synthetic_root, tmp_path / "resumed", cache, stop_at=STOP_AT)
    assert [p.name for _, p in list_checkpoints(tmp_path / "resumed", ("checkpoint",))][-1] == "checkpoint_6.pt"
    with caplog.at_level(logging.INFO):
        resumed, second = _run(synthetic_root, tmp_path / "resumed", cache)
    # iteration 6 is inside epoch 2 (iterations 5-8): the log says so, and the run redoes 7 onwards
    assert "at iteration 6 (epoch 2/3, after 2 of its 4 iterations)" in caplog.text
    assert sorted(second["loss"]) == list(range(STOP_AT, EPOCHS * EPOCH_LENGTH + 1))

    for iteration in range(1, EPOCHS * EPOCH_LENGTH + 1):  # the same batches, in the same state
        seen = first["loss"][iteration] if iteration < STOP_AT else second["loss"][iteration]
        assert seen == pytest.approx(full["loss"][iteration], rel=1e-5, abs=1e-6), iteration
    # the interrupted epoch's loss averages all 4 of its iterations, not only those after the resume
    assert second["epoch_loss"][2] == pytest.approx(full["epoch_loss"][2], rel=1e-5)
    assert second["epoch_loss"][3] == pytest.approx(full["epoch_loss"][3], rel=1e-5)
    best = lambda d: [p.name for _, p in list_checkpoints(d, ("best",))]  # noqa: E731
    assert best(tmp_path / "resumed") == best(tmp_path / "straight")
    for key, value in straight.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)
