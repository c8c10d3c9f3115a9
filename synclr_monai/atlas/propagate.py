"""``python -m synclr_monai propagate``: labels of every synapse from a handful of labelled ones.

Two propagators, both on cosine geometry of the embeddings:

- ``spreading`` (default): scikit-learn's ``LabelSpreading`` on the k-nearest-neighbour graph of the
  unit-length embeddings (Euclidean distance between unit vectors orders neighbours as cosine
  similarity does). Labels diffuse along the graph, so a class reached from a single labelled synapse
  still covers its whole cluster. The confidence is the synapse's share of the diffused label mass.
  Synapses in a graph component holding no label fall back to the vote below.
- ``knn``: a vote of the k most similar labelled synapses weighted by ``exp(similarity / 0.1)``; the
  confidence is the winning label's share of the vote.

``--curve`` measures, on a fully labelled set, the accuracy on the unlabelled synapses against the
labelled fraction (several random draws each, at least one label per class), for the learned
embeddings and the two baselines of ``evaluate`` (random encoder, PCA of the raw cubes).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from synclr_monai.atlas.common import (
    Atlas,
    AtlasInputError,
    add_common_arguments,
    load_atlas,
    out_dir,
)
from synclr_monai.errors import run_command
from synclr_monai.data.synapse_labels import read_labels
from synclr_monai.evaluation.plots import _new_figure, _save_png
from synclr_monai.utils import atomic_output

__all__ = [
    "METHODS",
    "DEFAULT_FRACTIONS",
    "knn_vote",
    "label_spreading",
    "propagate_labels",
    "draw_labelled",
    "propagation_curve",
    "plot_curve",
    "read_few_labels",
    "build_parser",
    "main",
]

logger = logging.getLogger("synclr_monai.atlas.propagate")

METHODS = ("spreading", "knn")
VOTE_TEMPERATURE = 0.1
DEFAULT_FRACTIONS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _check(vectors: np.ndarray, labelled: np.ndarray, labels: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors = _unit(vectors)
    labelled = np.asarray(labelled, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels).astype(str)
    if len(labelled) == 0:
        raise ValueError("no labelled synapse to propagate from")
    if len(labelled) != len(labels):
        raise ValueError(f"{len(labelled)} labelled rows but {len(labels)} labels")
    if labelled.min() < 0 or labelled.max() >= len(vectors):
        raise ValueError(f"labelled rows must be in [0, {len(vectors)})")
    if len(np.unique(labelled)) != len(labelled):
        raise ValueError("a synapse is labelled twice")
    return vectors, labelled, labels


def knn_vote(
    vectors: np.ndarray, labelled: np.ndarray, labels: Sequence, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Vote of the k most similar labelled synapses, weighted by ``exp(similarity / 0.1)``.

    Args:
        vectors: ``[N, F]`` embeddings of all synapses.
        labelled: row numbers of the labelled synapses.
        labels: their labels (str).
        k: voters per synapse (capped at the number of labelled synapses).

    Returns:
        ``(predicted [N] str, confidence [N] float in [0, 1])``; labelled synapses keep their label
        with confidence 1.
    """
    vectors, labelled, labels = _check(vectors, labelled, labels)
    classes, codes = np.unique(labels, return_inverse=True)
    k = min(k, len(labelled))
    sims = vectors @ vectors[labelled].T  # [N, L]: few labels, so one product
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    # exp(similarity / T) weights (T = 0.1, as in the kNN monitors of contrastive learning): a close
    # labelled synapse outvotes many far ones, so k may exceed the labels per class; shifted by the
    # best similarity of the row for numerical range
    top_sims = np.take_along_axis(sims, top, 1)
    weights = np.exp((top_sims - top_sims[:, :1]) / VOTE_TEMPERATURE)
    votes = np.zeros((len(vectors), len(classes)))
    np.add.at(votes, (np.arange(len(vectors))[:, None], codes[top]), weights)
    winner = votes.argmax(axis=1)
    confidence = votes.max(axis=1) / votes.sum(axis=1)
    predicted = classes[winner].astype(object)
    predicted[labelled] = labels
    confidence[labelled] = 1.0
    return predicted.astype(str), confidence


