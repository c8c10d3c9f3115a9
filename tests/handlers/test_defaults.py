"""default_train_handlers: the standard handler set runs together on a small SimCLR model."""

from __future__ import annotations

import torch
from toy_training import ViewDataset
from torch.utils.data import DataLoader

from synclr_monai.engines import ContrastiveTrainer
from synclr_monai.handlers import (
    CheckpointHandler,
    DatasetEpochSetter,
    EncoderExportHandler,
    NaNGuard,
    ProgressHandler,
    SamplingModeSwitch,
    WandBHandler,
    default_train_handlers,
)
from synclr_monai.losses import NTXentLoss
from synclr_monai.networks import build_simclr
from synclr_monai.optimizers import LARS, WarmupCosineSchedule, lars_param_groups


def test_default_handlers_full_run(tmp_path):
    handlers = default_train_handlers(
        tmp_path / "out", save_interval=2, n_saved=1, resume="auto", log_every=1, progress_bar=False,
        wandb_mode="disabled", sampling_switch_epoch=2, encoder_path=tmp_path / "models" / "model.pt",
    )
    assert [type(h) for h in handlers] == [
        NaNGuard, CheckpointHandler, DatasetEpochSetter, SamplingModeSwitch, WandBHandler, ProgressHandler, EncoderExportHandler
    ]
    torch.manual_seed(0)
    network = build_simclr("resnet10", projection_hidden=16, projection_dim=8)
    loader = DataLoader(ViewDataset(n=4), batch_size=2)
    optimizer = LARS(lars_param_groups(network, weight_decay=1e-6), lr=0.01)
    trainer = ContrastiveTrainer(
        device="cpu", max_epochs=2, train_data_loader=loader, network=network, optimizer=optimizer,
        loss_function=NTXentLoss(0.1), accumulation_steps=2, clip_grad_norm=1.0,
        lr_scheduler=WarmupCosineSchedule(optimizer, warmup_steps=1, total_steps=2), train_handlers=handlers,
    )
    trainer.run()

    assert loader.dataset.mode_calls == ["mask_aware"]
    assert loader.dataset.epochs == [1, 2]  # reseeded at every epoch start
    assert trainer.state.metrics["fallback_count"] == 2.0
    names = {p.name for p in (tmp_path / "out" / "checkpoints").glob("*.pt")}
    assert {"checkpoint_4.pt", "final_4.pt"} <= names and "checkpoint_2.pt" not in names
    assert (tmp_path / "models" / "model.pt").is_file()
    final = torch.load(tmp_path / "out" / "checkpoints" / "final_4.pt", weights_only=True)
    assert set(final) == {"model", "optimizer", "trainer", "lr_scheduler", "rng", "epoch_metrics"}
    assert final["lr_scheduler"]["last_epoch"] == 2  # one scheduler step per optimizer step
