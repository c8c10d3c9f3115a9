"""The batched two-view augmentation: the per-sample MONAI path, applied to a whole batch in torch.

In training the CPU workers only cut cubes; the batch ``[B, 3, S, S, S]`` is moved to the GPU and
augmented there by :class:`BatchedTwoViewAugment`, with the same random parameters (:mod:`.params`)
and the same arithmetic as the per-sample path (:func:`.functional.apply_view_params`, i.e. MONAI's
``Rotate90``, ``ScaleIntensity``/``ShiftIntensity``, ``GaussianSmooth``, ``SpatialCrop`` + ``Resize``):

- rotation: ``torch.rot90`` per group of cubes sharing (plane, k), at most 12 groups (on the CPU, a
  copy from NumPy's ``np.rot90`` view per cube);
- raw scale-and-shift: one broadcast multiply-add;
- raw blur: MONAI's erf Gaussian kernel built per cube (zero-extended to the batch's longest kernel),
  applied separably with zero padding as MONAI's ``separable_filtering``, each cube with its own kernel;
- crop and resize back: MONAI's ``Resize`` calls ``torch.nn.functional.interpolate``, which takes one
  output grid per call while every cube has its own crop. ``method="gather"`` (the default off the
  CPU) vectorises it: trilinear interpolation is separable, so it runs as three gather-and-lerp passes
  whose source indices and weights reproduce ``interpolate``'s (``align_corners=False``; for the masks
  ``mode="nearest"``: ``floor(dst * in / out)``), offset by each cube's crop start.
  ``method="interpolate"`` (the default on the CPU, where it is about twice as fast) calls
  ``interpolate`` per cube, exactly as MONAI does;
- cleft dropout: one broadcast multiply.

The batch is processed in chunks of ``chunk_size`` cubes (default: 1 on the CPU, the whole batch
elsewhere): on the CPU, temporaries of whole batches (tens of MB) are fresh ``mmap`` allocations whose
page faults cost more than the arithmetic, while per-cube temporaries are recycled by the allocator.
On the CPU with chunks of one cube (the default there) and the lab's views only, each cube takes one fused
pass instead (:mod:`.batched_cpu`).
Everything runs on the cubes' device; the parameters are drawn on the host with numpy (a few numbers
per cube), so grouping needs no device-to-host synchronisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Randomizable

from .artefacts import to_input_mode
from .config import CLEFT_CHANNEL, PRE_CHANNEL, RAW_CHANNEL, ROTATION_PLANES, AugmentConfig
from .params import TwoViewParams, ViewParams, sample_two_view_params

__all__ = [
    "BatchedTwoViewAugment",
    "batched_apply_view",
    "batched_rotate90",
    "batched_raw_intensity_",
    "batched_raw_gaussian_smooth_",
    "batched_crop_resize",
    "batched_mask_dropout_",
    "gaussian_kernels_1d",
]

#: MONAI GaussianFilter's default truncation, in sigmas.
_TRUNCATED = 4.0


def _check_batch(cubes: torch.Tensor) -> int:
    if not isinstance(cubes, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor batch of cubes, got {type(cubes).__name__}")
    if cubes.ndim != 5 or cubes.shape[1] not in (3, 4) or len(set(cubes.shape[2:])) != 1:
        raise ValueError(f"expected a batch of cubes [B, 3 or 4, S, S, S], got shape {tuple(cubes.shape)}")
    if not cubes.is_floating_point():
        raise ValueError(f"expected a floating-point batch of cubes, got {cubes.dtype}")
    return int(cubes.shape[2])


def _index(mask: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.flatnonzero(mask), dtype=torch.long).to(device, non_blocking=True)


def batched_rotate90(
    x: torch.Tensor, k: np.ndarray, plane: np.ndarray, out: torch.Tensor | None = None, use_numpy: bool | None = None
) -> torch.Tensor:
    """Rotate each cube by ``k[b]`` quarter turns in ``ROTATION_PLANES[plane[b]]``.

    On the GPU, cubes sharing (plane, k) are rotated together with ``torch.rot90``. On the CPU each
    cube is copied from NumPy's ``np.rot90`` view: ``torch.rot90`` materialises a flipped copy first
    (torch has no negative strides) and is several times slower than one strided copy.

    Args:
        x: ``[B, C, S, S, S]``.
        k: ``[B]`` quarter turns.
        plane: ``[B]`` plane indices.
        out: where to write the result (not ``x``), or None for a new tensor.
        use_numpy: rotate through NumPy views (CPU tensors only); None: on the CPU.

    Returns:
        The rotated batch (``out`` if given); an exact permutation of each cube's voxels.

    Raises:
        ValueError: ``out`` is ``x``, or ``use_numpy`` for tensors off the CPU.
    """
    if use_numpy is None:
        use_numpy = x.device.type == "cpu"
    elif use_numpy and x.device.type != "cpu":
        raise ValueError("batched_rotate90: use_numpy needs CPU tensors")
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    elif out.data_ptr() == x.data_ptr():
        raise ValueError("batched_rotate90: out must not be the input")
    k = np.asarray(k, dtype=np.int64) % 4
    # a cube that does not turn keeps its plane out of the grouping
    plane = np.where(k == 0, 0, np.asarray(plane, dtype=np.int64))
    if use_numpy:
        src, dst = x.detach().numpy(), out.detach().numpy()
        for i in range(len(k)):
            a, b = ROTATION_PLANES[plane[i]]
            np.copyto(dst[i], np.rot90(src[i], int(k[i]), axes=(a + 1, b + 1)))
        return out
    groups = sorted(set(zip(plane.tolist(), k.tolist())))
    for p, kk in groups:
        whole = len(groups) == 1
        idx = None if whole else _index((plane == p) & (k == kk), x.device)
        sub = x if whole else x.index_select(0, idx)
        if kk:
            a, b = ROTATION_PLANES[p]
            sub = torch.rot90(sub, kk, dims=(a + 2, b + 2))
        if whole:
            out.copy_(sub)
        else:
            out.index_copy_(0, idx, sub)
    return out


def batched_raw_intensity_(
    x: torch.Tensor, scale: np.ndarray, shift: np.ndarray, channel: int = RAW_CHANNEL
) -> torch.Tensor:
    """In place: ``x[b, channel] = x[b, channel] * scale[b] + shift[b]``.

    Args:
        x: ``[B, C, ...]``, modified.
        scale: ``[B]`` scales.
        shift: ``[B]`` shifts.
        channel: the raw channel.

    Returns:
        ``x``.
    """
    if np.all(scale == 1.0) and np.all(shift == 0.0):
        return x
    view = (-1,) + (1,) * (x.ndim - 2)
    s = torch.as_tensor(np.asarray(scale, dtype=np.float32)).to(x.device, non_blocking=True).view(view)
    t = torch.as_tensor(np.asarray(shift, dtype=np.float32)).to(x.device, non_blocking=True).view(view)
    raw = x[:, channel]
    torch.addcmul(t, raw, s, out=raw)
    return x


def _gaussian_tails(sigma: np.ndarray) -> np.ndarray:
    """MONAI's kernel half-length ``int(max(4 * sigma, 0.5) + 0.5)`` for each sigma, as ``[N]`` int64.

    MONAI computes it from ``float(sigma)`` of a float32 tensor, in double precision; so does this.
    """
    sig32 = np.asarray(sigma, dtype=np.float32).reshape(-1)
    return np.floor(np.maximum(sig32.astype(np.float64) * _TRUNCATED, 0.5) + 0.5).astype(np.int64)


def gaussian_kernels_1d(sigma: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """MONAI's ``gaussian_1d(sigma, truncated=4.0, approx="erf")`` for many sigmas at once.

    Each kernel has MONAI's length ``2 * tail + 1`` with ``tail = int(max(4 * sigma, 0.5) + 0.5)`` and is
    zero-extended on both sides to the longest one, so that all share one centre.

    Args:
        sigma: ``[N]`` positive sigmas.
        device: where to build the kernels.

    Returns:
        ``[N, 2 * T + 1]`` float32 kernels, T the largest tail.
    """
    sig32 = np.asarray(sigma, dtype=np.float32).reshape(-1)
    tails = _gaussian_tails(sig32)
    t_max = int(tails.max()) if len(tails) else 0
    s = torch.as_tensor(sig32).to(device, non_blocking=True).view(-1, 1)
    pos = torch.arange(-t_max, t_max + 1, dtype=torch.float32, device=device).view(1, -1)
    t = 0.70710678 / torch.abs(s)
    ker = (0.5 * ((t * (pos + 0.5)).erf() - (t * (pos - 0.5)).erf())).clamp(min=0)
    keep = pos.abs() <= torch.as_tensor(tails, dtype=torch.float32).to(device, non_blocking=True).view(-1, 1)
    return ker * keep


def batched_raw_gaussian_smooth_(
    x: torch.Tensor, blur: np.ndarray, sigma: np.ndarray, channel: int = RAW_CHANNEL
) -> torch.Tensor:
    """In place: Gaussian-blur the raw channel of the cubes with ``blur[b]``, sigma ``sigma[b]`` per axis.

    Separable like MONAI's ``separable_filtering`` (first spatial axis first, zero padding), written
    as a sum of shifted slices weighted per cube: a grouped ``conv3d`` with one group per cube would
    do the same, but is several times slower on the CPU for kernels this short (9 taps at sigma 1).

    Args:
        x: ``[B, C, Z, Y, X]``, modified.
        blur: ``[B]`` bool.
        sigma: ``[B, 3]`` sigma per spatial axis (z, y, x).
        channel: the raw channel.

    Returns:
        ``x``.
    """
    blur = np.asarray(blur, dtype=bool)
    if not blur.any():
        return x
    sel = np.flatnonzero(blur)
    n = len(sel)
    whole = n == x.shape[0]
    i = None if whole else torch.as_tensor(sel, dtype=torch.long).to(x.device, non_blocking=True)
    y = x[:, channel] if whole else x[:, channel].index_select(0, i)  # [n, Z, Y, X]
    sig = np.asarray(sigma, dtype=np.float64).reshape(-1, 3)[sel]
    for axis in range(3):
        ker = gaussian_kernels_1d(sig[:, axis], x.device).to(y.dtype)  # [n, K]
        t = (ker.shape[1] - 1) // 2
        w = ker.view(n, -1, 1, 1, 1)
        dim, size = 1 + axis, y.shape[1 + axis]
        # the last pass of a whole batch writes straight into the raw channel (y is a separate tensor by then)
        dst = x[:, channel] if whole and axis == 2 else None
        acc = torch.mul(y, w[:, t], out=dst) if dst is not None else y * w[:, t]
        # cross-correlation with zero padding, without materialising the padded volume:
        # out[p] += w[t + o] * y[p + o] and w[t - o] * y[p - o], where those voxels exist
        for o in range(1, min(t, size - 1) + 1):
            acc.narrow(dim, 0, size - o).addcmul_(y.narrow(dim, o, size - o), w[:, t + o])
            acc.narrow(dim, o, size - o).addcmul_(y.narrow(dim, 0, size - o), w[:, t - o])
        y = acc
    if not whole:
        x[:, channel].index_copy_(0, i, y)
    return x


def _linear_indices(
    start: torch.Tensor, size: torch.Tensor, out: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``interpolate(mode="linear", align_corners=False)`` source indices and weight, per cube.

    Returns ``(i0, i1, lam)`` of shape ``[n, out]``: output voxel j reads ``(1 - lam) * v[i0] + lam * v[i1]``,
    indices already offset by the crop start.
    """
    size_f = size.to(torch.float32).view(-1, 1)
    scale = size_f / float(out)  # float32, as interpolate's (float)in / out
    dst = torch.arange(out, dtype=torch.float32, device=start.device).view(1, -1)
    src = (scale * (dst + 0.5) - 0.5).clamp(min=0)
    i0 = torch.minimum(src.floor(), size_f - 1)
    lam = (src - i0).clamp(0, 1)
    i0 = i0.to(torch.long)
    i1 = torch.where(i0 < size.view(-1, 1) - 1, i0 + 1, i0)
    off = start.view(-1, 1)
    return i0 + off, i1 + off, lam


