"""Cube sampling from an assembled bbox: uniform random cubes and mask-aware cubes around cleft components.

The bbox item (from ``LoadBBoxd``) holds ``"raw"`` ``[1, Z, Y, X]`` (float16, z-scored over the bbox)
and ``"mask"`` ``[2, Z, Y, X]`` uint8 (pre-synaptic, cleft). Samplers write ``"image"``, a float32
``[3, S, S, S]`` cube whose raw channel is z-scored again over the cube.

Mask-aware sampling needs the cleft's connected components. :class:`CleftComponentsd` finds them once
per bbox (deterministic, so ``CacheDataset`` caches it) and keeps them compactly: per component its
bounding box, voxel count and a boolean crop of its voxels (clefts are thin, so the crops of a whole
bbox are a small fraction of the bbox, unlike a label volume the size of the bbox).

Out of core (``data_mode: chunked``) ``raw`` and ``mask`` are :class:`~synclr_monai.data.lazy.H5Volume`
handles on the bbox's cache: the samplers only read their shapes and the cube's slices, and
:class:`CleftComponentsd` takes the components from the cache's component table.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cc3d
import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from .functional import cut_cube, is_lazy, retained_voxels
from .views import RandTwoViewd

__all__ = [
    "CleftComponents",
    "find_cleft_components",
    "CleftComponentsd",
    "check_bbox_arrays",
    "RandCubeSamplerd",
    "MaskAwareCubeSamplerd",
    "PAIR_MODES",
]

_CONNECTIVITIES = (6, 18, 26)

#: How the two views of a mask-aware sample are made: from one cube, or from two cubes around one cleft.
PAIR_MODES = ("same_crop", "nearby")


def _check_cube_size(cube_size: Any) -> int:
    if isinstance(cube_size, bool) or not isinstance(cube_size, (int, np.integer)) or cube_size < 1:
        raise ValueError(f"cube_size must be a positive int (the edge of a cubic crop), got {cube_size!r}")
    return int(cube_size)


def check_bbox_arrays(raw: Any, mask: Any, cube_size: int | None = None, name: str = "bbox") -> tuple[int, int, int]:
    """Validate an assembled bbox item and that a cube fits in it.

    Args:
        raw: ``[1, Z, Y, X]`` raw EM.
        mask: ``[2, Z, Y, X]`` masks.
        cube_size: the cube edge to check against the volume, or None.
        name: the bbox's name for the messages.

    Returns:
        ``(Z, Y, X)``.

    Raises:
        ValueError: wrong shapes, mismatched raw and mask, or a cube larger than the volume.
    """
    rs, ms = tuple(getattr(raw, "shape", ())), tuple(getattr(mask, "shape", ()))
    if len(rs) != 4 or rs[0] != 1:
        raise ValueError(f"{name}: 'raw' must be [1, Z, Y, X], got shape {rs}")
    if len(ms) != 4 or ms[0] not in (2, 3) or ms[1:] != rs[1:]:
        raise ValueError(f"{name}: 'mask' must be [2 or 3, Z, Y, X] (pre, cleft[, post]) matching raw {rs}, got shape {ms}")
    if cube_size is not None and any(cube_size > s for s in rs[1:]):
        raise ValueError(
            f"{name}: cube_size {cube_size} is larger than the volume (Z, Y, X) = {rs[1:]}; "
            f"use a cube_size of at most {min(rs[1:])}"
        )
    return rs[1:]  # type: ignore[return-value]


def _item_name(d: Mapping) -> str:
    name = d.get("name")
    return str(name) if name is not None else "bbox"


@dataclass
class CleftComponents:
    """The connected components of one bbox's cleft mask that are at least ``min_size`` voxels.

    Args:
        shape: ``(Z, Y, X)`` of the bbox.
        starts: ``[K, 3]`` first voxel of each component's bounding box.
        stops: ``[K, 3]`` one past the last voxel.
        sizes: ``[K]`` voxel counts.
        masks: K boolean arrays of shape ``stops - starts``, True on the component's voxels.
    """

    shape: tuple[int, int, int]
    starts: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    stops: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    sizes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    masks: list[np.ndarray] = field(default_factory=list)
    # canonical frames already found, per (component, voxel size): a component's frame never changes
    _frames: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        self.starts = np.asarray(self.starts, dtype=np.int64).reshape(-1, 3)
        self.stops = np.asarray(self.stops, dtype=np.int64).reshape(-1, 3)
        self.sizes = np.asarray(self.sizes, dtype=np.int64).reshape(-1)
        k = len(self.sizes)
        if len(self.starts) != k or len(self.stops) != k or len(self.masks) != k:
            raise ValueError("CleftComponents: starts, stops, sizes and masks must have one entry per component")
        for m, a, b in zip(self.masks, self.starts, self.stops):
            if m.shape != tuple(b - a):
                raise ValueError(f"CleftComponents: a component mask of shape {m.shape} does not match its box {a}-{b}")

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def nbytes(self) -> int:
        """Memory held by the component crops and tables."""
        return int(sum(m.nbytes for m in self.masks) + self.starts.nbytes + self.stops.nbytes + self.sizes.nbytes)

    def cube_mask(self, k: int, start: Sequence[int], size: int) -> np.ndarray:
        """Component ``k``'s voxels inside the cube ``[start, start + size)``.

        Args:
            k: component index.
            start: the cube's first voxel ``(z, y, x)``.
            size: the cube edge.

        Returns:
            ``[size, size, size]`` bool.
        """
        out = np.zeros((size, size, size), dtype=bool)
        src, dst = [], []
        for a, lo, hi in zip(start, self.starts[k], self.stops[k]):
            a0, a1 = max(int(a), int(lo)), min(int(a) + size, int(hi))
            if a1 <= a0:
                return out
            src.append(slice(a0 - lo, a1 - lo))
            dst.append(slice(a0 - a, a1 - a))
        out[tuple(dst)] = self.masks[k][tuple(src)]
        return out

    def centre(self, k: int) -> np.ndarray:
        """Component ``k``'s centroid ``(z, y, x)`` in bbox voxels (float; the sheets' cleft centre of its synapse)."""
        return np.argwhere(self.masks[k]).mean(axis=0) + self.starts[k]

    def centred_cube_start(self, k: int, size: int) -> np.ndarray:
        """The start of the cube of edge ``size`` centred on component ``k`` (may reach past the volume: padded)."""
        return np.round(self.centre(k)).astype(np.int64) - size // 2

    def frame(self, k: int, mask: Any, voxel_size: Sequence[float] | None = None) -> np.ndarray:
        """The canonical frame (:func:`~synclr_monai.transforms.pose.synapse_frame`) of component ``k``'s synapse.

        Its own cleft voxels give the plane; the pre-synaptic (else post-synaptic) mask of the bbox around
        them gives the normal's sign (only that box is read from an out-of-core mask). Cached per component.

        Args:
            k: component index.
            mask: the bbox's ``[2 or 3, Z, Y, X]`` masks (pre-synaptic, cleft[, post-synaptic]).
            voxel_size: ``(z, y, x)`` physical voxel size (None: isotropic).

        Returns:
            ``[3, 3]`` rows: the new (z, y, x) axes in physical coordinates.
        """
        from .pose import SIDE_MARGIN, synapse_frame

        key = (int(k), None if voxel_size is None else tuple(float(v) for v in voxel_size))
        if key not in self._frames:
            margin = int(np.ceil(SIDE_MARGIN))
            lo = np.maximum(self.starts[k] - margin, 0)
            hi = np.minimum(self.stops[k] + margin, self.shape)
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
            cleft = np.zeros(tuple(hi - lo), dtype=bool)
            inner = tuple(slice(int(a - b), int(c - b)) for a, c, b in zip(self.starts[k], self.stops[k], lo))
            cleft[inner] = self.masks[k]
            sides = np.asarray(mask[(slice(None), *box)])  # one read of the box (an H5Volume reads no more)
            post = sides[2] if sides.shape[0] > 2 else None
            self._frames[key] = synapse_frame(cleft, sides[0], post, voxel_size)
        return self._frames[key]

    def random_cube_start(self, k: int, size: int, rng: np.random.RandomState) -> np.ndarray:
        """A random cube position that holds component ``k`` (as much of it as a cube can).

        Per axis, a component no longer than the cube gets a start drawn uniformly among those that
        contain its whole extent; a longer one, among those that lie inside its extent. Both are
        clipped to the volume.

        Args:
            k: component index.
            size: the cube edge.
            rng: the random stream.

        Returns:
            ``[3]`` int64 start.
        """
        start = np.empty(3, dtype=np.int64)
        for ax, (lo, hi, dim) in enumerate(zip(self.starts[k], self.stops[k], self.shape)):
            lo_, hi_ = (hi - size, lo) if hi - lo <= size else (lo, hi - size)
            a, b = max(int(lo_), 0), min(int(hi_), dim - size)
            start[ax] = rng.randint(a, b + 1)
        return start


def find_cleft_components(cleft: np.ndarray, min_size: int = 100, connectivity: int = 26) -> CleftComponents:
    """Connected components of a binary cleft mask, keeping those with at least ``min_size`` voxels.

    Args:
        cleft: ``[Z, Y, X]`` mask (non-zero = cleft).
        min_size: components with fewer voxels are ignored.
        connectivity: 6, 18 or 26 (labelled by connected-components-3d, a required dependency).

    Returns:
        The components, in label order.

    Raises:
        ValueError: not 3-D, a bad connectivity, or a negative ``min_size``.
    """
    if cleft.ndim != 3:
        raise ValueError(f"find_cleft_components: expected a [Z, Y, X] mask, got shape {cleft.shape}")
    if connectivity not in _CONNECTIVITIES:
        raise ValueError(f"find_cleft_components: connectivity must be 6, 18 or 26, got {connectivity}")
    if min_size < 0:
        raise ValueError(f"find_cleft_components: min_size must be >= 0, got {min_size}")
    binary = np.asarray(cleft) != 0
    labels = cc3d.connected_components(binary, connectivity=connectivity, binary_image=True)
    stats = cc3d.statistics(labels)
    counts = np.asarray(stats["voxel_counts"], dtype=np.int64)
    boxes = stats["bounding_boxes"]
    ids = range(1, len(counts))
    starts, stops, sizes, masks = [], [], [], []
    for lab in ids:
        box = boxes[lab]
        if box is None or counts[lab] < max(min_size, 1):
            continue
        starts.append([s.start for s in box])
        stops.append([s.stop for s in box])
        sizes.append(counts[lab])
        masks.append(labels[box] == lab)
    return CleftComponents(
        binary.shape, np.array(starts).reshape(-1, 3), np.array(stops).reshape(-1, 3), np.array(sizes), masks
    )


class CleftComponentsd(MapTransform):
    """Find the cleft's connected components of a bbox item once (deterministic; cacheable).

    An out-of-core mask (:func:`~synclr_monai.transforms.functional.is_lazy`) gives them through its
    ``cleft_components(channel, min_size, connectivity)`` (the cache's component table) instead of labelling
    the whole cleft channel in memory.

    Args:
        keys: the key of the ``[2, Z, Y, X]`` mask (one key).
        channel: the cleft channel of that mask.
        min_size: components with fewer voxels are ignored (the lab rejected cubes under 100 cleft voxels).
        connectivity: 6, 18 or 26.
        output_key: where to write the :class:`CleftComponents`.
        allow_missing_keys: don't raise for a missing key.
    """

    def __init__(
        self,
        keys: KeysCollection = "mask",
        channel: int = 1,
        min_size: int = 100,
        connectivity: int = 26,
        output_key: str = "cleft_components",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"CleftComponentsd: expected one key, got {self.keys}")
        self.channel, self.min_size, self.connectivity = int(channel), int(min_size), int(connectivity)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if is_lazy(d[key]):
                mask = d[key]
                if mask.ndim != 4 or not 0 <= self.channel < mask.shape[0]:
                    raise ValueError(
                        f"{_item_name(d)}: CleftComponentsd needs a [C, Z, Y, X] mask with channel {self.channel}, "
                        f"got {mask.shape}"
                    )
                d[self.output_key] = mask.cleft_components(self.channel, self.min_size, self.connectivity)
                continue
            mask = np.asarray(d[key])
            if mask.ndim != 4 or not 0 <= self.channel < mask.shape[0]:
                raise ValueError(
                    f"{_item_name(d)}: CleftComponentsd needs a [C, Z, Y, X] mask with channel {self.channel}, "
                    f"got {mask.shape}"
                )
            d[self.output_key] = find_cleft_components(mask[self.channel], self.min_size, self.connectivity)
        return d


class RandCubeSamplerd(Randomizable, MapTransform):
    """Cut a uniformly random cube from a bbox item's ``raw`` and ``mask`` into ``output_key``.

    Args:
        keys: the raw and mask keys, in that order.
        cube_size: the cube edge S.
        output_key: where to write the ``[3, S, S, S]`` float32 cube (raw re-z-scored).
        start_key: where to write the cube's start ``[3]`` (None: don't).
        fallback_key: where to write 0 (random sampling never falls back; the key keeps batches of
            both sampling modes alike), or None.
        allow_missing_keys: not supported (both keys are required); kept for the MONAI signature.
        context: edge of the context cube cut around the cube (for views resampled by a 3-D rotation;
            zero padding past the volume); None: the cube itself.
    """

    def __init__(
        self,
        keys: KeysCollection = ("raw", "mask"),
        cube_size: int = 80,
        output_key: str = "image",
        start_key: str | None = "cube_start",
        fallback_key: str | None = "fallback",
        allow_missing_keys: bool = False,
        context: int | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"RandCubeSamplerd: expected the raw and mask keys, got {self.keys}")
        self.cube_size = _check_cube_size(cube_size)
        self.output_key, self.start_key, self.fallback_key = output_key, start_key, fallback_key
        self.context = context

    def randomize(self, spatial_shape: Sequence[int]) -> np.ndarray:  # type: ignore[override]
        """Draw a start uniformly over the valid positions."""
        return np.array([self.R.randint(s - self.cube_size + 1) for s in spatial_shape], dtype=np.int64)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        raw, mask = d[self.keys[0]], d[self.keys[1]]
        shape = check_bbox_arrays(raw, mask, self.cube_size, _item_name(d))
        start = self.randomize(shape)
        d[self.output_key] = cut_cube(raw, mask, start, self.cube_size, context=self.context, pad=True)
        if self.start_key is not None:
            d[self.start_key] = start
        if self.fallback_key is not None:
            d[self.fallback_key] = 0
        return d


class MaskAwareCubeSamplerd(Randomizable, MapTransform):
    """Cut a cube around a random cleft component, such that both views still share that component.

    Each attempt picks a component uniformly (among those :class:`CleftComponentsd` kept), a cube
    position holding it (random offset, :meth:`CleftComponents.random_cube_start`) and, when
    ``view_transform`` is given, both views' augmentation parameters. The attempt is accepted when the
    number of the component's voxels that survive each view's spatial transforms (rotation, crop), over
    the component's size, is at least ``min_shared_fraction``; without a view transform the cube itself
    is checked. After ``1 + max_retries`` failed attempts the best one is used and the sample is flagged
    as a fallback; a bbox without components falls back to a uniformly random cube. ``data[fallback_key]``
    (0/1) carries the flag out of DataLoader workers so a handler (``FallbackCount``) can sum it over a batch.

    Args:
        keys: the raw and mask keys, in that order.
        cube_size: the cube edge S.
        components_key: the key of the :class:`CleftComponents` (from :class:`CleftComponentsd`).
        view_transform: the two-view transform applied to the accepted cube (its parameters are drawn
            per attempt and checked before it is applied), or None to only cut the cube.
        min_shared_fraction: fraction of the component's voxels each view must keep, in [0, 1].
        max_retries: further attempts after the first.
        output_key: where to write the cube.
        start_key: where to write the cube's start (None: don't).
        fallback_key: where to write the 0/1 fallback flag (None: don't).
        component_key: where to write the index of the cleft component the cube was cut around (-1 when the
            bbox has no component and the cube is uniformly random), or None: don't. Two cubes of one bbox
            with the same index hold the same synapse (used to keep it out of its own negatives).
        allow_missing_keys: not supported; kept for the MONAI signature.
        pair_mode: ``"same_crop"`` (both views from one cube, the lab's pairs) or ``"nearby"`` (the second
            view from a second, independently placed cube that holds the same cleft component: SegCLR's
            nearby-location positives; written to ``second_key``).
        second_key: where the second cube goes in ``"nearby"`` mode.

    When the view transform works in the canonical pose (``pose="canonical"``), the cube is centred on the
    component's centroid (where inference centres a synapse: its cleft centre) and both views are drawn in
    the component's frame (:meth:`CleftComponents.frame`).

    With a ``view_transform`` whose views are resampled from a context (3-D rotation), the cubes are
    that context (edge ``view_transform.context_size``) and the shared fraction is counted through each
    view's resample.

    Raises:
        ValueError: bad arguments; at call time a malformed item or a cube larger than the volume.
        KeyError: the item has no components (run :class:`CleftComponentsd` first).
    """

    def __init__(
        self,
        keys: KeysCollection = ("raw", "mask"),
        cube_size: int = 80,
        components_key: str = "cleft_components",
        view_transform: RandTwoViewd | None = None,
        min_shared_fraction: float = 0.5,
        max_retries: int = 10,
        output_key: str = "image",
        start_key: str | None = "cube_start",
        fallback_key: str | None = "fallback",
        allow_missing_keys: bool = False,
        pair_mode: str = "same_crop",
        component_key: str | None = "component",
        second_key: str = "image2",
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"MaskAwareCubeSamplerd: expected the raw and mask keys, got {self.keys}")
        if pair_mode not in PAIR_MODES:
            raise ValueError(f"MaskAwareCubeSamplerd: pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")
        if pair_mode == "nearby" and view_transform is None:
            raise ValueError("MaskAwareCubeSamplerd: pair_mode='nearby' needs a view_transform")
        self.pair_mode, self.second_key = pair_mode, second_key
        if not 0.0 <= float(min_shared_fraction) <= 1.0:
            raise ValueError(f"MaskAwareCubeSamplerd: min_shared_fraction must be in [0, 1], got {min_shared_fraction}")
        if int(max_retries) < 0:
            raise ValueError(f"MaskAwareCubeSamplerd: max_retries must be >= 0, got {max_retries}")
        if view_transform is not None and not isinstance(view_transform, RandTwoViewd):
            raise TypeError(
                f"MaskAwareCubeSamplerd: view_transform must be a RandTwoViewd, got {type(view_transform).__name__}"
            )
        if view_transform is not None and view_transform.keys[0] != output_key:
            raise ValueError(
                f"MaskAwareCubeSamplerd: view_transform reads {view_transform.keys[0]!r} "
                f"but the cube goes to {output_key!r}"
            )
        self.cube_size = _check_cube_size(cube_size)
        self.components_key = components_key
        self.view_transform = view_transform
        self.min_shared_fraction = float(min_shared_fraction)
        self.max_retries = int(max_retries)
        self.output_key, self.start_key, self.fallback_key = output_key, start_key, fallback_key
        self.component_key = component_key

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> MaskAwareCubeSamplerd:
        super().set_random_state(seed, state)
        if self.view_transform is not None:
            # a derived seed: the view stream must not replay the sampler's draws
            self.view_transform.set_random_state(seed=int(self.R.randint(2**31 - 1)))
        return self

    def randomize(self, data: Any = None) -> None:
        """Unused: the draws happen per attempt in :meth:`__call__`."""

    @property
    def context(self) -> int:
        """Edge of the cubes cut (the views' context, or the cube edge)."""
        if self.view_transform is None or self.view_transform.cube_size is None:
            return self.cube_size
        return int(self.view_transform.context_size)

    def _component_in(self, comps: CleftComponents, k: int, start: np.ndarray) -> np.ndarray:
        """Component ``k``'s voxels in the cube (the context around it) cut at ``start``."""
        c, s = self.context, self.cube_size
        return comps.cube_mask(k, start - (c - s) // 2, c)

    def _attempt(self, comps: CleftComponents, mask: Any) -> tuple[float, np.ndarray, Any, np.ndarray | None, int]:
        s = self.cube_size
        k = int(self.R.randint(len(comps)))
        canonical = self.view_transform is not None and self.view_transform.pose == "canonical"
        # drawn in both poses, so that the draws after it (views, second cube) follow one stream
        start = comps.random_cube_start(k, s, self.R)
        if canonical:
            # the canonical pose puts the synapse at the centre too, as inference cuts it (its cleft centre); the
            # views' translation (translate_fraction) still moves it
            start = comps.centred_cube_start(k, s)
        start2 = comps.random_cube_start(k, s, self.R) if self.pair_mode == "nearby" else None
        params = None
        if self.view_transform is not None:
            frame = None
            if canonical:
                # the frame of the very synapse the cube is cut around, whatever else the cube holds
                frame = comps.frame(k, mask, self.view_transform.config.voxel_size)
            params = self.view_transform.randomize(s, frame)
            in_cube = self._component_in(comps, k, start)
            in_cube2 = in_cube if start2 is None else self._component_in(comps, k, start2)
            kept = min(retained_voxels(in_cube, params.view1), retained_voxels(in_cube2, params.view2))
        else:
            kept = int(np.count_nonzero(comps.cube_mask(k, start, s)))
        return kept / float(comps.sizes[k]), start, params, start2, k

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        raw, mask = d[self.keys[0]], d[self.keys[1]]
        name = _item_name(d)
        shape = check_bbox_arrays(raw, mask, self.cube_size, name)
        if self.components_key not in d:
            raise KeyError(
                f"{name}: no {self.components_key!r} in the item; run CleftComponentsd before MaskAwareCubeSamplerd"
            )
        comps = d[self.components_key]
        if not isinstance(comps, CleftComponents) or tuple(comps.shape) != tuple(shape):
            raise ValueError(f"{name}: {self.components_key!r} must be the CleftComponents of a {shape} volume")
        best: tuple[float, np.ndarray, Any, np.ndarray | None, int] | None = None
        if len(comps):
            for _ in range(1 + self.max_retries):
                attempt = self._attempt(comps, mask)
                if best is None or attempt[0] > best[0]:
                    best = attempt
                if attempt[0] >= self.min_shared_fraction:
                    break
        start2 = None
        if best is None:
            start = np.array([self.R.randint(n - self.cube_size + 1) for n in shape], dtype=np.int64)
            params = None
            fallback, component = True, -1
        else:
            fraction, start, params, start2, component = best
            fallback = fraction < self.min_shared_fraction
        d[self.output_key] = cut_cube(raw, mask, start, self.cube_size, context=self.context, pad=True)
        if self.pair_mode == "nearby":
            second = start if start2 is None else start2
            d[self.second_key] = cut_cube(raw, mask, second, self.cube_size, context=self.context, pad=True)
        if self.start_key is not None:
            d[self.start_key] = start
        if self.fallback_key is not None:
            d[self.fallback_key] = int(fallback)
        if self.component_key is not None:
            d[self.component_key] = int(component)
        if self.view_transform is not None:
            if params is None:  # no component: the views' frame (canonical pose) from the cube's own masks (a
                # nearby-pair second cube is then the same cube: one frame serves both views)
                params = self.view_transform.randomize(self.cube_size, self.view_transform.frame(d[self.output_key]))
            self.view_transform.apply(d, params)
        return d
