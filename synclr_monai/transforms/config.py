"""Configuration of the two-view augmentation: every probability and range in one validated dataclass.

The defaults are the lab's (DESIGN.md): rotation k in 0..3 in a random plane; raw-channel intensity
scale N(1, 0.1) and shift N(0, 0.1); Gaussian blur with p 0.5, sigma in [0.1, 1.0]; second view cropped
to a fraction 0.8-1.0 of the cube (64-80 at 80³) and resized back; cleft-mask dropout with p 0.3.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "AugmentConfig",
    "INPUT_MODES",
    "RAW_CHANNEL",
    "PRE_CHANNEL",
    "CLEFT_CHANNEL",
    "POST_CHANNEL",
    "MASK_CHANNELS",
    "ROTATION_PLANES",
    "input_channels",
    "is_anisotropic",
]

#: Channel layout of a cube (docs/interfaces.md): raw EM, pre-synaptic mask, cleft mask and, where the
#: bbox provides it, the post-synaptic mask (channel 3; used by the ``masked`` input mode).
RAW_CHANNEL = 0
PRE_CHANNEL = 1
CLEFT_CHANNEL = 2
POST_CHANNEL = 3
MASK_CHANNELS = (PRE_CHANNEL, CLEFT_CHANNEL)

#: What the encoder sees (``input_mode``): ``channels`` = raw, pre-synaptic mask, cleft mask (3 channels);
#: ``masked`` = the raw EM multiplied by the dilated synapse mask (pre + cleft + post), one channel, as
#: SynapseCLR; ``raw`` = the EM alone, one channel.
INPUT_MODES: tuple[str, ...] = ("channels", "masked", "raw")


def is_anisotropic(voxel_size: Any) -> bool:
    """Whether a ``(z, y, x)`` voxel size has unequal edges (None: isotropic)."""
    return voxel_size is not None and len({float(v) for v in voxel_size}) > 1


def input_channels(input_mode: str) -> int:
    """Number of encoder input channels of an input mode.

    Raises:
        ValueError: an unknown mode.
    """
    if input_mode not in INPUT_MODES:
        raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
    return 3 if input_mode == "channels" else 1

#: The three planes a 90° rotation can turn, as pairs of spatial axes of a ``[C, Z, Y, X]`` cube
#: (MONAI's ``spatial_axes``). A rotation parameter ``plane`` indexes this tuple.
ROTATION_PLANES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {value!r}")


def _check_range(name: str, value: Any, low: float, high: float | None = None, strict_low: bool = False) -> None:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"AugmentConfig.{name} must be a (min, max) pair, got {value!r}") from None
    if a > b:
        raise ValueError(f"AugmentConfig.{name} must be (min, max) with min <= max, got {value!r}")
    if a < low or (strict_low and a <= low) or (high is not None and b > high):
        bound = f"({low}, {high}]" if strict_low else f"[{low}, {high if high is not None else 'inf'}]"
        raise ValueError(f"AugmentConfig.{name} must lie in {bound}, got {value!r}")


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the two-view augmentation.

    Stream A (both views): a 90° rotation (``rotate_prob``; ``k`` uniform in ``0..rotate_max_k``, so
    with the defaults k = 0 is as likely as each real turn) about one of the three planes chosen
    uniformly; a raw-channel intensity jitter ``raw * scale + shift`` with ``scale ~ N(scale_mean,
    scale_std)`` and ``shift ~ N(0, shift_std)`` (``intensity_prob``); a raw-channel Gaussian blur
    (``blur_prob``, one isotropic sigma uniform in ``blur_sigma``).
    Stream B (second view only): a cubic crop of edge ``round(fraction * S)`` with ``fraction`` uniform
    in ``crop_fraction`` at a uniform position, resized back to ``S`` (``crop_prob``); the cleft mask
    zeroed (``mask_dropout_prob``).

    Args:
        rotate_prob: probability of drawing a rotation at all.
        rotate_max_k: the largest number of quarter turns (k is uniform in ``0..rotate_max_k``).
        intensity_prob: probability of the raw-channel scale-and-shift.
        scale_mean: mean of the intensity scale.
        scale_std: standard deviation of the intensity scale.
        shift_std: standard deviation of the intensity shift.
        blur_prob: probability of the raw-channel Gaussian blur.
        blur_sigma: ``(min, max)`` of the blur sigma in voxels (> 0).
        crop_prob: probability of the second view's crop-and-resize.
        crop_fraction: ``(min, max)`` of the crop edge as a fraction of the cube edge, in (0, 1].
        mask_dropout_prob: probability of zeroing the second view's cleft mask.

    The stronger 3-D views (all off by default, so the defaults stay the lab's): when any of
    ``rotate3d_prob``, ``flip_prob``, ``zoom_range`` or ``translate_fraction`` is active, the spatial step
    of BOTH views is one resample (:func:`~synclr_monai.transforms.geometry.affine_resample`) of a larger
    context cube (edge :meth:`context_size`, so that no rotated corner reaches past it), combining a
    uniformly random 3-D rotation done in physical space (``voxel_size``), flips, an isotropic zoom and a
    translation; the 90° turns and the second view's crop-and-resize are then not used (the zoom plays
    the crop's part). With anisotropic ``voxel_size`` a view is a physical cube sampled at the finest
    voxel size (so it spans fewer slices along a coarser axis); the rotation happens in physical space.

    Args (stronger views):
        rotate3d_prob: probability of a uniformly random SO(3) rotation.
        flip_prob: probability of flipping each spatial axis (independently).
        zoom_range: ``(min, max)`` isotropic zoom (> 1 magnifies).
        translate_fraction: largest shift of the view's centre per axis, as a fraction of the cube edge.
        voxel_size: ``(z, y, x)`` physical voxel size (any unit; only ratios matter), e.g. ``(40, 8, 8)``.
        noise_prob: probability of additive Gaussian noise on the raw channel.
        noise_std: ``(min, max)`` of its standard deviation (z-score units).
        mult_noise_prob: probability of multiplicative log-normal noise on the raw channel.
        mult_noise_std: ``(min, max)`` of the log-normal sigma.
        gamma_prob: probability of a gamma contrast change of the raw channel (MONAI ``AdjustContrast``).
        gamma_range: ``(min, max)`` of gamma.
        section_prob: probability of per-section intensity jitter (``a + b * I`` per z-section).
        section_std: standard deviation of the per-section ``b - 1`` and ``a``.
        blackout_rate: mean number of blacked-out z-sections per cube (Poisson; 0 = never).
        misalign_prob: probability of a section misalignment (sections above a random z shifted in-plane).
        misalign_max: largest in-plane shift in voxels.
        cutout_prob: probability of one cutout box (all channels zeroed) that keeps the cube's centre.
        cutout_size: ``(min, max)`` of the box edge as a fraction of the cube edge.
        mask_morph_prob: probability, per mask channel, of a random dilation or erosion.
        mask_morph_radius: largest dilation/erosion radius in voxels.
        pre_dropout_prob: probability of zeroing the second view's pre-synaptic mask.
        active_zone_radius: ``(min, max)`` dilation radius (voxels) of the synapse mask in the ``masked``
            input mode (a random integer per view).

    Raises:
        ValueError: a probability outside [0, 1], a reversed or out-of-bounds range, a negative
            standard deviation or ``rotate_max_k`` outside 0..3.
    """

    rotate_prob: float = 1.0
    rotate_max_k: int = 3
    intensity_prob: float = 1.0
    scale_mean: float = 1.0
    scale_std: float = 0.1
    shift_std: float = 0.1
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.0)
    crop_prob: float = 1.0
    crop_fraction: tuple[float, float] = (0.8, 1.0)
    mask_dropout_prob: float = 0.3
    rotate3d_prob: float = 0.0
    flip_prob: float = 0.0
    zoom_range: tuple[float, float] = (1.0, 1.0)
    translate_fraction: float = 0.0
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise_prob: float = 0.0
    noise_std: tuple[float, float] = (0.0, 0.1)
    mult_noise_prob: float = 0.0
    mult_noise_std: tuple[float, float] = (0.0, 0.1)
    gamma_prob: float = 0.0
    gamma_range: tuple[float, float] = (0.8, 1.25)
    section_prob: float = 0.0
    section_std: float = 0.05
    blackout_rate: float = 0.0
    misalign_prob: float = 0.0
    misalign_max: int = 2
    cutout_prob: float = 0.0
    cutout_size: tuple[float, float] = (0.2, 0.4)
    mask_morph_prob: float = 0.0
    mask_morph_radius: int = 1
    pre_dropout_prob: float = 0.0
    active_zone_radius: tuple[int, int] = (1, 4)

    def __post_init__(self) -> None:
        for name in (
            "rotate_prob", "intensity_prob", "blur_prob", "crop_prob", "mask_dropout_prob", "rotate3d_prob",
            "flip_prob", "noise_prob", "mult_noise_prob", "gamma_prob", "section_prob", "misalign_prob",
            "cutout_prob", "mask_morph_prob", "pre_dropout_prob",
        ):  # fmt: skip
            _check_prob(name, getattr(self, name))
        for name in ("translate_fraction", "section_std", "blackout_rate"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"AugmentConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("misalign_max", "mask_morph_radius"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"AugmentConfig.{name} must be an int >= 0, got {value!r}")
        _check_range("zoom_range", self.zoom_range, 0.0, None, strict_low=True)
        _check_range("noise_std", self.noise_std, 0.0)
        _check_range("mult_noise_std", self.mult_noise_std, 0.0)
        _check_range("gamma_range", self.gamma_range, 0.0, None, strict_low=True)
        _check_range("cutout_size", self.cutout_size, 0.0, 1.0, strict_low=True)
        _check_range("active_zone_radius", self.active_zone_radius, 0.0)
        try:
            voxel = tuple(float(v) for v in self.voxel_size)
        except (TypeError, ValueError):
            voxel = ()
        if len(voxel) != 3 or min(voxel) <= 0:
            raise ValueError(f"AugmentConfig.voxel_size must be three positive sizes (z, y, x), got {self.voxel_size!r}")
        object.__setattr__(self, "voxel_size", voxel)
        for name in ("zoom_range", "noise_std", "mult_noise_std", "gamma_range", "cutout_size"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "active_zone_radius", tuple(int(v) for v in self.active_zone_radius))
        if not isinstance(self.rotate_max_k, int) or not 0 <= self.rotate_max_k <= 3:
            raise ValueError(f"AugmentConfig.rotate_max_k must be an int in 0..3, got {self.rotate_max_k!r}")
        for name in ("scale_std", "shift_std"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"AugmentConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        _check_range("blur_sigma", self.blur_sigma, 0.0, None, strict_low=True)
        _check_range("crop_fraction", self.crop_fraction, 0.0, 1.0, strict_low=True)
        # YAML/JSON give lists; keep tuples so the config stays hashable and comparable
        object.__setattr__(self, "blur_sigma", tuple(float(v) for v in self.blur_sigma))
        object.__setattr__(self, "crop_fraction", tuple(float(v) for v in self.crop_fraction))

    @classmethod
    def from_any(cls, value: AugmentConfig | Mapping[str, Any] | None) -> AugmentConfig:
        """An ``AugmentConfig`` from itself, a mapping of its fields (a bundle config section) or None.

        Args:
            value: the config, a mapping of field names to values, or None for the defaults.

        Returns:
            The validated config.

        Raises:
            ValueError: unknown keys in the mapping, or an invalid value.
            TypeError: ``value`` is neither a config, a mapping nor None.
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"AugmentConfig: unknown keys {unknown}; known keys are {sorted(known)}")
            return cls(**dict(value))
        raise TypeError(
            f"AugmentConfig.from_any expects an AugmentConfig, a mapping or None, got {type(value).__name__}"
        )

    @property
    def uses_context(self) -> bool:
        """Whether the views are resampled from a larger context cube (any 3-D spatial view is on)."""
        return self.rotate3d_prob > 0 or self.flip_prob > 0 or self.zoom_range != (1.0, 1.0) or self.translate_fraction > 0

    def context_size(self, cube_size: int, pose: str = "native") -> int:
        """Edge of the context cube the views are resampled from (``cube_size`` without 3-D views).

        In the canonical pose (:mod:`~synclr_monai.transforms.pose`) every view is turned into its synapse's
        frame, an arbitrary rotation, so the context always has the reach of a 3-D rotation.

        A view is a physical cube sampled on an isotropic grid at the finest voxel size, so along a
        coarser axis it spans fewer context voxels; every output voxel maps into the context, since the
        view's linear map (rotation, zoom, voxel sizes) has an infinity norm of at most
        ``sqrt(3) / min_zoom``, plus the translation and one voxel of interpolation margin.

        Args:
            cube_size: the cube edge S.
            pose: ``native`` or ``canonical``.

        Returns:
            The context edge C >= S, with C - S even.
        """
        canonical = pose == "canonical"
        if not (self.uses_context or canonical):
            return int(cube_size)
        reach = np.sqrt(3.0) if self.rotate3d_prob > 0 or canonical else 1.0
        half = reach * (cube_size / 2.0) / min(self.zoom_range) + self.translate_fraction * cube_size + 1.0
        edge = max(int(cube_size), int(np.ceil(2.0 * half)))
        # C - S even: the context (cut at start - (C - S) // 2) then has the cube's centre, so an
        # unrotated, unshifted view samples the cube's own voxels, not points half a voxel between them
        return edge + (edge - int(cube_size)) % 2

    def crop_sizes(self, cube_size: int) -> tuple[int, int]:
        """The ``(min, max)`` crop edge in voxels for a cube of edge ``cube_size`` (at least 1).

        Args:
            cube_size: the cube edge S.

        Returns:
            ``(round(lo * S), round(hi * S))`` clipped to ``[1, S]``.
        """
        lo, hi = self.crop_fraction
        return max(1, min(cube_size, round(lo * cube_size))), max(1, min(cube_size, round(hi * cube_size)))
