"""Forward + backward + optimiser throughput and peak memory of one SimCLR training step.

For each backbone and cube size, builds the SimCLR model (lab projector 2048 -> 256), NT-Xent and
LARS, then times full steps on random two-view batches that already sit on the device (data loading
and augmentation are not measured here).

Examples::

    # CPU, small (the default): ResNet-18 at 32^3 and 80^3, a small Swin (feature_size 12) at 32^3, batch 4
    python benchmarks/train_step.py

    # CPU, chosen configurations (cross product of backbones and sizes)
    python benchmarks/train_step.py --backbones resnet10 swin --sizes 16 32 --batch 2

    # the demo's encoder against the full-width one, in one run (1-channel masked input, batch 16)
    python benchmarks/train_step.py --backbones resnet10 --sizes 32 --batch 16 --in-channels 1 --widen-factors 1 0.5

    # GPU, bf16 autocast, lab batch; halve the batch on out-of-memory
    python benchmarks/train_step.py --device cuda --amp --backbones resnet18 resnet50 swin \\
        --sizes 80 --batch 64 --iters 20 --warmup 5 --fit-batch

Memory: on CUDA ``torch.cuda.max_memory_allocated`` (tensors only); on the CPU the peak resident set
size of the process sampled during the steps (it includes the interpreter and libraries, so compare
differences between configurations; ``tracemalloc`` would not see torch's allocations).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from synclr_monai.losses import NTXentLoss
from synclr_monai.networks import build_simclr
from synclr_monai.optimizers import LARS, lars_param_groups, scaled_lr

MIB = 2**20


def _current_rss() -> int:
    """Resident set size of this process in bytes (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: ru_maxrss is the lifetime peak (KiB on Linux, bytes on macOS)
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class PeakRSS:
    """Context manager sampling the process RSS in a thread; ``peak`` holds the maximum in bytes.

    ``ru_maxrss`` alone cannot be used per configuration: it is the peak over the process's life.

    Args:
        interval: seconds between samples.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _current_rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = _current_rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _current_rss())


def _views(batch: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(view1, view2)`` from a ``{"view1", "view2"}`` mapping or a pair."""
    if isinstance(batch, Mapping):
        return batch["view1"], batch["view2"]
    view1, view2 = batch
    return view1, view2


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    device: str | torch.device,
    amp: bool,
    iters: int,
    warmup: int = 1,
) -> dict[str, Any]:
    """Time full SimCLR steps: both views through the model in one batch, loss, backward, optimiser step.

    Args:
        model: maps ``[2B, C, *spatial]`` to projections ``[2B, D]``.
        batch: ``{"view1": [B, ...], "view2": [B, ...]}`` or a pair; moved to ``device`` once, untimed.
        loss_fn: ``loss_fn(z1, z2) -> scalar``.
        optimizer: steps the model's parameters.
        device: where to run.
        amp: bf16 autocast for the forward pass.
        iters: timed steps.
        warmup: untimed steps first (allocator, cuDNN autotuning, optimiser state).

    Returns:
        ``batch_size``, ``iters``, ``step_s`` (mean seconds per step), ``samples_per_s`` (pairs),
        ``views_per_s``, ``peak_mem_mib``, ``mem_kind`` (``cuda_max_allocated`` or ``cpu_peak_rss``),
        ``loss`` (last value).

    Raises:
        ValueError: when ``iters`` < 1 or ``warmup`` < 0.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got {iters} and {warmup}.")
    device = torch.device(device)
    view1, view2 = (v.to(device, non_blocking=True) for v in _views(batch))
    b = view1.shape[0]
    model.train()

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            # One forward for both views: batch-norm statistics over all 2B samples, as in training.
            z = model(torch.cat([view1, view2]))
        loss = loss_fn(z[:b], z[b:])
        loss.backward()
        optimizer.step()
        return loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as rss:
        for _ in range(warmup):
            step()
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(iters):
            loss = step()
        _synchronize(device)
        elapsed = time.perf_counter() - start
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    else:
        peak, kind = rss.peak, "cpu_peak_rss"
    step_s = elapsed / iters
    return {
        "batch_size": b,
        "iters": iters,
        "step_s": step_s,
        "samples_per_s": b / step_s,
        "views_per_s": 2 * b / step_s,
        "peak_mem_mib": peak / MIB,
        "mem_kind": kind,
        "loss": float(loss.detach()),
    }


def build_setup(
    backbone: str,
    cube: int,
    batch: int,
    device: str | torch.device,
    backbone_kwargs: Mapping[str, Any] | None = None,
    in_channels: int = 3,
) -> tuple[nn.Module, dict[str, torch.Tensor], nn.Module, torch.optim.Optimizer]:
    """The lab's training set-up for one configuration, with a random batch.

    Args:
        backbone: a backbone name.
        cube: cube edge in voxels.
        batch: pairs per step.
        device: where to put the model and the batch.
        backbone_kwargs: extra backbone arguments.
        in_channels: input channels (3: raw + masks; 1: the ``masked`` or ``raw`` input).

    Returns:
        ``(model, batch, loss_fn, optimizer)``: SimCLR with the 2048 -> 256 projector, ``{"view1",
        "view2"}`` of shape ``[batch, in_channels, cube, cube, cube]``, NT-Xent at 0.1, LARS at 0.001 x batch/256.
    """
    model = build_simclr(backbone, in_channels=in_channels, **dict(backbone_kwargs or {})).to(device)
    views = {k: torch.randn(batch, in_channels, cube, cube, cube, device=device) for k in ("view1", "view2")}
    optimizer = LARS(lars_param_groups(model, 1e-6), lr=scaled_lr(0.001, batch), momentum=0.9, weight_decay=1e-6)
    return model, views, NTXentLoss(0.1), optimizer


def _run(args: argparse.Namespace, backbone: str, cube: int, widen: float = 1.0) -> dict[str, Any]:
    """Measure one configuration, halving the batch on CUDA out-of-memory when ``--fit-batch``."""
    kwargs: dict[str, Any] = {}
    if widen != 1.0:
        kwargs["widen_factor"] = widen
    if backbone == "swin":
        kwargs["feature_size"] = args.swin_feature_size
        kwargs["use_checkpoint"] = args.swin_checkpoint
    batch = args.batch
    while True:
        try:
            setup = build_setup(backbone, cube, batch, args.device, kwargs, args.in_channels)
            result = measure_step(*setup, device=args.device, amp=args.amp, iters=args.iters, warmup=args.warmup)
            del setup
            return {
                "backbone": backbone, "cube": cube, "widen": widen, "amp": args.amp, "device": args.device,
                **kwargs, **result,
            }  # fmt: skip
        except torch.OutOfMemoryError:
            if not args.fit_batch or batch == 1:
                raise
        # Out of the except block, so that the traceback no longer holds the set-up's tensors.
        batch //= 2
        gc.collect()
        torch.cuda.empty_cache()
        print(f"  {backbone} {cube}^3: out of memory, retrying with batch {batch}", flush=True)


def _configurations(args: argparse.Namespace) -> list[tuple[str, int, float]]:
    """(backbone, cube, widen factor) triples: the cross product of ``--backbones`` and ``--sizes`` when
    either is given, else a device default, each ResNet at every ``--widen-factors`` (the Swin at 1). On
    the CPU the Swin stays at 32^3: at 80^3 (run as 96^3) even feature_size 12 takes ~43 s and ~17 GB per
    step at batch 4 on two cores, too much for a default run."""
    if args.backbones is None and args.sizes is None and not args.device.startswith("cuda"):
        pairs = [("resnet18", 32), ("resnet18", 80), ("swin", 32)]
    elif args.backbones is None and args.sizes is None:
        pairs = [("resnet18", 80), ("resnet50", 80), ("swin", 80)]
    else:
        pairs = [(b, s) for b in args.backbones or ["resnet18", "swin"] for s in args.sizes or [32, 80]]
    return [(b, s, w) for b, s in pairs for w in (args.widen_factors if b != "swin" else [1.0])]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=None, help="backbone names (default: resnet18 swin)")
    p.add_argument("--sizes", nargs="+", type=int, default=None, help="cube edges in voxels (default: 32 80)")
    p.add_argument("--batch", type=int, default=4, help="pairs per step")
    p.add_argument("--in-channels", type=int, default=3, help="input channels (1: the masked or raw input)")
    p.add_argument(
        "--widen-factors", nargs="+", type=float, default=[1.0], help="ResNet widen_factor values (default: 1)"
    )
    p.add_argument("--iters", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument(
        "--swin-feature-size", type=int, default=None, help="Swin feature_size (default: 12 on CPU, 48 on CUDA)"
    )
    p.add_argument("--swin-checkpoint", action="store_true", help="gradient checkpointing in the Swin stages")
    p.add_argument("--fit-batch", action="store_true", help="CUDA: halve the batch until it fits")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument(
        "--trainer-overhead", action="store_true",
        help="also report samples/s through ContrastiveTrainer versus a plain PyTorch loop (trainer_overhead.py)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark and print one line per configuration.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        the result dicts.
    """
    args = _parser().parse_args(argv)
    if args.swin_feature_size is None:
        args.swin_feature_size = 48 if args.device.startswith("cuda") else 12
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        print(f"# {torch.cuda.get_device_name(args.device)}, torch {torch.__version__}")
    else:
        print(f"# CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"{'backbone':<10} {'widen':>5} {'cube':>5} {'batch':>5} {'amp':>5} {'s/step':>8} {'pairs/s':>9} "
        f"{'vs first':>8} {'peak MiB':>9}  memory"
    )
    results = []
    for backbone, cube, widen in _configurations(args):
        r = _run(args, backbone, cube, widen)
        results.append(r)
        # speed against the first configuration of this run (ratios, not wall times, compare across machines)
        ratio = results[0]["step_s"] / r["step_s"]
        print(
            f"{backbone:<10} {widen:>5g} {cube:>5} {r['batch_size']:>5} {str(args.amp):>5} {r['step_s']:>8.3f} "
            f"{r['samples_per_s']:>9.2f} {ratio:>7.2f}x {r['peak_mem_mib']:>9.0f}  {r['mem_kind']}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.trainer_overhead:
        # the trainer's own cost, measured by the sibling script on the same device
        import importlib.util

        spec = importlib.util.spec_from_file_location("trainer_overhead", Path(__file__).with_name("trainer_overhead.py"))
        overhead = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(overhead)
        print("# trainer overhead")
        overhead.main(["--device", args.device] + (["--amp"] if args.amp else []))
    return results


if __name__ == "__main__":
    main()
