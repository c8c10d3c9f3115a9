"""The stronger views' voxel-wise steps: EM section artefacts, noise, gamma, cutouts, mask morphology and
the encoder's input mode.

Each function takes a batch ``[B, K, ...]`` and per-cube parameters (:class:`~.params.ViewParams` fields)
and works on the batch's device; the per-sample path calls them with ``B = 1``. They are written here
because MONAI's random transforms draw one parameter set per call and act on every channel, while a
cube's masks must stay binary and the batched path needs one parameter set per cube. Where MONAI has the
deterministic operation (``AdjustContrast`` for gamma, ``dilate``/``erode`` for the masks), the
per-sample path calls MONAI and the batched one is tested against it.

Random fields (noise, the per-section draws) come from the per-view seeds in the parameters: noise from a
CPU ``torch.Generator`` (moved to the device), per-section values from ``numpy.random.RandomState``; so
both paths produce the same voxels given the same parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import AdjustContrast
from monai.transforms.utils_morphological_ops import dilate, erode

from .config import CLEFT_CHANNEL, INPUT_MODES, POST_CHANNEL, PRE_CHANNEL, RAW_CHANNEL

__all__ = [
    "section_artefacts_",
    "section_artefacts",
    "raw_noise_",
    "raw_gamma",
    "batched_raw_gamma_",
    "cutout_",
    "max_filter",
    "mask_morphology",
    "batched_mask_morphology_",
    "to_input_mode",
]

#: gamma is applied to the raw scaled to [0, 1] by its range (MONAI ``AdjustContrast``).
_EPS = 1e-7


def _section_draws(seed: int, depth: int, std: float, blackout: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    rng = np.random.RandomState(int(seed) % (2**32))
    scale = 1.0 + std * rng.standard_normal(depth)
    shift = std * rng.standard_normal(depth)
    black = rng.choice(depth, size=min(int(blackout), depth), replace=False) if blackout > 0 else np.zeros(0, np.int64)
    first = int(rng.randint(1, max(depth, 2)))
    return scale, shift, black, first


def _section_row_(
    raw: torch.Tensor, masks: torch.Tensor | None, std: float, n_black: int, dy: int, dx: int, seed: int
) -> None:
    """One cube's section artefacts, in place on its raw ``[Z, Y, X]`` and (misalignment) masks ``[K-1, Z, Y, X]``."""
    depth = int(raw.shape[0])
    scale, shift, black, first = _section_draws(seed, depth, std, n_black)
    if std > 0:
        view = (-1, 1, 1)
        raw.mul_(torch.as_tensor(scale, dtype=torch.float32).to(raw.device).view(view))
        raw.add_(torch.as_tensor(shift, dtype=torch.float32).to(raw.device).view(view))
    if len(black):
        raw[torch.as_tensor(black, dtype=torch.long).to(raw.device)] = raw.min()
    if dy or dx:
        # sections from `first` on move in-plane; edges replicate (no wrap-around)
        for part in (raw[first:], None if masks is None else masks[:, first:]):
            if part is not None:
                moved = torch.empty_like(part)
                _replicate_shift(part, moved, dy, -2)
                _replicate_shift(moved, part, dx, -1)


def _replicate_shift(src: torch.Tensor, dst: torch.Tensor, d: int, axis: int) -> None:
    """``dst[..., i, ...] = src[..., clamp(i - d, 0, n - 1), ...]`` along ``axis`` (``src`` and ``dst`` apart).

    Two slice copies instead of ``index_select``: ~3x faster on a context (the index gather visits every
    voxel through an index; a slice copy is a strided memcpy).
    """
    n = int(src.shape[axis])
    d = max(-(n - 1), min(n - 1, int(d)))  # a shift of n or more replicates the edge everywhere, like n - 1
    keep = n - abs(d)
    if d >= 0:
        dst.narrow(axis, d, keep).copy_(src.narrow(axis, 0, keep))
        edge_at, edge_from = 0, 0
    else:
        dst.narrow(axis, 0, keep).copy_(src.narrow(axis, -d, keep))
        edge_at, edge_from = keep, n - 1
    if d:
        edge = dst.narrow(axis, edge_at, abs(d))
        edge.copy_(src.narrow(axis, edge_from, 1).expand_as(edge))