def _nearest_indices(start: torch.Tensor, size: torch.Tensor, out: int) -> torch.Tensor:
    """``interpolate(mode="nearest")`` source indices per cube, ``[n, out]``, offset by the crop start."""
    scale = size.to(torch.float32).view(-1, 1) / float(out)
    dst = torch.arange(out, dtype=torch.float32, device=start.device).view(1, -1)
    idx = torch.minimum((dst * scale).floor().to(torch.long), size.view(-1, 1) - 1)
    return idx + start.view(-1, 1)


def _gather_axis(v: torch.Tensor, idx: torch.Tensor, axis: int) -> torch.Tensor:
    """``v[b, c, ..., idx[b, j], ...]`` along spatial ``axis`` (0..2) of ``v`` ``[n, C, Z, Y, X]``."""
    dim = 2 + axis
    shape = [v.shape[0], 1, 1, 1, 1]
    shape[dim] = idx.shape[1]
    expand = list(v.shape)
    expand[dim] = idx.shape[1]
    return torch.gather(v, dim, idx.view(shape).expand(expand))


def _channel_index(channels: list[int]) -> slice | list[int]:
    # a contiguous run of channels as a slice: a view, where a list would copy through advanced indexing
    if channels and channels == list(range(channels[0], channels[-1] + 1)):
        return slice(channels[0], channels[-1] + 1)
    return channels


