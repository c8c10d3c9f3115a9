"""Per-sample operations with fixed parameters, built on MONAI's deterministic transforms.

MONAI's random transforms (``RandRotate90``, ``RandGaussianSmooth``, ``RandSpatialCrop`` ...) are a
``randomize()`` step followed by their deterministic counterpart (``Rotate90``, ``GaussianSmooth``,
``SpatialCrop`` ...). This module is that second half for our augmentations: given parameters drawn
by :mod:`~synclr_monai.transforms.params`, it applies them with the same MONAI transforms. The random
transforms of this package draw their parameters and call these functions, and the batched torch path
is tested against them.

A cube is a ``[3, S, S, S]`` array: channel 0 raw EM, 1 pre-synaptic mask, 2 cleft mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import GaussianSmooth, Resize, Rotate90, ScaleIntensity, ShiftIntensity, SpatialCrop
from monai.utils import convert_to_tensor

from .config import CLEFT_CHANNEL, RAW_CHANNEL, ROTATION_PLANES
from .params import ViewParams

__all__ = [
    "as_float_tensor",
    "check_cube",
    "cut_cube",
    "zscore_",
    "rotate90",
    "raw_intensity",
    "raw_gaussian_smooth",
    "crop_resize",
    "mask_dropout",
    "apply_view_params",
    "retained_voxels",
]


def as_float_tensor(img: NdarrayOrTensor) -> torch.Tensor:
    """A plain (non-Meta) float32 tensor of ``img``, sharing memory when it already is one."""
    # MONAI returns MetaTensors while meta tracking is on; cubes carry no spatial metadata worth the
    # per-operation bookkeeping, so every function here hands back plain tensors
    return convert_to_tensor(img, dtype=torch.float32, track_meta=False)


def check_cube(img: NdarrayOrTensor, name: str = "cube", channels: int | None = None) -> tuple[int, int, int]:
    """Validate a channel-first 3-D cube and return its spatial shape.

    Args:
        img: ``[C, Z, Y, X]`` array or tensor.
        name: what to call it in error messages.
        channels: the required channel count, or None for any.

    Returns:
        ``(Z, Y, X)``.

    Raises:
        ValueError: not 4-D, wrong channel count, or not a cube (rotations across planes need equal edges).
    """
    shape = tuple(img.shape)
    if len(shape) != 4:
        raise ValueError(f"{name}: expected a channel-first [C, Z, Y, X] array, got shape {shape}")
    if channels is not None and shape[0] != channels:
        raise ValueError(f"{name}: expected {channels} channels, got shape {shape}")
    if len(set(shape[1:])) != 1:
        raise ValueError(f"{name}: expected a cube (equal Z, Y, X), got shape {shape}")
    return shape[1:]  # type: ignore[return-value]


def _channels(channels: int | Sequence[int], n_channels: int) -> list[int]:
    out = [int(channels)] if isinstance(channels, (int, np.integer)) else [int(c) for c in channels]
    bad = [c for c in out if not 0 <= c < n_channels]
    if bad:
        raise ValueError(f"channels {bad} out of range for an image with {n_channels} channels")
    return out


def zscore_(raw: np.ndarray) -> np.ndarray:
    """Z-score ``raw`` in place (float64 statistics); a constant array becomes zeros.

    Args:
        raw: float array, modified in place.

    Returns:
        ``raw``.
    """
    mean = raw.mean(dtype=np.float64)
    std = raw.std(dtype=np.float64)
    if std > 0:
        raw -= mean
        raw /= std
    else:
        raw[...] = 0
    return raw


def cut_cube(raw: np.ndarray, mask: np.ndarray, start: Sequence[int], size: int, zscore: bool = True) -> np.ndarray:
    """Cut the cube ``[start, start + size)`` out of an assembled bbox.

    Args:
        raw: ``[1, Z, Y, X]`` raw EM (float16 or float32).
        mask: ``[2, Z, Y, X]`` uint8 masks (pre-synaptic, cleft).
        start: ``(z, y, x)`` of the first voxel.
        size: the cube edge S.
        zscore: z-score the cube's raw channel again (the lab's per-cube normalisation).

    Returns:
        ``[3, S, S, S]`` float32 (raw, pre, cleft); a fresh array, never a view of the bbox.

    Raises:
        ValueError: the cube does not lie inside the volume.
    """
    start = [int(s) for s in start]
    spatial = raw.shape[1:]
    if any(s < 0 or s + size > d for s, d in zip(start, spatial)):
        raise ValueError(f"cut_cube: cube at {start} of edge {size} does not fit in a volume of shape {tuple(spatial)}")
    sl = tuple(slice(s, s + size) for s in start)
    out = np.empty((3, size, size, size), dtype=np.float32)
    out[0] = raw[(0, *sl)]
    out[1:] = mask[(slice(0, 2), *sl)]
    if zscore:
        zscore_(out[0])
    return out


def rotate90(img: NdarrayOrTensor, k: int, plane: int) -> torch.Tensor:
    """Rotate all channels by ``k`` quarter turns in plane ``ROTATION_PLANES[plane]`` (MONAI ``Rotate90``).

    Args:
        img: ``[C, S, S, S]``.
        k: quarter turns (any int; taken mod 4).
        plane: index into :data:`~synclr_monai.transforms.config.ROTATION_PLANES`.

    Returns:
        The rotated image (an exact permutation of the voxels).
    """
    if not 0 <= plane < len(ROTATION_PLANES):
        raise ValueError(f"rotate90: plane must be in 0..{len(ROTATION_PLANES) - 1}, got {plane}")
    return as_float_tensor(Rotate90(k=int(k), spatial_axes=ROTATION_PLANES[plane])(as_float_tensor(img)))


def raw_intensity(
    img: NdarrayOrTensor, scale: float, shift: float, channels: int | Sequence[int] = RAW_CHANNEL
) -> torch.Tensor:
    """``raw * scale + shift`` on the raw channel(s) only (MONAI ``ScaleIntensity`` + ``ShiftIntensity``).

    Args:
        img: ``[C, ...]``.
        scale: multiplicative factor.
        shift: additive offset.
        channels: the raw channel(s); every other channel is returned unchanged.

    Returns:
        A new tensor.
    """
    out = as_float_tensor(img).clone()
    idx = _channels(channels, out.shape[0])
    raw = ScaleIntensity(minv=None, maxv=None, factor=float(scale) - 1.0)(out[idx])
    out[idx] = as_float_tensor(ShiftIntensity(offset=float(shift))(raw))
    return out


def raw_gaussian_smooth(
    img: NdarrayOrTensor, sigma: float | Sequence[float], channels: int | Sequence[int] = RAW_CHANNEL
) -> torch.Tensor:
    """Gaussian-blur the raw channel(s) only (MONAI ``GaussianSmooth``: erf kernel, 4 sigma, zero padding).

    Args:
        img: ``[C, Z, Y, X]``.
        sigma: one sigma or one per spatial axis, in voxels.
        channels: the raw channel(s); masks are never blurred, so they stay binary.

    Returns:
        A new tensor.
    """
    out = as_float_tensor(img).clone()
    idx = _channels(channels, out.shape[0])
    sig = tuple(float(s) for s in np.broadcast_to(np.asarray(sigma, dtype=np.float64), (out.ndim - 1,)))
    out[idx] = as_float_tensor(GaussianSmooth(sigma=sig)(out[idx]))
    return out


def crop_resize(
    img: NdarrayOrTensor,
    start: Sequence[int],
    size: Sequence[int],
    out_size: Sequence[int] | int | None = None,
    linear_channels: int | Sequence[int] = RAW_CHANNEL,
) -> torch.Tensor:
    """Crop ``[start, start + size)`` and resize it back (MONAI ``SpatialCrop`` + ``Resize``).

    Channels in ``linear_channels`` are resized trilinearly (``align_corners=False``, as MONAI's
    default); every other channel (the masks) by nearest neighbour, so masks stay binary.

    Args:
        img: ``[C, Z, Y, X]``.
        start: first voxel of the crop per axis.
        size: crop edge per axis.
        out_size: output spatial size; None keeps the input's.
        linear_channels: channels resized trilinearly (``()`` for a mask-only image).

    Returns:
        ``[C, *out_size]`` float32.

    Raises:
        ValueError: the crop does not lie inside the image.
    """
    x = as_float_tensor(img)
    spatial = tuple(x.shape[1:])
    start = [int(s) for s in start]
    size = [int(s) for s in size]
    if any(a < 0 or n < 1 or a + n > d for a, n, d in zip(start, size, spatial)):
        raise ValueError(f"crop_resize: crop at {start} of size {size} does not fit in {spatial}")
    target = (
        spatial
        if out_size is None
        else tuple(np.broadcast_to(np.asarray(out_size, dtype=np.int64), (len(spatial),)).tolist())
    )
    crop = SpatialCrop(roi_start=start, roi_end=[a + n for a, n in zip(start, size)])(x)
    lin = set(_channels(linear_channels, x.shape[0]))
    out = torch.empty((x.shape[0], *target), dtype=torch.float32, device=x.device)
    lin_idx = sorted(lin)
    near_idx = [c for c in range(x.shape[0]) if c not in lin]
    if lin_idx:
        out[lin_idx] = as_float_tensor(Resize(spatial_size=target, mode="trilinear")(crop[lin_idx]))
    if near_idx:
        out[near_idx] = as_float_tensor(Resize(spatial_size=target, mode="nearest")(crop[near_idx]))
    return out


def mask_dropout(img: NdarrayOrTensor, channel: int = CLEFT_CHANNEL) -> torch.Tensor:
    """Zero one mask channel (the cleft by default).

    Args:
        img: ``[C, ...]``.
        channel: the channel to zero.

    Returns:
        A new tensor.
    """
    out = as_float_tensor(img).clone()
    out[_channels(channel, out.shape[0])] = 0
    return out


def apply_view_params(cube: NdarrayOrTensor, params: ViewParams) -> torch.Tensor:
    """Apply one view's fixed parameters to one cube: the per-sample MONAI path.

    The order is stream A (rotation, raw scale-and-shift, raw blur) then stream B (crop and resize
    back, cleft dropout); identity steps are skipped.

    Args:
        cube: ``[3, S, S, S]``.
        params: a length-1 :class:`ViewParams`.

    Returns:
        The view, ``[3, S, S, S]`` float32.

    Raises:
        ValueError: a malformed cube, ``params`` not of length 1, or a crop outside the cube.
    """
    s, _, _ = check_cube(cube, "apply_view_params", channels=3)
    if len(params) != 1:
        raise ValueError(f"apply_view_params: expected parameters of one cube, got {len(params)}")
    params.check_cube_size(s)
    src = as_float_tensor(cube)
    x = src
    k, plane = int(params.rot_k[0]), int(params.rot_plane[0])
    if k % 4:
        x = rotate90(x, k, plane)
    scale, shift = float(params.scale[0]), float(params.shift[0])
    if scale != 1.0 or shift != 0.0:
        x = raw_intensity(x, scale, shift)
    if params.blur[0]:
        x = raw_gaussian_smooth(x, params.sigma[0])
    start, size = params.crop_start[0], params.crop_size[0]
    if np.any(size != s):
        x = crop_resize(x, start, size, out_size=s)
    if params.dropout[0]:
        x = mask_dropout(x)
    # every step above returns a new tensor; an all-identity view must not alias the input cube
    return x.clone() if x is src else x


def retained_voxels(mask: np.ndarray, params: ViewParams) -> int:
    """How many foreground voxels of ``mask`` survive a view's spatial transforms.

    Rotations permute voxels; only the crop removes any. The count is taken on the rotated mask inside
    the crop window, before the resize, so it counts original voxels (nearest-neighbour upsampling
    repeats some of them, which would inflate a count taken after the resize).

    Args:
        mask: ``[S, S, S]`` binary mask of one component inside the cube.
        params: a length-1 :class:`ViewParams`.

    Returns:
        The number of the mask's voxels inside the view.
    """
    if mask.ndim != 3 or len(params) != 1:
        raise ValueError(
            f"retained_voxels: need a [S, S, S] mask and one cube's parameters, got {mask.shape}, {len(params)}"
        )
    # np.rot90 returns a view and follows the same convention as torch.rot90 (used by MONAI Rotate90)
    rotated = np.rot90(mask, int(params.rot_k[0]), axes=ROTATION_PLANES[int(params.rot_plane[0])])
    sl = tuple(slice(int(a), int(a + n)) for a, n in zip(params.crop_start[0], params.crop_size[0]))
    return int(np.count_nonzero(rotated[sl]))