def label_spreading(
    vectors: np.ndarray, labelled: np.ndarray, labels: Sequence, k: int = 10, alpha: float = 0.99, max_iter: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Label spreading (Zhou et al. 2004) on the kNN graph of the unit-length embeddings.

    Args:
        vectors: ``[N, F]`` embeddings of all synapses.
        labelled: row numbers of the labelled synapses.
        labels: their labels (str).
        k: neighbours per synapse in the graph (capped at N - 1).
        alpha: how much of its label a labelled synapse gives up to its neighbours (0..1); close to
            1 lets a few labels travel far, which is what few labels need.
        max_iter: diffusion iterations.

    Returns:
        ``(predicted [N] str, confidence [N] float in [0, 1])``; labelled synapses keep their label.
    """
    from sklearn.semi_supervised import LabelSpreading

    vectors, labelled, labels = _check(vectors, labelled, labels)
    classes, codes = np.unique(labels, return_inverse=True)
    if len(classes) < 2:  # nothing to spread between: every synapse gets the one label
        return np.full(len(vectors), classes[0]), np.ones(len(vectors))
    y = np.full(len(vectors), -1, dtype=np.int64)
    y[labelled] = codes
    model = LabelSpreading(kernel="knn", n_neighbors=max(1, min(k, len(vectors) - 1)), alpha=alpha, max_iter=max_iter)
    model.fit(vectors, y)
    dist = np.nan_to_num(model.label_distributions_, nan=0.0)
    mass = dist.sum(axis=1)
    predicted = classes[dist.argmax(axis=1)].astype(object)
    confidence = np.where(mass > 0, dist.max(axis=1) / np.where(mass > 0, mass, 1.0), 0.0)
    unreached = mass <= 1e-12
    if unreached.any():
        # a graph component without any label: nothing diffused there, so the nearest labels vote
        logger.info("%d synapses are not connected to a labelled one in the graph: kNN vote", int(unreached.sum()))
        vote, vote_conf = knn_vote(vectors, labelled, labels, k)
        predicted[unreached] = vote[unreached]
        confidence[unreached] = vote_conf[unreached]
    predicted[labelled] = labels
    confidence[labelled] = 1.0
    return predicted.astype(str), confidence


def propagate_labels(
    vectors: np.ndarray, labelled: np.ndarray, labels: Sequence, method: str = "knn", k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and confidences of every synapse with ``method`` (``"spreading"`` or ``"knn"``).

    Raises:
        ValueError: for an unknown method.
    """
    if method == "spreading":
        return label_spreading(vectors, labelled, labels, k=k)
    if method == "knn":
        return knn_vote(vectors, labelled, labels, k=k)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def draw_labelled(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Rows to label: ``round(fraction * N)`` of them, but at least one per class.

    One synapse of every class is drawn first (a class nobody labelled can never be predicted, and a
    lab labels at least one example of each class it cares about); the rest uniformly at random.
    """
    y = np.asarray(y)
    classes = np.unique(y)
    first = np.array([rng.choice(np.flatnonzero(y == c)) for c in classes])
    n = max(len(classes), int(round(fraction * len(y))))
    rest = np.setdiff1d(np.arange(len(y)), first)
    more = rng.choice(rest, size=min(n - len(first), len(rest)), replace=False)
    return np.sort(np.concatenate([first, more]).astype(np.int64))


def propagation_curve(
    embeddings: Mapping[str, np.ndarray],
    y: np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    draws: int = 5,
    methods: Sequence[str] = METHODS,
    k: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Accuracy on the unlabelled synapses against the labelled fraction.

    Every embedding and method sees the same labelled draws, so the curves differ only by the
    embedding or the method.

    Args:
        embeddings: ``{name: [N, F]}``, rows aligned with ``y``.
        y: the true label of every synapse.
        fractions: labelled fractions.
        draws: random labelled sets per fraction.
        methods: propagators.
        k: neighbours of the graph / the vote.
        seed: seed of the draws.
        progress: show a progress bar.

    Returns:
        One row per embedding, method, fraction and draw: ``embedding, method, fraction, n_labelled,
        draw, accuracy``.

    Raises:
        ValueError: for fewer than two classes or ``draws`` < 1.
    """
    y = np.asarray(y).astype(str)
    if len(np.unique(y)) < 2:
        raise ValueError(f"the curve needs at least two classes, got {np.unique(y).tolist()}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    rng = np.random.default_rng(seed)
    plan = [(f, d, draw_labelled(y, f, rng)) for f in fractions for d in range(draws)]
    rows = []
    total = len(plan) * len(embeddings) * len(methods)
    with tqdm(total=total, disable=not progress, desc="propagation curve", unit="fit") as bar:
        for name, vectors in embeddings.items():
            for method in methods:
                for fraction, draw, labelled in plan:
                    predicted, _ = propagate_labels(vectors, labelled, y[labelled], method, k)
                    test = np.setdiff1d(np.arange(len(y)), labelled)
                    accuracy = float((predicted[test] == y[test]).mean()) if len(test) else float("nan")
                    rows.append(
                        {
                            "embedding": name,
                            "method": method,
                            "fraction": fraction,
                            "n_labelled": len(labelled),
                            "draw": draw,
                            "accuracy": accuracy,
                        }
                    )
                    bar.update()
    return pd.DataFrame(rows)


def summarise_curve(curve: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of the accuracy over the draws."""
    return (
        curve.groupby(["embedding", "method", "fraction"], sort=False)
        .agg(n_labelled=("n_labelled", "mean"), accuracy=("accuracy", "mean"), std=("accuracy", "std"))
        .reset_index()
    )


def plot_curve(summary: pd.DataFrame, path: str | Path, chance: float | None = None, title: str | None = None) -> Path:
    """Accuracy against the labelled fraction (log axis): one colour per embedding, one line style per method."""
    import matplotlib

    fig = _new_figure((7.0, 4.6))
    ax = fig.subplots()
    colours = matplotlib.colormaps["tab10"]
    styles = {"spreading": "-", "knn": "--"}
    for i, name in enumerate(dict.fromkeys(summary["embedding"])):
        for method in dict.fromkeys(summary["method"]):
            part = summary[(summary["embedding"] == name) & (summary["method"] == method)]
            ax.errorbar(
                100 * part["fraction"],
                part["accuracy"],
                yerr=part["std"].fillna(0),
                color=colours(i),
                linestyle=styles.get(method, ":"),
                marker="o",
                markersize=3,
                capsize=2,
                label=f"{name} ({method})",
            )
    if chance is not None:
        ax.axhline(chance, color="grey", linewidth=0.8, linestyle=":", label="majority class")
    ax.set_xscale("log")
    ax.set_xlabel("labelled synapses (%)")
    ax.set_ylabel("accuracy on the unlabelled synapses")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "label propagation from a few labelled synapses")
    ax.legend(fontsize="x-small", loc="lower right")
    return _save_png(fig, path)


def read_few_labels(path: Path, atlas: Atlas, label_column: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The labelled rows of the atlas and their labels, from a labels CSV.

    Raises:
        AtlasInputError: naming the file, if it is empty, unreadable, or names synapses that the
            embeddings file does not hold.
    """
    try:
        table = read_labels(path, label_column)
    except ValueError as err:
        raise AtlasInputError(str(err)) from err
    if table.empty:
        raise AtlasInputError(f"labels file {path} holds no labelled synapse")
    rows = atlas.index(table, source=f"labels file {path}")
    return rows, table["label"].to_numpy().astype(str)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``propagate`` command."""
    p = argparse.ArgumentParser(
        prog="python -m synclr_monai propagate",
        description="Labels of every synapse from a few labelled ones, with a confidence per synapse; with --curve, "
        "accuracy against the labelled fraction on a fully labelled set, beside two baselines.",
    )
    add_common_arguments(p)
    p.add_argument("--labels", required=True, type=Path, help="CSV with bbox_name, Var1 and a label column")
    p.add_argument("--label-column", default=None, help="label column (default: 'type' or the only other column)")
    # the kNN vote beat label spreading at every labelled fraction after the demo (docs/results.md)
    p.add_argument("--method", choices=METHODS, default="knn", help="propagator (default knn)")
    p.add_argument("--k", type=int, default=10, help="neighbours of the graph / the vote (default 10)")
    p.add_argument("--curve", action="store_true", help="accuracy against the labelled fraction (needs all labels)")
    p.add_argument(
        "--fractions", type=float, nargs="+", default=list(DEFAULT_FRACTIONS), help="labelled fractions of the curve"
    )
    p.add_argument("--draws", type=int, default=5, help="random labelled sets per fraction (default 5)")
    p.add_argument("--no-baselines", action="store_true", help="curve of the embeddings only")
    p.add_argument("--backbone", default=None, help="random-encoder baseline architecture (default: from the file)")
    p.add_argument("--pca-components", type=int, default=32, help="dimension of the raw-PCA baseline (default 32)")
    p.add_argument("--batch-size", type=int, default=16, help="cubes per forward pass of the random baseline")
    p.add_argument("--device", default="cpu", help="device of the random baseline (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws and the baselines")
    return p


def _baselines(args: argparse.Namespace, atlas: Atlas, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Random-encoder and raw-PCA embeddings of the synapses ``rows`` (in that order)."""
    from synclr_monai.evaluation.baselines import pca_embeddings, random_encoder_embeddings
    from synclr_monai.evaluation.cli import PCA_RAW, RANDOM_INIT
    from synclr_monai.data.synapse_cubes import iter_dataset_cubes

    backbone = args.backbone or atlas.attrs.get("backbone")
    size = atlas.cube_size(args.cube_size)
    if atlas.dataset_dir is None or size is None or not backbone:
        raise AtlasInputError(
            f"the baselines need the cubes: {atlas.path} does not give the dataset folder, cube size and backbone "
            f"(dataset_dir={atlas.dataset_dir}, cube_size={size}, backbone={backbone}); pass --dataset-dir, "
            "--cube-size and --backbone, or --no-baselines"
        )
    ids = atlas.ids.iloc[rows]
    raw: dict[tuple[str, str], np.ndarray] = {}

    def tap():
        for b, v, cube in iter_dataset_cubes(
            atlas.dataset_dir, size, cache_dir=args.cache_dir, label_maps=atlas.attrs.get("label_maps"), ids=ids
        ):
            raw[(b, v)] = np.asarray(cube[0], dtype=np.float32).ravel()
            yield b, v, cube

    got_ids, random_vectors = random_encoder_embeddings(
        tap(), backbone, atlas.attrs.get("backbone_kwargs") or {}, seed=args.seed,
        batch_size=args.batch_size, device=args.device, progress=True,
    )
    position = {(b, v): i for i, (b, v) in enumerate(zip(got_ids["bbox_name"], got_ids["Var1"]))}
    order = np.array([position[(b, v)] for b, v in zip(ids["bbox_name"], ids["Var1"])])
    raw_matrix = np.stack([raw[(b, v)] for b, v in zip(ids["bbox_name"], ids["Var1"])])
    return {
        RANDOM_INIT: random_vectors[order],
        PCA_RAW: pca_embeddings(raw_matrix, args.pca_components, seed=args.seed),
    }


def _run_curve(args: argparse.Namespace, atlas: Atlas, rows: np.ndarray, labels: np.ndarray, folder: Path) -> int:
    from synclr_monai.evaluation.cli import LEARNED
    from synclr_monai.evaluation.metrics import chance_level

    if len(rows) < len(atlas):
        logger.info("curve on the %d labelled synapses of %d embedded", len(rows), len(atlas))
    embeddings = {LEARNED: atlas.vectors[rows]}
    if not args.no_baselines:
        embeddings.update(_baselines(args, atlas, rows))
    curve = propagation_curve(embeddings, labels, args.fractions, args.draws, METHODS, args.k, args.seed)
    summary = summarise_curve(curve)
    with atomic_output(folder / "propagation_curve.csv") as tmp:
        curve.to_csv(tmp, index=False, float_format="%.6f")
    with atomic_output(folder / "propagation_curve_summary.csv") as tmp:
        summary.to_csv(tmp, index=False, float_format="%.4f")
    chance = chance_level(labels)
    png = plot_curve(
        summary, folder / "propagation_curve.png", chance,
        title=f"label propagation, N={len(rows)}, {args.draws} draws per fraction ({atlas.path.name})",
    )
    cells = summary.assign(cell=[f"{a:.3f} ± {s:.3f}" for a, s in zip(summary["accuracy"], summary["std"].fillna(0))])
    pivot = cells.pivot(index=["embedding", "method"], columns="fraction", values="cell")
    sizes = summary.groupby("fraction")["n_labelled"].first()
    pivot.columns = [f"{100 * f:g}% (n={int(sizes[f])})" for f in pivot.columns]
    print(pivot.to_string())
    print(f"chance (majority class): {chance:.3f}   N = {len(rows)}   (n: labelled synapses per draw)")
    print(f"curve: {folder / 'propagation_curve.csv'}, {folder / 'propagation_curve_summary.csv'}, {png}")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise AtlasInputError(f"--k must be >= 1, got {args.k}")
    if any(not 0 < f <= 1 for f in args.fractions):
        raise AtlasInputError(f"--fractions must lie in (0, 1], got {args.fractions}")
    atlas = load_atlas(args.embeddings, args.dataset_dir, require_dataset=args.curve and not args.no_baselines)
    rows, labels = read_few_labels(args.labels, atlas, args.label_column)
    folder = out_dir(args)
    if args.curve:
        return _run_curve(args, atlas, rows, labels, folder)
    predicted, confidence = propagate_labels(atlas.vectors, rows, labels, args.method, args.k)
    is_labelled = np.zeros(len(atlas), dtype=bool)
    is_labelled[rows] = True
    table = atlas.ids.assign(label=predicted, confidence=confidence, labelled=is_labelled, method=args.method)
    path = folder / "propagated_labels.csv"
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    counts = table[~table["labelled"]].groupby("label")["confidence"].agg(["size", "mean"])
    print(f"{len(rows)} labelled synapses -> labels for {len(atlas)} ({args.method}, k={args.k})")
    print(counts.rename(columns={"size": "synapses", "mean": "mean confidence"}).to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"written: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``propagate`` command; 0 on success, 2 for bad usage or input."""
    return run_command(build_parser(), _run, argv)