def _crop_resize_interpolate(
    x: torch.Tensor,
    start: np.ndarray,
    size: np.ndarray,
    sel: np.ndarray,
    lin: list[int],
    near: list[int],
    out: torch.Tensor,
) -> None:
    s = int(x.shape[2])
    ci_lin, ci_near = _channel_index(lin), _channel_index(near)
    for b in sel:
        a, n = start[b], size[b]
        crop = x[b : b + 1, :, a[0] : a[0] + n[0], a[1] : a[1] + n[1], a[2] : a[2] + n[2]]
        # both results are computed from x before out[b] is written, so out may be x
        res_lin = F.interpolate(crop[:, ci_lin], size=(s, s, s), mode="trilinear")[0] if lin else None
        res_near = F.interpolate(crop[:, ci_near], size=(s, s, s), mode="nearest")[0] if near else None
        if lin:
            out[b, ci_lin] = res_lin
        if near:
            out[b, ci_near] = res_near


def _crop_resize_gather(
    x: torch.Tensor,
    start: np.ndarray,
    size: np.ndarray,
    sel: np.ndarray,
    lin: list[int],
    near: list[int],
    out: torch.Tensor,
) -> None:
    s = int(x.shape[2])
    dev = x.device
    i = torch.as_tensor(sel, dtype=torch.long).to(dev, non_blocking=True)
    st = torch.as_tensor(start[sel]).to(dev, non_blocking=True)
    sz = torch.as_tensor(size[sel]).to(dev, non_blocking=True)
    sub = x.index_select(0, i)  # a copy, so out may be x
    res = torch.empty_like(sub)
    if lin:
        v = sub[:, lin]
        for axis in range(3):
            i0, i1, lam = _linear_indices(st[:, axis], sz[:, axis], s)
            shape = [len(sel), 1, 1, 1, 1]
            shape[2 + axis] = s
            v = torch.lerp(_gather_axis(v, i0, axis), _gather_axis(v, i1, axis), lam.to(v.dtype).view(shape))
        res[:, lin] = v
    if near:
        v = sub[:, near]
        for axis in range(3):
            v = _gather_axis(v, _nearest_indices(st[:, axis], sz[:, axis], s), axis)
        res[:, near] = v
    out.index_copy_(0, i, res)


