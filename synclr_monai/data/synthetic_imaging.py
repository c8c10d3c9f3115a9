"""How the synthetic tissue is imaged: per-bbox staining and anisotropic sections.

**Staining.** Real EM sessions differ in stain density, detector gain and offset, focus and dose, so
two bboxes of one dataset rarely share their gray levels. Every synthetic bbox draws one
:class:`Staining` profile (its row of ``bbox_staining.csv``) from :data:`STAINING_RANGES`;
``strength`` scales every draw's distance from the range centre (:data:`STAINING_CENTRE`): 0 stains
all bboxes alike (the centre), 1 uses the full ranges, up to 2 widens them. The profile is applied in
this order (:func:`image_volume`), after the tissue texture (fine grain) is added:

1. ``illumination``: a slowly varying additive field (std in gray levels) - uneven stain and beam;
2. section integration (anisotropic voxels only, :func:`downsample_mean`);
3. ``blur_sigma``: the Gaussian point-spread sigma, in voxels of the generation grid (scaled per
   axis by the voxel size, so a thick section is barely blurred across z);
4. ``gamma``, ``contrast``, ``brightness``: ``128 + brightness + contrast * (255 * (I / 255) ** gamma - 128)``;
5. ``noise_std``: Gaussian detector noise (gray levels) per written voxel; then rounding to uint8.

**Anisotropic voxels.** The generator draws on a cubic grid whose pitch is the finest voxel size
(:func:`generation_grid`); an axis with ``f`` times coarser voxels is then reduced by averaging
blocks of about ``f`` voxels (a section integrates its thickness), so structures keep their physical
size and span fewer slices. Label volumes are reduced block-wise too (:func:`downsample_labels`): the
most frequent value of each block, except that a block holding any cleft voxel is cleft (a thin
cleft seen in a thick section is still annotated), so every drawn cleft voxel, the sheet's cleft
centres included, stays cleft in the written mask. :func:`block_index` maps a generation-grid
coordinate to its written voxel.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .synthetic_geometry import smooth_noise

__all__ = [
    "Staining",
    "STAINING_RANGES",
    "STAINING_CENTRE",
    "MAX_STAINING_STRENGTH",
    "MAX_ANISOTROPY",
    "draw_staining",
    "image_volume",
    "check_voxel_size",
    "generation_grid",
    "block_edges",
    "block_index",
    "downsample_mean",
    "downsample_labels",
]

GRAIN_STD = 9.0  # gray levels of the fine granular texture of stained tissue (same in every bbox)
MAX_STAINING_STRENGTH = 2.0
MAX_ANISOTROPY = 20.0  # largest ratio between the coarsest and the finest voxel size


@dataclass(frozen=True)
class Staining:
    """One bbox's staining and imaging profile (see the module docstring for how it is applied).

    Args:
        brightness: gray levels added after the contrast gain.
        contrast: gain around mid-gray 128.
        gamma: exponent of the tone curve ``255 * (I / 255) ** gamma`` (< 1 lightens mid-tones).
        noise_std: std of the Gaussian detector noise, gray levels.
        blur_sigma: point-spread Gaussian sigma in generation-grid voxels.
        illumination: std of the slowly varying illumination field, gray levels.
    """

    brightness: float
    contrast: float
    gamma: float
    noise_std: float
    blur_sigma: float
    illumination: float

    def tone(self, values: np.ndarray | float) -> np.ndarray:
        """The gray-level mapping (gamma, contrast, brightness) without noise, as float32."""
        x = np.clip(np.asarray(values, np.float32), 0.0, 255.0) * np.float32(1.0 / 255.0)
        if self.gamma != 1.0:
            x = np.power(x, np.float32(self.gamma))
        return np.float32(self.contrast * 255.0) * x + np.float32(128.0 + self.brightness - 128.0 * self.contrast)


# documented ranges of the per-bbox draws (strength 1); gamma is drawn log-uniformly
STAINING_RANGES: dict[str, tuple[float, float]] = {
    "brightness": (-20.0, 20.0),
    "contrast": (0.7, 1.3),
    "gamma": (0.8, 1.25),
    "noise_std": (4.0, 14.0),
    "blur_sigma": (0.5, 1.2),
    "illumination": (4.0, 16.0),
}
_LOG_FIELDS = frozenset({"gamma"})
STAINING_CENTRE = Staining(
    **{
        k: float(math.sqrt(lo * hi)) if k in _LOG_FIELDS else (lo + hi) / 2.0
        for k, (lo, hi) in STAINING_RANGES.items()
    }
)


def draw_staining(rng: np.random.Generator, strength: float = 1.0) -> Staining:
    """Draw one bbox's profile: uniform in :data:`STAINING_RANGES`, pulled to the centre by ``strength``.

    The same random numbers are drawn whatever the strength, so strength 0 and 1 differ only in the
    profile, not in the noise realisations that follow.

    Args:
        rng: random generator.
        strength: 0 (every bbox gets :data:`STAINING_CENTRE`) .. 1 (the ranges) .. 2 (twice as wide).

    Returns:
        The :class:`Staining`.
    """
    u = rng.random(len(STAINING_RANGES)).tolist()
    values = {}
    for (name, (lo, hi)), ui in zip(STAINING_RANGES.items(), u):
        centre = getattr(STAINING_CENTRE, name)
        if name in _LOG_FIELDS:
            drawn = math.exp(math.log(lo) + ui * (math.log(hi) - math.log(lo)))
            values[name] = math.exp(math.log(centre) + strength * (math.log(drawn) - math.log(centre)))
        else:
            values[name] = centre + strength * ((lo + ui * (hi - lo)) - centre)
    for name in ("noise_std", "blur_sigma", "illumination"):  # strength > 1 may overshoot zero
        values[name] = max(0.0, values[name])
    values["contrast"] = max(0.05, values["contrast"])
    return Staining(**values)


def image_volume(
    raw: np.ndarray,
    staining: Staining,
    edges: Sequence[np.ndarray] | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Turn the drawn tissue (float32 gray levels, generation grid) into the written uint8 EM volume.

    Adds the fine grain and the illumination field on the generation grid, integrates sections
    (``edges`` from :func:`block_edges`, None for isotropic voxels), then blurs, applies the tone
    curve and adds noise on the written grid (module docstring). ``raw`` is modified in place.

    Args:
        raw: float32 ``[Z, Y, X]`` on the generation grid.
        staining: the bbox's profile.
        edges: per-axis block edges, or None when the written grid is the generation grid.
        rng: random generator.

    Returns:
        uint8 volume of the written shape.
    """
    shape = raw.shape
    grain = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 1.0)
    raw += np.float32(GRAIN_STD / max(float(grain.std()), 1e-6)) * grain
    del grain
    raw += np.float32(staining.illumination) * smooth_noise(shape, max(16.0, min(shape) / 2.0), rng)
    if edges is not None:
        raw = downsample_mean(raw, edges)
        factors = [(e[-1] - e[0]) / (len(e) - 1) for e in edges]
        sigma = [staining.blur_sigma / f for f in factors]
    else:
        sigma = staining.blur_sigma
    raw = ndimage.gaussian_filter(raw, sigma)
    raw = staining.tone(raw)
    raw += np.float32(staining.noise_std) * rng.standard_normal(raw.shape, dtype=np.float32)
    return np.clip(np.rint(raw), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# anisotropic voxels


def check_voxel_size(voxel_size: Sequence[float]) -> tuple[float, float, float]:
    """Validate ``(z, y, x)`` voxel sizes: three finite positive numbers within :data:`MAX_ANISOTROPY`.

    Raises:
        ValueError: naming the bad value.
    """
    try:
        out = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError) as err:
        raise ValueError(f"voxel_size must be three positive numbers (Z, Y, X) in nm, got {voxel_size!r}") from err
    if len(out) != 3 or not all(math.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"voxel_size must be three positive numbers (Z, Y, X) in nm, got {voxel_size!r}")
    if max(out) / min(out) > MAX_ANISOTROPY:
        raise ValueError(
            f"voxel_size {out}: the coarsest axis is {max(out) / min(out):.1f} times the finest; at most "
            f"{MAX_ANISOTROPY:g} is supported (the volume is drawn at the finest pitch)"
        )
    return out  # type: ignore[return-value]


