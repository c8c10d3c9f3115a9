"""A/B: SimCLR on synapses turned into a canonical pose against synapses as they lie, all else equal.

``benchmarks/canonical_pose.py`` shows that a fixed embedding groups the types far better once each synapse
is turned into the pose of its own cleft (normal along z, pre-synaptic side below, long axis along x). This
benchmark asks whether training gains as much. It is a small, self-contained training loop, **not** the
package's training path (which has the pose since: ``pose: canonical``, measured through the bundle by
``benchmarks/representation.py``'s ``*_canonical`` rows): per synapse of the sheets one context of edge
64 (channels mode: raw, pre-synaptic mask, cleft mask), half-width ResNet-10 + the default head, NT-Xent at
T 0.2, AdamW 1e-3 with warm-up and cosine, batch 16 from one bbox, 160 steps, two views per cube:

- ``canonical``: the canonical axes turned about z by a uniform angle (in-plane only), zoom 0.9-1.1,
  translation of up to 3 voxels, raw jitter and noise; embedded in the canonical pose, averaged over the four
  quarter turns about z;
- ``plain``: the same but a uniformly random 3-D rotation; embedded as cut, averaged over the cube's 24
  rotations (as ``inference.yaml``).

Both sample the same kind of views with one resample (``geometry.batched_affine_resample``) and are scored
as ``benchmarks/representation.py`` scores (kNN@5 and linear probe on the type, kNN@5 on the bbox, per-type
neighbour shares), mean ± std over ``--seeds``.

Usage::

    python benchmarks/canonical_pose_training.py --data outputs/representation/data --cache outputs/representation/cache
    python benchmarks/canonical_pose_training.py --data /tmp/indep/data      # benchmarks/heldout_synth.py's set
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CONTEXT, CUBE, BATCH = 64, 32, 16


def _rot_z(theta: np.ndarray) -> np.ndarray:
    """``[n, 3, 3]`` turns about z in the (z, y, x) frame."""
    c, s = np.cos(theta), np.sin(theta)
    out = np.zeros((len(theta), 3, 3))
    out[:, 0, 0] = 1
    out[:, 1, 1], out[:, 1, 2], out[:, 2, 1], out[:, 2, 2] = c, -s, s, c
    return out


def train_and_embed(ctx: torch.Tensor, canon: np.ndarray, bboxes: np.ndarray, arm: str, seed: int, steps: int):
    """Train one arm from scratch and return ``(features [N, F], s per step)``."""
    from canonical_pose import turn

    from synclr_monai.losses.ntxent import nt_xent_loss
    from synclr_monai.networks.rotation_average import RotationAveragedEncoder
    from synclr_monai.networks.simclr import build_simclr
    from synclr_monai.transforms.geometry import batched_affine_resample
    from synclr_monai.transforms.params import random_rotations

    rng = np.random.RandomState(seed)
    torch.manual_seed(seed)

    def views(idx: np.ndarray) -> torch.Tensor:
        n = len(idx)
        rot = _rot_z(rng.uniform(0, 2 * np.pi, n)) @ canon[idx] if arm == "canonical" else random_rotations(rng, n)
        affine = np.transpose(rot, (0, 2, 1)) * rng.uniform(0.9, 1.1, n)[:, None, None]
        v = batched_affine_resample(ctx[idx], affine, rng.uniform(-3, 3, (n, 3)), CUBE)
        scale = torch.from_numpy(rng.normal(1, 0.1, (n, 1, 1, 1))).float()
        shift = torch.from_numpy(rng.normal(0, 0.1, (n, 1, 1, 1))).float()
        noisy = torch.from_numpy((rng.random_sample(n) < 0.5)[:, None, None, None]).float()
        v[:, 0] = v[:, 0] * scale + shift + 0.1 * torch.randn_like(v[:, 0]) * noisy
        return v

    net = build_simclr("resnet10", in_channels=3, widen_factor=0.5)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    warm = max(steps // 10, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    names = np.unique(bboxes)
    start = time.perf_counter()
    net.train()
    for step in range(steps):
        pool = np.flatnonzero(bboxes == rng.choice(names))  # every batch from one bbox, as the defaults
        idx = rng.choice(pool, BATCH, replace=len(pool) < BATCH)
        loss = nt_xent_loss(net(views(idx)), net(views(idx)), temperature=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 40 == 0 or step == steps - 1:
            print(f"[canonical_pose_training] {arm} seed {seed} step {step}: loss {loss.item():.3f}", flush=True)
    per_step = (time.perf_counter() - start) / steps
    net.eval()
    with torch.no_grad():
        if arm == "canonical":
            cubes = turn(ctx, canon, CUBE)
            feats = sum(net.backbone(torch.rot90(cubes, k, dims=(3, 4)).contiguous()) for k in range(4)) / 4
        else:
            lo = (CONTEXT - CUBE) // 2
            cubes = ctx[:, :, lo : lo + CUBE, lo : lo + CUBE, lo : lo + CUBE].contiguous()
            feats = RotationAveragedEncoder(net.backbone, 24)(cubes)
    return feats.numpy(), per_step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("outputs/representation/data"))
    parser.add_argument("--cache", type=Path, default=None, help="HDF5 cache folder (default: DATA/../pose_cache)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--arms", nargs="+", default=["canonical", "plain"], choices=["canonical", "plain"])
    args = parser.parse_args(argv)
    from canonical_pose import canonical_rotation
    from representation import mean_std_table, score

    from synclr_monai.data.synapse_cubes import iter_dataset_cubes

    table = pd.read_csv(args.data / "synapse_types.csv", dtype=str)
    items = list(iter_dataset_cubes(args.data, CONTEXT, cache_dir=args.cache or args.data.parent / "pose_cache"))
    ids = pd.DataFrame({"bbox_name": [i[0] for i in items], "Var1": [i[1] for i in items]})
    merged = ids.merge(table, on=["bbox_name", "Var1"], how="left")
    types, bboxes = merged["type"].to_numpy(str), merged["bbox_name"].to_numpy(str)
    ctx = torch.from_numpy(np.stack([i[2] for i in items])).float()
    canon = np.stack([canonical_rotation(c.numpy()) for c in ctx])
    rows = []
    for seed in args.seeds:
        for arm in args.arms:
            feats, per_step = train_and_embed(ctx, canon, bboxes, arm, seed, args.steps)
            s = score(feats, types, bboxes, seed=seed)
            rows.append({"arm": arm, "seed": seed, **s, "s_per_step": per_step})
            text = ", ".join(f"{k} {v:.3f}" for k, v in s.items())
            print(f"[canonical_pose_training] {arm} seed {seed}: {text}", flush=True)
    print(mean_std_table(pd.DataFrame(rows), "arm"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
