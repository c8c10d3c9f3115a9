"""Raw-channel-only intensity augmentations: scale-and-shift jitter and Gaussian blur.

A cube stacks the raw EM with its binary masks, so MONAI's intensity transforms cannot be applied to
the whole cube: they would scale, shift or blur the masks too. These transforms draw their parameters
like MONAI's ``RandScaleIntensity``/``RandShiftIntensity``/``RandGaussianSmooth`` and apply MONAI's
deterministic ``ScaleIntensity``/``ShiftIntensity``/``GaussianSmooth`` to the raw channel(s) only.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform

from .config import RAW_CHANNEL
from .functional import as_float_tensor, raw_gaussian_smooth, raw_intensity

__all__ = ["RandRawIntensityJitter", "RandRawIntensityJitterd", "RandRawGaussianSmooth", "RandRawGaussianSmoothd"]


def _check_range(name: str, value: Sequence[float], positive: bool) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}") from None
    if a > b or (positive and a <= 0):
        raise ValueError(f"{name} must be (min, max) with {'0 < ' if positive else ''}min <= max, got {value!r}")
    return a, b


class RandRawIntensityJitter(RandomizableTransform):
    """``raw * scale + shift`` on the raw channel(s), ``scale ~ N(scale_mean, scale_std)``, ``shift ~ N(0, shift_std)``.

    MONAI's ``RandScaleIntensity`` draws a uniform factor and acts on every channel; the lab's jitter is
    Gaussian and must leave the masks alone, hence this transform.

    Args:
        prob: probability of applying the jitter.
        scale_mean: mean of the scale.
        scale_std: standard deviation of the scale (>= 0).
        shift_std: standard deviation of the shift (>= 0).
        channels: the raw channel(s) of the input.

    Raises:
        ValueError: a negative standard deviation.
    """

    backend = [np.ndarray, torch.Tensor]

    def __init__(
        self,
        prob: float = 1.0,
        scale_mean: float = 1.0,
        scale_std: float = 0.1,
        shift_std: float = 0.1,
        channels: int | Sequence[int] = RAW_CHANNEL,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if scale_std < 0 or shift_std < 0:
            raise ValueError(f"RandRawIntensityJitter: standard deviations must be >= 0, got {scale_std}, {shift_std}")
        self.scale_mean, self.scale_std, self.shift_std = float(scale_mean), float(scale_std), float(shift_std)
        self.channels = channels
        self.scale, self.shift = 1.0, 0.0

    def randomize(self, data: object = None) -> None:
        """Draw whether to apply and, if so, the scale and shift."""
        super().randomize(None)
        if self._do_transform:
            self.scale = float(self.R.normal(self.scale_mean, self.scale_std))
            self.shift = float(self.R.normal(0.0, self.shift_std))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> torch.Tensor:
        """Jitter the raw channel(s) of ``img`` (``[C, ...]``); the other channels are returned unchanged."""
        if randomize:
            self.randomize()
        if not self._do_transform:
            return as_float_tensor(img)
        return raw_intensity(img, self.scale, self.shift, self.channels)


class RandRawIntensityJitterd(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`RandRawIntensityJitter`; all keys share one draw.

    Args:
        keys: keys of the cubes to jitter.
        prob: probability of applying the jitter.
        scale_mean: mean of the scale.
        scale_std: standard deviation of the scale.
        shift_std: standard deviation of the shift.
        channels: the raw channel(s) of each cube.
        allow_missing_keys: don't raise for a missing key.
    """

    backend = RandRawIntensityJitter.backend

    def __init__(
        self,
        keys: KeysCollection = "image",
        prob: float = 1.0,
        scale_mean: float = 1.0,
        scale_std: float = 0.1,
        shift_std: float = 0.1,
        channels: int | Sequence[int] = RAW_CHANNEL,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.jitter = RandRawIntensityJitter(1.0, scale_mean, scale_std, shift_std, channels)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandRawIntensityJitterd:
        super().set_random_state(seed, state)
        self.jitter.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        if self._do_transform:
            self.jitter.randomize()
        for key in self.key_iterator(d):
            d[key] = self.jitter(d[key], randomize=False) if self._do_transform else as_float_tensor(d[key])
        return d


class RandRawGaussianSmooth(RandomizableTransform):
    """Gaussian blur of the raw channel(s), one isotropic sigma uniform in ``sigma``.

    MONAI's ``RandGaussianSmooth`` blurs every channel (and draws an independent sigma per axis); the
    masks must stay binary, so this blurs the raw channel(s) only, with MONAI's ``GaussianSmooth``.

    Args:
        prob: probability of blurring.
        sigma: ``(min, max)`` of the sigma in voxels (> 0).
        channels: the raw channel(s) of the input.

    Raises:
        ValueError: a malformed or non-positive sigma range.
    """

    backend = [np.ndarray, torch.Tensor]

    def __init__(
        self, prob: float = 0.5, sigma: Sequence[float] = (0.1, 1.0), channels: int | Sequence[int] = RAW_CHANNEL
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.sigma_range = _check_range("RandRawGaussianSmooth sigma", sigma, positive=True)
        self.channels = channels
        self.sigma = self.sigma_range[0]

    def randomize(self, data: object = None) -> None:
        """Draw whether to blur and, if so, the sigma."""
        super().randomize(None)
        if self._do_transform:
            self.sigma = float(self.R.uniform(*self.sigma_range))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> torch.Tensor:
        """Blur the raw channel(s) of ``img`` (``[C, Z, Y, X]``); the masks are returned unchanged."""
        if randomize:
            self.randomize()
        if not self._do_transform:
            return as_float_tensor(img)
        return raw_gaussian_smooth(img, self.sigma, self.channels)


class RandRawGaussianSmoothd(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`RandRawGaussianSmooth`; all keys share one draw.

    Args:
        keys: keys of the cubes to blur.
        prob: probability of blurring.
        sigma: ``(min, max)`` of the sigma in voxels.
        channels: the raw channel(s) of each cube.
        allow_missing_keys: don't raise for a missing key.
    """

    backend = RandRawGaussianSmooth.backend

    def __init__(
        self,
        keys: KeysCollection = "image",
        prob: float = 0.5,
        sigma: Sequence[float] = (0.1, 1.0),
        channels: int | Sequence[int] = RAW_CHANNEL,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.smooth = RandRawGaussianSmooth(1.0, sigma, channels)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandRawGaussianSmoothd:
        super().set_random_state(seed, state)
        self.smooth.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        if self._do_transform:
            self.smooth.randomize()
        for key in self.key_iterator(d):
            d[key] = self.smooth(d[key], randomize=False) if self._do_transform else as_float_tensor(d[key])
        return d