def generation_grid(shape: Sequence[int], voxel_size: Sequence[float]) -> tuple[tuple[int, int, int], list | None]:
    """The cubic grid the tissue is drawn on, and how it maps to the written voxels.

    The grid pitch is ``min(voxel_size)``; axis ``i`` has ``round(shape[i] * voxel_size[i] / pitch)``
    voxels.

    Args:
        shape: written ``(Z, Y, X)``.
        voxel_size: ``(z, y, x)`` in nm (validated).

    Returns:
        ``(generation_shape, edges)``; ``edges`` is None for isotropic voxels (nothing to reduce),
        else the per-axis block edges of :func:`block_edges`.
    """
    pitch = min(voxel_size)
    gen = tuple(max(int(n), int(math.floor(n * v / pitch + 0.5))) for n, v in zip(shape, voxel_size))
    if gen == tuple(int(n) for n in shape):
        return gen, None  # type: ignore[return-value]
    return gen, [block_edges(g, int(n)) for g, n in zip(gen, shape)]  # type: ignore[return-value]


def block_edges(n_fine: int, n_coarse: int) -> np.ndarray:
    """Edges ``e[0] = 0 < e[1] < ... < e[n_coarse] = n_fine``: coarse voxel ``i`` covers ``[e[i], e[i+1])``."""
    ratio = n_fine / n_coarse
    return np.floor(np.arange(n_coarse + 1) * ratio + 0.5).astype(np.int64)


