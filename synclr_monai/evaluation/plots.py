"""Figures of embeddings: a 2-D map coloured by class, and example cubes per cluster.

Rendering uses matplotlib's Agg canvas directly (no display needed) and writes PNGs atomically.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from synclr_monai.utils import atomic_output

__all__ = ["reduce_2d", "plot_embedding_2d", "centre_slices", "plot_cluster_examples"]

logger = logging.getLogger(__name__)

Method = Literal["auto", "umap", "tsne", "pca"]

# Below this many points t-SNE (and UMAP) neighbourhoods are too small to mean much; PCA is honest.
_MIN_POINTS_NONLINEAR = 30


def _umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


def reduce_2d(vectors: np.ndarray, method: Method = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """Project embeddings to two dimensions.

    Args:
        vectors: ``[N, F]`` embeddings.
        method: ``"umap"``, ``"tsne"``, ``"pca"``, or ``"auto"``: UMAP when ``umap-learn`` is
            importable, else t-SNE, and PCA for fewer than 30 points either way.
        seed: random state of the projection.

    Returns:
        ``(coords [N, 2] float, method_used)``.

    Raises:
        ValueError: if ``vectors`` is not ``[N, F]`` with N >= 2, or ``method`` is unknown.
        ImportError: if ``method="umap"`` and ``umap-learn`` is not installed.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) < 2:
        raise ValueError(f"vectors must be [N, F] with N >= 2, got shape {vectors.shape}")
    if method not in ("auto", "umap", "tsne", "pca"):
        raise ValueError(f"unknown method {method!r}; choose auto, umap, tsne or pca")
    n = len(vectors)
    if method == "auto":
        if n < _MIN_POINTS_NONLINEAR:
            method = "pca"
        else:
            method = "umap" if _umap_available() else "tsne"
    if method == "umap":
        import umap  # optional dependency (pip install synclr-monai[umap])

        coords = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed).fit_transform(vectors)
    elif method == "tsne":
        # Perplexity must stay below N; (N - 1) / 3 is the usual bound for small sets.
        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)
    else:
        coords = PCA(n_components=min(2, *vectors.shape), random_state=seed).fit_transform(vectors)
        if coords.shape[1] < 2:  # a single feature: plot it against zero
            coords = np.column_stack([coords, np.zeros(n)])
    return np.asarray(coords, dtype=np.float64), method


def _new_figure(figsize: tuple[float, float]) -> Figure:
    # A bare Figure on an Agg canvas rather than pyplot: no global backend switch for the caller
    # (e.g. a notebook) and no figure registry to leak.
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        # format given explicitly: the temporary name does not end in .png.
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_embedding_2d(
    vectors: np.ndarray,
    labels: Sequence | np.ndarray,
    path: str | os.PathLike,
    method: Method = "auto",
    title: str | None = None,
    seed: int = 0,
) -> Path:
    """Scatter plot of the embeddings in 2-D, one colour per label.

    Args:
        vectors: ``[N, F]`` embeddings.
        labels: ``[N]`` class of each point.
        path: output PNG.
        method: see :func:`reduce_2d`.
        title: figure title (default names the projection method).
        seed: random state of the projection.

    Returns:
        ``path``.

    Raises:
        ValueError: if labels and vectors differ in length.
    """
    labels = np.asarray(labels).astype(str)
    if len(labels) != len(vectors):
        raise ValueError(f"{len(labels)} labels for {len(vectors)} vectors")
    coords, used = reduce_2d(vectors, method, seed)
    classes = sorted(set(labels.tolist()))
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    fig = _new_figure((6.5, 5.5))
    ax = fig.subplots()
    for i, name in enumerate(classes):
        sel = labels == name
        ax.scatter(
            coords[sel, 0], coords[sel, 1], s=16, alpha=0.8, color=cmap(i % cmap.N), label=f"{name} ({sel.sum()})"
        )
    ax.set_title(title or f"embeddings ({used.upper() if used != 'tsne' else 't-SNE'}, N={len(labels)})")
    ax.set_xlabel(f"{used} 1")
    ax.set_ylabel(f"{used} 2")
    ax.legend(loc="best", fontsize="small", markerscale=1.5, title="label")
    return _save_png(fig, path)


