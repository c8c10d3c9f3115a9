"""``python -m synclr_monai explore``: one self-contained HTML page to browse all synapses.

The page (``DIR/explore.html``) needs no network and no server: its data (2-D map, colourings,
nearest neighbours, thumbnails as base64 PNG data URIs) and its plain JavaScript are written into
the file itself. It shows

- the 2-D map of every synapse (t-SNE, or UMAP when installed; PCA for fewer than 30) as SVG points,
  coloured by type (the given labels), bbox, k-means cluster, outlier score or propagated label;
- on hover, the synapse's id and its three orthogonal slices (raw EM, pre-synaptic cyan, cleft red);
- on click, its nearest synapses (cosine similarity) in a side panel, highlighted on the map.

Opening ``explore.html#selftest`` makes the page check itself (points drawn, a click shows
neighbours, no script error) and write the result as JSON into ``<pre id="selftest">``; the test suite
reads it from a headless Chromium. ``#select=N`` opens synapse N's neighbours (for screenshots).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from synclr_monai.atlas.common import (
    Atlas,
    AtlasInputError,
    add_common_arguments,
    load_atlas,
    out_dir,
)
from synclr_monai.atlas.explore_page import TEMPLATE
from synclr_monai.atlas.gallery import thumbnail_png
from synclr_monai.atlas.neighbours import cosine_knn
from synclr_monai.atlas.outliers import outlier_scores
from synclr_monai.errors import run_command
from synclr_monai.utils import atomic_output

__all__ = ["explorer_data", "render_page", "build_explorer", "build_parser", "main"]

logger = logging.getLogger("synclr_monai.atlas.explore")

_DATA_MARK = "/*__ATLAS_DATA__*/null"


def explorer_data(
    atlas: Atlas,
    labels: tuple[np.ndarray, np.ndarray] | None = None,
    k: int = 8,
    n_clusters: int | None = None,
    method: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready lists (thumbnails added separately).

    Args:
        atlas: the embeddings.
        labels: ``(rows, labels)`` of labelled synapses (e.g. from ``read_few_labels``) or None.
        k: neighbours listed on click.
        n_clusters: k-means clusters (default: number of label classes, else 8; capped at N).
        method: 2-D projection (see ``reduce_2d``).
        seed: seed of the projection and k-means.

    Returns:
        ``{"ids", "x", "y", "colourings": {name: {"kind", "values"}}, "neighbours", "similarities", "method"}``.
    """
    from synclr_monai.atlas.propagate import propagate_labels
    from synclr_monai.evaluation.clustering import kmeans_clusters
    from synclr_monai.evaluation.plots import reduce_2d

    n = len(atlas)
    coords, used = reduce_2d(atlas.vectors, method, seed) if n >= 2 else (np.zeros((n, 2)), "none")
    colourings: dict[str, dict[str, Any]] = {}
    if labels is not None:
        rows, values = labels
        given = np.full(n, "unlabelled", dtype=object)
        given[rows] = values
        colourings["type"] = {"kind": "categorical", "values": given.tolist()}
        predicted, confidence = propagate_labels(atlas.vectors, rows, values)
        colourings["propagated label"] = {"kind": "categorical", "values": predicted.tolist()}
        colourings["propagation confidence"] = {"kind": "continuous", "values": np.round(confidence, 4).tolist()}
    colourings["bbox"] = {"kind": "categorical", "values": atlas.ids["bbox_name"].tolist()}
    n_clusters = min(n, n_clusters or (len(set(labels[1])) if labels is not None else 8))
    cluster_ids, _ = kmeans_clusters(atlas.vectors, max(1, n_clusters), seed=seed)
    colourings["cluster"] = {"kind": "categorical", "values": [f"cluster {c}" for c in cluster_ids]}
    if n >= 2:
        scores = outlier_scores(atlas.vectors, k=min(5, n - 1))
        colourings["outlier score"] = {"kind": "continuous", "values": np.round(scores, 4).tolist()}
        index, sims = cosine_knn(atlas.vectors, min(k, n - 1))
    else:
        index, sims = np.zeros((n, 0), int), np.zeros((n, 0))
    return {
        "ids": atlas.names,
        "x": np.round(coords[:, 0], 4).tolist(),
        "y": np.round(coords[:, 1], 4).tolist(),
        "method": used,
        "colourings": colourings,
        "neighbours": index.tolist(),
        "similarities": np.round(sims, 4).tolist(),
    }


def render_page(data: dict[str, Any], title: str = "synapse atlas") -> str:
    """The HTML page with ``data`` inlined (``</`` escaped so no string can close the script)."""
    payload = json.dumps({**data, "title": title}, separators=(",", ":")).replace("</", "<\\/")
    return TEMPLATE.replace(_DATA_MARK, payload).replace("__TITLE__", title.replace("<", "&lt;"))