def _section_rows(section_std: np.ndarray, blackout: np.ndarray, misalign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cubes with any section artefact, and those among all cubes with a misalignment."""
    shifted = np.any(np.asarray(misalign).reshape(-1, 2) != 0, axis=1)
    return (np.asarray(section_std) != 0) | (np.asarray(blackout) != 0) | shifted, shifted


def section_artefacts_(
    x: torch.Tensor, section_std: np.ndarray, blackout: np.ndarray, misalign: np.ndarray, seed: np.ndarray
) -> torch.Tensor:
    """In place: per-z-section intensity jitter, blacked-out sections and a section misalignment.

    Serial-section EM images each z-section separately: its brightness and contrast drift
    (``raw_z = b_z * raw_z + a_z``, ``b_z ~ N(1, std)``, ``a_z ~ N(0, std)``), whole sections are lost
    (set to the cube's darkest raw value) and sections above a random z are shifted in-plane against
    those below (all channels: the masks were traced on the same images).

    Args:
        x: ``[B, K, Z, Y, X]``, raw in channel 0 (modified).
        section_std: ``[B]`` jitter sigma (0: none).
        blackout: ``[B]`` number of blacked-out sections.
        misalign: ``[B, 2]`` in-plane (y, x) shift (0, 0: none).
        seed: ``[B]`` seeds of the per-section draws.

    Returns:
        ``x``.
    """
    active, _ = _section_rows(section_std, blackout, misalign)
    for b in np.flatnonzero(active):
        dy, dx = (int(v) for v in misalign[b])
        masks = x[b, RAW_CHANNEL + 1 :] if x.shape[1] > 1 else None
        _section_row_(x[b, RAW_CHANNEL], masks, float(section_std[b]), int(blackout[b]), dy, dx, int(seed[b]))
    return x


def section_artefacts(
    x: torch.Tensor, section_std: np.ndarray, blackout: np.ndarray, misalign: np.ndarray, seed: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`section_artefacts_` without modifying ``x``, copying only what the artefacts change.

    The intensity artefacts touch the raw channel only and the misalignment is drawn for few cubes, so
    copying whole contexts (4 channels of ~2x the cube's edge) would cost more than the artefacts
    themselves: the raw channel is copied when a cube has any artefact, the masks only when one is
    misaligned; the rest are views of ``x``.

    Args:
        x: ``[B, K, Z, Y, X]``, raw in channel 0 (left unchanged).
        section_std, blackout, misalign, seed: as :func:`section_artefacts_`.

    Returns:
        ``(raw [B, 1, Z, Y, X], masks [B, K-1, Z, Y, X])`` equal to ``x`` after :func:`section_artefacts_`
        split after its raw channel.
    """
    raw, masks = x[:, : RAW_CHANNEL + 1], x[:, RAW_CHANNEL + 1 :]
    active, shifted = _section_rows(section_std, blackout, misalign)
    if not active.any():
        return raw, masks
    raw = raw.clone()
    if shifted.any() and masks.shape[1]:
        masks = masks.clone()
    for b in np.flatnonzero(active):
        dy, dx = (int(v) for v in misalign[b])
        moved = masks[b] if shifted[b] else None
        _section_row_(raw[b, 0], moved, float(section_std[b]), int(blackout[b]), dy, dx, int(seed[b]))
    return raw, masks


def raw_noise_(x: torch.Tensor, noise_std: np.ndarray, mult_std: np.ndarray, seed: np.ndarray) -> torch.Tensor:
    """In place: additive Gaussian and multiplicative log-normal noise on the raw channel.

    ``raw = raw * exp(mult_std * n1) + noise_std * n2`` with ``n1, n2`` standard normal fields drawn from a
    CPU ``torch.Generator`` seeded by ``seed[b]`` (the same fields on every device and path).

    Args:
        x: ``[B, K, ...]`` (modified).
        noise_std: ``[B]`` additive sigma (0: none).
        mult_std: ``[B]`` multiplicative sigma (0: none).
        seed: ``[B]`` seeds.

    Returns:
        ``x``.
    """
    shape = tuple(x.shape[2:])
    for b in range(int(x.shape[0])):
        add, mult = float(noise_std[b]), float(mult_std[b])
        if add == 0 and mult == 0:
            continue
        gen = torch.Generator().manual_seed(int(seed[b]))
        n1 = torch.randn(shape, generator=gen)
        n2 = torch.randn(shape, generator=gen)
        raw = x[b, RAW_CHANNEL]
        if mult:
            raw.mul_(torch.exp(mult * n1).to(x.device))
        if add:
            raw.add_((add * n2).to(x.device))
    return x


def raw_gamma(cube: torch.Tensor, gamma: float) -> torch.Tensor:
    """Gamma contrast of one cube's raw channel with MONAI's ``AdjustContrast`` (a new tensor)."""
    out = cube.clone()
    out[RAW_CHANNEL] = torch.as_tensor(AdjustContrast(gamma=float(gamma))(cube[RAW_CHANNEL]))
    return out


def batched_raw_gamma_(x: torch.Tensor, gamma: np.ndarray) -> torch.Tensor:
    """In place: MONAI ``AdjustContrast``'s gamma on the raw channel of each cube (``gamma[b]``; 1: none)."""
    for b in np.flatnonzero(np.asarray(gamma) != 1.0):
        raw = x[int(b), RAW_CHANNEL]
        lo = raw.min()
        span = raw.max() - lo
        raw.copy_(((raw - lo) / float(span + _EPS)) ** float(gamma[b]) * span + lo)
    return x


def cutout_(x: torch.Tensor, start: np.ndarray, size: np.ndarray) -> torch.Tensor:
    """In place: zero a box ``[start, start + size)`` of every channel of each cube (size 0: none)."""
    for b in np.flatnonzero(np.all(np.asarray(size) > 0, axis=1)):
        sl = tuple(slice(int(a), int(a + n)) for a, n in zip(start[b], size[b]))
        x[(int(b), slice(None), *sl)] = 0
    return x


def max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey dilation of ``[N, C, Z, Y, X]`` by a cube of edge ``2 * radius + 1`` (zeros past the border).

    A cube is separable: three 1-D max-pools cost ``3k`` comparisons per voxel instead of ``k^3``.
    """
    if radius <= 0:
        return x
    k, r = 2 * int(radius) + 1, int(radius)
    for axis in range(3):
        kernel = [1, 1, 1]
        kernel[axis] = k
        pad = [0, 0, 0]
        pad[axis] = r
        x = F.max_pool3d(x, tuple(kernel), stride=1, padding=tuple(pad))
    return x


def _mask_channels(k: int) -> list[int]:
    return [c for c in (PRE_CHANNEL, CLEFT_CHANNEL, POST_CHANNEL) if c < k]


def mask_morphology(cube: torch.Tensor, morph: Sequence[int]) -> torch.Tensor:
    """Dilate (radius > 0) or erode (radius < 0) each mask channel of one cube with MONAI's morphology.

    Args:
        cube: ``[K, Z, Y, X]``.
        morph: radius per mask channel (pre, cleft, post); 0 leaves it alone.

    Returns:
        A new tensor; masks stay binary.
    """
    out = cube.clone()
    for c, r in zip(_mask_channels(cube.shape[0]), morph):
        r = int(r)
        if r:
            op = dilate if r > 0 else erode
            out[c] = torch.as_tensor(op(cube[c][None, None], filter_size=2 * abs(r) + 1))[0, 0]
    return out


def batched_mask_morphology_(x: torch.Tensor, morph: np.ndarray) -> torch.Tensor:
    """In place: :func:`mask_morphology` for a batch (``morph[b]`` per cube), as max-pooling on the device."""
    for b, c in zip(*np.nonzero(np.asarray(morph)[:, : len(_mask_channels(x.shape[1]))])):
        r = int(morph[b, c])
        ch = _mask_channels(x.shape[1])[int(c)]
        m = x[int(b), ch][None, None]
        # max-pooling pads with -inf: dilation sees zeros past the border, erosion ones (as MONAI's)
        res = max_filter(m, r) if r > 0 else 1 - max_filter(1 - m, -r)
        x[int(b), ch] = res[0, 0]
    return x


def to_input_mode(x: torch.Tensor, input_mode: str, az_radius: np.ndarray | None = None) -> torch.Tensor:
    """The encoder's input from cubes ``[B, K, ...]`` (raw, pre, cleft[, post]).

    - ``channels``: raw, pre, cleft (3 channels);
    - ``raw``: the raw EM alone;
    - ``masked``: the raw multiplied by the synapse mask (pre | cleft | post) dilated by ``az_radius[b]``
      voxels (a cube structuring element), one channel: the EM of the synapse and its surroundings only.

    Args:
        x: the cubes.
        input_mode: one of :data:`~synclr_monai.transforms.config.INPUT_MODES`.
        az_radius: ``[B]`` dilation radii (``masked`` only; None: 0).

    Returns:
        ``[B, 3 or 1, ...]`` float32 (a view for ``channels``/``raw`` where possible).

    Raises:
        ValueError: an unknown mode.
    """
    if input_mode not in INPUT_MODES:
        raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
    if input_mode == "channels":
        return x[:, :3]
    if input_mode == "raw":
        return x[:, :1]
    zone = x[:, 1:].amax(dim=1, keepdim=True)
    radii = np.zeros(x.shape[0], np.int64) if az_radius is None else np.asarray(az_radius, np.int64).reshape(-1)
    out = x[:, :1].clone()
    for r in np.unique(radii):
        idx = torch.as_tensor(np.flatnonzero(radii == r), dtype=torch.long, device=x.device)
        z = zone.index_select(0, idx)
        z = max_filter(z, int(r))
        out.index_copy_(0, idx, out.index_select(0, idx) * z)
    return out
