"""Spatial augmentations of cubes: 90° rotation in a random plane, random crop resized back.

MONAI's ``RandRotate90`` turns in one fixed plane and draws k in 1..max_k; the lab rotated by k in 0..3
about a random one of the three planes, so :class:`RandPlaneRotate90` draws the plane as well and
applies MONAI's ``Rotate90``. MONAI's ``RandSpatialCrop`` + ``Resize`` would crop with an independent
edge per axis and resize every channel alike; :class:`RandCropResize` crops a cube (so the resize
scales all axes alike) and resizes the raw channel trilinearly but the masks by nearest neighbour,
applying MONAI's ``SpatialCrop`` and ``Resize``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform

from .config import RAW_CHANNEL, ROTATION_PLANES
from .functional import as_float_tensor, crop_resize, rotate90

__all__ = ["RandPlaneRotate90", "RandPlaneRotate90d", "RandCropResize", "RandCropResized"]


class RandPlaneRotate90(RandomizableTransform):
    """Rotate by k quarter turns (k uniform in ``0..max_k``) in a plane drawn uniformly from the three.

    Rotating a cube is an exact permutation of its voxels, so masks stay binary.

    Args:
        prob: probability of drawing a rotation at all.
        max_k: the largest number of quarter turns, 0..3.

    Raises:
        ValueError: ``max_k`` outside 0..3.
    """

    backend = [np.ndarray, torch.Tensor]

    def __init__(self, prob: float = 1.0, max_k: int = 3) -> None:
        RandomizableTransform.__init__(self, prob)
        if not 0 <= int(max_k) <= 3:
            raise ValueError(f"RandPlaneRotate90: max_k must be in 0..3, got {max_k}")
        self.max_k = int(max_k)
        self.k, self.plane = 0, 0

    def randomize(self, data: object = None) -> None:
        """Draw whether to rotate, the plane and k."""
        super().randomize(None)
        if self._do_transform:
            self.plane = int(self.R.randint(len(ROTATION_PLANES)))
            self.k = int(self.R.randint(self.max_k + 1))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> torch.Tensor:
        """Rotate every channel of ``img`` (``[C, S, S, S]``)."""
        if randomize:
            self.randomize()
        if not self._do_transform or self.k % 4 == 0:
            return as_float_tensor(img)
        return rotate90(img, self.k, self.plane)


class RandPlaneRotate90d(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`RandPlaneRotate90`; all keys get the same rotation.

    Args:
        keys: keys of the images to rotate.
        prob: probability of drawing a rotation.
        max_k: the largest number of quarter turns.
        allow_missing_keys: don't raise for a missing key.
    """

    backend = RandPlaneRotate90.backend

    def __init__(
        self, keys: KeysCollection = "image", prob: float = 1.0, max_k: int = 3, allow_missing_keys: bool = False
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.rotate = RandPlaneRotate90(1.0, max_k)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandPlaneRotate90d:
        super().set_random_state(seed, state)
        self.rotate.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        if self._do_transform:
            self.rotate.randomize()
        for key in self.key_iterator(d):
            d[key] = self.rotate(d[key], randomize=False) if self._do_transform else as_float_tensor(d[key])
        return d


class RandCropResize(RandomizableTransform):
    """Crop a random sub-cube (edge ``round(f * S)``, f uniform in ``fraction``) and resize it back to S.

    Args:
        prob: probability of cropping.
        fraction: ``(min, max)`` of the crop edge as a fraction of the input edge, in (0, 1].
        linear_channels: channels resized trilinearly (the raw); the others (masks) use nearest neighbour.

    Raises:
        ValueError: a malformed fraction range.
    """

    backend = [np.ndarray, torch.Tensor]

    def __init__(
        self,
        prob: float = 1.0,
        fraction: Sequence[float] = (0.8, 1.0),
        linear_channels: int | Sequence[int] = RAW_CHANNEL,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        try:
            lo, hi = (float(v) for v in fraction)
        except (TypeError, ValueError):
            raise ValueError(f"RandCropResize: fraction must be a (min, max) pair, got {fraction!r}") from None
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"RandCropResize: fraction must satisfy 0 < min <= max <= 1, got {fraction!r}")
        self.fraction = (lo, hi)
        self.linear_channels = linear_channels
        self.start: tuple[int, ...] = ()
        self.size: tuple[int, ...] = ()

    def randomize(self, spatial_shape: Sequence[int]) -> None:  # type: ignore[override]
        """Draw whether to crop and, if so, the crop's edge and position inside ``spatial_shape``."""
        super().randomize(None)
        if not self._do_transform:
            return
        edge = int(spatial_shape[0])
        if len(set(spatial_shape)) != 1:
            raise ValueError(f"RandCropResize: expected a cube, got spatial shape {tuple(spatial_shape)}")
        lo, hi = (max(1, min(edge, round(f * edge))) for f in self.fraction)
        size = int(self.R.randint(lo, hi + 1))
        self.size = (size,) * len(spatial_shape)
        self.start = tuple(int(self.R.randint(edge - size + 1)) for _ in spatial_shape)

    def __call__(
        self, img: NdarrayOrTensor, randomize: bool = True, linear_channels: int | Sequence[int] | None = None
    ) -> torch.Tensor:
        """Crop-and-resize ``img`` (``[C, S, S, S]``); the output keeps its shape.

        Args:
            img: the cube.
            randomize: draw new parameters (False reuses the last draw, for several keys).
            linear_channels: override of the trilinear channels for this call (``()`` for a mask).

        Returns:
            ``[C, S, S, S]`` float32.
        """
        if randomize:
            self.randomize(img.shape[1:])
        if not self._do_transform:
            return as_float_tensor(img)
        lin = self.linear_channels if linear_channels is None else linear_channels
        return crop_resize(img, self.start, self.size, out_size=img.shape[1:], linear_channels=lin)


class RandCropResized(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`RandCropResize`; all keys share the crop.

    Args:
        keys: keys of the images to crop (all with the same spatial shape).
        prob: probability of cropping.
        fraction: ``(min, max)`` of the crop edge as a fraction of the input edge.
        linear_channels: trilinear channels of the keys not in ``mask_keys``.
        mask_keys: keys holding only masks (every channel resized by nearest neighbour).
        allow_missing_keys: don't raise for a missing key.
    """

    backend = RandCropResize.backend

    def __init__(
        self,
        keys: KeysCollection = "image",
        prob: float = 1.0,
        fraction: Sequence[float] = (0.8, 1.0),
        linear_channels: int | Sequence[int] = RAW_CHANNEL,
        mask_keys: KeysCollection = (),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.cropper = RandCropResize(1.0, fraction, linear_channels)
        self.mask_keys = {mask_keys} if isinstance(mask_keys, (str, int)) else set(mask_keys)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandCropResized:
        super().set_random_state(seed, state)
        self.cropper.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        shapes = {tuple(d[k].shape[1:]) for k in keys}
        if len(shapes) != 1:
            raise ValueError(f"RandCropResized: keys {keys} have different spatial shapes {sorted(shapes)}")
        if self._do_transform:
            self.cropper.randomize(shapes.pop())
        for key in keys:
            if not self._do_transform:
                d[key] = as_float_tensor(d[key])
                continue
            lin = () if key in self.mask_keys else None
            d[key] = self.cropper(d[key], randomize=False, linear_channels=lin)
        return d
