"""Data I/O figures: TIFF-stack read speed, assembly time, HDF5 cache load versus rebuild, cache size.

    python benchmarks/data_io.py [--shape 128 256 256] [--synapses 8] [--repeats 3] [--data DIR]

Without ``--data`` a synthetic bbox of ``--shape`` is generated in a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--synapses", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="an existing dataset root (uses its first bbox)")
    args = parser.parse_args()

    from synclr_monai.data.assembly import assemble_bbox
    from synclr_monai.data.bbox import find_bboxes
    from synclr_monai.data.cache import load_bbox
    from synclr_monai.data.io import read_tiff_stack

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = args.data
        if root is None:
            from synclr_monai.data.synthetic import generate_dataset

            root = tmp / "data"
            t0 = time.perf_counter()
            generate_dataset(root, n_bboxes=1, shape=tuple(args.shape), synapses_per_bbox=args.synapses, seed=0)
            print(f"generated a {'x'.join(map(str, args.shape))} synthetic bbox in {time.perf_counter() - t0:.2f} s")
        source = find_bboxes(root)[0]
        files = sorted(source.raw.iterdir()) if source.raw.is_dir() else [source.raw]
        nbytes = sum(f.stat().st_size for f in files)

        t_read, raw = _best_of(lambda: read_tiff_stack(source.raw), args.repeats)
        voxels = raw.size
        print(f"TIFF stack read:          {t_read:8.3f} s  {nbytes / t_read / 1e6:8.1f} MB/s  ({len(files)} slices, {nbytes / 1e6:.1f} MB)")

        t_asm, _ = _best_of(lambda: assemble_bbox(source), args.repeats)
        print(f"assembly (read 3 stacks + sheet, z-score, pre/cleft channels): {t_asm:8.3f} s  "
              f"({voxels / t_asm / 1e6:.1f} Mvoxel/s)")

        cache_dir = tmp / "cache"
        t0 = time.perf_counter()
        load_bbox(source, cache_dir)
        t_build = time.perf_counter() - t0
        t_load, vol = _best_of(lambda: load_bbox(source, cache_dir), args.repeats)
        cache_file = cache_dir / f"{source.name}.h5"
        size = cache_file.stat().st_size
        print(f"cache build (assemble + write): {t_build:8.3f} s")
        print(f"cache load:               {t_load:8.3f} s  -> {t_build / t_load:6.1f}x faster than rebuilding from TIFFs")
        print(f"cache size:               {size / 1e6:8.1f} MB  = {size / voxels:.2f} bytes/voxel "
              f"(in memory: {(vol.raw.nbytes + vol.mask.nbytes) / voxels:.1f} bytes/voxel)")
        assert np.isfinite(t_load)


if __name__ == "__main__":
    main()
