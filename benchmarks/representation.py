"""What the encoder learns, per configuration: a grid over views, input modes, pairs and optimisation.

Each configuration of the grid (a set of ``monai.bundle`` overrides on top of ``train.yaml`` +
``demo.yaml``) is trained for each seed on one generated dataset, its encoder embeds every synapse, and
the embeddings are scored against the synthetic ground truth:

- kNN@5 and the linear probe on the synapse type (5-fold cross-validation; mean ± std over seeds);
- per type, the share of a synapse's 5 nearest neighbours (cosine) that share its type (chance: the
  type's share of the other synapses) — a type that only the EM tells apart must not sit at chance;
- kNN@5 on the bbox a synapse comes from (the batch effect: lower is better, chance 1 / n_bboxes);
- the same for the two baselines (a random encoder and PCA of the raw cubes), once per dataset.

Usage (the table goes to stdout and, with --out, to a CSV and a markdown file)::

    python benchmarks/representation.py --configs lab lab_so3 all_views --seeds 0 1 2 --max-epochs 6
    python benchmarks/representation.py --list          # the configurations of the grid
    # on data the defaults were not chosen on: the held-out generator's set (its own types, synapse_types.csv)
    python benchmarks/heldout_synth.py --out outputs/heldout/data --seed 7
    python benchmarks/representation.py --data outputs/heldout/data --out outputs/heldout --configs masked_bbox_batches

Runs one training at a time (two trainings on two cores run several times slower than one after the
other). Each run's wall time and seconds per step are reported beside its scores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The views the lab used (DESIGN.md), i.e. every stronger view off.
LAB_VIEWS = {
    "rotate3d_prob": 0.0, "flip_prob": 0.0, "zoom_range": [1.0, 1.0], "translate_fraction": 0.0,
    "noise_prob": 0.0, "mult_noise_prob": 0.0, "gamma_prob": 0.0, "section_prob": 0.0, "blackout_rate": 0.0,
    "misalign_prob": 0.0, "cutout_prob": 0.0, "mask_morph_prob": 0.0, "pre_dropout_prob": 0.0,
}  # fmt: skip
#: The optimisation the demo used before the ablation (LARS at a large step, temperature 0.1).
LAB_OPTIM = {"optimizer_name": "lars", "base_lr": 1.6, "lars_eta": 0.1, "weight_decay": 1.0e-6, "temperature": 0.1}
SO3 = {"rotate3d_prob": 1.0, "flip_prob": 0.5}
#: Every configuration states these, so that it does not depend on demo.yaml's choice of them.
CHANNELS = {"input_mode": "channels", "pair_mode": "same_crop", "same_bbox_batches": False, "pose": "native"}

#: The defaults of the second to sixth passes: masked input, same-crop pairs, every batch from one bbox.
MASKED_BBOX = {**CHANNELS, "input_mode": "masked", "same_bbox_batches": True}
#: No view that changes the apparent size of structures (the lab's crop-and-resize, the zoom of the affine).
NO_SCALE = {"augment#crop_prob": 0.0, "augment#zoom_range": [1.0, 1.0]}
#: Quarter-width ResNet-10 without the max-pool and with a 3³ stem: features at twice the resolution for
#: about the cost of the half-width default (the s / step of both rows in docs/results.md, "Fourth pass").
FINE = {"backbone_kwargs": {"widen_factor": 0.25, "conv1_t_size": 3, "no_max_pool": True}}

#: The stronger views that corrupt voxels rather than move them (off in ``masked_bbox_clean``).
VOXEL_CORRUPTIONS = (
    "noise_prob", "mult_noise_prob", "gamma_prob", "section_prob", "blackout_rate", "misalign_prob", "cutout_prob",
)  # fmt: skip

#: name -> (description, overrides of train.yaml + demo.yaml; "augment#key" for the views)
GRID: dict[str, tuple[str, dict]] = {
    "lab": (
        "the lab's views, LARS (the demo before)",
        {**CHANNELS, **{f"augment#{k}": v for k, v in LAB_VIEWS.items()}, **LAB_OPTIM},
    ),
    "lab_so3": (
        "+ SO(3) rotation and flips, LARS",
        {**CHANNELS, **{f"augment#{k}": v for k, v in {**LAB_VIEWS, **SO3}.items()}, **LAB_OPTIM},
    ),
    "all_views_lars": ("+ every new view, LARS", {**CHANNELS, **LAB_OPTIM}),
    "lab_adamw": ("the lab's views, AdamW", {**CHANNELS, **{f"augment#{k}": v for k, v in LAB_VIEWS.items()}}),
    "so3_adamw": (
        "SO(3) + flips only, AdamW",
        {**CHANNELS, **{f"augment#{k}": v for k, v in {**LAB_VIEWS, **SO3}.items()}},
    ),
    "all_views": ("every new view, AdamW 1e-3, T 0.2", dict(CHANNELS)),
    "masked": ("all views, input EM x dilated synapse mask", {**CHANNELS, "input_mode": "masked"}),
    "raw": ("all views, input EM only", {**CHANNELS, "input_mode": "raw"}),
    "nearby": ("all views, nearby-location pairs", {**CHANNELS, "pair_mode": "nearby"}),
    "masked_nearby": ("all views, masked input, nearby pairs", {"input_mode": "masked", "pair_mode": "nearby", "same_bbox_batches": False}),
    "masked_bbox_batches": (
        "masked, same crop, every batch from one bbox (the defaults of passes 2-6)",
        dict(MASKED_BBOX),
    ),
    "masked_bbox_noblur": (
        "masked_bbox_batches without the raw blur (keeps the vesicles' size: issue 9c)",
        {**MASKED_BBOX, "augment#blur_prob": 0.0},
    ),
    "masked_bbox_t01": (
        "masked_bbox_batches at temperature 0.1",
        {**MASKED_BBOX, "temperature": 0.1},
    ),
    "masked_bbox_fine": (
        "masked_bbox_batches, quarter-width ResNet-10 without max-pool, 3³ stem (2x finer, about the same cost)",
        {**MASKED_BBOX, **FINE},
    ),
    "masked_bbox_synneg": (
        "masked_bbox_batches, a cube of the anchor's own synapse is not one of its negatives (mask_same_synapse)",
        {**MASKED_BBOX, "mask_same_synapse": True},
    ),
    "masked_bbox_lr2": (
        "masked_bbox_batches at twice the learning rate (AdamW 2e-3)",
        {**MASKED_BBOX, "base_lr": 0.032},
    ),
    "masked_bbox_lr05": (
        "masked_bbox_batches at half the learning rate (AdamW 5e-4)",
        {**MASKED_BBOX, "base_lr": 0.008},
    ),
    "masked_bbox_noscale": (
        "masked_bbox_batches without scale views (no crop-and-resize, no zoom): vesicle size stays a cue",
        {**MASKED_BBOX, **NO_SCALE},
    ),
    "masked_bbox_noscale_noblur": (
        "masked_bbox_noscale without the raw blur (the blur too shrinks the small vesicles' contrast)",
        {**MASKED_BBOX, **NO_SCALE, "augment#blur_prob": 0.0},
    ),
    "masked_bbox_fine_half": (
        "masked_bbox_batches, half-width ResNet-10 without max-pool, 3³ stem (2x finer features, a costlier step)",
        {**MASKED_BBOX, "backbone_kwargs": {"widen_factor": 0.5, "conv1_t_size": 3, "no_max_pool": True}},
    ),
    "masked_bbox_cube40": (
        "masked_bbox_batches on 40³ cubes (more of the bouton and its vesicle cloud; ~2x the voxels)",
        {**MASKED_BBOX, "cube_size": 40},
    ),
    "masked_bbox_fine_noscale": (
        "masked_bbox_fine without scale views",
        {**MASKED_BBOX, **NO_SCALE, **FINE},
    ),
    "masked_bbox_dcl": (
        "masked_bbox_batches with the decoupled contrastive loss (no positive in the denominator: for small batches)",
        {**MASKED_BBOX, "decoupled_loss": True},
    ),
    "masked_bbox_clean": (
        "masked_bbox_batches without the voxel-level corruptions (noise, gamma, section artefacts, cutouts) that "
        "blur what tells the vesicle types apart at 32³; pose, intensity, blur, scale and mask views stay",
        {**MASKED_BBOX, **{f"augment#{k}": 0.0 for k in VOXEL_CORRUPTIONS}},
    ),
    "masked_bbox_batch32": (
        "masked_bbox_batches at batch 32 (more negatives per anchor, still one bbox per batch): the same cubes "
        "in half the steps, the learning rate scaled with the batch (2e-3)",
        {**MASKED_BBOX, "batch_size": 32},
    ),
    "masked_bbox_t05": (
        "masked_bbox_batches at temperature 0.5 (SynapseCLR's)",
        {**MASKED_BBOX, "temperature": 0.5},
    ),
    "masked_bbox_head512": (
        "masked_bbox_batches with SimCLR v1's small head (2 layers, 512 hidden, 128 out) instead of 3 x 2048 / 256: "
        "a head that can absorb less of the views' invariance leaves more of it to the encoder",
        {**MASKED_BBOX, "projection_hidden": 512, "projection_dim": 128, "projection_layers": 2},
    ),
    "masked_bbox_head256": (
        "masked_bbox_batches with a smaller head still (2 layers, 256 hidden, 64 out)",
        {**MASKED_BBOX, "projection_hidden": 256, "projection_dim": 64, "projection_layers": 2},
    ),
    "masked_bbox_head_linear": (
        "masked_bbox_batches with a linear head (256 -> 128): the loss acts on a linear map of the features",
        {**MASKED_BBOX, "projection_dim": 128, "projection_layers": 1},
    ),
    "masked_bbox_wd05": (
        "masked_bbox_batches at AdamW weight decay 0.05 (as in recent self-supervised recipes) instead of 1e-4",
        {**MASKED_BBOX, "weight_decay": 0.05},
    ),
    "masked_t05": ("masked, same crop, temperature 0.5", {**CHANNELS, "input_mode": "masked", "temperature": 0.5}),
    "masked_lab_views": (
        "masked input, nearby pairs, the lab's views",
        {"input_mode": "masked", "pair_mode": "nearby", "same_bbox_batches": False, **{f"augment#{k}": v for k, v in LAB_VIEWS.items()}},
    ),
    "t05": ("all views, temperature 0.5", {**CHANNELS, "temperature": 0.5}),
    "dcl": ("all views, decoupled contrastive loss", {**CHANNELS, "decoupled_loss": True}),
    "batch32": ("all views, batch 32 (half the steps)", {**CHANNELS, "batch_size": 32, "base_lr": 0.008}),
    "cube40": ("all views, 40³ cubes", {**CHANNELS, "cube_size": 40}),
    "masked_bbox_canonical": (
        "masked_bbox_batches in the canonical pose: every cube turned into its synapse's cleft frame (normal along "
        "z, pre-synaptic side below), the 3-D rotation a turn about the normal; embedded over the 4 turns about it",
        {**MASKED_BBOX, "pose": "canonical"},
    ),
    "channels_bbox_canonical": (
        "the canonical pose with the 3-channel input (raw, pre, cleft), every batch from one bbox (train.yaml since "
        "the seventh pass)",
        {**CHANNELS, "same_bbox_batches": True, "pose": "canonical"},
    ),
}


def _bundle_args(overrides: dict) -> list[str]:
    out = []
    for key, value in overrides.items():
        out += [f"--{key}", json.dumps(value) if isinstance(value, (list, bool)) else str(value)]
    return out


def train(data: Path, out: Path, name: str, seed: int, max_epochs: int, extra: list[str]) -> dict:
    """One training run through ``monai.bundle``; returns its wall time and steps."""
    run = out / name / f"seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    encoder = run / "model.pt"
    if encoder.is_file() and (run / "run.json").is_file():
        return json.loads((run / "run.json").read_text())
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", "['bundle/configs/train.yaml','bundle/configs/demo.yaml']",
        "--dataset_dir", str(data), "--output_dir", str(run / "train"), "--encoder_path", str(encoder),
        "--seed", str(seed), "--max_epochs", str(max_epochs), "--wandb", "False", "--eval_labels", "None",
        "--progress_bar", "False", "--resume", "None", "--cache_dir", str(out / "cache"),
        *_bundle_args(GRID[name][1]), *extra,
    ]  # fmt: skip
    print(f"[representation] {name} seed {seed}: training", flush=True)
    start = time.perf_counter()
    with open(run / "train.log", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"training {name} seed {seed} failed; see {run / 'train.log'}")
    meta = json.loads((run / "model.json").read_text())
    info = {"wall_s": wall, "steps": int(meta.get("iteration", 0))}
    (run / "run.json").write_text(json.dumps(info))
    return info


def neighbour_shares(vectors: np.ndarray, labels: np.ndarray, k: int = 5) -> dict[str, float]:
    """Per class, the mean share of a sample's k nearest (cosine) neighbours with its class."""
    x = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nn = np.argsort(-sim, axis=1)[:, :k]
    same = (labels[nn] == labels[:, None]).mean(axis=1)
    return {str(c): float(same[labels == c].mean()) for c in np.unique(labels)}