def _thumbnails(atlas: Atlas, limit: int, size: int, cube_size: int | None, cache_dir: Path | None) -> list[str | None]:
    """Base64 PNG data URIs of the first ``limit`` synapses (None for the rest)."""
    from synclr_monai.data.synapse_cubes import iter_dataset_cubes

    out: list[str | None] = [None] * len(atlas)
    if limit <= 0:
        return out
    cube = atlas.cube_size(cube_size)
    if atlas.dataset_dir is None or cube is None:
        raise AtlasInputError(
            f"thumbnails need the dataset folder and cube size, which {atlas.path} does not give; pass "
            "--dataset-dir and --cube-size, or --max-thumbnails 0"
        )
    wanted = atlas.ids.iloc[:limit]
    position = {(b, v): i for i, (b, v) in enumerate(zip(atlas.ids["bbox_name"], atlas.ids["Var1"]))}
    cubes = iter_dataset_cubes(
        atlas.dataset_dir, cube, cache_dir=cache_dir, label_maps=atlas.attrs.get("label_maps"), ids=wanted
    )
    for b, v, c in tqdm(cubes, total=len(wanted), desc="thumbnails", unit="synapse"):
        out[position[(b, v)]] = "data:image/png;base64," + base64.b64encode(thumbnail_png(c, size)).decode("ascii")
    return out


def build_explorer(
    atlas: Atlas,
    out: Path,
    labels: tuple[np.ndarray, np.ndarray] | None = None,
    k: int = 8,
    max_thumbnails: int = 3000,
    thumb_size: int = 40,
    cube_size: int | None = None,
    cache_dir: Path | None = None,
    method: str = "auto",
    seed: int = 0,
) -> Path:
    """Write ``out/explore.html`` (see the module docstring) and return its path."""
    data = explorer_data(atlas, labels, k=k, method=method, seed=seed)
    if max_thumbnails < len(atlas):
        logger.info("thumbnails for the first %d of %d synapses (--max-thumbnails)", max_thumbnails, len(atlas))
    data["thumbnails"] = _thumbnails(atlas, min(max_thumbnails, len(atlas)), thumb_size, cube_size, cache_dir)
    page = render_page(data, title=f"synapse atlas: {atlas.path}")
    path = Path(out) / "explore.html"
    with atomic_output(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``explore`` command."""
    p = argparse.ArgumentParser(
        prog="python -m synclr_monai explore",
        description="One self-contained HTML page: the 2-D map of all synapses, colour by type / bbox / cluster / "
        "outlier score / propagated label, hover for slices, click for nearest neighbours.",
    )
    add_common_arguments(p)
    p.add_argument("--labels", type=Path, default=None, help="CSV bbox_name, Var1, label of some or all synapses")
    p.add_argument("--label-column", default=None, help="label column (default: 'type' or the only other column)")
    p.add_argument("--k", type=int, default=8, help="neighbours shown on click (default 8)")
    p.add_argument(
        "--max-thumbnails", type=int, default=3000, help="synapses with slice thumbnails (default 3000; 0: none)"
    )
    p.add_argument("--thumb-size", type=int, default=40, help="pixels per thumbnail slice (default 40)")
    p.add_argument("--plot-method", default="auto", choices=["auto", "umap", "tsne", "pca"], help="2-D projection")
    p.add_argument("--seed", type=int, default=0, help="seed of the projection and k-means")
    return p


def _run(args: argparse.Namespace) -> int:
    from synclr_monai.atlas.propagate import read_few_labels

    if args.k < 1 or args.thumb_size < 8 or args.max_thumbnails < 0:
        raise AtlasInputError("--k must be >= 1, --thumb-size >= 8 and --max-thumbnails >= 0")
    atlas = load_atlas(args.embeddings, args.dataset_dir, require_dataset=args.max_thumbnails > 0)
    labels = read_few_labels(args.labels, atlas, args.label_column) if args.labels else None
    path = build_explorer(
        atlas, out_dir(args), labels, k=args.k, max_thumbnails=args.max_thumbnails, thumb_size=args.thumb_size,
        cube_size=args.cube_size, cache_dir=args.cache_dir, method=args.plot_method, seed=args.seed,
    )
    print(f"explorer of {len(atlas)} synapses: {path} ({path.stat().st_size / 1e6:.1f} MB; open it in a browser)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``explore`` command; 0 on success, 2 for bad usage or input."""
    return run_command(build_parser(), _run, argv)
