"""Time of one nearest-synapse query (exact cosine top-k) at 10^3, 10^4 and 10^5 synthetic embeddings.

Usage: ``python benchmarks/neighbours.py [--dim 512] [--k 10] [--device cpu] [--sizes 1000 10000 100000]``

Prints, per size, the median time of one query (``find_neighbours``' search, ``cosine_knn``) over
``--repeats`` queries, the time of a block of 1024 queries, and the all-against-all time that the
outlier score needs (estimated from one block for the largest size).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from synclr_monai.atlas.neighbours import cosine_knn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--dim", type=int, default=512, help="embedding dimension (ResNet-18 features: 512)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, dim {args.dim}, k {args.k}")
    print(f"{'N':>8} | {'one query (ms)':>14} | {'1024 queries (s)':>16} | {'all vs all (s)':>14}")
    rng = np.random.default_rng(0)
    for n in args.sizes:
        x = rng.standard_normal((n, args.dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)  # an Atlas holds unit vectors, as find_neighbours passes them
        cosine_knn(x, args.k, queries=np.array([0]), device=args.device, unit=True)  # warm-up
        times = []
        for q in rng.integers(0, n, args.repeats):
            t = time.perf_counter()
            cosine_knn(x, args.k, queries=np.array([q]), device=args.device, unit=True)
            times.append(time.perf_counter() - t)
        block = np.arange(min(1024, n))
        t = time.perf_counter()
        cosine_knn(x, args.k, queries=block, device=args.device, unit=True)
        t_block = time.perf_counter() - t
        print(f"{n:>8} | {1000 * np.median(times):>14.1f} | {t_block:>16.2f} | {t_block * n / len(block):>14.1f}")


if __name__ == "__main__":
    main()
