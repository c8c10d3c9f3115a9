"""The SwinUNETR encoder (its Swin transformer) as a SimCLR backbone."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR
from torch import nn

from synclr_monai.networks.utils import check_input_shape

__all__ = ["SwinEncoder"]

# SwinUNETR arguments that only concern its decoder (the encoder never uses them).
_DECODER_ONLY_KWARGS = ("out_channels", "norm_name")


class SwinEncoder(nn.Module):
    """The Swin transformer of MONAI's :class:`~monai.networks.nets.SwinUNETR`, globally pooled.

    The transformer is taken from a ``SwinUNETR`` built with the same arguments and held as the
    submodule ``swinViT``, so this encoder's state-dict keys (``swinViT.*``) are exactly those of the
    ``swinViT`` part of a ``SwinUNETR``: an exported encoder loads into a segmentation network as is.
    Building it through ``SwinUNETR`` rather than ``SwinTransformer`` keeps the argument translation
    (patch and window tuples, merging mode, ...) MONAI's own, so the structures cannot drift apart.

    Inputs whose spatial size is not a multiple of ``patch_size ** 5`` (32 by default) are zero-padded
    symmetrically, so 80^3 cubes run as 96^3. Zero is the mean of the z-scored raw channel and the
    background of the mask channels. The features are the (layer-normalised, when ``normalize``) tokens
    of the last stage, averaged over space: ``[B, feature_size * 16]``.

    Args:
        in_channels: number of input channels.
        spatial_dims: 2 or 3.
        feature_size: embedding size of the first stage (a multiple of 12, as SwinUNETR requires);
            48 is the size of the SwinUNETR models in MONAI's model zoo.
        depths: number of Swin blocks per stage (4 stages).
        num_heads: attention heads per stage.
        normalize: layer-normalise each stage's output, as ``SwinUNETR`` does by default.
        swin_kwargs: further ``SwinUNETR`` arguments that concern the encoder, e.g. ``window_size``,
            ``patch_size``, ``use_checkpoint``, ``use_v2``, ``dropout_path_rate``.

    Raises:
        ValueError: when a decoder-only argument (``out_channels``, ``norm_name``) is given, or when
            ``SwinUNETR`` rejects the arguments (e.g. ``feature_size`` not a multiple of 12).
    """

    def __init__(
        self,
        in_channels: int = 3,
        spatial_dims: int = 3,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        normalize: bool = True,
        **swin_kwargs: Any,
    ):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        decoder_only = sorted(set(swin_kwargs) & set(_DECODER_ONLY_KWARGS))
        if decoder_only:
            raise ValueError(f"{decoder_only} only concern the SwinUNETR decoder; do not pass them to the encoder.")
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"depths and num_heads need one entry per stage (4), got {depths} and {num_heads}.")
        self.name = "swin"
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.normalize = normalize
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "spatial_dims": spatial_dims,
            "feature_size": feature_size,
            "depths": tuple(depths),
            "num_heads": tuple(num_heads),
            "normalize": normalize,
            **swin_kwargs,
        }
        unetr = SwinUNETR(
            in_channels=in_channels,
            out_channels=1,
            feature_size=feature_size,
            depths=depths,
            num_heads=num_heads,
            normalize=normalize,
            spatial_dims=spatial_dims,
            **swin_kwargs,
        )
        self.swinViT = unetr.swinViT
        # Input sizes must be divisible by patch_size ** 5: the patch embedding plus four merges.
        self.size_divisor: int = int(unetr.patch_size) ** 5
        # Each of the four stages ends with a patch merging that doubles the channels.
        self.out_features: int = int(feature_size) * 2 ** len(depths)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad the spatial dimensions of ``x`` symmetrically to multiples of :attr:`size_divisor`.

        Written with ``torch.nn.functional.pad`` because MONAI's ``DivisiblePad`` works on one
        channel-first image, not on a batch.

        Args:
            x: ``[B, C, *spatial]`` input.

        Returns:
            the padded tensor (``x`` itself when no padding is needed).
        """
        pads: list[int] = []
        # F.pad takes (before, after) pairs starting from the last dimension.
        for size in reversed(x.shape[2:]):
            extra = math.ceil(size / self.size_divisor) * self.size_divisor - size
            pads += [extra // 2, extra - extra // 2]
        if not any(pads):
            return x
        return F.pad(x, pads, mode="constant", value=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode a batch.

        Args:
            x: ``[B, in_channels, *spatial]`` input of any spatial size.

        Returns:
            ``[B, out_features]`` features: the last stage averaged over its tokens.

        Raises:
            ValueError: when ``x`` is not ``[B, in_channels, *spatial]`` with ``spatial_dims`` spatial dims.
        """
        check_input_shape(x, self.in_channels, self.spatial_dims)
        last = self.swinViT(self.pad(x), self.normalize)[-1]
        return last.flatten(2).mean(dim=2)
