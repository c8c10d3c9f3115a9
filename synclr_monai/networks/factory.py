"""Backbone factory: one name per supported encoder."""

from __future__ import annotations

from typing import Any

from monai.utils import look_up_option
from torch import nn

from synclr_monai.networks.resnet_encoder import RESNET_ARCHS, ResNetFeatureEncoder
from synclr_monai.networks.swin_encoder import SwinEncoder

__all__ = ["BACKBONE_NAMES", "build_backbone"]

#: names accepted by :func:`build_backbone`.
BACKBONE_NAMES: tuple[str, ...] = (*RESNET_ARCHS, "swin")


def build_backbone(name: str, in_channels: int = 3, spatial_dims: int = 3, **kwargs: Any) -> nn.Module:
    """Build a backbone whose forward maps ``[B, in_channels, *spatial]`` to ``[B, out_features]``.

    Args:
        name: one of :data:`BACKBONE_NAMES` (``resnet10``, ``resnet18``, ``resnet34``, ``resnet50``, ``swin``).
        in_channels: number of input channels.
        spatial_dims: number of spatial dimensions.
        kwargs: passed to :class:`ResNetFeatureEncoder` (MONAI ResNet arguments such as ``conv1_t_stride``,
            ``widen_factor``) or :class:`SwinEncoder` (``feature_size``, ``depths``, ``num_heads``, ...).

    Returns:
        the backbone, with attributes ``out_features`` (int), ``name`` and ``config`` (its arguments).

    Raises:
        ValueError: when ``name`` is unknown (the message lists the valid names) or the arguments are invalid.
    """
    name = look_up_option(name, BACKBONE_NAMES)
    if name == "swin":
        return SwinEncoder(in_channels=in_channels, spatial_dims=spatial_dims, **kwargs)
    return ResNetFeatureEncoder(name, in_channels=in_channels, spatial_dims=spatial_dims, **kwargs)
