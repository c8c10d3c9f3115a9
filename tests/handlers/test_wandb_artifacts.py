"""A completed run logs its checkpoints, the encoder and the final embedding evaluation to W&B (offline)."""

from __future__ import annotations

import time

import numpy as np
import torch
from toy_training import ViewDataset
from torch.utils.data import DataLoader

from synclr_monai.engines import ContrastiveTrainer
from synclr_monai.handlers import (
    CheckpointHandler,
    DatasetEpochSetter,
    EmbeddingEvalHandler,
    EncoderExportHandler,
    NaNGuard,
    ProgressHandler,
    WandBHandler,
)
from synclr_monai.losses import NTXentLoss
from synclr_monai.networks import build_simclr


def _records(run_dir, keys: tuple[bytes, ...]) -> bytes:
    """The run's record file once the W&B service has flushed ``keys`` (or after 30 s)."""
    import wandb

    wandb.teardown()  # the service holds the file's last block until it stops
    (records,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + 30
    while not all(key in records.read_bytes() for key in keys) and time.monotonic() < deadline:
        time.sleep(0.2)
    return records.read_bytes()


def _handlers(out, encoder, save_interval: int, n_saved: int = 3, log_every: int = 10) -> list:
    """The training handlers in the order of bundle/configs/train.yaml (``handlers``), W&B offline."""
    checkpoints = out / "checkpoints"
    return [
        NaNGuard(save_dir=checkpoints),
        CheckpointHandler(checkpoints, save_interval=save_interval, n_saved=n_saved),
        DatasetEpochSetter(),
        WandBHandler(mode="offline", dir=out, log_every=log_every, checkpoint_dir=checkpoints, encoder_path=encoder),
        ProgressHandler(log_every=log_every, progress_bar=False),
        EncoderExportHandler(encoder),
    ]


def test_artifacts_and_final_evaluation(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    out, encoder = tmp_path / "out", tmp_path / "models" / "model.pt"
    handlers = _handlers(out, encoder, save_interval=2, n_saved=1, log_every=1)
    wandb_handler = next(h for h in handlers if isinstance(h, WandBHandler))
    dataset = ViewDataset(n=8)
    labels = np.repeat(["a", "b"], 4)
    cubes = dataset.view1.numpy().copy()
    cubes[4:, 0] += 2.0  # two separable classes
    evaluation = EmbeddingEvalHandler(cubes, labels, interval_epochs=1, k=3, cv=2, plot_dir=out)
    # before the W&B handler, as in the bundle; the encoder export comes after it and is logged all the same
    handlers.insert(handlers.index(wandb_handler), evaluation)
    torch.manual_seed(0)
    network = build_simclr("resnet10", projection_hidden=16, projection_dim=8)
    trainer = ContrastiveTrainer(
        device="cpu", max_epochs=2, train_data_loader=DataLoader(dataset, batch_size=4), network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.01), loss_function=NTXentLoss(0.1),
        train_handlers=handlers,
    )
    run = wandb_handler.logger.run
    run_id, run_dir = run.id, wandb_handler.run_dir
    trainer.run()

    assert wandb_handler.logger is None  # finished
    assert wandb_handler.logged_artifacts == [
        f"checkpoints-{run_id}", f"best-checkpoint-{run_id}", f"final-checkpoint-{run_id}", f"encoder-{run_id}"
    ]
    assert encoder.is_file() and (out / "final_embedding_2d.png").is_file()
    assert set(trainer.state.metrics) >= {"final/knn_accuracy", "final/linear_probe_accuracy"}
    keys = (
        f"encoder-{run_id}".encode(), f"final-checkpoint-{run_id}".encode(), b"model.pt", b"model.json",
        b"final_4.pt", b"checkpoint_4.pt", b"final/knn_accuracy", b"final/linear_probe_accuracy",
        b"final/embedding_2d",
    )
    data = _records(run_dir, keys)
    missing = [k for k in keys if k not in data]
    assert not missing, missing


def test_no_artifacts_when_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    handlers = _handlers(tmp_path / "out", tmp_path / "m.pt", save_interval=2)
    wandb_handler = next(h for h in handlers if isinstance(h, WandBHandler))
    wandb_handler.log_artifacts = False
    torch.manual_seed(0)
    network = build_simclr("resnet10", projection_hidden=16, projection_dim=8)
    trainer = ContrastiveTrainer(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(ViewDataset(n=4), batch_size=4), network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.01), loss_function=NTXentLoss(0.1),
        train_handlers=handlers,
    )
    trainer.run()
    assert wandb_handler.logged_artifacts == [] and wandb_handler.logger is None
