"""Geometry helpers of the synthetic EM generator (see :mod:`synclr_monai.data.synthetic`).

Everything here works on NumPy arrays indexed ``[z, y, x]`` and draws its randomness from a
``numpy.random.Generator`` passed in, so that a seed fixes the output exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

__all__ = [
    "Region",
    "plan_regions",
    "smooth_noise",
    "random_frame",
    "window_coords",
    "neuropil_partition",
    "label_boundaries",
    "mito_structure",
]


@dataclass(frozen=True)
class Region:
    """An axis-aligned box ``[lo, hi)`` of the volume reserved for one synapse."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]

    @property
    def centre(self) -> np.ndarray:
        """Centre of the box in voxel coordinates ``(z, y, x)``."""
        return (np.asarray(self.lo, float) + np.asarray(self.hi, float) - 1.0) / 2.0

    @property
    def extent(self) -> np.ndarray:
        """Edge lengths ``(z, y, x)`` in voxels."""
        return np.asarray(self.hi, float) - np.asarray(self.lo, float)


def plan_regions(
    shape: Sequence[int],
    n_regions: int,
    rng: np.random.Generator,
    min_scale: float = 10.0,
    max_scale: float = 48.0,
    border_margin: int = 10,
) -> tuple[list[Region], float]:
    """Split the volume into a grid and reserve one cell of the grid per synapse.

    The grid ``(gz, gy, gx)`` is the one with at least ``n_regions`` cells whose smallest cell edge
    is largest, so that synapses are as large as the volume allows and never overlap. The synapse
    scale (half the smallest cell edge, capped at ``max_scale``) sets all synapse dimensions.

    Args:
        shape: volume shape ``(Z, Y, X)``.
        n_regions: number of synapses to place.
        rng: random generator (picks which grid cells are used when there are spare ones).
        min_scale: smallest usable scale in voxels; smaller means the synapses cannot be drawn.
        max_scale: largest scale, so that big volumes get more neuropil rather than giant cells.
        border_margin: voxels every cleft centre must keep from the volume border.

    Returns:
        The regions (in grid order) and the synapse scale in voxels.

    Raises:
        ValueError: if the synapses cannot fit.
    """
    shape = tuple(int(s) for s in shape)
    if min(shape) < 2 * border_margin + 1:
        raise ValueError(
            f"shape {shape} is too small: every axis needs at least {2 * border_margin + 1} voxels so that "
            f"cleft centres keep a {border_margin}-voxel margin from the borders"
        )
    best: tuple[float, int, tuple[int, int, int]] | None = None
    limit = 2 * n_regions + 1  # grids of more cells are never taken (the loops skip them without a visit)
    for gz in range(1, n_regions + 1):
        for gy in range(1, min(n_regions, limit // gz) + 1):
            for gx in range(1, min(n_regions, limit // (gz * gy)) + 1):
                cells = gz * gy * gx
                if cells < n_regions or cells >= 2 * n_regions + 2:
                    continue
                edge = min(shape[0] / gz, shape[1] / gy, shape[2] / gx)
                # prefer the largest edge, then the grid with the fewest unused cells
                key = (edge, -cells, (gz, gy, gx))
                if best is None or key[:2] > best[:2]:
                    best = key
    assert best is not None  # a 1 x 1 x n grid always qualifies
    edge, _, grid = best
    scale = min(edge / 2.0, max_scale)
    if scale < min_scale:
        raise ValueError(
            f"{n_regions} synapses do not fit in shape {shape}: each needs a region of at least "
            f"{int(2 * min_scale)} voxels per axis (best grid {grid} gives {edge:.1f}); use a larger shape "
            "or fewer synapses per bbox"
        )
    cells = []
    for iz in range(grid[0]):
        for iy in range(grid[1]):
            for ix in range(grid[2]):
                idx = (iz, iy, ix)
                lo = tuple(int(np.floor(i * s / g)) for i, s, g in zip(idx, shape, grid))
                hi = tuple(int(np.floor((i + 1) * s / g)) for i, s, g in zip(idx, shape, grid))
                cells.append(Region(lo, hi))
    chosen = np.sort(rng.choice(len(cells), size=n_regions, replace=False))
    return [cells[i] for i in chosen], float(scale)


def _upsampling_matrix(n_out: int, n_low: int, scale: float) -> np.ndarray:
    """Rows of Gaussian weights that resample ``n_low`` coarse samples to ``n_out`` voxels."""
    pos = np.arange(n_out, dtype=np.float64) / scale + 1.0  # coarse grid has one sample of padding
    weights = np.exp(-0.5 * ((pos[:, None] - np.arange(n_low)[None, :]) / 0.7) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_noise(shape: Sequence[int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance noise that varies smoothly over ``scale`` voxels.

    A coarse random grid (one sample per ``scale`` voxels) is resampled axis by axis with
    Gaussian weights: three small matrix products, much cheaper than spline zooming or low-pass
    filtering full-resolution noise, which matters for whole-volume fields.

    Args:
        shape: output shape (3-D).
        scale: correlation length in voxels (> 0).
        rng: random generator.

    Returns:
        float32 array of ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    scale = max(float(scale), 1.0)
    low_shape = tuple(int(np.ceil(s / scale)) + 3 for s in shape)
    field = rng.standard_normal(low_shape).astype(np.float32)
    for axis, (n_out, n_low) in enumerate(zip(shape, low_shape)):
        field = np.moveaxis(np.tensordot(_upsampling_matrix(n_out, n_low, scale), field, axes=([1], [axis])), 0, axis)
    field = np.ascontiguousarray(field)
    std = float(field.std())
    return ((field - field.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def random_frame(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation as a right-handed orthonormal frame.

    Returns:
        ``(3, 3)`` array whose columns ``e1, e2, n`` are unit vectors in ``(z, y, x)`` coordinates;
        ``n`` is used as the cleft normal, so clefts take any 3-D orientation.
    """
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))  # makes the distribution uniform (Haar)
    if np.linalg.det(q) < 0:
        q[:, 2] *= -1
    return q


def window_coords(window: tuple[slice, slice, slice], origin: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Coordinates of a window's voxels in a local frame.

    Args:
        window: slices of the volume.
        origin: ``(z, y, x)`` origin of the local frame.
        frame: ``(3, 3)`` columns = local axes in ``(z, y, x)`` coordinates.

    Returns:
        float32 ``(3, *window_shape)``: the voxel coordinates along each column of ``frame``.
    """
    axes = [np.arange(s.start, s.stop, dtype=np.float32) - np.float32(o) for s, o in zip(window, origin)]
    dz, dy, dx = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    f = frame.astype(np.float32)
    return np.stack([f[0, k] * dz + f[1, k] * dy + f[2, k] * dx for k in range(3)])


def neuropil_partition(
    shape: Sequence[int],
    cell_size: float,
    rng: np.random.Generator,
    gap: float = 0.6,
    warp: float = 0.3,
    chunk_voxels: int = 1 << 20,
) -> np.ndarray:
    """Background neuropil: a warped Voronoi partition into irregular cells.

    Voxels are assigned to the nearest of randomly placed seeds after displacing them with smooth
    noise, so the cell walls are curved rather than flat. Voxels closer than ``gap`` to the wall
    between two cells (the exact distance to the bisector plane of the two nearest seeds, so the gap
    has the same width everywhere) are extracellular space (label 0).

    Args:
        shape: volume shape ``(Z, Y, X)``.
        cell_size: typical cell diameter in voxels.
        rng: random generator.
        gap: half-width of the extracellular gap in voxels.
        warp: displacement amplitude as a fraction of ``cell_size``.
        chunk_voxels: voxels queried at once (bounds the memory of the nearest-seed search).

    Returns:
        int32 labels ``1..n_seeds`` (0 in the gaps), ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    n_seeds = max(4, int(round(np.prod(shape) / cell_size**3)))
    seeds = rng.uniform(0.0, 1.0, size=(n_seeds, 3)) * np.asarray(shape, float)
    tree = cKDTree(seeds)
    warp_fields = [smooth_noise(shape, cell_size / 2.0, rng) * np.float32(warp * cell_size) for _ in range(3)]
    labels = np.empty(shape, np.int32)
    plane = shape[1] * shape[2]
    step = max(1, chunk_voxels // plane)
    yy, xx = np.meshgrid(np.arange(shape[1], dtype=np.float32), np.arange(shape[2], dtype=np.float32), indexing="ij")
    for z0 in range(0, shape[0], step):
        z1 = min(shape[0], z0 + step)
        zz = np.arange(z0, z1, dtype=np.float32)[:, None, None]
        pts = np.stack(
            [
                np.broadcast_to(zz, (z1 - z0, *yy.shape)) + warp_fields[0][z0:z1],
                np.broadcast_to(yy, (z1 - z0, *yy.shape)) + warp_fields[1][z0:z1],
                np.broadcast_to(xx, (z1 - z0, *yy.shape)) + warp_fields[2][z0:z1],
            ],
            axis=-1,
        ).reshape(-1, 3)
        dist, idx = tree.query(pts, k=2)
        # distance to the bisector plane of the two nearest seeds: (d2^2 - d1^2) / (2 |s2 - s1|)
        sep = np.linalg.norm(seeds[idx[:, 1]] - seeds[idx[:, 0]], axis=1)
        wall = (dist[:, 1] ** 2 - dist[:, 0] ** 2) / (2.0 * np.maximum(sep, 1e-6))
        lab = (idx[:, 0] + 1).astype(np.int32)
        lab[wall < gap] = 0
        labels[z0:z1] = lab.reshape(z1 - z0, *yy.shape)
    return labels


def label_boundaries(seg: np.ndarray) -> np.ndarray:
    """Voxels whose 6-neighbourhood holds a different label (both sides of every cell wall).

    Args:
        seg: integer label volume.

    Returns:
        bool array of ``seg.shape``.
    """
    edge = np.zeros(seg.shape, bool)
    for axis in range(seg.ndim):
        hi = [slice(None)] * seg.ndim
        lo = [slice(None)] * seg.ndim
        hi[axis], lo[axis] = slice(1, None), slice(None, -1)
        diff = seg[tuple(hi)] != seg[tuple(lo)]
        edge[tuple(hi)] |= diff
        edge[tuple(lo)] |= diff
    return edge


def mito_structure(
    window: tuple[slice, slice, slice],
    centre: np.ndarray,
    axis: np.ndarray,
    half_length: float,
    radius: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A mitochondrion: a capsule with a dark double membrane and lamellar cristae inside.

    Cristae are drawn as thin, slightly wavy sheets roughly across the long axis (as in EM of
    neuronal mitochondria), which gives the body its characteristic striped internal texture.

    Args:
        window: volume slices to draw in.
        centre: ``(z, y, x)`` centre.
        axis: unit vector of the long axis.
        half_length: half length of the capsule's straight part, voxels.
        radius: capsule radius, voxels.
        rng: random generator (cristae spacing and phase).

    Returns:
        ``(body, membrane, cristae)`` bool arrays of the window's shape; membrane and cristae lie
        inside body.
    """
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    # complete an orthonormal frame around the axis; which perpendicular is irrelevant
    helper = np.eye(3)[int(np.argmin(np.abs(axis)))]
    p1 = np.cross(axis, helper)
    p1 /= np.linalg.norm(p1)
    p2 = np.cross(axis, p1)
    a, b, c = window_coords(window, centre, np.stack([axis, p1, p2], axis=1))
    t = np.clip(a, -half_length, half_length)
    dist = np.sqrt((a - t) ** 2 + b**2 + c**2)
    body = dist <= radius
    membrane = body & (dist > radius - 1.0)
    period = rng.uniform(2.6, 3.6)
    phase = rng.uniform(0, 2 * np.pi)
    wobble = 0.9 * np.sin(b * (np.pi / max(radius, 1.0)) + rng.uniform(0, 2 * np.pi))
    cristae = body & ~membrane & (dist < radius - 1.2) & (np.cos(2 * np.pi * a / period + phase + wobble) > 0.55)
    return body, membrane, cristae