def score(vectors: np.ndarray, types: np.ndarray, bboxes: np.ndarray, seed: int = 0) -> dict[str, float]:
    """kNN@5 and linear probe on the type, kNN@5 on the bbox, per-type neighbour shares."""
    from synclr_monai.evaluation.metrics import knn_accuracy, linear_probe_accuracy

    out = {
        "knn_type": knn_accuracy(vectors, types, k=5, seed=seed).mean,
        "probe_type": linear_probe_accuracy(vectors, types, seed=seed).mean,
        "knn_bbox": knn_accuracy(vectors, bboxes, k=5, seed=seed).mean,
    }
    out.update({f"nn_{c}": v for c, v in neighbour_shares(vectors, types).items()})
    return out


def embed(data: Path, encoder: Path, cache: Path, rotations: int | None) -> tuple[pd.DataFrame, np.ndarray]:
    from synclr_monai.evaluation.embeddings import read_embeddings
    from synclr_monai.inference import run_inference

    out = encoder.parent / f"embeddings_r{rotations or 'default'}"
    h5 = run_inference(data, encoder, out, cache_dir=cache, progress=False, rotations=rotations)
    ids, vectors, _ = read_embeddings(h5)
    return ids, vectors


def baselines(data: Path, cache: Path, ids: pd.DataFrame, rotations: int | None) -> dict[str, np.ndarray]:
    from synclr_monai.evaluation.baselines import pca_embeddings, random_encoder_embeddings
    from synclr_monai.data.synapse_cubes import iter_dataset_cubes

    cube_size = 32
    cubes = list(iter_dataset_cubes(data, cube_size, cache_dir=cache, ids=ids))
    _, rand = random_encoder_embeddings(
        cubes, "resnet10", {"conv1_t_stride": 2}, seed=0, progress=False, rotations=rotations or 24
    )
    raw = np.stack([c[2][0].reshape(-1) for c in cubes])
    return {"random_init": rand, "pca_raw": pca_embeddings(raw, 32, seed=0)}


