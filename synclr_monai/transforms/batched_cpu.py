"""The CPU route of the batched views: each cube of a batch in one fused pass (lab views, chunks of one cube).

On the CPU with chunks of one cube (the default there) and ``crop_method`` other than ``"gather"``, each
cube goes through one fused pass (:func:`apply_view_cpu_cube`): the rotation stays a NumPy
view that the first step reading the voxels consumes (the intensity jitter, or the copy of the crop
window), a cropped cube's blur covers only its window plus the kernel's reach, the trilinear resize runs
as ``interpolate``'s bilinear kernel per z plane plus a linear pass along z, the masks' nearest resize
as three index gathers, and the results land straight in the output; temporaries live in buffers
reused from cube to cube. The masks come out identical; the raw channel differs from the other route
only by float32 rounding (the tests hold both to the per-sample path). It saves memory passes, which
bound the CPU's throughput.
The device route (:mod:`.batched`) and this one are both held to the per-sample path by the tests.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from .batched import _gaussian_tails, gaussian_kernels_1d
from .config import CLEFT_CHANNEL, RAW_CHANNEL, ROTATION_PLANES
from .params import ViewParams

__all__ = ["Scratch", "apply_view_cpu_cube"]


def _blur_cube(y: torch.Tensor, kernels: list[list[float]], out: torch.Tensor | None = None) -> torch.Tensor:
    """Separable zero-padded blur of one contiguous ``[Z, Y, X]`` volume, one 1-D kernel per axis.

    The arithmetic of :func:`batched_raw_gaussian_smooth_` for one cube, with the taps as Python floats
    (``add_(alpha=w)``): broadcasting a per-cube weight tensor costs a slower kernel for nothing here.
    ``out`` (not ``y``) receives the last pass.
    """
    for axis, ker in enumerate(kernels):
        t = (len(ker) - 1) // 2
        size = y.shape[axis]
        acc = torch.mul(y, ker[t], out=out) if out is not None and axis == 2 else y * ker[t]
        for o in range(1, min(t, size - 1) + 1):
            acc.narrow(axis, 0, size - o).add_(y.narrow(axis, o, size - o), alpha=ker[t + o])
            acc.narrow(axis, o, size - o).add_(y.narrow(axis, 0, size - o), alpha=ker[t - o])
        y = acc
    return y


def _cube_kernels(sigma: np.ndarray) -> list[list[float]]:
    """MONAI's kernel per spatial axis for one cube's ``[3]`` sigmas, each at its own length."""
    ker = gaussian_kernels_1d(sigma).tolist()
    t_max = (len(ker[0]) - 1) // 2
    return [row[t_max - int(t) : t_max + int(t) + 1] for row, t in zip(ker, _gaussian_tails(sigma))]


@functools.lru_cache(maxsize=256)
def _probe_linear(n: int, out: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """``interpolate(mode="linear")``'s own source rows and weights for resizing ``n`` to ``out``.

    Read off ``interpolate`` applied to the identity (column j holds output j's weights), rather than
    recomputed: near a whole source index, a float32 rounding of the position moves the weight by an
    ulp of the index (~1e-5 at 64), which a different evaluation order (e.g. FMA) would show.

    Returns:
        ``(i0, i1, w0, w1)``: output j is ``w0[j] * v[i0[j]] + w1[j] * v[i1[j]]``; weights as ``[out, 1, 1]``.
    """
    w = F.interpolate(torch.eye(n, dtype=torch.float32).unsqueeze(0), size=out, mode="linear")[0]  # [n, out]
    cols = torch.arange(out)
    i0 = (w != 0).to(torch.int8).argmax(dim=0)  # the first source row with a weight
    i1 = torch.clamp(i0 + 1, max=n - 1)
    w0 = w[i0, cols]
    w1 = torch.where(i1 != i0, w[i1, cols], torch.zeros(()))
    return i0.numpy(), i1.numpy(), w0.view(-1, 1, 1), w1.view(-1, 1, 1)


@functools.lru_cache(maxsize=256)
def _probe_nearest(n: int, out: int) -> np.ndarray:
    """``interpolate(mode="nearest")``'s source index of each output, for resizing ``n`` to ``out``."""
    ramp = torch.arange(n, dtype=torch.float32).view(1, 1, n)
    return F.interpolate(ramp, size=out, mode="nearest").view(-1).to(torch.long).numpy()


class Scratch:
    """Flat float32 buffers reused from cube to cube, so that temporaries stay hot and fault no pages."""

    def __init__(self, s: int) -> None:
        n = s**3
        self.region = np.empty(n, dtype=np.float32)
        self.masks = np.empty(2 * n, dtype=np.float32)
        self.tmp1 = np.empty(2 * n, dtype=np.float32)
        self.tmp2 = np.empty(2 * n, dtype=np.float32)

    @staticmethod
    def view(buf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return buf[: int(np.prod(shape))].reshape(shape)


def apply_view_cpu_cube(src: np.ndarray, dst: torch.Tensor, p: ViewParams, i: int, scratch: Scratch) -> None:
    """View ``p[i]`` of one cube on the CPU, written straight into ``dst`` (``[3, S, S, S]``, contiguous).

    The steps and arithmetic of :func:`batched_apply_view`, fused so that the cube crosses memory once:
    the rotation is a NumPy view read by the first step that needs the voxels (the intensity jitter, or
    the copy of the crop window), and a cropped cube only ever materialises its window (plus the blur's
    reach: blurring the window with a margin of the kernel's tail, or up to the cube's zero-padded
    border, gives the full blur's values inside the window). Temporaries live in ``scratch``.
    """
    s = int(src.shape[1])
    k = int(p.rot_k[i]) % 4
    if k:
        a, b = ROTATION_PLANES[int(p.rot_plane[i])]
        src = np.rot90(src, k, axes=(a + 1, b + 1))
    d = dst.numpy()
    scale, shift = float(p.scale[i]), float(p.shift[i])
    jitter = scale != 1.0 or shift != 0.0
    kernels = _cube_kernels(p.sigma[i]) if p.blur[i] else None
    start, size = p.crop_start[i].astype(np.int64), p.crop_size[i].astype(np.int64)
    masks = 1 if p.dropout[i] else 2  # a dropped cleft is never read
    if p.dropout[i]:
        d[CLEFT_CHANNEL] = 0

    if np.all(size == s):
        if jitter:
            # the rotated copy and the jitter in one pass (elementwise steps commute with a permutation)
            np.multiply(src[RAW_CHANNEL], np.float32(scale), out=d[RAW_CHANNEL])
            np.add(d[RAW_CHANNEL], np.float32(shift), out=d[RAW_CHANNEL])
        else:
            np.copyto(d[RAW_CHANNEL], src[RAW_CHANNEL])
        np.copyto(d[1 : 1 + masks], src[1 : 1 + masks])
        if kernels is not None:
            raw = dst[RAW_CHANNEL]
            _blur_cube(raw.clone(), kernels, out=raw)
        return

    end = start + size
    # masks: the rotated window copied once (contiguous), then nearest neighbour as three index gathers,
    # innermost axis first, on the smallest volumes
    win = (slice(start[0], end[0]), slice(start[1], end[1]), slice(start[2], end[2]))
    m = scratch.view(scratch.masks, (masks, *size.tolist()))
    np.copyto(m, src[(slice(1, 1 + masks), *win)])
    idx = [_probe_nearest(int(size[ax]), s) for ax in range(3)]
    m1 = scratch.view(scratch.tmp1, (masks, size[0], size[1], s))
    np.take(m, idx[2], axis=3, out=m1, mode="clip")
    m2 = scratch.view(scratch.tmp2, (masks, size[0], s, s))
    np.take(m1, idx[1], axis=2, out=m2, mode="clip")
    np.take(m2, idx[0], axis=1, out=d[1 : 1 + masks], mode="clip")

    # raw: the window plus the blur's reach, jittered while copied out of the rotated view
    tails = np.array([(len(kr) - 1) // 2 for kr in kernels] if kernels is not None else [0, 0, 0])
    lo, hi = np.maximum(start - tails, 0), np.minimum(end + tails, s)
    region = src[RAW_CHANNEL, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    r = scratch.view(scratch.region, region.shape)
    if jitter:
        np.multiply(region, np.float32(scale), out=r)
        np.add(r, np.float32(shift), out=r)
    else:
        np.copyto(r, region)
    raw = torch.from_numpy(r)
    if kernels is not None:
        raw = _blur_cube(raw, kernels)
    w = start - lo
    raw = raw[w[0] : w[0] + size[0], w[1] : w[1] + size[1], w[2] : w[2] + size[2]]
    # trilinear resize (align_corners=False) as bilinear over (y, x) per z plane, then linear along z:
    # trilinear interpolation is separable, and interpolate's 2-D kernel is faster than its 3-D one
    planes = F.interpolate(raw.unsqueeze(0), size=(s, s), mode="bilinear", align_corners=False)[0].numpy()
    i0, i1, w0, w1 = _probe_linear(int(size[0]), s)
    z0 = scratch.view(scratch.tmp1, (s, s, s))
    z1 = scratch.view(scratch.tmp2, (s, s, s))
    np.take(planes, i0, axis=0, out=z0, mode="clip")
    np.take(planes, i1, axis=0, out=z1, mode="clip")
    # w0 * v0 + w1 * v1, the order of interpolate's own linear step
    torch.mul(torch.from_numpy(z0), w0, out=dst[RAW_CHANNEL]).addcmul_(torch.from_numpy(z1), w1)