def batched_crop_resize(
    x: torch.Tensor,
    start: np.ndarray,
    size: np.ndarray,
    linear_channels: tuple[int, ...] = (RAW_CHANNEL,),
    method: str = "auto",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop ``[start[b], start[b] + size[b])`` from each cube and resize it back to S.

    Equal to MONAI ``SpatialCrop`` + ``Resize`` per cube: trilinear (``align_corners=False``) for
    ``linear_channels``, nearest for the other channels. Cubes whose crop is the whole cube are copied.

    Args:
        x: ``[B, C, S, S, S]``.
        start: ``[B, 3]`` crop starts.
        size: ``[B, 3]`` crop edges.
        linear_channels: channels interpolated trilinearly.
        method: ``"gather"`` (vectorised over the batch), ``"interpolate"`` (``interpolate`` per cube)
            or ``"auto"`` (interpolate on the CPU, gather elsewhere).
        out: where to write the result (may be ``x``: in place), or None for a new tensor.

    Returns:
        ``[B, C, S, S, S]`` (``out`` if given).

    Raises:
        ValueError: a crop outside the cube or an unknown method.
    """
    s = int(x.shape[2])
    start, size = np.asarray(start, dtype=np.int64).reshape(-1, 3), np.asarray(size, dtype=np.int64).reshape(-1, 3)
    if np.any(start < 0) or np.any(size < 1) or np.any(start + size > s):
        raise ValueError(f"batched_crop_resize: crops {start.tolist()} + {size.tolist()} do not fit in {s}³ cubes")
    if method == "auto":
        method = "interpolate" if x.device.type == "cpu" else "gather"
    if method not in ("gather", "interpolate"):
        raise ValueError(f"batched_crop_resize: method must be 'auto', 'gather' or 'interpolate', got {method!r}")
    if out is None:
        out = x.clone(memory_format=torch.contiguous_format)
    elif out.data_ptr() != x.data_ptr():
        out.copy_(x)
    sel = np.flatnonzero(np.any(size != s, axis=1))
    if len(sel):
        lin = sorted(set(int(c) for c in linear_channels))
        near = [c for c in range(x.shape[1]) if c not in lin]
        fn = _crop_resize_gather if method == "gather" else _crop_resize_interpolate
        fn(x, start, size, sel, lin, near, out)
    return out


def batched_mask_dropout_(x: torch.Tensor, dropout: np.ndarray, channel: int = CLEFT_CHANNEL) -> torch.Tensor:
    """In place: zero channel ``channel`` of the cubes with ``dropout[b]``.

    Args:
        x: ``[B, C, ...]``, modified.
        dropout: ``[B]`` bool.
        channel: the channel to zero (the cleft).

    Returns:
        ``x``.
    """
    dropout = np.asarray(dropout, dtype=bool)
    if dropout.any():
        keep = torch.as_tensor(~dropout, dtype=x.dtype).to(x.device, non_blocking=True)
        x[:, channel].mul_(keep.view((-1,) + (1,) * (x.ndim - 2)))
    return x


def _default_chunk(device: torch.device, batch: int) -> int:
    return 1 if device.type == "cpu" else max(batch, 1)


def _uses_strong_views(p: ViewParams) -> bool:
    """Whether any of the stronger views' steps is drawn for these cubes."""
    return bool(
        np.any(p.resampled) or np.any(p.gamma != 1) or np.any(p.noise_std) or np.any(p.mult_noise_std)
        or np.any(p.section_std) or np.any(p.blackout) or np.any(p.misalign) or np.any(p.cutout_size)
        or np.any(p.morph) or np.any(p.pre_dropout)
    )  # fmt: skip


def _apply_strong_view(cubes: torch.Tensor, p: ViewParams, crop_method: str) -> torch.Tensor:
    """The per-sample order (:func:`~.functional.apply_view_params`) for a batch with the stronger views."""
    from .artefacts import batched_mask_morphology_, batched_raw_gamma_, cutout_, raw_noise_
    from .geometry import sections_and_resample

    x = sections_and_resample(cubes.to(torch.float32), p, _default_chunk(cubes.device, int(cubes.shape[0])))
    if x.data_ptr() == cubes.data_ptr():
        x = x.clone()  # the steps below work in place
    s = int(x.shape[2])
    if np.any(p.rot_k % 4):
        x = batched_rotate90(x, p.rot_k, p.rot_plane)
    batched_raw_intensity_(x, p.scale, p.shift)
    batched_raw_gamma_(x, p.gamma)
    batched_raw_gaussian_smooth_(x, p.blur, p.sigma)
    raw_noise_(x, p.noise_std, p.mult_noise_std, p.noise_seed)
    crop = ~p.resampled & np.any(p.crop_size != s, axis=1)
    if np.any(crop):
        idx = np.flatnonzero(crop)
        rows = torch.as_tensor(idx, device=x.device)
        x[rows] = batched_crop_resize(x[rows], p.crop_start[idx], p.crop_size[idx], method=crop_method)
    batched_mask_dropout_(x, p.dropout)
    batched_mask_dropout_(x, p.pre_dropout, PRE_CHANNEL)
    batched_mask_morphology_(x, p.morph)
    cutout_(x, p.cutout_start, p.cutout_size)
    return x


def batched_apply_view(
    cubes: torch.Tensor,
    params: ViewParams,
    chunk_size: int | None = None,
    crop_method: str = "auto",
    input_mode: str | None = None,
) -> torch.Tensor:
    """Apply one view's parameters to a batch: stream A (rotation, raw jitter, raw blur), then stream B
    (crop and resize back, cleft dropout). The order and arithmetic are those of the per-sample path.

    Args:
        cubes: ``[B, 3, S, S, S]`` float (left unchanged).
        params: parameters of B cubes.
        chunk_size: cubes processed together (None: 1 on the CPU, all elsewhere). On the CPU, chunks
            of one cube with a ``crop_method`` other than ``"gather"`` take the fused per-cube path.
        crop_method: see :func:`batched_crop_resize`.
        input_mode: the encoder's input the views are turned into (None: every channel of the cubes).

    With the stronger 3-D views (or 4-channel cubes) the batch takes the general route
    (:func:`_apply_strong_view`): the same order and arithmetic as the per-sample path, each step over the
    whole batch; the cubes are then contexts ``[B, K, C, C, C]`` and the views ``[B, K, S, S, S]``.

    Returns:
        The view, ``[B, 3, S, S, S]`` float32 on the cubes' device (``[B, 1 or 3, S, S, S]`` with an input mode).

    Raises:
        ValueError: a malformed batch, parameters of another batch size, crops outside the cubes or a
            non-positive chunk size.
    """
    s = _check_batch(cubes)
    b = int(cubes.shape[0])
    if len(params) != b:
        raise ValueError(f"batched_apply_view: {len(params)} parameter sets for a batch of {b}")
    params.check_cube_size(s)
    if _uses_strong_views(params) or cubes.shape[1] != 3 or input_mode not in (None, "channels"):
        out = _apply_strong_view(cubes, params, crop_method)
        return out if input_mode is None else to_input_mode(out, input_mode, params.az_radius).contiguous()
    chunk = _default_chunk(cubes.device, b) if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"batched_apply_view: chunk_size must be >= 1, got {chunk_size}")
    out = torch.empty(cubes.shape, dtype=torch.float32, device=cubes.device)
    if cubes.device.type == "cpu" and chunk == 1 and crop_method != "gather":
        # one cube at a time, every step fused into a single pass over it (see batched_cpu)
        from .batched_cpu import Scratch, apply_view_cpu_cube

        scratch = Scratch(s)
        for i in range(b):
            cube = cubes[i].detach().to(torch.float32).numpy()
            apply_view_cpu_cube(cube, out[i], params, i, scratch)
        return out
    for lo in range(0, b, chunk):
        hi = min(lo + chunk, b)
        p = params.select(slice(lo, hi))
        # the rotation writes the chunk's slice of the output; every later step works in place there
        x = batched_rotate90(cubes[lo:hi].to(torch.float32), p.rot_k, p.rot_plane, out=out[lo:hi])
        batched_raw_intensity_(x, p.scale, p.shift)
        batched_raw_gaussian_smooth_(x, p.blur, p.sigma)
        if np.any(p.crop_size != s):
            batched_crop_resize(x, p.crop_start, p.crop_size, method=crop_method, out=x)
        batched_mask_dropout_(x, p.dropout)
    return out


