"""Whole-volume random fields of the synthetic generator, evaluated slab by slab (bounded memory).

The streaming generator (:mod:`synclr_monai.data.synthetic_stream`) never holds a whole bbox: every field it
needs is a function of the voxel position that can be evaluated for any range of z planes.

- :class:`SlabField`: the smooth noise of :func:`~synclr_monai.data.synthetic_geometry.smooth_noise` (a coarse
  random grid resampled with Gaussian weights), evaluated for planes ``z0:z1``; its mean and standard deviation
  over the whole volume are computed exactly from the coarse grid, so the slabs of one field join seamlessly and
  the field is normalised as the in-memory one is.
- :class:`SlabNeuropil`: the warped Voronoi partition of
  :func:`~synclr_monai.data.synthetic_geometry.neuropil_partition`, evaluated for planes ``z0:z1``. The nearest
  two seeds of each voxel come from a short candidate list per 4³ block of voxels (the seeds nearest the block's
  centre, provably complete; blocks whose list cannot be proven complete fall back to an exact k-d tree query),
  which is several times cheaper than querying the k-d tree for every voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from .synthetic_geometry import _upsampling_matrix

__all__ = ["SlabField", "SlabNeuropil"]


class SlabField:
    """Zero-mean, unit-variance smooth noise over ``shape``, evaluated a range of z planes at a time.

    Args:
        shape: the whole volume's ``(Z, Y, X)``.
        scale: correlation length in voxels.
        rng: random generator (draws the coarse grid once, here).
    """

    def __init__(self, shape: Sequence[int], scale: float, rng: np.random.Generator) -> None:
        self.shape = tuple(int(s) for s in shape)
        scale = max(float(scale), 1.0)
        low = tuple(int(np.ceil(s / scale)) + 3 for s in self.shape)
        grid = rng.standard_normal(low).astype(np.float32).astype(np.float64)
        self.mats = [_upsampling_matrix(n, m, scale).astype(np.float64) for n, m in zip(self.shape, low)]
        # the y and x resampling done once: [lz, Y, X] would be large, so keep [lz, ly, lx] and resample per slab
        self.grid = grid
        n = float(np.prod(self.shape))
        sums = [m.sum(axis=0) for m in self.mats]
        mean = float(np.einsum("a,b,c,abc->", *sums, grid)) / n
        # E[F^2] from the Gram matrices of the resampling: sum over voxels of (M grid)^2 = grid . (G grid)
        h = grid
        for axis, m in enumerate(self.mats):
            h = np.moveaxis(np.tensordot(m.T @ m, h, axes=([1], [axis])), 0, axis)
        var = max(float(np.sum(grid * h)) / n - mean * mean, 0.0)
        self.mean = mean
        self.std = float(np.sqrt(var)) if var > 0 else 1.0
        self._mats32 = [m.astype(np.float32) for m in self.mats]
        self._grid32 = grid.astype(np.float32)

    def slab(self, z0: int, z1: int) -> np.ndarray:
        """The field on planes ``z0:z1`` (float32 ``[z1 - z0, Y, X]``)."""
        mz, my, mx = self._mats32
        f = np.tensordot(mz[z0:z1], self._grid32, axes=([1], [0]))  # [t, ly, lx]
        f = np.tensordot(f, my, axes=([1], [1]))  # [t, lx, Y]
        f = np.tensordot(f, mx, axes=([1], [1]))  # [t, Y, X]
        f -= np.float32(self.mean)
        f *= np.float32(1.0 / self.std)
        return f


class SlabNeuropil:
    """The warped Voronoi neuropil of :func:`~.synthetic_geometry.neuropil_partition`, slab by slab.

    Labels are ``1..n_seeds``, 0 in the extracellular gaps (closer than ``gap`` to the bisector plane of the
    two nearest seeds of the warped position).

    Args:
        shape: the volume's ``(Z, Y, X)``.
        cell_size: typical cell diameter in voxels.
        rng: random generator (seeds and warp fields are drawn here).
        gap: half-width of the extracellular gap in voxels.
        warp: displacement amplitude as a fraction of ``cell_size``.
        block: edge of the voxel blocks that share a candidate list.
        candidates: seeds in each block's candidate list.
    """

    def __init__(
        self,
        shape: Sequence[int],
        cell_size: float,
        rng: np.random.Generator,
        gap: float = 0.6,
        warp: float = 0.3,
        block: int = 4,
        candidates: int = 12,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.n_seeds = max(4, int(round(np.prod(self.shape) / cell_size**3)))
        self.seeds = rng.uniform(0.0, 1.0, size=(self.n_seeds, 3)) * np.asarray(self.shape, float)
        self.tree = cKDTree(self.seeds)
        self.seeds32 = self.seeds.astype(np.float32)
        self.warp = [SlabField(self.shape, cell_size / 2.0, rng) for _ in range(3)]
        self.amp = np.float32(warp * cell_size)
        self.gap = float(gap)
        self.block = int(block)
        self.k = max(2, min(int(candidates), self.n_seeds, 32))
        self.fallback_voxels = 0  # voxels resolved by the exact k-d tree query (for the record)

    def _points(self, z0: int, z1: int) -> np.ndarray:
        """Warped positions of planes ``z0:z1``, float32 ``[t, Y, X, 3]``."""
        t, ny, nx = z1 - z0, self.shape[1], self.shape[2]
        pts = np.empty((t, ny, nx, 3), np.float32)
        pts[..., 0] = np.arange(z0, z1, dtype=np.float32)[:, None, None]
        pts[..., 1] = np.arange(ny, dtype=np.float32)[None, :, None]
        pts[..., 2] = np.arange(nx, dtype=np.float32)[None, None, :]
        for axis, field in enumerate(self.warp):
            pts[..., axis] += self.amp * field.slab(z0, z1)
        return pts

    def _exact(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and wall distances of points ``[n, 3]`` by the exact two-nearest-seed query."""
        dist, idx = self.tree.query(pts.astype(np.float64), k=2)
        sep = np.linalg.norm(self.seeds[idx[:, 1]] - self.seeds[idx[:, 0]], axis=1)
        wall = (dist[:, 1] ** 2 - dist[:, 0] ** 2) / (2.0 * np.maximum(sep, 1e-6))
        return idx[:, 0], wall

    def _nearest_two(
        self, qb: np.ndarray, centre: np.ndarray, reach: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest seed and wall distance of the points ``qb`` ``[n, m, 3]`` of n blocks from k candidates each.

        Returns ``(seed index [n, m], wall distance [n, m], complete [n])``: ``complete`` is False for a block
        whose candidate list may miss one of the two nearest seeds of a point (its results are then not valid).
        """
        d, idx = self.tree.query(centre.astype(np.float64), k=k)
        # a seed outside the list is at least d[k-1] - reach from every voxel of the block, and every voxel
        # has two seeds within d[1] + reach: the list holds the two nearest when d[k-1] > d[1] + 2 reach
        ok = d[:, -1] > d[:, 1] + 2.0 * reach
        cand = self.seeds32[idx]  # [n, k, 3]
        # squared distances [n, k, m] (|s|^2 - 2 s.q by one product with [q, 1], then + |q|^2), the candidate's
        # index packed into the 5 low mantissa bits (a relative change below 1e-5) so that one minimum over the
        # candidates gives distance and index
        aug = np.concatenate([cand * np.float32(-2.0), (cand * cand).sum(-1, keepdims=True)], axis=-1)
        qa = np.concatenate([qb, np.ones((*qb.shape[:2], 1), np.float32)], axis=-1)
        d2 = np.matmul(aug, qa.transpose(0, 2, 1))
        d2 += (qb * qb).sum(-1)[:, None, :]
        bits = d2.view(np.int32)
        bits &= np.int32(~31)
        bits |= np.arange(k, dtype=np.int32)[None, :, None]
        m1 = bits.min(axis=1)
        bits[bits == m1[:, None, :]] = np.iinfo(np.int32).max
        m2 = bits.min(axis=1)
        rows = np.arange(len(qb))[:, None]
        i1, i2 = m1 & 31, m2 & 31
        d1 = (m1 & np.int32(~31)).view(np.float32)
        dd2 = (m2 & np.int32(~31)).view(np.float32)
        pair = np.sqrt(((cand[:, :, None, :] - cand[:, None, :, :]) ** 2).sum(-1))  # [n, k, k]
        wall = (dd2 - d1) / (2.0 * np.maximum(pair[rows, i1, i2], 1e-6))
        return idx[rows, i1].astype(np.int32), wall, ok

    def slab(self, z0: int, z1: int, planes: int = 16) -> np.ndarray:
        """Labels of planes ``z0:z1`` (int32 ``[z1 - z0, Y, X]``), computed ``planes`` planes at a time."""
        step = max(self.block, planes - planes % self.block)
        return np.concatenate([self._slab(a, min(z1, a + step)) for a in range(z0, z1, step)])

    def _slab(self, z0: int, z1: int, max_block_voxels: int = 1 << 20) -> np.ndarray:
        b, k = self.block, self.k
        pts = self._points(z0, z1)
        t, ny, nx = pts.shape[:3]
        nb = [-(-n // b) for n in (t, ny, nx)]
        pad = [(0, m * b - n) for m, n in zip(nb, (t, ny, nx))]
        if any(p[1] for p in pad):
            pts = np.pad(pts, [*pad, (0, 0)], mode="edge")
        # [blocks, b^3, 3]: the voxels of each block together
        q = pts.reshape(nb[0], b, nb[1], b, nb[2], b, 3).transpose(0, 2, 4, 1, 3, 5, 6).reshape(-1, b**3, 3)
        del pts
        labels = np.empty(q.shape[:2], np.int32)
        walls = np.empty(q.shape[:2], np.float32)
        step = max(1, max_block_voxels // b**3)
        for lo in range(0, len(q), step):
            qb = q[lo : lo + step]
            # the block's points lie within `reach` of the centre of their bounding box
            top, bottom = qb.max(axis=1), qb.min(axis=1)
            centre = (top + bottom) * np.float32(0.5)
            reach = np.sqrt(((top - bottom) ** 2).sum(-1)) * np.float32(0.5) + np.float32(1e-3)
            lab, wall, ok = self._nearest_two(qb, centre, reach, k)
            bad = np.flatnonzero(~ok)
            if len(bad) and k < min(32, self.n_seeds):  # a longer list for the blocks near many seeds
                lab_b, wall_b, ok_b = self._nearest_two(qb[bad], centre[bad], reach[bad], min(32, self.n_seeds))
                lab[bad], wall[bad] = lab_b, wall_b
                bad = bad[~ok_b]
            if len(bad):
                self.fallback_voxels += len(bad) * b**3
                lab_b, wall_b = self._exact(qb[bad].reshape(-1, 3))
                lab[bad] = lab_b.reshape(len(bad), -1)
                wall[bad] = wall_b.reshape(len(bad), -1)
            labels[lo : lo + step] = lab
            walls[lo : lo + step] = wall
        labels += 1
        labels[walls < self.gap] = 0
        out = labels.reshape(nb[0], nb[1], nb[2], b, b, b).transpose(0, 3, 1, 4, 2, 5)
        out = out.reshape(nb[0] * b, nb[1] * b, nb[2] * b)
        return np.ascontiguousarray(out[:t, :ny, :nx])
