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

__all__ = ["AugmentConfig", "RAW_CHANNEL", "PRE_CHANNEL", "CLEFT_CHANNEL", "MASK_CHANNELS", "ROTATION_PLANES"]

#: Channel layout of a cube (docs/interfaces.md): raw EM, pre-synaptic mask, cleft mask.
RAW_CHANNEL = 0
PRE_CHANNEL = 1
CLEFT_CHANNEL = 2
MASK_CHANNELS = (PRE_CHANNEL, CLEFT_CHANNEL)

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

    def __post_init__(self) -> None:
        for name in ("rotate_prob", "intensity_prob", "blur_prob", "crop_prob", "mask_dropout_prob"):
            _check_prob(name, getattr(self, name))
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

    def crop_sizes(self, cube_size: int) -> tuple[int, int]:
        """The ``(min, max)`` crop edge in voxels for a cube of edge ``cube_size`` (at least 1).

        Args:
            cube_size: the cube edge S.

        Returns:
            ``(round(lo * S), round(hi * S))`` clipped to ``[1, S]``.
        """
        lo, hi = self.crop_fraction
        return max(1, min(cube_size, round(lo * cube_size))), max(1, min(cube_size, round(hi * cube_size)))
