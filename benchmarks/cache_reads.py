"""Out-of-core reads of one context cube from a bbox cache, and the per-sample cost of the cubes-only path.

Times, in this process, for ``--reads`` random positions of a ``--context``³ region (the context a 3-D rotated
80³ view needs is 164³):

- ``raw``: the raw channel (float16, uncompressed, 64³ chunks, fletcher32);
- ``masks, bit-packed``: the cache's mask dataset (one uint8 a voxel, LZF), unpacked into 3 channels
  (:class:`~synclr_monai.data.lazy.H5Volume` with ``packed_bits``, what chunked training reads);
- ``masks, a byte per channel``: the layout of cache format 5 (``[3, Z, Y, X]`` uint8, ``(1, 64, 64, 64)`` LZF
  chunks), written from the same masks into a scratch file for the comparison;

then ``--samples`` samples of ``ContrastiveCubeDataset(views=False)`` (the cubes the device views are made from)
in memory and in chunked mode, ms per sample and their ratio. Medians; one bbox (``bbox1``).

Usage::

    python benchmarks/cache_reads.py --work /tmp/reads                     # generates 1 bbox of 384³ (~1 min)
    python benchmarks/cache_reads.py --data DIR --work /tmp/reads --reads 12 --samples 12
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _median_ms(fn, starts) -> float:
    import numpy as np

    times = []
    for start in starts:
        t0 = time.perf_counter()
        fn(start)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="a dataset root (default: generate one in --work)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the generated data and the caches")
    parser.add_argument("--shape", type=int, nargs=3, default=(384, 384, 384), metavar=("Z", "Y", "X"))
    parser.add_argument("--context", type=int, default=164, help="edge of the region read (default 164)")
    parser.add_argument("--reads", type=int, default=12)
    parser.add_argument("--samples", type=int, default=12, help="dataset samples per mode (0: skip)")
    args = parser.parse_args()

    import h5py
    import numpy as np
    import torch
    import yaml

    torch.set_num_threads(1)
    if args.data is None:
        args.data = args.work / "data"
        if not args.data.exists():
            cmd = [sys.executable, "-m", "synclr_monai", "synth", "--out", str(args.data), "--format", "zarr",
                   "--table", "csv", "--stream", "--bboxes", "1", "--shape", *map(str, args.shape),
                   "--synapses-per-bbox", "12", "--seed", "0"]  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True)
    from synclr_monai.data.bbox import find_bboxes
    from synclr_monai.data.bbox_loading import LoadBBoxd, bbox_data_list
    from synclr_monai.data.cache import open_cached_bbox
    from synclr_monai.data.dataset import ContrastiveCubeDataset

    cache_dir = args.work / "cache"
    (source,) = find_bboxes(args.data, numbers=[1])
    cached = open_cached_bbox(source, cache_dir, require_labels=False)
    raw, mask = cached.volumes()
    c = args.context
    rng = np.random.default_rng(0)
    starts = [tuple(int(rng.integers(0, max(n - c, 0) + 1)) for n in cached.shape) for _ in range(args.reads)]

    def region(start):
        return tuple(slice(s, s + c) for s in start)

    scratch = args.work / "per_channel_masks.h5"
    with h5py.File(scratch, "w") as f:
        chunks = (1, *(min(64, n) for n in cached.shape))
        per_channel = f.create_dataset("mask", shape=mask.shape, dtype=np.uint8, chunks=chunks, compression="lzf",
                                       fletcher32=True)  # fmt: skip
        for z in range(0, cached.shape[0], 64):
            per_channel[:, z : z + 64] = mask[:, z : z + 64]
    rows = [("raw", _median_ms(lambda s: raw[(slice(None), *region(s))], starts))]
    rows.append(("masks, bit-packed (cache format 6)", _median_ms(lambda s: mask[(slice(None), *region(s))], starts)))
    with h5py.File(scratch, "r") as f:
        ds = f["mask"]
        per_channel_ms = _median_ms(lambda s: ds[(slice(None), *region(s))], starts)
    rows.append(("masks, a byte per channel (format 5)", per_channel_ms))
    scratch.unlink()
    print(f"{source.name} {cached.shape}, {c}³ regions, median of {args.reads} reads (this process, warm page cache)")
    print("| read | ms |\n|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.0f} |")

    if args.samples:
        config = yaml.safe_load((REPO / "bundle" / "configs" / "train.yaml").read_text())
        per_mode = {}
        for mode in ("memory", "chunked"):
            ds = ContrastiveCubeDataset(
                bbox_data_list(args.data, bboxes=[1]),
                LoadBBoxd(cache_dir=cache_dir, data_mode=mode, require_labels=False),
                cube_size=80, cubes_per_bbox=args.samples + 1, views=False, augment=config["augment"],
                input_mode=config["input_mode"], min_component_size=config["min_component_size"], seed=0,
            )  # fmt: skip
            ds[0]  # warm-up: files opened, components read
            per_mode[mode] = _median_ms(lambda i: ds[i], range(1, args.samples + 1))
        print(f"\ncubes-only samples (80³ views' context, {config['input_mode']} input), median of {args.samples}")
        print("| mode | ms / sample |\n|---|---|")
        for mode, ms in per_mode.items():
            print(f"| {mode} | {ms:.0f} |")
        print(f"chunked / memory throughput: {per_mode['memory'] / per_mode['chunked']:.2f}")


if __name__ == "__main__":
    main()
