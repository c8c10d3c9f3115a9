"""``python -m synclr_monai outliers``: synapses unlike any other, as candidate segmentation errors.

The score of a synapse is the cosine distance (1 - similarity) to its k-th nearest synapse: a synapse
whose mask is wrong (a missing cleft, a merged segment, a shifted mask, a cut at the bbox edge) looks
like no other and sits far from its neighbours, while a common synapse has many close neighbours.
The k-th neighbour rather than the first keeps a few similar errors from vouching for each other.

Outputs: ``outliers.csv`` (every synapse with its score and rank, most unusual first) and a gallery
of the top N (three orthogonal slices each). When a ground truth of defects is known (the
``defect`` column that ``synth --defects`` writes to ``synapse_types.csv``, found in the dataset
folder, or ``--truth``), the ROC AUC of the score for finding them is printed and saved, overall and
per kind of defect.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from synclr_monai.atlas.common import (
    Atlas,
    AtlasInputError,
    add_common_arguments,
    load_atlas,
    load_cubes,
    out_dir,
)
from synclr_monai.atlas.gallery import plot_gallery
from synclr_monai.atlas.neighbours import cosine_knn
from synclr_monai.errors import run_command
from synclr_monai.utils import atomic_output

__all__ = ["outlier_scores", "defect_auc", "read_defects", "build_parser", "main"]

logger = logging.getLogger("synclr_monai.atlas.outliers")

NO_DEFECT = "none"  # as synclr_monai.data.synthetic_defects.NO_DEFECT (not imported: no data dependency here)


def outlier_scores(
    vectors: np.ndarray, k: int = 5, device: str | torch.device = "cpu", block_size: int = 1024
) -> np.ndarray:
    """Cosine distance of every synapse to its k-th nearest other synapse.

    Args:
        vectors: ``[N, F]`` embeddings.
        k: which neighbour (capped at N - 1).
        device: where to run the search.
        block_size: queries per matrix product.

    Returns:
        float ``[N]`` scores in [0, 2]; higher is more unusual.
    """
    _, sims = cosine_knn(vectors, k, device=device, block_size=block_size, progress=len(vectors) > 20000)
    return (1.0 - sims[:, -1]).astype(np.float64)


def defect_auc(scores: np.ndarray, defects: np.ndarray) -> dict[str, float]:
    """ROC AUC of the score for telling defective synapses from intact ones.

    Args:
        scores: ``[N]`` outlier scores.
        defects: ``[N]`` defect kinds, ``"none"`` for an intact synapse.

    Returns:
        ``{"all": AUC, kind: AUC of that kind against the intact ones, ...}``.

    Raises:
        ValueError: when there are no defective or no intact synapses.
    """
    from sklearn.metrics import roc_auc_score

    defects = np.asarray(defects).astype(str)
    bad = defects != NO_DEFECT
    if bad.all() or not bad.any():
        raise ValueError(f"the AUC needs defective and intact synapses; got {int(bad.sum())} of {len(bad)} defective")
    out = {"all": float(roc_auc_score(bad, scores))}
    for kind in sorted(set(defects[bad])):
        keep = (defects == kind) | ~bad
        out[kind] = float(roc_auc_score(defects[keep] == kind, scores[keep]))
    return out


def read_defects(path: Path, atlas: Atlas, column: str = "defect") -> np.ndarray:
    """Defect kind of every atlas synapse from a ground-truth CSV (``bbox_name, Var1, defect``).

    Raises:
        AtlasInputError: naming the file, if the column is missing or synapses lack a row.
    """
    from synclr_monai.data.synapse_labels import format_ids

    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if column not in table.columns or not {"bbox_name", "Var1"} <= set(table.columns):
        raise AtlasInputError(f"ground truth {path} needs the columns bbox_name, Var1, {column}; found {list(table.columns)}")
    merged = atlas.ids.merge(table[["bbox_name", "Var1", column]], on=["bbox_name", "Var1"], how="left")
    missing = merged[column].isna()
    if missing.any():
        raise AtlasInputError(f"ground truth {path} has no row for {format_ids(merged[missing])}")
    return merged[column].to_numpy().astype(str)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``outliers`` command."""
    p = argparse.ArgumentParser(
        prog="python -m synclr_monai outliers",
        description="An outlier score per synapse (cosine distance to its k-th nearest synapse), a gallery of the "
        "top ones, and the ROC AUC for finding known defects.",
    )
    add_common_arguments(p)
    p.add_argument("--k", type=int, default=5, help="score = distance to the k-th nearest synapse (default 5)")
    p.add_argument("--top", type=int, default=12, help="synapses in the gallery (default 12)")
    p.add_argument(
        "--truth",
        type=Path,
        default=None,
        help="CSV with bbox_name, Var1, defect (default: the dataset's synapse_types.csv when it has a defect column)",
    )
    p.add_argument("--device", default="cpu", help="device of the search (default cpu)")
    p.add_argument("--no-gallery", action="store_true", help="write the scores only (no dataset needed)")
    return p


def _run(args: argparse.Namespace) -> int:
    if args.k < 1 or args.top < 1:
        raise AtlasInputError(f"--k and --top must be >= 1, got {args.k} and {args.top}")
    atlas = load_atlas(args.embeddings, args.dataset_dir, require_dataset=not args.no_gallery)
    if len(atlas) < 2:
        raise AtlasInputError(f"{atlas.path} holds {len(atlas)} synapse: outliers need at least two")
    scores = outlier_scores(atlas.vectors, args.k, device=args.device)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(1, len(scores) + 1)
    table = atlas.ids.assign(id=atlas.names, score=scores, rank=rank)

    truth = args.truth
    if truth is None and atlas.dataset_dir is not None:
        candidate = atlas.dataset_dir / "synapse_types.csv"
        if candidate.is_file() and "defect" in pd.read_csv(candidate, nrows=0).columns:
            truth = candidate
    summary: dict = {"embeddings": str(atlas.path), "k": args.k, "n_synapses": len(atlas)}
    if truth is not None:
        defects = read_defects(truth, atlas)
        table["defect"] = defects
        auc = defect_auc(scores, defects)
        summary.update(truth=str(truth), n_defects=int((defects != NO_DEFECT).sum()), roc_auc=auc)
    folder = out_dir(args)
    with atomic_output(folder / "outliers.csv") as tmp:
        table.sort_values("rank").to_csv(tmp, index=False, float_format="%.6f")

    top = table.sort_values("rank").head(args.top)
    print(f"the {len(top)} most unusual of {len(atlas)} synapses (cosine distance to the {args.k}-th neighbour):")
    print(top.drop(columns=["bbox_name", "Var1"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if "roc_auc" in summary:
        auc = summary["roc_auc"]
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in auc.items() if k != "all")
        print(f"ROC AUC for the {summary['n_defects']} known defects of {truth}: {auc['all']:.3f} ({kinds})")
    if not args.no_gallery:
        rows = top.index.to_numpy()
        cubes = load_cubes(atlas, rows, args.cube_size, args.cache_dir)
        titles = [
            f"#{r.rank}\n{r.id}\nscore {r.score:.3f}" + (f"\n{r.defect}" if "defect" in top else "")
            for r in top.itertuples()
        ]
        png = plot_gallery(cubes, titles, folder / "outliers.png", suptitle=f"the {len(top)} most unusual synapses")
        summary["gallery"] = str(png)
        print(f"gallery: {png}")
    with atomic_output(folder / "outliers.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    print(f"scores: {folder / 'outliers.csv'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``outliers`` command; 0 on success, 2 for bad usage or input."""
    return run_command(build_parser(), _run, argv)
