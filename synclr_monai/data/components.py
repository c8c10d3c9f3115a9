"""Connected components of a binary volume that arrives slab by slab along z (bounded memory).

The cache's cleft component table (:mod:`synclr_monai.data.cache`) must be built without holding a whole bbox:
cc3d and ``scipy.ndimage.label`` label whole arrays in memory (4-8 bytes a voxel of labels), and dask-image's
blockwise ``label`` would pull dask in for this one function. So each slab is labelled with cc3d, components
that touch across a slab boundary are joined with a union-find over the two facing planes, and each
component keeps its bounding box, voxel count and crop mask. The result equals
:func:`~synclr_monai.transforms.sampling.find_cleft_components` on the whole volume, in the same (cc3d's
raster) order: a component's rank is that of its first voxel in C order, i.e. the smallest provisional id
among its pieces, since pieces are numbered slab after slab in cc3d's raster order.
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np

__all__ = ["SlabComponents"]

# in-plane offsets (dy, dx) between facing voxels of two adjacent planes that are neighbours under a connectivity
_PLANE_OFFSETS = {
    6: ((0, 0),),
    18: ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)),
    26: tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)),
}


class SlabComponents:
    """Accumulate the connected components of a ``[Z, Y, X]`` binary volume fed as consecutive z-slabs.

    Memory: one slab's labels, the crop masks of components that may still grow (those touching a slab
    boundary) or that are large enough to keep, and a few numbers per piece.

    Args:
        shape: ``(Z, Y, X)`` of the whole volume.
        min_size: components with fewer voxels are left out of :meth:`result`.
        connectivity: 6, 18 or 26.

    Raises:
        ValueError: a bad connectivity or a negative ``min_size``.

    Example::

        comps = SlabComponents(cleft.shape, min_size=10)
        for z in range(0, cleft.shape[0], 64):
            comps.add(cleft[z : z + 64])
        components = comps.result()  # == find_cleft_components(cleft, 10)
    """

    def __init__(self, shape: Sequence[int], min_size: int = 100, connectivity: int = 26) -> None:
        if connectivity not in _PLANE_OFFSETS:
            raise ValueError(f"SlabComponents: connectivity must be 6, 18 or 26, got {connectivity}")
        if min_size < 0:
            raise ValueError(f"SlabComponents: min_size must be >= 0, got {min_size}")
        self.shape = tuple(int(n) for n in shape)
        self.min_size = max(int(min_size), 1)
        self.connectivity = connectivity
        self._z = 0
        self._parent: list[int] = []
        self._starts: list[tuple[int, int, int]] = []
        self._stops: list[tuple[int, int, int]] = []
        self._sizes: list[int] = []
        self._crops: list[np.ndarray | None] = []
        self._last_plane: np.ndarray | None = None  # provisional ids of the previous slab's last plane

    def _find(self, i: int) -> int:
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            # the smaller id stays the root: it is the component's rank (its first voxel in raster order)
            self._parent[max(ra, rb)] = min(ra, rb)

    def add(self, slab: np.ndarray) -> None:
        """Add the next ``[dz, Y, X]`` slab (non-zero = foreground).

        Raises:
            ValueError: a slab of the wrong in-plane shape, or one that runs past the volume's end.
        """
        slab = np.asarray(slab)
        if slab.ndim != 3 or slab.shape[1:] != self.shape[1:] or self._z + slab.shape[0] > self.shape[0]:
            raise ValueError(
                f"SlabComponents: slab {slab.shape} at z={self._z} does not fit the volume {self.shape}"
            )
        z0, depth = self._z, slab.shape[0]
        self._z += depth
        if depth == 0:
            return
        labels = cc3d.connected_components(slab != 0, connectivity=self.connectivity, binary_image=True)
        stats = cc3d.statistics(labels)
        counts = np.asarray(stats["voxel_counts"], dtype=np.int64)
        boxes = stats["bounding_boxes"]
        base = len(self._parent)
        for lab in range(1, len(counts)):
            box = boxes[lab]
            start = (box[0].start + z0, box[1].start, box[2].start)
            stop = (box[0].stop + z0, box[1].stop, box[2].stop)
            # a piece away from both slab boundaries is a whole component: drop its crop when too small
            sealed = (box[0].start > 0 or z0 == 0) and (box[0].stop < depth or self._z == self.shape[0])
            keep = not sealed or counts[lab] >= self.min_size
            self._parent.append(base + lab - 1)
            self._starts.append(start)
            self._stops.append(stop)
            self._sizes.append(int(counts[lab]))
            self._crops.append(labels[box] == lab if keep else None)
        first = np.where(labels[0] > 0, labels[0].astype(np.int64) + base - 1, -1)
        if self._last_plane is not None:
            self._join(self._last_plane, first)
        self._last_plane = np.where(labels[-1] > 0, labels[-1].astype(np.int64) + base - 1, -1)

    def _join(self, below: np.ndarray, above: np.ndarray) -> None:
        """Union the pieces of two facing planes (provisional ids, -1 = background) that are neighbours."""
        ny, nx = below.shape
        pairs = []
        for dy, dx in _PLANE_OFFSETS[self.connectivity]:
            a = below[max(0, dy) : ny + min(0, dy), max(0, dx) : nx + min(0, dx)]
            b = above[max(0, -dy) : ny + min(0, -dy), max(0, -dx) : nx + min(0, -dx)]
            hit = (a >= 0) & (b >= 0)
            if hit.any():
                pairs.append(np.stack([a[hit], b[hit]], axis=1))
        if pairs:
            for a, b in np.unique(np.concatenate(pairs), axis=0):
                self._union(int(a), int(b))

    def result(self):
        """The components of at least ``min_size`` voxels, as
        :class:`~synclr_monai.transforms.sampling.CleftComponents` in cc3d's label order.

        Raises:
            ValueError: when fewer slabs than the volume's depth were added.
        """
        from ..transforms.sampling import CleftComponents

        if self._z != self.shape[0]:
            raise ValueError(f"SlabComponents: {self._z} of {self.shape[0]} planes were added")
        groups: dict[int, list[int]] = {}
        for i in range(len(self._parent)):
            groups.setdefault(self._find(i), []).append(i)
        starts, stops, sizes, masks = [], [], [], []
        for root in sorted(groups):  # a root is its component's smallest id: raster order
            members = groups[root]
            size = sum(self._sizes[i] for i in members)
            if size < self.min_size:
                continue
            start = np.min([self._starts[i] for i in members], axis=0)
            stop = np.max([self._stops[i] for i in members], axis=0)
            mask = np.zeros(tuple(stop - start), dtype=bool)
            for i in members:
                lo = np.subtract(self._starts[i], start)
                hi = np.subtract(self._stops[i], start)
                mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] |= self._crops[i]
            starts.append(start)
            stops.append(stop)
            sizes.append(size)
            masks.append(mask)
        return CleftComponents(
            self.shape,
            np.array(starts, dtype=np.int64).reshape(-1, 3),
            np.array(stops, dtype=np.int64).reshape(-1, 3),
            np.array(sizes, dtype=np.int64),
            masks,
        )
