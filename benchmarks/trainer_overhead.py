"""Throughput of ``ContrastiveTrainer`` versus a plain PyTorch loop doing the same work.

Both train the same model (same initial weights) on the same in-memory batches with the same loss
(NT-Xent), top-1 accuracy, optimizer, gradient accumulation and clipping; the trainer adds Ignite's event
loop, MONAI's workflow and our checks (finite gradients). Runs alternate (plain, trainer, plain, ...) and
the median of ``--repeats`` is reported, which damps noise on a shared machine.

Usage::

    python benchmarks/trainer_overhead.py                     # small CPU settings
    python benchmarks/trainer_overhead.py --device cuda --backbone resnet18 --cube 80 --batch-size 32 --amp
    python benchmarks/trainer_overhead.py --handlers          # also time the trainer with NaN guard + stats

Prints samples/s for each and the trainer's overhead in percent (target: below 5%).
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from synclr_monai.engines import ContrastiveTrainer
from synclr_monai.losses import NTXentLoss, contrastive_accuracy
from synclr_monai.networks import build_simclr


def make_batches(n: int, batch_size: int, cube: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "view1": torch.randn(batch_size, 3, cube, cube, cube, generator=g),
            "view2": torch.randn(batch_size, 3, cube, cube, cube, generator=g),
        }
        for _ in range(n)
    ]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(network: nn.Module, optimizer: torch.optim.Optimizer, batches: list, args, device: torch.device) -> None:
    """The hand-written equivalent of one trainer epoch."""
    loss_fn = NTXentLoss(args.temperature)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    network.train()
    for i, batch in enumerate(batches):
        if i % args.accumulation == 0:
            optimizer.zero_grad()
        view1 = batch["view1"].to(device, non_blocking=True)
        view2 = batch["view2"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            z = network(torch.cat([view1, view2]))
        z1, z2 = z.float().chunk(2)
        loss = loss_fn(z1, z2)
        (loss / args.accumulation).backward()
        if (i + 1) % args.accumulation == 0:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
            optimizer.step()
        contrastive_accuracy(z1.detach(), z2.detach())
    synchronize(device)


def trainer_loop(
    network: nn.Module, optimizer: torch.optim.Optimizer, batches: list, args, device: torch.device, handlers: list
) -> Callable[[], None]:
    """A ready trainer; the returned callable runs one epoch over ``batches``."""
    trainer = ContrastiveTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=batches,
        network=network,
        optimizer=optimizer,
        loss_function=NTXentLoss(args.temperature),
        amp=args.amp,
        accumulation_steps=args.accumulation,
        clip_grad_norm=args.clip,
        non_blocking=True,
        train_handlers=handlers,
    )

    def run() -> None:
        trainer.run()
        synchronize(device)

    return run


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="resnet10")
    parser.add_argument("--cube", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=12, help="iterations per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--handlers", action="store_true", help="also time the trainer with NaN guard + stats")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    logging.getLogger("ignite").setLevel(logging.WARNING)  # the engine logs each run's start and end
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_simclr(args.backbone, projection_hidden=512, projection_dim=128).to(device)
    batches = make_batches(args.iterations, args.batch_size, args.cube)

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        network = copy.deepcopy(model)
        return network, torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)

    plain_net, plain_opt = fresh()
    trainer_net, trainer_opt = fresh()
    variants: dict[str, Callable[[], None]] = {
        "plain PyTorch loop": lambda: plain_loop(plain_net, plain_opt, batches, args, device),
        "ContrastiveTrainer": trainer_loop(trainer_net, trainer_opt, batches, args, device, handlers=[]),
    }
    if args.handlers:
        from synclr_monai.handlers import NaNGuard, ProgressHandler

        logging.getLogger("synclr_monai.bench").setLevel(logging.WARNING)
        net, opt = fresh()
        handlers = [NaNGuard(), ProgressHandler(log_every=10, progress_bar=False, name="synclr_monai.bench")]
        variants["trainer + NaN guard + stats"] = trainer_loop(net, opt, batches, args, device, handlers)

    for run in variants.values():  # warm-up: allocator, kernels, thread pools
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            times[name].append(timed(run))

    samples = args.iterations * args.batch_size
    print(
        f"device={device} backbone={args.backbone} cube={args.cube} batch={args.batch_size} "
        f"iterations={args.iterations} accumulation={args.accumulation} clip={args.clip} amp={args.amp} "
        f"threads={args.threads} repeats={args.repeats}"
    )
    base = statistics.median(times["plain PyTorch loop"])
    for name, values in times.items():
        median = statistics.median(values)
        overhead = "" if name.startswith("plain") else f"  overhead {100 * (median - base) / base:+.1f}%"
        print(f"{name:30s} {samples / median:8.2f} samples/s  ({median:.3f} s per run){overhead}")


if __name__ == "__main__":
    main()
