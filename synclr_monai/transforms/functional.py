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
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import GaussianSmooth, Resize, Rotate90, ScaleIntensity, ShiftIntensity, SpatialCrop
from monai.utils import convert_to_tensor

from .config import CLEFT_CHANNEL, PRE_CHANNEL, RAW_CHANNEL, ROTATION_PLANES
from .params import ViewParams

__all__ = [
    "as_float_tensor",
    "check_cube",
    "cut_cube",
    "is_lazy",
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


def zscore_(raw: np.ndarray, stats: tuple[slice, ...] | None = None) -> np.ndarray:
    """Z-score ``raw`` in place with float64 statistics; a constant region makes the array zeros.

    The one normalisation of a cube's raw channel, in training and in inference alike.

    Args:
        raw: float array, modified in place.
        stats: the region whose voxels give the mean and standard deviation (a cube's voxels inside the
            volume, not the zero padding past its border, nor the context around it); None: all of ``raw``.

    Returns:
        ``raw``.
    """
    region = raw if stats is None else raw[stats]
    mean = region.mean(dtype=np.float64) if region.size else 0.0
    std = region.std(dtype=np.float64) if region.size else 0.0
    if std > 0:
        raw -= mean
        raw /= std
    else:
        raw[...] = 0
    return raw


def is_lazy(array: Any) -> bool:
    """Whether ``array`` is read out of core (``data_mode: chunked``, e.g. a
    :class:`~synclr_monai.data.lazy.H5Volume`): it has ``shape``/``dtype`` and int/slice indexing returning
    NumPy, and nothing may touch the whole volume at once."""
    return bool(getattr(array, "is_lazy", False))


def cut_cube(
    raw: np.ndarray,
    mask: np.ndarray,
    start: Sequence[int],
    size: int,
    zscore: bool = True,
    context: int | None = None,
    pad: bool = False,
) -> np.ndarray:
    """Cut the cube ``[start, start + size)`` (or the context cube around it) out of an assembled bbox.

    Args:
        raw: ``[1, Z, Y, X]`` raw EM (float16 or float32): an array, or an out-of-core volume
            (:func:`is_lazy`) of which only the cube's slices are read.
        mask: ``[2 or 3, Z, Y, X]`` uint8 masks (pre-synaptic, cleft[, post-synaptic]), likewise.
        start: ``(z, y, x)`` of the cube's first voxel.
        size: the cube edge S.
        zscore: z-score the raw channel again (the lab's per-cube normalisation), with the statistics of
            the S-cube's voxels inside the volume (:func:`zscore_`).
        context: edge C >= S of a larger cube with the same centre (``start - (C - S) // 2``), for views
            resampled by a 3-D rotation; None: C = S.
        pad: allow the cut to reach past the volume (zero padding); without it the S-cube must lie inside.

    Returns:
        ``[1 + M, C, C, C]`` float32 (raw, then the M mask channels); a fresh array, never a view of the bbox.

    Raises:
        ValueError: the cube does not lie inside the volume (and ``pad`` is False), or ``context < size``.
    """
    start = [int(s) for s in start]
    spatial = tuple(raw.shape[1:])
    if not pad and any(s < 0 or s + size > d for s, d in zip(start, spatial)):
        raise ValueError(f"cut_cube: cube at {start} of edge {size} does not fit in a volume of shape {spatial}")
    edge = size if context is None else int(context)
    if edge < size:
        raise ValueError(f"cut_cube: context {edge} is smaller than the cube {size}")
    lo = [s - (edge - size) // 2 for s in start]
    n_mask = int(mask.shape[0])
    out = np.zeros((1 + n_mask, edge, edge, edge), dtype=np.float32)
    src, dst = [], []
    for a, d in zip(lo, spatial):
        a0, a1 = max(a, 0), min(a + edge, d)
        if a1 <= a0:
            raise ValueError(f"cut_cube: cube at {start} of edge {size} lies outside a volume of shape {spatial}")
        src.append(slice(a0, a1))
        dst.append(slice(a0 - a, a1 - a))
    out[(0, *dst)] = raw[(0, *src)]
    out[(slice(1, None), *dst)] = mask[(slice(None), *src)]
    if zscore:
        # statistics of the S-cube's voxels inside the volume, whatever the context around it
        inner = tuple(
            slice(max(a - l, s.start), min(a - l + size, s.stop)) for a, l, s in zip(start, lo, dst)
        )
        # only the in-volume part is normalised: the zero padding past the border stays 0 (the cube's mean)
        zscore_(out[0][tuple(dst)], tuple(slice(i.start - d.start, i.stop - d.start) for i, d in zip(inner, dst)))
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


def apply_view_params(cube: NdarrayOrTensor, params: ViewParams, input_mode: str | None = None) -> torch.Tensor:
    """Apply one view's fixed parameters to one cube: the per-sample MONAI path.

    The order is: EM section artefacts (on the context, before the rotation, as in the microscope);
    the spatial step (one affine resample of the context for the 3-D views, else the 90° rotation);
    raw scale-and-shift, gamma, blur, noise; the lab's crop and resize back; cleft and pre-synaptic
    mask dropout and mask dilation/erosion; the cutout; and finally the encoder's input mode. Identity
    steps are skipped.

    Args:
        cube: ``[K, C, C, C]`` with K = 3 (raw, pre, cleft) or 4 (+ post); C is the context edge for
            resampled views (their output edge S is ``params.crop_size``), else the cube edge.
        params: a length-1 :class:`ViewParams`.
        input_mode: None keeps all K channels; else see :func:`~.artefacts.to_input_mode`.

    Returns:
        The view, ``[K or 3 or 1, S, S, S]`` float32.

    Raises:
        ValueError: a malformed cube, ``params`` not of length 1, or a crop outside the cube.
    """
    from .artefacts import cutout_, mask_morphology, raw_gamma, raw_noise_, to_input_mode
    from .geometry import sections_and_resample

    s, _, _ = check_cube(cube, "apply_view_params")
    if len(params) != 1:
        raise ValueError(f"apply_view_params: expected parameters of one cube, got {len(params)}")
    if as_float_tensor(cube).shape[0] not in (3, 4):
        raise ValueError(f"apply_view_params: expected 3 channels (raw, pre, cleft) or 4 (+ post), got {tuple(cube.shape)}")
    params.check_cube_size(s)
    p = params
    src = as_float_tensor(cube)
    # the batched route with one cube (grid_sample): MONAI's Affine (geometry.affine_resample, the reference
    # it is tested against) spends most of its time on metadata, per view, in every worker
    x = sections_and_resample(src[None], p)[0]
    if x.data_ptr() == src.data_ptr():
        x = src  # neither step drawn: the later steps copy before they write
    s = int(x.shape[-1])
    k, plane = int(p.rot_k[0]), int(p.rot_plane[0])
    if k % 4:
        x = rotate90(x, k, plane)
    scale, shift = float(p.scale[0]), float(p.shift[0])
    if scale != 1.0 or shift != 0.0:
        x = raw_intensity(x, scale, shift)
    if p.gamma[0] != 1.0:
        x = raw_gamma(x, float(p.gamma[0]))
    if p.blur[0]:
        x = raw_gaussian_smooth(x, p.sigma[0])
    if p.noise_std[0] or p.mult_noise_std[0]:
        x = x.clone() if x is src else x
        raw_noise_(x[None], p.noise_std, p.mult_noise_std, p.noise_seed)
    start, size = p.crop_start[0], p.crop_size[0]
    if not p.resampled[0] and np.any(size != s):
        x = crop_resize(x, start, size, out_size=s)
    if p.dropout[0]:
        x = mask_dropout(x)
    if p.pre_dropout[0]:
        x = mask_dropout(x, PRE_CHANNEL)
    if np.any(p.morph[0]):
        x = mask_morphology(x, p.morph[0])
    if np.all(p.cutout_size[0] > 0):
        x = x.clone() if x is src else x
        cutout_(x[None], p.cutout_start, p.cutout_size)
    if input_mode is not None:
        x = to_input_mode(x[None], input_mode, p.az_radius)[0]
    # an all-identity view must not alias the input cube
    return x.clone() if x.data_ptr() == src.data_ptr() else x.contiguous()


def retained_voxels(mask: np.ndarray, params: ViewParams) -> int:
    """How many foreground voxels of ``mask`` survive a view's spatial transforms.

    Rotations permute voxels; only the crop removes any. The count is taken on the rotated mask inside
    the crop window, before the resize, so it counts original voxels (nearest-neighbour upsampling
    repeats some of them, which would inflate a count taken after the resize). For a view resampled from
    a context cube (3-D rotation), ``mask`` is the context's and the count is
    :func:`~.geometry.retained_voxels_affine`.

    Args:
        mask: ``[S, S, S]`` (or ``[C, C, C]`` context) binary mask of one component.
        params: a length-1 :class:`ViewParams`.

    Returns:
        The number of the mask's voxels inside the view.
    """
    if mask.ndim != 3 or len(params) != 1:
        raise ValueError(
            f"retained_voxels: need a [S, S, S] mask and one cube's parameters, got {mask.shape}, {len(params)}"
        )
    if params.resampled[0]:
        from .geometry import retained_voxels_affine

        return retained_voxels_affine(mask, params.affine[0], params.offset[0], int(params.crop_size[0, 0]))
    # np.rot90 returns a view and follows the same convention as torch.rot90 (used by MONAI Rotate90)
    rotated = np.rot90(mask, int(params.rot_k[0]), axes=ROTATION_PLANES[int(params.rot_plane[0])])
    sl = tuple(slice(int(a), int(a + n)) for a, n in zip(params.crop_start[0], params.crop_size[0]))
    return int(np.count_nonzero(rotated[sl]))
