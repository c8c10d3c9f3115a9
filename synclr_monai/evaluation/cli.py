"""``python -m synclr_monai evaluate``: score an embeddings file against known synapse classes.

Joins the embeddings with a labels CSV on ``(bbox_name, Var1)``, computes cross-validated kNN and
linear-probe accuracy, and beside them two baselines on the same synapses scored the same way
(a randomly initialised encoder of the same architecture, and PCA of the raw cubes). Writes
``evaluation.csv``/``evaluation.json``, a 2-D embedding plot coloured by label
(``embedding_2d.png``) and a grid of example cubes per k-means cluster (``cluster_examples.png``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synclr_monai.errors import run_command
from synclr_monai.evaluation.baselines import pca_embeddings, random_encoder_embeddings
from synclr_monai.evaluation.clustering import kmeans_clusters
from synclr_monai.evaluation.embeddings import read_embeddings
from synclr_monai.data.synapse_cubes import iter_dataset_cubes
from synclr_monai.data.synapse_labels import join_labels, read_labels
from synclr_monai.evaluation.metrics import (
    chance_level,
    drop_rare_classes,
    knn_accuracy,
    linear_probe_accuracy,
    make_folds,
)
from synclr_monai.evaluation.plots import centre_slices, plot_cluster_examples, plot_embedding_2d
from synclr_monai.utils import atomic_output, text_table

__all__ = ["build_parser", "evaluate_methods", "format_table", "main"]

logger = logging.getLogger("synclr_monai.evaluate")

LEARNED = "synclr"
RANDOM_INIT = "random_init"
PCA_RAW = "pca_raw"


def _cv_arg(text: str) -> int | str:
    if text.lower() == "loo":
        return "loo"
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--cv must be an integer >= 2 or 'loo', got {text!r}") from err
    if value < 2:
        raise argparse.ArgumentTypeError(f"--cv must be an integer >= 2 or 'loo', got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``evaluate`` command."""
    p = argparse.ArgumentParser(
        prog="python -m synclr_monai evaluate",
        description="kNN / linear-probe evaluation of synapse embeddings against known classes, "
        "with baselines and plots.",
    )
    p.add_argument("--embeddings", required=True, type=Path, help="embeddings.h5 (or embeddings.csv) from inference")
    p.add_argument("--labels", required=True, type=Path, help="CSV with bbox_name, Var1 and a label column")
    p.add_argument(
        "--label-column", default=None, help="label column of the CSV (default: 'type' or the only other column)"
    )
    p.add_argument("--k", type=int, default=5, help="neighbours of the kNN vote (default 5)")
    p.add_argument("--cv", type=_cv_arg, default=5, help="number of stratified folds or 'loo' (default 5)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: beside the embeddings file)")
    p.add_argument(
        "--dataset-dir", type=Path, default=None, help="dataset root for the cubes (default: from the embeddings file)"
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="HDF5 bbox cache folder")
    p.add_argument("--cube-size", type=int, default=None, help="cube edge (default: from the embeddings file)")
    p.add_argument(
        "--backbone", default=None, help="architecture of the random baseline (default: from the embeddings file)"
    )
    p.add_argument("--no-baselines", action="store_true", help="skip the random-encoder and raw-PCA baselines")
    p.add_argument(
        "--no-examples",
        action="store_true",
        help="skip the cluster example grid (no cubes are cut with --no-baselines)",
    )
    p.add_argument(
        "--n-clusters",
        type=int,
        default=None,
        help="k-means clusters for the example grid (default: number of classes)",
    )
    p.add_argument("--pca-components", type=int, default=32, help="dimension of the raw-PCA baseline (default 32)")
    p.add_argument("--batch-size", type=int, default=16, help="cubes per forward pass of the random baseline")
    p.add_argument("--device", default="cpu", help="device of the random baseline (default cpu)")
    p.add_argument("--plot-method", default="auto", choices=["auto", "umap", "tsne", "pca"], help="2-D projection")
    p.add_argument("--seed", type=int, default=0, help="seed of folds, baselines, projections and k-means")
    return p


def evaluate_methods(
    embeddings: dict[str, np.ndarray], y: np.ndarray, k: int = 5, cv: int | str = 5, seed: int = 0
) -> pd.DataFrame:
    """Score several embeddings of the same synapses with the same folds and metrics.

    Args:
        embeddings: ``{method: [N, F] array}``, rows aligned with ``y``.
        y: class labels ``[N]``.
        k: kNN neighbours.
        cv: folds or ``"loo"``.
        seed: fold seed (the same for every method, so all see the same splits).

    Returns:
        A frame with ``method, knn_acc, knn_std, linear_acc, linear_std, chance, n_samples, k``.
    """
    rows = []
    for method, X in embeddings.items():
        knn = knn_accuracy(X, y, k=k, metric="cosine", cv=cv, seed=seed)
        lin = linear_probe_accuracy(X, y, cv=cv, seed=seed)
        logger.info("%s: kNN %.3f ± %.3f, linear probe %.3f ± %.3f", method, *knn, *lin)
        rows.append(
            {
                "method": method,
                "knn_acc": knn.mean,
                "knn_std": knn.std,
                "linear_acc": lin.mean,
                "linear_std": lin.std,
                "chance": chance_level(y),
                "n_samples": len(y),
                "k": k,
            }
        )
    return pd.DataFrame(rows)


