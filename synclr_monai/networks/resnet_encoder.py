"""MONAI ResNet as a SimCLR backbone: globally pooled features before the classifier."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks import nets
from monai.utils import look_up_option
from torch import nn

from synclr_monai.networks.utils import check_input_shape

__all__ = ["RESNET_ARCHS", "ResNetFeatureEncoder"]

#: MONAI ResNet factory names this encoder accepts.
RESNET_ARCHS: tuple[str, ...] = ("resnet10", "resnet18", "resnet34", "resnet50")

# Arguments the encoder fixes itself: the input channels come from ``in_channels``, the classifier is
# always dropped, and pretrained weights would be downloaded (no network access; use
# ``synclr_monai.networks.export.load_encoder`` for local weights).
_RESERVED_KWARGS = ("n_input_channels", "feed_forward", "num_classes", "pretrained", "progress")


class ResNetFeatureEncoder(nn.Module):
    """A MONAI :class:`~monai.networks.nets.ResNet` without its classifier, returning ``[B, F]`` features.

    The MONAI network is held as the submodule ``resnet``, so the state-dict key ``resnet.<k>`` of
    this encoder is the key ``<k>`` of a MONAI ResNet of the same architecture; the exported encoder
    (:func:`~synclr_monai.networks.export.save_encoder`) loads into ``monai.networks.nets.resnet18``
    and friends without renaming.

    Args:
        arch: one of :data:`RESNET_ARCHS`.
        in_channels: number of input channels (3 for the raw / pre-synaptic / cleft cube).
        spatial_dims: number of spatial dimensions of the input.
        conv1_t_stride: stride of the first convolution. 2 (the usual ResNet stem, as in MedicalNet and
            MONAI's ``ResNetFeatures``) rather than MONAI ``ResNet``'s default 1, which keeps the first
            stage at full resolution and costs about 10x the compute on 80^3 cubes (ResNet-18, CPU:
            4.6 s vs 0.36 s forward+backward for two cubes). Weight shapes do not depend on it, so
            exports load either way; use the same value downstream for the features to match.
        resnet_kwargs: passed on to the MONAI factory, e.g. ``conv1_t_size``, ``no_max_pool``,
            ``shortcut_type``, ``widen_factor``, ``norm``.

    Raises:
        ValueError: when ``arch`` is unknown, ``in_channels`` is not positive, or a reserved argument
            (``n_input_channels``, ``feed_forward``, ``num_classes``, ``pretrained``, ``progress``) is given.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        in_channels: int = 3,
        spatial_dims: int = 3,
        conv1_t_stride: int | tuple[int, ...] = 2,
        **resnet_kwargs: Any,
    ):
        super().__init__()
        arch = look_up_option(arch, RESNET_ARCHS)
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        reserved = sorted(set(resnet_kwargs) & set(_RESERVED_KWARGS))
        if reserved:
            raise ValueError(
                f"ResNetFeatureEncoder sets {reserved} itself; do not pass them (reserved: {_RESERVED_KWARGS})."
            )
        self.name = arch
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "spatial_dims": spatial_dims,
            "conv1_t_stride": conv1_t_stride,
            **resnet_kwargs,
        }
        factory = getattr(nets, arch)
        self.resnet: nets.ResNet = factory(
            pretrained=False,
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            feed_forward=False,
            conv1_t_stride=conv1_t_stride,
            **resnet_kwargs,
        )
        # After building layer4, MONAI leaves the channel count of the last stage in ``in_planes``
        # (block_inplanes[3] * widen_factor * expansion), which is the pooled feature size.
        self.out_features: int = int(self.resnet.in_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode a batch.

        Args:
            x: ``[B, in_channels, *spatial]`` input.

        Returns:
            ``[B, out_features]`` globally average-pooled features of the last stage.

        Raises:
            ValueError: when ``x`` does not have ``spatial_dims + 2`` dimensions or ``in_channels`` channels.
        """
        check_input_shape(x, self.in_channels, self.spatial_dims)
        return self.resnet(x)