def mean_std_table(frame: pd.DataFrame, by: str) -> str:
    """A markdown table of every metric's mean ± std over the seeds of each ``by`` group (one seed: the value)."""
    metrics = [c for c in frame.columns if c not in (by, "seed")]
    agg = frame.groupby(by, sort=False)[metrics].agg(["mean", "std"])
    lines = [f"| {by} | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, row in agg.iterrows():
        cells = []
        for m in metrics:
            mean, std = row[(m, "mean")], row[(m, "std")]
            cells.append(f"{mean:.3f}" + (f" ± {std:.3f}" if np.isfinite(std) else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["lab", "lab_so3", "all_views", "masked", "nearby", "t05"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=6, help="epochs of 16 steps (the demo: see demo.yaml)")
    parser.add_argument("--data", type=Path, default=Path("outputs/representation/data"))
    parser.add_argument("--out", type=Path, default=Path("outputs/representation"))
    parser.add_argument("--difficulty", type=float, default=0.0, help="generator difficulty of a new dataset")
    parser.add_argument(
        "--rotations", type=int, default=None, choices=(1, 4, 24),
        help="features averaged over rotations; default: inference.yaml's (24, the cube's, in the native pose; 4, "
        "the turns about the cleft normal, in the canonical pose; the baselines: 24), or 1: the cube as cut",
    )  # fmt: skip
    parser.add_argument("--list", action="store_true", help="print the grid and exit")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more bundle overrides for every run")
    args = parser.parse_args(argv)
    if args.list:
        for name, (text, overrides) in GRID.items():
            print(f"{name:16s} {text}: {overrides or '(demo.yaml as is)'}")
        return 0
    unknown = [c for c in args.configs if c not in GRID]
    if unknown:
        parser.error(f"unknown configurations {unknown}; see --list")
    os.chdir(ROOT)
    if not (args.data / "synapse_types.csv").is_file():
        from synclr_monai.data.synthetic import generate_dataset

        # the demo's dataset (scripts/demo.sh), optionally harder
        generate_dataset(args.data, 4, (128, 192, 256), 12, seed=0, difficulty=args.difficulty, overwrite=True)
    table = pd.read_csv(args.data / "synapse_types.csv", dtype=str)
    cache = args.out / "cache"
    rows = []
    base_done = False
    # seeds outer: a partial grid (stopped early) already compares every configuration on the first seed
    for seed in args.seeds:
        for name in args.configs:
            info = train(args.data, args.out, name, seed, args.max_epochs, args.extra)
            ids, vectors = embed(args.data, args.out / name / f"seed{seed}" / "model.pt", cache, args.rotations)
            merged = ids.merge(table, on=["bbox_name", "Var1"], how="left")
            types, bboxes = merged["type"].to_numpy(str), merged["bbox_name"].to_numpy(str)
            if not base_done:
                for bname, bvec in baselines(args.data, cache, ids, args.rotations).items():
                    rows.append({"config": bname, "seed": 0, **score(bvec, types, bboxes)})
                base_done = True
            s = score(vectors, types, bboxes, seed=seed)
            s_per_step = info["wall_s"] / max(info["steps"], 1)
            rows.append({"config": name, "seed": seed, **s, "wall_s": info["wall_s"], "s_per_step": s_per_step})
            print(f"[representation] {name} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in s.items()), flush=True)
            frame = pd.DataFrame(rows)
            args.out.mkdir(parents=True, exist_ok=True)
            frame.to_csv(args.out / "runs.csv", index=False)
    text = mean_std_table(pd.DataFrame(rows), "config")
    print(text)
    (args.out / "table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
