"""Mask dropout: zero the cleft channel of a cube with a probability.

Dropping the cleft mask from one view keeps the encoder from matching views by the mask alone. MONAI
has no channel-dropout transform for images (``RandCoarseDropout`` drops boxes of voxels), hence this one.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform

from .config import CLEFT_CHANNEL
from .functional import as_float_tensor, mask_dropout

__all__ = ["RandMaskDropout", "RandMaskDropoutd"]


class RandMaskDropout(RandomizableTransform):
    """Zero channel ``channel`` (the cleft mask) with probability ``prob``.

    Args:
        prob: probability of zeroing the channel.
        channel: the channel to zero.
    """

    backend = [np.ndarray, torch.Tensor]

    def __init__(self, prob: float = 0.3, channel: int = CLEFT_CHANNEL) -> None:
        RandomizableTransform.__init__(self, prob)
        self.channel = int(channel)

    def randomize(self, data: object = None) -> None:
        """Draw whether to drop the channel."""
        super().randomize(None)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> torch.Tensor:
        """Return ``img`` (``[C, ...]``) with the channel zeroed, or unchanged; always a float32 tensor."""
        if randomize:
            self.randomize()
        if not self._do_transform:
            return as_float_tensor(img)
        return mask_dropout(img, self.channel)


class RandMaskDropoutd(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`RandMaskDropout`; all keys share one draw.

    Args:
        keys: keys of the cubes.
        prob: probability of zeroing the channel.
        channel: the channel to zero.
        allow_missing_keys: don't raise for a missing key.
    """

    backend = RandMaskDropout.backend

    def __init__(
        self,
        keys: KeysCollection = "image",
        prob: float = 0.3,
        channel: int = CLEFT_CHANNEL,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.dropout = RandMaskDropout(1.0, channel)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        for key in self.key_iterator(d):
            d[key] = self.dropout(d[key], randomize=False) if self._do_transform else as_float_tensor(d[key])
        return d
