"""Worker for test_distributed.py: 2-process gloo DDP training of the toy model with the standard handlers.

Usage: ``python ddp_worker.py OUT_DIR``. Each rank writes its final weights and a JSON summary to OUT_DIR and
is given its own checkpoint, W&B and encoder paths, so the test can see which ranks wrote files.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from toy_training import TinyNet, ViewDataset

from synclr_monai.engines import ContrastiveTrainer, shutdown_distributed
from synclr_monai.handlers import CheckpointHandler, EncoderExportHandler, NaNGuard, ProgressHandler, WandBHandler
from synclr_monai.losses import NTXentLoss

WORLD = 2


def save_state(network: torch.nn.Module, path: Path, metadata: dict | None = None) -> None:
    torch.save(network.module.state_dict(), path)


def run(rank: int, out: Path) -> None:
    # per-rank log file for the training statistics (MONAI's StatsHandler keeps using an existing logger's handlers)
    logging.getLogger("synclr_monai.train").addHandler(logging.FileHandler(out / f"log_rank{rank}.txt"))
    os.environ["LOCAL_RANK"] = str(rank)  # one machine: tells ignite.distributed the local rank
    dist.init_process_group("gloo", init_method=f"file://{out / 'store'}", rank=rank, world_size=WORLD)
    torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
    network = DistributedDataParallel(TinyNet())
    dataset = ViewDataset(n=16)
    loader = DataLoader(dataset, batch_size=2, sampler=DistributedSampler(dataset, shuffle=True, seed=0))
    checkpoints = out / f"checkpoints_rank{rank}"
    handlers = [
        NaNGuard(save_dir=checkpoints),
        CheckpointHandler(checkpoints, save_interval=2, n_saved=2, resume="auto"),
        ProgressHandler(log_every=1, progress_bar=False, name="synclr_monai.train"),
        WandBHandler(mode="offline", dir=out / f"wandb_rank{rank}"),
        EncoderExportHandler(out / f"encoder_rank{rank}.pt", save_fn=save_state),
    ]
    trainer = ContrastiveTrainer(
        device="cpu",
        max_epochs=2,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.5),
        loss_function=NTXentLoss(0.1),
        accumulation_steps=2,
        clip_grad_norm=1.0,
        train_handlers=handlers,
    )
    trainer.run()
    torch.save(network.module.state_dict(), out / f"weights_rank{rank}.pt")
    summary = {"iteration": trainer.state.iteration, "epoch_loss": trainer.state.metrics["epoch_loss"]}
    (out / f"summary_rank{rank}.json").write_text(json.dumps(summary))
    shutdown_distributed(network)


if __name__ == "__main__":
    mp.spawn(run, args=(Path(sys.argv[1]),), nprocs=WORLD, join=True)
