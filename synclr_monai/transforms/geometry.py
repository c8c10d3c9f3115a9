"""One resample per view: 3-D rotation, flips, zoom and translation from a larger context cube.

A view of the stronger 3-D augmentation is cut from a context cube of edge C (larger than the cube
edge S, :meth:`~synclr_monai.transforms.config.AugmentConfig.context_size`) by ONE resample, so the
rotation, the flips, the zoom and the translation cost one interpolation, and no rotated corner reaches
past the context (no empty corners). The map is MONAI's ``Affine`` convention in voxel units: the output
voxel ``o`` samples the context at ``affine @ (o - c_S) + offset + c_C``, with ``c_S = (S - 1) / 2`` and
``c_C = (C - 1) / 2`` the centres (``align_corners=True``). The raw channel is interpolated trilinearly,
the masks by nearest neighbour, so they stay binary.

- Per sample (:func:`affine_resample`): MONAI's ``Affine`` (``spatial_size`` S, zero padding).
- Batched (:func:`batched_affine_resample`): ``torch.nn.functional.affine_grid`` with one matrix per
  cube and one ``grid_sample`` per interpolation mode, on the batch's device. MONAI's ``Affine`` builds
  its own grid and has no per-sample matrix for a batch, hence this one; it is tested against MONAI.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.transforms import Affine

from .config import RAW_CHANNEL
from .functional import as_float_tensor

__all__ = [
    "affine_resample",
    "batched_affine_resample",
    "batched_affine_resample_split",
    "retained_voxels_affine",
    "sections_and_resample",
]


def _homogeneous(affine: np.ndarray, offset: np.ndarray) -> torch.Tensor:
    m = np.eye(4)
    m[:3, :3] = np.asarray(affine, dtype=np.float64).reshape(3, 3)
    m[:3, 3] = np.asarray(offset, dtype=np.float64).reshape(3)
    return torch.as_tensor(m)


def affine_resample(
    img: NdarrayOrTensor,
    affine: np.ndarray,
    offset: np.ndarray,
    out_size: int,
    linear_channels: int | Sequence[int] = RAW_CHANNEL,
) -> torch.Tensor:
    """Resample a ``[K, C, C, C]`` context into a ``[K, S, S, S]`` view with MONAI's ``Affine``.

    Args:
        img: the context cube (channel first).
        affine: ``[3, 3]`` map from centred output voxels to centred context voxels (``z, y, x``).
        offset: ``[3]`` translation in context voxels.
        out_size: the view's edge S.
        linear_channels: channels interpolated trilinearly; the others (the masks) by nearest neighbour.

    Returns:
        ``[K, S, S, S]`` float32; voxels that map outside the context are 0.
    """
    x = as_float_tensor(img)
    lin = {int(c) for c in np.atleast_1d(linear_channels)}
    out = torch.empty((x.shape[0], out_size, out_size, out_size), dtype=torch.float32, device=x.device)
    matrix = _homogeneous(affine, offset)
    for mode, idx in (("bilinear", sorted(lin)), ("nearest", [c for c in range(x.shape[0]) if c not in lin])):
        if idx:
            resample = Affine(affine=matrix, spatial_size=(out_size,) * 3, mode=mode, padding_mode="zeros", image_only=True)
            out[idx] = as_float_tensor(resample(x[idx]))
    return out


def _affine_grid(
    affine: np.ndarray, offset: np.ndarray, b: int, c: int, out_size: int, device: torch.device
) -> torch.Tensor:
    """``affine_grid`` of B maps from centred output voxels (z, y, x) to a context of edge C."""
    half_out, half_in = (out_size - 1) / 2.0, (c - 1) / 2.0
    # affine_grid maps normalised output (x, y, z) to normalised input (x, y, z); ours maps (z, y, x) voxels
    rev = [2, 1, 0]
    lin = np.asarray(affine, dtype=np.float64).reshape(b, 3, 3)[:, rev][:, :, rev] * (half_out / max(half_in, 1e-12))
    trans = np.asarray(offset, dtype=np.float64).reshape(b, 3)[:, rev] / max(half_in, 1e-12)
    theta = torch.as_tensor(np.concatenate([lin, trans[:, :, None]], axis=2), dtype=torch.float32).to(device)
    return F.affine_grid(theta, [b, 1, out_size, out_size, out_size], align_corners=True)


def _check_contexts(x: torch.Tensor, name: str) -> int:
    c = int(x.shape[-1])
    if x.ndim != 5 or x.shape[2:] != (c, c, c):
        raise ValueError(f"{name}: expected cubic contexts [B, K, C, C, C], got {tuple(x.shape)}")
    return c


def batched_affine_resample(
    x: torch.Tensor,
    affine: np.ndarray,
    offset: np.ndarray,
    out_size: int,
    linear_channels: int | Sequence[int] = RAW_CHANNEL,
) -> torch.Tensor:
    """:func:`affine_resample` for a batch ``[B, K, C, C, C]``, one matrix per cube, on the batch's device.

    Args:
        x: the context cubes.
        affine: ``[B, 3, 3]`` maps (``z, y, x``).
        offset: ``[B, 3]`` translations in context voxels.
        out_size: the views' edge S.
        linear_channels: channels interpolated trilinearly; the others by nearest neighbour.

    Returns:
        ``[B, K, S, S, S]`` float32.
    """
    c = _check_contexts(x, "batched_affine_resample")
    b, k = int(x.shape[0]), int(x.shape[1])
    grid = _affine_grid(affine, offset, b, c, out_size, x.device)
    src = x.to(torch.float32)
    lin_idx = sorted({int(i) for i in np.atleast_1d(linear_channels)})
    near_idx = [i for i in range(k) if i not in lin_idx]
    out = torch.empty((b, k, out_size, out_size, out_size), dtype=torch.float32, device=x.device)
    for mode, idx in (("bilinear", lin_idx), ("nearest", near_idx)):
        if idx:
            # a run of channels is a view (no copy of the large context)
            sel = slice(idx[0], idx[-1] + 1) if idx == list(range(idx[0], idx[-1] + 1)) else idx
            out[:, sel] = F.grid_sample(src[:, sel], grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out


def batched_affine_resample_split(
    raw: torch.Tensor, masks: torch.Tensor, affine: np.ndarray, offset: np.ndarray, out_size: int
) -> torch.Tensor:
    """:func:`batched_affine_resample` of the contexts ``cat([raw, masks], 1)`` without concatenating them.

    The raw channel and the masks may live in different tensors (e.g. a section-jittered copy of the raw
    beside the caller's masks, :func:`~.artefacts.section_artefacts`); joining them would copy the whole
    context for one resample.

    Args:
        raw: ``[B, 1, C, C, C]``, interpolated trilinearly.
        masks: ``[B, K-1, C, C, C]``, by nearest neighbour (K-1 may be 0).
        affine, offset, out_size: as :func:`batched_affine_resample`.

    Returns:
        ``[B, K, S, S, S]`` float32.
    """
    c = _check_contexts(raw, "batched_affine_resample_split")
    if raw.shape[1] != 1 or masks.shape[0] != raw.shape[0] or masks.shape[2:] != raw.shape[2:]:
        raise ValueError(
            f"batched_affine_resample_split: raw {tuple(raw.shape)} and masks {tuple(masks.shape)} do not match"
        )
    b, k = int(raw.shape[0]), 1 + int(masks.shape[1])
    grid = _affine_grid(affine, offset, b, c, out_size, raw.device)
    out = torch.empty((b, k, out_size, out_size, out_size), dtype=torch.float32, device=raw.device)
    out[:, :1] = F.grid_sample(raw.to(torch.float32), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if k > 1:
        masks = masks.to(torch.float32)
        out[:, 1:] = F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=True)
    return out


def sections_and_resample(x: torch.Tensor, params, chunk: int | None = None) -> torch.Tensor:
    """A view's first steps on its contexts: EM section artefacts, then (resampled views) the one resample.

    The artefacts happen before the rotation, as in the microscope. They copy only what they change
    (:func:`~.artefacts.section_artefacts`), and the resample reads that copy beside the caller's masks
    (:func:`batched_affine_resample_split`), so no whole context is copied. Shared by the per-sample and the
    batched path.

    Args:
        x: ``[B, K, C, C, C]`` contexts (or cubes, for views that are not resampled); left unchanged.
        params: the B cubes' :class:`~.params.ViewParams`.
        chunk: cubes resampled together when there are section artefacts (None: all; 1 on the CPU keeps the
            copies to one cube's raw).

    Returns:
        ``[B, K, S, S, S]`` float32, a new tensor, or ``x`` itself when neither step is drawn.
    """
    from .artefacts import section_artefacts

    p = params
    sections = bool(np.any(p.section_std) or np.any(p.blackout) or np.any(p.misalign))
    if not np.any(p.resampled):
        if not sections:
            return x
        return torch.cat(section_artefacts(x, p.section_std, p.blackout, p.misalign, p.section_seed), dim=1)
    s = int(p.crop_size[0, 0])
    if not sections:
        return batched_affine_resample(x, p.affine, p.offset, s)
    b = int(x.shape[0])
    step = b if chunk is None else max(int(chunk), 1)
    out = torch.empty((b, int(x.shape[1]), s, s, s), dtype=torch.float32, device=x.device)
    for lo in range(0, b, step):
        r = slice(lo, min(lo + step, b))
        raw, masks = section_artefacts(x[r], p.section_std[r], p.blackout[r], p.misalign[r], p.section_seed[r])
        out[r] = batched_affine_resample_split(raw, masks, p.affine[r], p.offset[r], s)
    return out


def retained_voxels_affine(mask: np.ndarray, affine: np.ndarray, offset: np.ndarray, out_size: int) -> int:
    """How many foreground voxels of a context mask land inside a view (counted in context voxels).

    Each voxel is mapped by the inverse of the view's map and counted when its nearest output voxel lies
    in the view: the count of original voxels, like
    :func:`~synclr_monai.transforms.functional.retained_voxels` for the 90° path.

    Args:
        mask: ``[C, C, C]`` bool, one component inside the context.
        affine: ``[3, 3]`` the view's map.
        offset: ``[3]`` the view's translation.
        out_size: the view's edge S.

    Returns:
        The number of the mask's voxels inside the view.
    """
    pts = np.argwhere(mask).astype(np.float64)
    if not len(pts):
        return 0
    c = (mask.shape[0] - 1) / 2.0
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64).reshape(3, 3))
    o = (pts - c - np.asarray(offset, dtype=np.float64).reshape(1, 3)) @ inv.T + (out_size - 1) / 2.0
    return int(np.count_nonzero(np.all((o > -0.5) & (o < out_size - 0.5), axis=1)))