def block_index(coord: Sequence[int], edges: Sequence[np.ndarray] | None) -> np.ndarray:
    """The written voxel holding a generation-grid voxel ``coord`` (``(z, y, x)``)."""
    coord = np.asarray(coord, np.int64)
    if edges is None:
        return coord
    return np.array([int(np.searchsorted(e, c, side="right")) - 1 for e, c in zip(edges, coord)], np.int64)


def downsample_mean(volume: np.ndarray, edges: Sequence[np.ndarray]) -> np.ndarray:
    """Average each block (a section integrates its thickness); float32."""
    out = volume
    for axis, e in enumerate(edges):
        if len(e) - 1 == out.shape[axis]:
            continue
        sizes = np.diff(e).astype(np.float32)
        out = np.add.reduceat(out, e[:-1], axis=axis, dtype=np.float32)
        out /= sizes.reshape([-1 if a == axis else 1 for a in range(out.ndim)])
    return np.ascontiguousarray(out, dtype=np.float32)


def _block_members(volume: np.ndarray, edges: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One written-shape array per position inside the blocks (short blocks repeat their last voxel)."""
    per_axis = []
    for e in edges:
        starts, stops = e[:-1], e[1:]
        k = int(np.max(stops - starts))
        per_axis.append([np.minimum(starts + a, stops - 1) for a in range(k)])
    return [volume[np.ix_(iz, iy, ix)] for iz, iy, ix in itertools.product(*per_axis)]


def _mode(members: list[np.ndarray]) -> np.ndarray:
    """Per voxel, the most frequent value among the members (ties: the earliest member)."""
    best, best_count = members[0].copy(), np.zeros(members[0].shape, np.int32)
    for a in members:
        count = np.zeros(a.shape, np.int32)
        for b in members:
            count += a == b
        better = count > best_count
        best[better] = a[better]
        best_count[better] = count[better]
    return best


def downsample_labels(
    volume: np.ndarray, edges: Sequence[np.ndarray], priority: Sequence[int] = ()
) -> np.ndarray:
    """Reduce a label volume block-wise, keeping its values valid.

    Args:
        volume: integer labels on the generation grid.
        edges: per-axis block edges.
        priority: label values that win a block if present at all (e.g. the cleft values); among
            them, the most frequent in the block.

    Returns:
        Labels of the written shape, same dtype.
    """
    members = _block_members(volume, edges)
    out = _mode(members)
    if priority:
        prio = [np.where(np.isin(m, list(priority)), m, 0) for m in members]
        hit = np.zeros(out.shape, bool)
        for p in prio:
            hit |= p != 0
        if hit.any():
            # most frequent priority value per block: mode over the members, non-priority entries as 0,
            # with 0 counted last so that one priority voxel beats any number of others
            idx = np.nonzero(hit)
            sub = [p[idx] for p in prio]
            best, best_count = np.zeros_like(sub[0]), np.zeros(sub[0].shape, np.int32)
            for a in sub:
                count = np.zeros(a.shape, np.int32)
                for b in sub:
                    count += a == b
                better = (a != 0) & (count > best_count)
                best[better] = a[better]
                best_count[better] = count[better]
            out[idx] = best
    return out
