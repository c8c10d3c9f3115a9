"""The random parameters of the two views, drawn once and applied by either path.

Both the per-sample MONAI path (:class:`~synclr_monai.transforms.views.RandTwoViewd`) and the batched
torch path (:class:`~synclr_monai.transforms.batched.BatchedTwoViewAugment`) take their randomness from
:func:`sample_two_view_params`. Keeping the draw separate from the application is what lets the two
paths be compared voxel for voxel, lets mask-aware sampling test a candidate augmentation before it is
applied, and lets CPU workers draw the parameters of an augmentation that the GPU applies later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ROTATION_PLANES, AugmentConfig

__all__ = ["ViewParams", "TwoViewParams", "sample_view_params", "sample_two_view_params"]


def _as_numpy(value: Any) -> np.ndarray:
    # collated batches hold torch tensors; the parameters are tiny, so a host copy costs nothing
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


@dataclass
class ViewParams:
    """The random parameters of one view for ``n`` cubes (each field's first axis is the cube).

    A parameter whose step is not applied holds the identity: ``rot_k`` 0, ``scale`` 1, ``shift`` 0,
    ``blur`` False, ``crop_size`` S with ``crop_start`` 0, ``dropout`` False.

    Args:
        rot_plane: ``[n]`` int, index into :data:`~synclr_monai.transforms.config.ROTATION_PLANES`.
        rot_k: ``[n]`` int in 0..3, number of quarter turns.
        scale: ``[n]`` float, raw-channel intensity scale.
        shift: ``[n]`` float, raw-channel intensity shift.
        blur: ``[n]`` bool, whether to blur the raw channel.
        sigma: ``[n, 3]`` float, blur sigma per spatial axis (z, y, x) in voxels.
        crop_start: ``[n, 3]`` int, first voxel of the crop.
        crop_size: ``[n, 3]`` int, edge of the crop (S: no crop).
        dropout: ``[n]`` bool, whether to zero the cleft mask.
    """

    rot_plane: np.ndarray
    rot_k: np.ndarray
    scale: np.ndarray
    shift: np.ndarray
    blur: np.ndarray
    sigma: np.ndarray
    crop_start: np.ndarray
    crop_size: np.ndarray
    dropout: np.ndarray

    def __post_init__(self) -> None:
        self.rot_plane = _as_numpy(self.rot_plane).astype(np.int64).reshape(-1)
        self.rot_k = _as_numpy(self.rot_k).astype(np.int64).reshape(-1)
        self.scale = _as_numpy(self.scale).astype(np.float64).reshape(-1)
        self.shift = _as_numpy(self.shift).astype(np.float64).reshape(-1)
        self.blur = _as_numpy(self.blur).astype(bool).reshape(-1)
        self.sigma = _as_numpy(self.sigma).astype(np.float64).reshape(-1, 3)
        self.crop_start = _as_numpy(self.crop_start).astype(np.int64).reshape(-1, 3)
        self.crop_size = _as_numpy(self.crop_size).astype(np.int64).reshape(-1, 3)
        self.dropout = _as_numpy(self.dropout).astype(bool).reshape(-1)
        n = len(self.rot_k)
        lengths = {f.name: len(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if any(v != n for v in lengths.values()):
            raise ValueError(f"ViewParams: all fields must have the same length, got {lengths}")
        if np.any((self.rot_plane < 0) | (self.rot_plane >= len(ROTATION_PLANES))):
            raise ValueError(f"ViewParams.rot_plane must be in 0..{len(ROTATION_PLANES) - 1}, got {self.rot_plane}")
        if np.any(self.crop_size < 1) or np.any(self.crop_start < 0):
            raise ValueError("ViewParams: crop_size must be >= 1 and crop_start >= 0")
        if np.any(self.sigma[self.blur] <= 0):
            raise ValueError("ViewParams: a blurred cube needs sigma > 0")

    def __len__(self) -> int:
        return len(self.rot_k)

    def select(self, index: int | slice | Sequence[int] | np.ndarray) -> ViewParams:
        """The parameters of a subset of the cubes (an int keeps a length-1 view).

        Args:
            index: an int, slice, index list or boolean mask over the cubes.

        Returns:
            A new ``ViewParams``.
        """
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return ViewParams(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def to_dict(self) -> dict[str, np.ndarray]:
        """The fields as a dict of arrays (collatable by a DataLoader)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ViewParams:
        """Rebuild from :meth:`to_dict` output, or from its collated form (tensors ``[B, ...]``).

        Args:
            data: mapping with every field name.

        Returns:
            The parameters.

        Raises:
            KeyError: a field is missing.
        """
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data]
        if missing:
            raise KeyError(f"ViewParams.from_dict: missing fields {missing}")
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    @classmethod
    def concat(cls, parts: Sequence[ViewParams]) -> ViewParams:
        """Concatenate the parameters of several groups of cubes."""
        if not parts:
            raise ValueError("ViewParams.concat needs at least one part")
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)})

    def check_cube_size(self, cube_size: int) -> None:
        """Raise ValueError if a crop of these parameters does not fit in a cube of edge ``cube_size``."""
        if np.any(self.crop_start + self.crop_size > cube_size):
            raise ValueError(
                f"ViewParams: crops {self.crop_start.tolist()} + {self.crop_size.tolist()} exceed a {cube_size}³ cube"
            )