def centre_slices(cube: np.ndarray) -> np.ndarray:
    """The z-centre slice of every channel of a cube.

    Args:
        cube: ``[C, Z, Y, X]`` (a ``[C, Y, X]`` input is taken to be slices already and returned).

    Returns:
        float32 ``[C, Y, X]``.

    Raises:
        ValueError: if ``cube`` is neither 3-D nor 4-D.
    """
    cube = np.asarray(cube)
    if cube.ndim == 3:
        return cube.astype(np.float32, copy=False)
    if cube.ndim != 4:
        raise ValueError(f"expected a [C, Z, Y, X] cube, got shape {cube.shape}")
    return np.asarray(cube[:, cube.shape[1] // 2], dtype=np.float32)


def plot_cluster_examples(
    cubes: Sequence[np.ndarray] | np.ndarray,
    cluster_ids: Sequence[int] | np.ndarray,
    path: str | os.PathLike,
    per_cluster: int = 6,
    rank: np.ndarray | None = None,
    captions: Sequence[str] | None = None,
) -> Path:
    """A grid with one row per cluster of example centre slices.

    Each panel shows the z-centre slice of the raw channel in grey, the cleft mask (channel 2)
    outlined in red and the pre-synaptic mask (channel 1) outlined in cyan.

    Args:
        cubes: ``[N, 3, S, S, S]`` cubes, or their centre slices ``[N, 3, S, S]``
            (see :func:`centre_slices`; keeps memory small for many synapses).
        cluster_ids: ``[N]`` cluster of each cube (e.g. from ``kmeans_clusters``).
        path: output PNG.
        per_cluster: examples per row.
        rank: optional ``[N]`` score; lower is shown first (e.g. distance to the cluster centre).
            Default: input order.
        captions: optional ``[N]`` text under each panel (e.g. the true label).

    Returns:
        ``path``.

    Raises:
        ValueError: if lengths disagree, there are no cubes, or ``per_cluster`` < 1.
    """
    cluster_ids = np.asarray(cluster_ids)
    n = len(cubes)
    if n == 0:
        raise ValueError("no cubes to plot")
    if len(cluster_ids) != n:
        raise ValueError(f"{len(cluster_ids)} cluster ids for {n} cubes")
    if rank is not None and len(rank) != n:
        raise ValueError(f"{len(rank)} rank values for {n} cubes")
    if captions is not None and len(captions) != n:
        raise ValueError(f"{len(captions)} captions for {n} cubes")
    if per_cluster < 1:
        raise ValueError(f"per_cluster must be >= 1, got {per_cluster}")
    order = np.argsort(rank, kind="stable") if rank is not None else np.arange(n)
    clusters = np.unique(cluster_ids)
    fig = _new_figure((1.6 * per_cluster, 1.75 * len(clusters)))
    axes = fig.subplots(len(clusters), per_cluster, squeeze=False)
    for r, cluster in enumerate(clusters):
        members = [i for i in order if cluster_ids[i] == cluster][:per_cluster]
        for c in range(per_cluster):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"cluster {cluster}\n(n={int((cluster_ids == cluster).sum())})", fontsize=8)
            if c >= len(members):
                ax.set_frame_on(False)
                continue
            sl = centre_slices(cubes[members[c]])
            ax.imshow(sl[0], cmap="gray", interpolation="nearest")
            # Contours only where a mask is present on this slice (contour warns on a flat field).
            for channel, colour in ((1, "cyan"), (2, "red")):
                if sl.shape[0] > channel and sl[channel].max() > sl[channel].min():
                    ax.contour(sl[channel], levels=[0.5], colors=colour, linewidths=0.8)
            if captions is not None:
                ax.set_xlabel(str(captions[members[c]]), fontsize=7)
    fig.suptitle("cluster examples: z-centre raw slice, cleft (red), pre-synaptic (cyan)", fontsize=9)
    return _save_png(fig, path)
