"""What finding the canonical pose's frames costs the DataLoader workers (``pose: canonical``).

Per view pair a worker needs its synapse's frame (:mod:`synclr_monai.transforms.pose`):

- mask-aware cubes: ``CleftComponents.frame`` of their cleft component, once per component and worker (cached);
- uniformly random cubes (``sampling: random``) and fallbacks: ``canonical_frame`` of the cube's own masks, per
  cube, on the context the views are cut from, whole or only near the view (``reach``, what ``RandTwoViewd``
  uses).

Timed on the synapses of a generated dataset (the cubes the sheets list), one thread.

Usage::

    python benchmarks/pose_frames.py --data outputs/representation/data --cache outputs/representation/cache
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("outputs/representation/data"))
    parser.add_argument("--cache", type=Path, default=None, help="HDF5 cache folder (default: DATA/../cache)")
    parser.add_argument("--cubes", type=int, default=12, help="synapse cubes timed per size")
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 80], help="view edges S")
    args = parser.parse_args(argv)
    import torch

    from synclr_monai.data.bbox import find_bboxes
    from synclr_monai.data.cache import load_bbox
    from synclr_monai.data.synapse_cubes import iter_dataset_cubes
    from synclr_monai.transforms.pose import SIDE_MARGIN, canonical_frame, pose_context_size
    from synclr_monai.transforms.sampling import find_cleft_components

    torch.set_num_threads(1)
    cache = args.cache or args.data.parent / "cache"
    for s in args.sizes:
        c = pose_context_size(s)
        cubes = [x[2] for _, x in zip(range(args.cubes), iter_dataset_cubes(args.data, c, cache_dir=cache))]
        for reach in (None, s // 2 + int(SIDE_MARGIN)):
            start = time.perf_counter()
            for cube in cubes:
                canonical_frame(cube, reach=reach)
            ms = (time.perf_counter() - start) / len(cubes) * 1000
            where = "the whole context" if reach is None else f"reach {reach}"
            print(f"[pose_frames] canonical_frame, {s}³ views, {c}³ context, {where}: {ms:.1f} ms per cube")
    volume = load_bbox(find_bboxes(args.data)[0], cache_dir=cache)
    comps = find_cleft_components(volume.mask[1], 20)
    start = time.perf_counter()
    for k in range(len(comps)):
        comps.frame(k, volume.mask)
    ms = (time.perf_counter() - start) / max(len(comps), 1) * 1000
    print(f"[pose_frames] CleftComponents.frame: {ms:.2f} ms per component ({len(comps)} components of {volume.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