@dataclass
class TwoViewParams:
    """The parameters of both views of ``n`` cubes.

    Args:
        view1: stream A only (no crop, no dropout).
        view2: stream A and stream B.
    """

    view1: ViewParams
    view2: ViewParams

    def __post_init__(self) -> None:
        if len(self.view1) != len(self.view2):
            raise ValueError(f"TwoViewParams: views of different lengths {len(self.view1)} and {len(self.view2)}")

    def __len__(self) -> int:
        return len(self.view1)

    def select(self, index: int | slice | Sequence[int] | np.ndarray) -> TwoViewParams:
        """Both views' parameters of a subset of the cubes."""
        return TwoViewParams(self.view1.select(index), self.view2.select(index))

    def to_dict(self) -> dict[str, dict[str, np.ndarray]]:
        """``{"view1": {...}, "view2": {...}}`` of arrays, collatable by a DataLoader."""
        return {"view1": self.view1.to_dict(), "view2": self.view2.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> TwoViewParams:
        """Rebuild from :meth:`to_dict` output or its collated form (a batch's ``"view_params"``)."""
        return cls(ViewParams.from_dict(data["view1"]), ViewParams.from_dict(data["view2"]))

    @classmethod
    def concat(cls, parts: Sequence[TwoViewParams]) -> TwoViewParams:
        """Concatenate the parameters of several groups of cubes."""
        return cls(ViewParams.concat([p.view1 for p in parts]), ViewParams.concat([p.view2 for p in parts]))


def sample_view_params(
    rng: np.random.RandomState,
    n: int,
    cube_size: int,
    config: AugmentConfig | None = None,
    second_view: bool = False,
) -> ViewParams:
    """Draw one view's parameters for ``n`` cubes.

    Args:
        rng: the random stream (a MONAI transform's ``self.R``).
        n: number of cubes.
        cube_size: the cube edge S (bounds the crop).
        config: probabilities and ranges; None for the lab defaults.
        second_view: also draw stream B (crop-and-resize, mask dropout); otherwise those are identity.

    Returns:
        The parameters.

    Raises:
        ValueError: ``n`` < 0 or ``cube_size`` < 1.
    """
    if n < 0 or cube_size < 1:
        raise ValueError(f"sample_view_params: need n >= 0 and cube_size >= 1, got n={n}, cube_size={cube_size}")
    cfg = config or AugmentConfig()
    rotate = rng.random_sample(n) < cfg.rotate_prob
    rot_plane = rng.randint(0, len(ROTATION_PLANES), size=n)
    rot_k = np.where(rotate, rng.randint(0, cfg.rotate_max_k + 1, size=n), 0)

    jitter = rng.random_sample(n) < cfg.intensity_prob
    scale = np.where(jitter, rng.normal(cfg.scale_mean, cfg.scale_std, size=n), 1.0)
    shift = np.where(jitter, rng.normal(0.0, cfg.shift_std, size=n), 0.0)

    blur = rng.random_sample(n) < cfg.blur_prob
    # one isotropic sigma per cube, as the lab blurred; the per-axis layout keeps anisotropic blur possible
    sigma = np.repeat(rng.uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], size=n)[:, None], 3, axis=1)

    crop_size = np.full((n, 3), cube_size, dtype=np.int64)
    crop_start = np.zeros((n, 3), dtype=np.int64)
    dropout = np.zeros(n, dtype=bool)
    if second_view:
        crop = rng.random_sample(n) < cfg.crop_prob
        lo, hi = cfg.crop_sizes(cube_size)
        # one edge for all axes: a cubic crop resized back to the cube scales all axes alike
        edge = np.where(crop, rng.randint(lo, hi + 1, size=n), cube_size)
        crop_size = np.repeat(edge[:, None], 3, axis=1)
        # uniform start in 0..S-edge per axis (what MONAI's RandSpatialCrop draws)
        crop_start = np.floor(rng.random_sample((n, 3)) * (cube_size - crop_size + 1)).astype(np.int64)
        dropout = rng.random_sample(n) < cfg.mask_dropout_prob
    return ViewParams(rot_plane, rot_k, scale, shift, blur, sigma, crop_start, crop_size, dropout)


def sample_two_view_params(
    rng: np.random.RandomState, n: int, cube_size: int, config: AugmentConfig | None = None
) -> TwoViewParams:
    """Draw both views' parameters for ``n`` cubes (view 1: stream A; view 2: streams A and B).

    Args:
        rng: the random stream.
        n: number of cubes.
        cube_size: the cube edge S.
        config: probabilities and ranges; None for the lab defaults.

    Returns:
        The parameters.
    """
    view1 = sample_view_params(rng, n, cube_size, config, second_view=False)
    view2 = sample_view_params(rng, n, cube_size, config, second_view=True)
    return TwoViewParams(view1, view2)
