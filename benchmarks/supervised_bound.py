"""A supervised upper bound: do the encoder's inputs carry the synapse type at all?

Trains the demo's encoder (half-width ResNet-10, one input channel, ``masked`` input at 32³ by default)
*with the type labels* (a linear head, cross-entropy) on the same inputs the self-supervised run sees, for
about the demo's budget (160 steps of batch 16, AdamW 1e-3), and scores it by leave-one-bbox-out: train
on the synapses of three bboxes, test on the fourth (so a bbox's staining cannot be learnt as the type),
every bbox once. Each test synapse is the inference cube (centred on its cleft centre, mask dilated by
``az_radius`` 2, as ``inference.yaml``) and its logits are averaged over the cube's 24 rotations, as the
embeddings are.

What it measures (and what not):

- ``--views train``: each training input is one view drawn by the training pipeline's own view
  transform (``AugmentConfig`` of ``train.yaml`` + ``demo.yaml``: SO(3) resample of the context, zoom,
  noise, blur, section artefacts, cutouts, mask morphology, random dilation radius 1-4) from the
  synapse's context cube. A pool of ``--pool`` views per synapse is drawn once and sampled from, so a
  run costs minutes on two cores. High accuracy here says that the views keep the type.
- ``--views none``: the inference cube itself, turned by a random one of its 24 rotations (and a random
  flip), nothing else. High accuracy here says that the cube carries the type.
- Only 36 synapses train each fold (9 per type): this is a bound on what 32³ cubes carry at this data
  size, not on what a self-supervised encoder could learn from unlabelled synapses. Accuracy is over
  the 48 held-out predictions (12 per fold); chance 0.25.

Usage::

    python benchmarks/supervised_bound.py --views none --seeds 0 1
    python benchmarks/supervised_bound.py --views train --seeds 0 --pool 24
    python benchmarks/supervised_bound.py --views none --input-mode channels   # 3 channels, no masking
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def augment_config() -> dict:
    """The views of ``train.yaml`` with ``demo.yaml``'s overrides (the demo's training views)."""
    aug = dict(yaml.safe_load((ROOT / "bundle/configs/train.yaml").read_text())["augment"])
    aug.update(yaml.safe_load((ROOT / "bundle/configs/demo.yaml").read_text()).get("augment", {}))
    return aug


def load_synapses(data: Path, cube_size: int, input_mode: str, az_radius: int, context: int, cache: Path | None):
    """Per synapse: (bbox, id, type, inference cube [C, S, S, S], context cube [K, C', C', C'])."""
    from synclr_monai.data.bbox import find_bboxes, sheet_point, synapse_cube
    from synclr_monai.data.cache import load_bbox
    from synclr_monai.data.label_maps import resolve_label_maps
    from synclr_monai.transforms.functional import cut_cube

    types = pd.read_csv(data / "synapse_types.csv", dtype=str).set_index(["bbox_name", "Var1"])["type"]
    out = []
    for source in find_bboxes(data):
        vol = load_bbox(source, cache_dir=cache, label_maps=resolve_label_maps(None))
        for _, row in vol.synapses.iterrows():
            key = (vol.name, str(row["Var1"]))
            test = synapse_cube(vol, row, cube_size, input_mode, None, az_radius)
            centre = sheet_point(row, "central")
            start = [c - cube_size // 2 for c in centre]
            ctx = cut_cube(vol.raw[None], vol.mask, start, cube_size, context=context, pad=True)
            out.append((key[0], key[1], types[key], test, ctx))
    return out


def view_pool(contexts: list[np.ndarray], n: int, cube_size: int, input_mode: str, cfg, seed: int) -> np.ndarray:
    """``[N, n, C, S, S, S]``: n training views of each context cube (the pipeline's per-sample path)."""
    from synclr_monai.transforms.functional import apply_view_params
    from synclr_monai.transforms.params import sample_two_view_params

    rng = np.random.RandomState(seed)
    pool = []
    for ctx in contexts:
        views = []
        for _ in range(n):
            p = sample_two_view_params(rng, 1, cube_size, cfg, input_mode)
            views.append(apply_view_params(ctx, p.view1, input_mode).numpy())
        pool.append(np.stack(views))
    return np.stack(pool).astype(np.float32)


def random_pose(x: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
    """One of the cube's 24 rotations, then a flip of the first spatial axis with probability 1/2."""
    from synclr_monai.networks.rotation_average import cube_rotations, rotate_cube

    rots = cube_rotations()
    out = []
    for cube in x:
        perm, flips = rots[rng.randint(len(rots))]
        c = rotate_cube(cube[None], perm, flips)[0]
        if rng.rand() < 0.5:
            c = torch.flip(c, dims=(1,))
        out.append(c)
    return torch.stack(out)


def rotation_averaged_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from synclr_monai.networks.rotation_average import cube_rotations, rotate_cube

    with torch.no_grad():
        return torch.stack([model(rotate_cube(x, p, f)) for p, f in cube_rotations()]).softmax(-1).mean(0)


def run_fold(train_x, train_y, test_x, args, in_channels: int, seed: int, pooled: bool) -> np.ndarray:
    """Train on ``train_x`` (cubes ``[N, C, S³]``, or view pools ``[N, V, C, S³]``); class probabilities of ``test_x``."""
    from synclr_monai.networks import build_backbone

    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    backbone = build_backbone("resnet10", in_channels=in_channels, widen_factor=args.widen, **args.backbone_kwargs)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.out_features, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    y = torch.as_tensor(train_y)
    model.train()
    for _ in range(args.steps):
        idx = rng.randint(len(train_y), size=args.batch)
        if pooled:
            xb = torch.from_numpy(train_x[idx, rng.randint(train_x.shape[1], size=args.batch)])
        else:
            xb = random_pose(torch.from_numpy(train_x[idx]), rng)
        loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return rotation_averaged_logits(model, torch.from_numpy(test_x)).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=Path("outputs/representation/data"),
        help="a dataset root with synapse_types.csv (default: the set benchmarks/representation.py generates)",
    )  # fmt: skip
    parser.add_argument("--cache", type=Path, default=None, help="HDF5 cache of the assembled bboxes")
    parser.add_argument("--views", choices=("none", "train"), default="none")
    parser.add_argument("--input-mode", default="masked", choices=("masked", "channels", "raw"))
    parser.add_argument("--cube-size", type=int, default=32)
    parser.add_argument("--az-radius", type=int, default=2, help="dilation of the test cubes' mask (inference's)")
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--widen", type=float, default=0.5)
    parser.add_argument("--backbone-kwargs", type=yaml.safe_load, default={}, help="e.g. '{conv1_t_stride: 1}'")
    parser.add_argument("--pool", type=int, default=24, help="training views per synapse (--views train)")
    parser.add_argument("--aug", nargs="*", default=[], help="view overrides KEY=YAML, e.g. blur_prob=0")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folds", nargs="+", default=None, help="held-out bboxes to run (default: all, e.g. bbox1 bbox2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from synclr_monai.transforms.config import AugmentConfig, input_channels

    aug = augment_config()
    for item in args.aug:
        k, v = item.split("=", 1)
        aug[k] = yaml.safe_load(v)
    cfg = AugmentConfig.from_any(aug)
    context = cfg.context_size(args.cube_size)
    t0 = time.perf_counter()
    syn = load_synapses(args.data, args.cube_size, args.input_mode, args.az_radius, context, args.cache)
    names = sorted({s[2] for s in syn})
    bboxes = np.array([s[0] for s in syn])
    labels = np.array([names.index(s[2]) for s in syn])
    tests = np.stack([s[3] for s in syn]).astype(np.float32)
    print(f"[bound] {len(syn)} synapses, types {names}, context {context}, views {args.views}, "
          f"input {args.input_mode} {args.cube_size}³ ({time.perf_counter() - t0:.0f} s)", flush=True)
    for seed in args.seeds:
        t1 = time.perf_counter()
        if args.views == "train":
            train_all = view_pool([s[4] for s in syn], args.pool, args.cube_size, args.input_mode, cfg, seed)
            print(f"[bound] seed {seed}: {args.pool} views per synapse in {time.perf_counter() - t1:.0f} s", flush=True)
        else:
            train_all = tests
        probs = np.zeros((len(syn), len(names)))
        t2 = time.perf_counter()
        folds = args.folds or sorted(set(bboxes))
        for b in folds:
            tr, te = bboxes != b, bboxes == b
            probs[te] = run_fold(train_all[tr], labels[tr], tests[te], args, input_channels(args.input_mode), seed,
                                 args.views == "train")
        done = np.isin(bboxes, folds)
        pred = np.where(done, probs.argmax(1), -1)
        fold_acc = [float((pred[bboxes == b] == labels[bboxes == b]).mean()) for b in folds]
        recall = {n: float((pred[done & (labels == i)] == i).mean()) for i, n in enumerate(names)}
        conf = pd.crosstab(pd.Series([names[i] for i in labels[done]], name="true"),
                           pd.Series([names[i][:10] for i in pred[done]], name="pred"))
        print(f"[bound] seed {seed}: accuracy {float((pred[done] == labels[done]).mean()):.3f} over {int(done.sum())} (folds "
              + ", ".join(f"{a:.2f}" for a in fold_acc) + f"), {args.steps} steps x {len(folds)} folds in "
              f"{time.perf_counter() - t2:.0f} s", flush=True)
        print("[bound] recall " + ", ".join(f"{k} {v:.2f}" for k, v in recall.items()))
        print(conf.to_string(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
