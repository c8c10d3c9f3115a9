"""How much of the synapse types a fixed encoder finds once each synapse is turned into one canonical pose.

Every other figure of ``docs/results.md`` embeds a synapse as it lies in the volume (averaged over the cube's
24 rotations at most). This benchmark turns each synapse first into a pose defined by its own masks and
scores the same fixed embeddings on both: the question is how much of what the trained encoders miss is
pose, not content.

The pose is the package's (``pose: canonical``, :mod:`synclr_monai.transforms.pose`), from the cube's cleft
and pre-synaptic masks: z the cleft's normal (pre-synaptic side below), x its long axis, y completing a
proper rotation.

The x axis has no biological sign, so the single-pose random encoder is averaged over the two in-plane half
turns that keep the pre-synaptic side below (x, y -> -x, -y); PCA takes the cube as turned. A cube of
edge S is resampled from a context of edge C >= S * sqrt(3) around the synapse
(``geometry.batched_affine_resample``: trilinear raw, nearest masks). Scores: kNN@5 and linear probe on the
type, kNN@5 on the bbox, per-type same-type neighbour shares (as ``benchmarks/representation.py``) for PCA
of the raw cubes and a random ResNet-10
(3 channels, the benchmark's random baseline, over ``--seeds``), each on the cubes as cut ("plain") and
turned ("canonical").

Usage::

    python benchmarks/canonical_pose.py --data outputs/representation/data          # the demo's set
    python benchmarks/canonical_pose.py --data /tmp/indep/data                      # benchmarks/heldout_synth.py's
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def canonical_rotation(cube: np.ndarray) -> np.ndarray:
    """``[3, 3]`` rows: the new (z, y, x) axes of the synapse at the centre of ``cube`` (the package's
    :func:`~synclr_monai.transforms.pose.canonical_frame`, the frame of ``pose: canonical``)."""
    from synclr_monai.transforms.pose import canonical_frame

    return canonical_frame(cube)


def turn(contexts: torch.Tensor, rotations: np.ndarray, size: int) -> torch.Tensor:
    """``[N, K, S, S, S]`` cubes whose axes are the rows of ``rotations`` ``[N, 3, 3]`` (centred)."""
    from synclr_monai.transforms.geometry import batched_affine_resample

    # the resample maps output voxel o to context voxel affine @ o: the new axes as columns
    affine = np.transpose(rotations, (0, 2, 1))
    return batched_affine_resample(contexts, affine, np.zeros((len(contexts), 3)), size)


def half_turns(x: torch.Tensor) -> torch.Tensor:
    """The cubes turned by 180° about z (x, y -> -x, -y): the other sign of the cleft's long axis."""
    return x.flip(-1).flip(-2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("outputs/representation/data"))
    parser.add_argument("--cache", type=Path, default=None, help="HDF5 cache folder (default: DATA/../pose_cache)")
    parser.add_argument("--cube-size", type=int, default=32)
    parser.add_argument("--context", type=int, default=64, help="edge of the context the cubes are turned from")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="random encoders")
    args = parser.parse_args(argv)
    if args.context < np.ceil(args.cube_size * np.sqrt(3)):
        parser.error(f"--context must be at least cube size x sqrt(3) = {np.ceil(args.cube_size * np.sqrt(3)):.0f}")
    from representation import score

    from synclr_monai.data.synapse_cubes import iter_dataset_cubes
    from synclr_monai.evaluation.baselines import pca_embeddings, random_encoder_embeddings

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    cache = args.cache or args.data.parent / "pose_cache"
    table = pd.read_csv(args.data / "synapse_types.csv", dtype=str)
    items = list(iter_dataset_cubes(args.data, args.context, cache_dir=cache))
    ids = pd.DataFrame({"bbox_name": [i[0] for i in items], "Var1": [i[1] for i in items]})
    merged = ids.merge(table, on=["bbox_name", "Var1"], how="left")
    types, bboxes = merged["type"].to_numpy(str), merged["bbox_name"].to_numpy(str)
    contexts = torch.from_numpy(np.stack([i[2] for i in items])).float()
    lo, s = (args.context - args.cube_size) // 2, args.cube_size
    plain = contexts[:, :, lo : lo + s, lo : lo + s, lo : lo + s].contiguous()
    rotations = np.stack([canonical_rotation(c.numpy()) for c in contexts])
    canonical = turn(contexts, rotations, s)
    print(f"[canonical_pose] {len(items)} synapses of {args.data}, cubes {s}³ turned from {args.context}³ contexts")
    rows = []
    for pose, cubes in (("plain", plain), ("canonical", canonical)):
        raw = cubes[:, 0].reshape(len(cubes), -1).numpy()
        rows.append({"pose": pose, "embedding": "PCA of raw", **score(pca_embeddings(raw, 32), types, bboxes)})
        for rot in (1, 24):
            runs = []
            for seed in args.seeds:
                _, v = random_encoder_embeddings(cubes, "resnet10", {"conv1_t_stride": 2}, seed=seed, rotations=rot)
                if pose == "canonical" and rot == 1:  # averaged over the two half turns
                    _, v2 = random_encoder_embeddings(half_turns(cubes), "resnet10", {"conv1_t_stride": 2}, seed=seed)
                    v = (v + v2) / 2
                runs.append(score(v, types, bboxes, seed=seed))
            frame = pd.DataFrame(runs)
            row = {"pose": pose, "embedding": f"random ResNet-10, {rot} rotation(s)"}
            row.update({k: f"{frame[k].mean():.3f} ± {frame[k].std():.3f}" for k in frame.columns})
            rows.append(row)
    out = pd.DataFrame(rows)
    cols = list(out.columns)
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for _, r in out.iterrows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
