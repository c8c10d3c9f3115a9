"""Pictures of synapses: three orthogonal slices of the raw EM with the masks outlined.

:func:`plot_gallery` draws a PNG with one column per synapse (the query first, then its neighbours;
or the top outliers) and one row per plane. :func:`thumbnail_png` renders the same three slices as a
small PNG strip with NumPy and Pillow only (no matplotlib per synapse), fast enough for the
thousands of thumbnails of the explorer page.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from synclr_monai.evaluation.plots import _new_figure, _save_png

__all__ = ["PLANES", "orthogonal_slices", "plot_gallery", "thumbnail_png"]

#: the three planes through the cube's centre, in the order they are drawn
PLANES = ("z (x-y plane)", "y (x-z plane)", "x (y-z plane)")
PRE_COLOUR = (0, 255, 255)  # cyan, as in the evaluation's cluster examples
CLEFT_COLOUR = (255, 40, 40)  # red


def orthogonal_slices(cube: np.ndarray) -> list[np.ndarray]:
    """The three central planes of a ``[C, Z, Y, X]`` cube, each ``[C, a, b]`` float32.

    Raises:
        ValueError: if ``cube`` is not 4-D.
    """
    cube = np.asarray(cube, dtype=np.float32)
    if cube.ndim != 4:
        raise ValueError(f"expected a [C, Z, Y, X] cube, got shape {cube.shape}")
    _, z, y, x = cube.shape
    return [cube[:, z // 2], cube[:, :, y // 2], cube[:, :, :, x // 2]]


def plot_gallery(
    cubes: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | os.PathLike,
    suptitle: str | None = None,
) -> Path:
    """A grid of synapses (columns) by planes (rows): raw EM in grey, pre-synaptic (cyan) and cleft (red) outlined.

    Args:
        cubes: ``[3, S, S, S]`` cubes (raw, pre, cleft).
        titles: one caption per cube (id, similarity, score...).
        path: output PNG (written atomically).
        suptitle: figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: if there are no cubes or titles and cubes differ in number.
    """
    if not len(cubes):
        raise ValueError("no synapse to draw")
    if len(titles) != len(cubes):
        raise ValueError(f"{len(titles)} titles for {len(cubes)} cubes")
    n = len(cubes)
    fig = _new_figure((1.9 * n, 1.9 * 3 + 0.6))
    axes = fig.subplots(3, n, squeeze=False)
    for c, (cube, title) in enumerate(zip(cubes, titles)):
        for r, plane in enumerate(orthogonal_slices(cube)):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(plane[0], cmap="gray", interpolation="nearest")
            # contours only where the mask has an edge on this plane (contour warns on a flat field)
            for channel, colour in ((1, "cyan"), (2, "red")):
                if plane.shape[0] > channel and plane[channel].max() > plane[channel].min():
                    ax.contour(plane[channel], levels=[0.5], colors=colour, linewidths=0.8)
            if r == 0:
                ax.set_title(str(title), fontsize=6.5)
            if c == 0:
                ax.set_ylabel(PLANES[r], fontsize=7)
    fig.suptitle(suptitle or "raw EM, pre-synaptic (cyan) and cleft (red) outlined", fontsize=9)
    return _save_png(fig, path)


def _outline(mask: np.ndarray) -> np.ndarray:
    mask = mask > 0.5
    return mask & ~ndimage.binary_erosion(mask)


def _resize(plane: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resampling of a 2-D plane to ``size x size`` (keeps masks binary)."""
    rows = (np.arange(size) * plane.shape[0] / size).astype(int)
    cols = (np.arange(size) * plane.shape[1] / size).astype(int)
    return plane[np.ix_(rows, cols)]


def thumbnail_png(cube: np.ndarray, size: int = 48) -> bytes:
    """The three orthogonal slices side by side as one small RGB PNG (``size`` pixels a slice).

    Args:
        cube: ``[3, S, S, S]`` (raw, pre, cleft).
        size: edge of each slice in pixels (the slices are resampled, nearest neighbour).

    Returns:
        The PNG bytes.
    """
    from PIL import Image  # a matplotlib dependency

    tiles = []
    for plane in orthogonal_slices(cube):
        raw = _resize(plane[0], size)
        lo, hi = np.percentile(raw, (1, 99))
        grey = np.clip((raw - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        for channel, colour in ((1, PRE_COLOUR), (2, CLEFT_COLOUR)):
            if plane.shape[0] > channel:
                rgb[_outline(_resize(plane[channel], size))] = colour
        tiles.append(rgb)
        tiles.append(np.full((size, 2, 3), 255, np.uint8))  # a white gap between planes
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(tiles[:-1], axis=1)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