def format_table(results: pd.DataFrame) -> str:
    """The results as a plain-text table with the chance level underneath."""
    k = int(results["k"].iloc[0])
    header = ("method", f"kNN acc (k={k})", "linear probe acc")
    lines = [
        (r.method, f"{r.knn_acc:.3f} ± {r.knn_std:.3f}", f"{r.linear_acc:.3f} ± {r.linear_std:.3f}")
        for r in results.itertuples()
    ]
    chance = f"chance (majority class): {results['chance'].iloc[0]:.3f}   N = {int(results['n_samples'].iloc[0])}"
    return text_table(header, lines) + "\n" + chance


class _CubeTap:
    """Pass cubes through while keeping what the baselines and the plots need.

    Keeps the flattened raw channel (for PCA) and the centre slices (for the grid) but not the
    full 3-channel cubes, so that only one pass over the dataset is needed and memory stays at one
    channel per synapse.
    """

    def __init__(self, keep_raw: bool) -> None:
        self.keep_raw = keep_raw
        self.keys: list[tuple[str, str]] = []
        self.raw: list[np.ndarray] = []
        self.slices: list[np.ndarray] = []

    def __call__(self, items) -> Iterator[tuple[str, str, np.ndarray]]:
        for name, var1, cube in items:
            self.keys.append((name, var1))
            if self.keep_raw:
                self.raw.append(np.asarray(cube[0], dtype=np.float32).ravel())
            self.slices.append(centre_slices(cube))
            yield name, var1, cube

    def drain(self, items) -> None:
        """Consume ``items`` without encoding them."""
        for _ in self(items):
            pass


def _order_like(keys: list[tuple[str, str]], ids: pd.DataFrame) -> np.ndarray:
    """Indices that put rows listed by ``keys`` into the order of ``ids``."""
    position = {key: i for i, key in enumerate(keys)}
    return np.array([position[(b, v)] for b, v in zip(ids["bbox_name"], ids["Var1"])], dtype=np.int64)


def _resolve_dataset(args: argparse.Namespace, attrs: dict[str, Any]) -> tuple[Path | None, int | None, str | None]:
    dataset_dir = args.dataset_dir or (Path(attrs["dataset_dir"]) if attrs.get("dataset_dir") else None)
    cube_size = args.cube_size or (int(attrs["cube_size"]) if attrs.get("cube_size") else None)
    backbone = args.backbone or attrs.get("backbone")
    return dataset_dir, cube_size, backbone


def _write_results(out_dir: Path, results: pd.DataFrame, summary: dict[str, Any]) -> tuple[Path, Path]:
    csv_path, json_path = out_dir / "evaluation.csv", out_dir / "evaluation.json"
    with atomic_output(csv_path) as tmp:
        results.to_csv(tmp, index=False)
    with atomic_output(json_path) as tmp:
        tmp.write_text(json.dumps({**summary, "results": results.to_dict(orient="records")}, indent=2))
    return csv_path, json_path


def _baseline_rotations(attrs: dict[str, Any]) -> int:
    """The rotations the random-encoder baseline averages over: those of the embeddings scored beside it, except
    in the canonical pose, whose 4 turns about the cleft normal mean nothing for the baselines' cubes as cut:
    those get the cube's 24 (the baselines stay the native-pose ones of docs/results.md)."""
    if attrs.get("pose") == "canonical":
        return 24
    return int(attrs.get("rotations", 1))


