"""Scale: memory versus chunked (out-of-core) training data, pairs/s and peak resident memory per process.

Generates (or reuses, ``--data DIR``) a dataset with ``python -m synclr_monai synth --format zarr --table csv``,
builds the bboxes' HDF5 caches in a fresh process (time and peak resident memory), then for each data mode runs the training data pipeline in a fresh
process: ``ContrastiveCubeDataset`` as train.yaml builds it (its augmentation and input mode, views made in the
workers as on a CPU run, or only the cubes with ``--no-views``), a ``DataLoader`` with ``--workers`` persistent
workers and train.yaml's sampler (every batch from one bbox), ``--batches`` batches after one warm-up batch, no
network. Memory is read from ``/proc`` (no psutil needed): each process's peak resident set (``VmHWM``) summed
over the process tree (main + workers), and the tree's proportional set size (``Pss``, shared pages divided among
the processes that map them) at the end, since forked workers share the main process's arrays in memory mode
and a plain sum counts them once per worker.

Usage::

    python benchmarks/scale.py                                   # 4 bboxes of 256³ (~7 minutes on 2 cores)
    python benchmarks/scale.py --bboxes 7 --shape 640 640 640    # ~2.9e9 voxels (the issue's target; hours to synth)
    python benchmarks/scale.py --data DIR --work WORK            # reuse a dataset (and its caches in WORK/cache)
    python benchmarks/scale.py --data DIR --work WORK --inference --no-train   # inference cubes per data mode

``--inference`` also times the inference dataset's cubes (``iter_dataset_cubes``, every synapse of the sheets or
the first ``--inference-synapses``) in a fresh process per data mode: seconds per 1,000 synapses and the
process's peak RSS. ``--stream`` generates the dataset with ``synth --stream`` (slab by slab).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's package, also when another one is installed
MODES = ("memory", "chunked")


def _status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    """``Pss`` of ``/proc/PID/smaps_rollup`` in kB (0 when unavailable)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` (from ``/proc/*/stat``), recursively."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        out += kids
        frontier += kids
    return out


def measure(args: argparse.Namespace) -> dict:
    """One data mode in this process: build the dataset, iterate the loader, read the memory figures."""
    import torch
    import yaml

    from synclr_monai.data.bbox_loading import LoadBBoxd, bbox_data_list
    from synclr_monai.data.dataset import ContrastiveCubeDataset
    from synclr_monai.data.sampler import ResumableSampler

    torch.set_num_threads(1)
    config = yaml.safe_load((REPO / "bundle" / "configs" / "train.yaml").read_text())
    t0 = time.perf_counter()
    ds = ContrastiveCubeDataset(
        bbox_data_list(args.data),
        LoadBBoxd(cache_dir=args.cache, data_mode=args.measure),
        cube_size=args.cube,
        cubes_per_bbox=args.batch_size * args.batches,
        sampling=args.sampling,
        views=not args.no_views,
        augment=config["augment"],
        input_mode=config["input_mode"],
        min_component_size=config["min_component_size"],
        seed=0,
    )
    t_build = time.perf_counter() - t0
    rss_built = _status_kb(os.getpid(), "VmRSS")
    sampler = ResumableSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0, groups=ds.n_bboxes, group_batch=args.batch_size)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        drop_last=True,
    )
    it = iter(loader)
    next(it)  # warm-up: workers started, first files opened
    t0 = time.perf_counter()
    n = 0
    for _ in range(args.batches):
        try:
            next(it)
        except StopIteration:
            break
        n += 1
    elapsed = time.perf_counter() - t0
    me = os.getpid()
    workers = _children(me)
    hwm = {p: _status_kb(p, "VmHWM") for p in [me, *workers]}
    pss = sum(_pss_kb(p) for p in [me, *workers])
    del it, loader
    return {
        "mode": args.measure,
        "pairs_per_s": n * args.batch_size / elapsed,
        "batches": n,
        "dataset_build_s": t_build,
        "main_rss_after_build_mb": rss_built / 1024,
        "main_hwm_mb": hwm[me] / 1024,
        "worker_hwm_mb": max((hwm[p] for p in workers), default=0) / 1024,
        "tree_hwm_mb": sum(hwm.values()) / 1024,
        "tree_pss_mb": pss / 1024,
        "processes": 1 + len(workers),
    }


def measure_inference(args: argparse.Namespace) -> dict:
    """Inference cubes of one data mode in this process: every synapse's cube as the inference dataset cuts it.

    The cubes only (``iter_dataset_cubes``, what ``SynapseCubeDataset`` yields to the encoder): the encoder's
    cost and memory do not depend on the data mode.
    """
    import pandas as pd
    import torch

    from synclr_monai.data.synapse_cubes import iter_dataset_cubes, sheet_ids

    torch.set_num_threads(1)
    ids = sheet_ids(args.data)
    if args.inference_synapses:
        ids = ids.iloc[: args.inference_synapses].reset_index(drop=True)
    rss_start = _status_kb(os.getpid(), "VmRSS")
    t0 = time.perf_counter()
    n = 0
    for _, _, cube in iter_dataset_cubes(args.data, args.cube, args.cache, ids=ids, data_mode=args.measure_inference):
        n += 1
    elapsed = time.perf_counter() - t0
    del pd
    return {
        "mode": args.measure_inference,
        "synapses": n,
        "bboxes": int(ids["bbox_name"].nunique()),
        "s_per_1000": elapsed / n * 1000.0,
        "total_s": elapsed,
        "rss_start_mb": rss_start / 1024,
        "peak_mb": _status_kb(os.getpid(), "VmHWM") / 1024,
    }


def measure_build(args: argparse.Namespace) -> dict:
    """Build (or check) every bbox's cache in this process: seconds and the process's peak RSS.

    The build assembles each bbox slab by slab into its cache (``synclr_monai.data.assembly``), so its peak
    should not grow with the size of a bbox.
    """
    from synclr_monai.data.bbox import find_bboxes
    from synclr_monai.data.cache import open_cached_bbox

    rss_start = _status_kb(os.getpid(), "VmRSS")
    t0 = time.perf_counter()
    sizes = [open_cached_bbox(s, args.cache, require_labels=False) for s in find_bboxes(args.data)]
    return {
        "seconds": time.perf_counter() - t0,
        "bboxes": len(sizes),
        "voxels": sum(int(c.shape[0]) * int(c.shape[1]) * int(c.shape[2]) for c in sizes),
        "assembled_gb": sum(c.nbytes for c in sizes) / 1e9,
        "on_disk_gb": sum(c.path.stat().st_size for c in sizes) / 1e9,
        "largest_bbox_gb": max(c.nbytes for c in sizes) / 1e9,
        "rss_start_mb": rss_start / 1024,
        "peak_mb": _status_kb(os.getpid(), "VmHWM") / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="an existing dataset root (default: generate one)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the generated data and caches (default: temporary)")
    parser.add_argument("--bboxes", type=int, default=4, help="bboxes to generate (default 4)")
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--synapses", type=int, default=12, help="synapses per generated bbox")
    parser.add_argument("--cube", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per mode (after one warm-up batch)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sampling", choices=("random", "mask_aware"), default="random")
    parser.add_argument("--no-views", action="store_true", help="only cut the cubes (views left to the GPU path)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--inference", action="store_true", help="also measure the inference cubes per data mode")
    parser.add_argument("--no-train", action="store_true", help="skip the training measurement")
    parser.add_argument(
        "--inference-synapses", type=int, default=0, help="inference: the first N synapses only (default 0: all)"
    )
    parser.add_argument("--stream", action="store_true", help="generate the dataset with synth --stream")
    parser.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--measure-inference", choices=MODES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=MODES, default=None, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--measure-build", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure_build:
        print("RESULT " + json.dumps(measure_build(args)), flush=True)
        return
    if args.measure:
        print("RESULT " + json.dumps(measure(args)), flush=True)
        return
    if args.measure_inference:
        print("RESULT " + json.dumps(measure_inference(args)), flush=True)
        return

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory()
        args.work = Path(tmp.name)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    try:
        if args.data is None:
            args.data = args.work / "data"
            if not args.data.exists():
                cmd = [
                    sys.executable, "-m", "synclr_monai", "synth", "--out", str(args.data), "--format", "zarr",
                    "--table", "csv", "--bboxes", str(args.bboxes), "--shape", *map(str, args.shape),
                    "--synapses-per-bbox", str(args.synapses), "--seed", "0", *(["--stream"] if args.stream else []),
                ]  # fmt: skip
                t0 = time.perf_counter()
                res = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(f"synth failed:\n{res.stderr[-3000:]}")
                print(f"synth: {' '.join(cmd[1:])}: {time.perf_counter() - t0:.0f} s")
        args.cache = args.work / "cache"

        cmd = [sys.executable, __file__, "--measure-build", "--data", str(args.data), "--cache", str(args.cache)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"cache build failed\n{res.stderr[-3000:]}")
        b = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("RESULT "))[7:])
        print(
            f"caches: {b['bboxes']} bboxes, {b['voxels']:.3g} voxels, {b['assembled_gb']:.2f} GB assembled (largest "
            f"bbox {b['largest_bbox_gb']:.2f} GB), {b['on_disk_gb']:.2f} GB on disk; built or checked in "
            f"{b['seconds']:.0f} s, peak RSS of the building process {b['peak_mb']:.0f} MB"
        )

        if args.inference:
            inf = []
            for mode in args.modes:
                cmd = [
                    sys.executable, __file__, "--measure-inference", mode, "--data", str(args.data), "--cache",
                    str(args.cache), "--cube", str(args.cube), "--inference-synapses", str(args.inference_synapses),
                ]  # fmt: skip
                res = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(f"inference {mode}: failed\n{res.stderr[-3000:]}")
                inf.append(json.loads(next(line for line in res.stdout.splitlines() if line.startswith("RESULT "))[7:]))
            print(f"\ninference cubes ({args.cube}³, channels), one process")
            header = ("mode", "synapses", "bboxes", "s / 1000 synapses", "total s", "peak RSS")
            print("| " + " | ".join(header) + " |")
            print("|" + "---|" * len(header))
            for r in inf:
                print(
                    f"| {r['mode']} | {r['synapses']} | {r['bboxes']} | {r['s_per_1000']:.1f} | {r['total_s']:.0f} "
                    f"| {r['peak_mb']:.0f} MB |"
                )
        if args.no_train:
            return

        rows = []
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--measure", mode, "--data", str(args.data), "--cache", str(args.cache),
                   "--cube", str(args.cube), "--batch-size", str(args.batch_size), "--batches", str(args.batches),
                   "--workers", str(args.workers), "--sampling", args.sampling, *(["--no-views"] if args.no_views else [])]  # fmt: skip
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"{mode}: failed\n{res.stderr[-3000:]}")
            rows.append(json.loads(next(line for line in res.stdout.splitlines() if line.startswith("RESULT "))[7:]))

        what = "cubes only" if args.no_views else "cubes + two views"
        print(
            f"\n{args.workers} workers, batch {args.batch_size}, {args.batches} timed batches, cube {args.cube}³, "
            f"{args.sampling} sampling, {what}"
        )
        header = ("mode", "pairs/s", "build s", "main RSS built", "main peak", "worker peak", "tree peak sum", "tree PSS")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print(
                f"| {r['mode']} | {r['pairs_per_s']:.1f} | {r['dataset_build_s']:.1f} | {r['main_rss_after_build_mb']:.0f} MB "
                f"| {r['main_hwm_mb']:.0f} MB | {r['worker_hwm_mb']:.0f} MB | {r['tree_hwm_mb']:.0f} MB "
                f"| {r['tree_pss_mb']:.0f} MB |"
            )
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