class BatchedTwoViewAugment(Randomizable):
    """Two views of a batch of cubes, augmented on the batch's device.

    ``aug(cubes) -> (view1, view2)`` draws fresh parameters from ``self.R`` (seed it with
    :meth:`set_random_state`); ``aug(cubes, params)`` applies given parameters, e.g. those a
    ``ContrastiveCubeDataset(views=False)`` drew in its workers (``batch["view_params"]``), which makes
    the device augmentation follow the dataset's seeds and its mask-aware checks. ``aug(cubes, params,
    cubes2)`` makes the second view from ``cubes2`` (the nearby-location positives, ``batch["image2"]``).

    Args:
        config: probabilities and ranges (an :class:`AugmentConfig`, a mapping of its fields, or None
            for the lab defaults).
        chunk_size: cubes processed together (None: 1 on the CPU, the whole batch elsewhere).
        crop_method: ``"auto"``, ``"gather"`` or ``"interpolate"`` (see :func:`batched_crop_resize`).
        input_mode: the encoder's input the views are turned into (None: every channel).
        cube_size: the views' edge S (None: the cubes' edge, for views without a context).
        pose: ``native`` or ``canonical``: with parameters drawn here (none given), the canonical frames are
            found in the cubes' masks (on the host; a dataset's parameters carry them already).
    """

    def __init__(
        self,
        config: AugmentConfig | Mapping[str, Any] | None = None,
        chunk_size: int | None = None,
        crop_method: str = "auto",
        input_mode: str | None = "channels",
        cube_size: int | None = None,
        pose: str = "native",
    ) -> None:
        from .pose import check_pose

        self.pose = check_pose(pose)
        self.config = AugmentConfig.from_any(config)
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"BatchedTwoViewAugment: chunk_size must be >= 1, got {chunk_size}")
        if crop_method not in ("auto", "gather", "interpolate"):
            raise ValueError(
                f"BatchedTwoViewAugment: crop_method must be 'auto', 'gather' or 'interpolate', got {crop_method!r}"
            )
        self.chunk_size = chunk_size
        self.crop_method = crop_method
        self.input_mode = input_mode
        self.cube_size = None if cube_size is None else int(cube_size)

    def sample_params(
        self, batch_size: int, cube_size: int, frames: np.ndarray | None = None, frames2: np.ndarray | None = None
    ) -> TwoViewParams:
        """Draw both views' parameters for a batch from ``self.R`` (``frames``: the canonical pose's, ``[B, 3, 3]``)."""
        return sample_two_view_params(
            self.R, int(batch_size), int(cube_size), self.config, self.input_mode or "channels", frames, frames2
        )

    def frames(self, cubes: torch.Tensor | None) -> np.ndarray | None:
        """The canonical frames of a batch's cubes (None in the native pose or without cubes)."""
        if self.pose != "canonical" or cubes is None:
            return None
        from .pose import canonical_frame

        return np.stack([canonical_frame(c, self.config.voxel_size) for c in cubes.detach().cpu()])

    def randomize(self, data: Any = None) -> None:
        """Unused: parameters are drawn per call by :meth:`sample_params`."""

    @torch.no_grad()
    def __call__(
        self,
        cubes: torch.Tensor,
        params: TwoViewParams | Mapping[str, Any] | None = None,
        cubes2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch.

        Args:
            cubes: ``[B, 3 or 4, C, C, C]`` float tensor on any device (left unchanged; computed in float32).
            params: parameters of the B cubes (a :class:`TwoViewParams` or its (collated) dict form), or
                None to draw them.
            cubes2: the second view's cubes (same shape), or None to make both views from ``cubes``.

        Returns:
            ``(view1, view2)``, each ``[B, 3 or 1, S, S, S]`` float32 on the cubes' device.

        Raises:
            TypeError: ``cubes`` is not a tensor.
            ValueError: a malformed batch, or parameters for another batch size or cube size.
        """
        s = _check_batch(cubes)
        # cubes may arrive in float16 (ContrastiveCubeDataset's cube_dtype: half the host memory and transfer)
        cubes = cubes.float()
        cubes2 = None if cubes2 is None else cubes2.float()
        if cubes2 is not None and tuple(cubes2.shape) != tuple(cubes.shape):
            raise ValueError(f"BatchedTwoViewAugment: cubes2 {tuple(cubes2.shape)} differs from cubes {tuple(cubes.shape)}")
        if params is None:
            params = self.sample_params(cubes.shape[0], self.cube_size or s, self.frames(cubes), self.frames(cubes2))
        elif isinstance(params, Mapping):
            params = TwoViewParams.from_dict(params)
        if len(params) != cubes.shape[0]:
            raise ValueError(f"BatchedTwoViewAugment: {len(params)} parameter sets for a batch of {cubes.shape[0]}")
        kw = {"chunk_size": self.chunk_size, "crop_method": self.crop_method, "input_mode": self.input_mode}
        second = cubes if cubes2 is None else cubes2
        return batched_apply_view(cubes, params.view1, **kw), batched_apply_view(second, params.view2, **kw)