def _cubes_pass(
    args: argparse.Namespace, ids: pd.DataFrame, dataset_dir: Path, cube_size: int, backbone: str | None, attrs: dict
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One pass over the cubes of ``ids``: baseline embeddings (unless --no-baselines) and centre slices.

    Returns:
        ``({method: [N, F]}, centre slices [N, 3, S, S])``, rows in the order of ``ids``.
    """
    tap = _CubeTap(keep_raw=not args.no_baselines)
    cubes = iter_dataset_cubes(
        dataset_dir, cube_size, cache_dir=args.cache_dir, label_maps=attrs.get("label_maps"), ids=ids
    )
    baselines: dict[str, np.ndarray] = {}
    if args.no_baselines:
        logger.info("cutting %d cubes of %s for the cluster examples", len(ids), dataset_dir)
        tap.drain(cubes)
        order = _order_like(tap.keys, ids)
    else:
        logger.info("baselines: random %s encoder and raw PCA on %d cubes of %s", backbone, len(ids), dataset_dir)
        _, random_vectors = random_encoder_embeddings(
            tap(cubes),
            backbone,
            attrs.get("backbone_kwargs") or {},
            seed=args.seed,
            batch_size=args.batch_size,
            device=args.device,
            progress=True,
            rotations=_baseline_rotations(attrs),
        )
        order = _order_like(tap.keys, ids)
        baselines[RANDOM_INIT] = random_vectors[order]
        baselines[PCA_RAW] = pca_embeddings(np.stack(tap.raw)[order], args.pca_components, seed=args.seed)
    return baselines, np.stack(tap.slices)[order]


def _run(args: argparse.Namespace) -> int:
    ids, vectors, attrs = read_embeddings(args.embeddings)
    logger.info("read %d embeddings of dimension %d from %s", len(ids), vectors.shape[1], args.embeddings)
    labels_table = read_labels(args.labels, args.label_column)
    y = join_labels(ids, labels_table, source=args.labels)
    n_extra = len(labels_table) - len(ids)
    if n_extra > 0:
        logger.info("%d labelled synapses of %s have no embedding and are ignored", n_extra, args.labels)

    vectors, y_kept, dropped = drop_rare_classes(vectors, y)
    keep = ~np.isin(y, dropped)
    if dropped:
        logger.warning("classes with a single synapse cannot be cross-validated and are left out: %s", dropped)
    y = y_kept
    ids = ids[keep].reset_index(drop=True)
    classes, counts = np.unique(y, return_counts=True)
    logger.info("%d synapses in %d classes: %s", len(y), len(classes), dict(zip(classes.tolist(), counts.tolist())))
    if len(classes) < 2:
        raise ValueError(
            f"{args.labels}: need at least two classes with two synapses each to evaluate, got {len(classes)}"
        )
    folds = make_folds(y, args.cv, args.seed)
    n_splits = int(folds.get_n_splits(np.zeros(len(y)), y))
    logger.info(
        "cross-validation: %s folds (the same for every method)", "leave-one-out" if args.cv == "loo" else n_splits
    )

    out_dir = args.out or args.embeddings.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset_dir, cube_size, backbone = _resolve_dataset(args, attrs)
    have_dataset = dataset_dir is not None and cube_size is not None and Path(dataset_dir).is_dir()
    need_cubes = not args.no_baselines or not args.no_examples
    if not args.no_baselines and not (have_dataset and backbone):
        raise ValueError(
            "the baselines need the cubes: the embeddings file does not name an existing dataset folder, cube "
            f"size and backbone (dataset_dir={dataset_dir}, cube_size={cube_size}, backbone={backbone}); pass "
            "--dataset-dir, --cube-size and --backbone, or --no-baselines"
        )

    embeddings: dict[str, np.ndarray] = {LEARNED: vectors}
    slices: np.ndarray | None = None
    if have_dataset and need_cubes:
        baselines, slices = _cubes_pass(args, ids, dataset_dir, cube_size, backbone, attrs)
        embeddings.update(baselines)
    elif need_cubes:
        logger.warning("no dataset folder (--dataset-dir) available: skipping the cluster example grid")

    results = evaluate_methods(embeddings, y, k=args.k, cv=args.cv, seed=args.seed)
    print(format_table(results))

    plots = {
        "embedding_2d": str(
            plot_embedding_2d(vectors, y, out_dir / "embedding_2d.png", args.plot_method, seed=args.seed)
        )
    }
    if slices is not None and not args.no_examples:
        n_clusters = args.n_clusters or len(classes)
        cluster_ids, distance = kmeans_clusters(vectors, n_clusters, seed=args.seed)
        plots["cluster_examples"] = str(
            plot_cluster_examples(slices, cluster_ids, out_dir / "cluster_examples.png", rank=distance, captions=y)
        )
    summary = {
        "embeddings": str(args.embeddings),
        "labels": str(args.labels),
        "n_samples": int(len(y)),
        "class_counts": dict(zip(classes.tolist(), counts.astype(int).tolist())),
        "dropped_classes": dropped,
        "chance_level": chance_level(y),
        "k": args.k,
        "cv": args.cv,
        "n_splits": n_splits,
        "dataset_dir": str(dataset_dir) if dataset_dir else None,
        "cube_size": cube_size,
        "backbone": backbone,
        "plots": plots,
    }
    csv_path, json_path = _write_results(out_dir, results, summary)
    logger.info("wrote %s, %s and %s", csv_path, json_path, ", ".join(plots.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``evaluate`` command.

    Args:
        argv: command-line arguments after ``evaluate`` (default ``sys.argv[1:]``).

    Returns:
        0 on success, 2 for bad usage or a missing or invalid input (the message names it); see
        :func:`synclr_monai.errors.run_command`.
    """
    return run_command(build_parser(), _run, argv)
