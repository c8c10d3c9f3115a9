"""The SimCLR model: backbone + projection head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from synclr_monai.networks.factory import build_backbone
from synclr_monai.networks.projection import ProjectionHead

__all__ = ["SimCLR", "build_simclr"]


class SimCLR(nn.Module):
    """Backbone followed by a projection head.

    ``forward`` returns the projections the contrastive loss works on; ``encode`` returns the backbone
    features used downstream (embeddings, linear probes, export).

    Args:
        backbone: module mapping ``[B, C, *spatial]`` to ``[B, F]``.
        projector: module mapping ``[B, F]`` to ``[B, D]``.

    Raises:
        ValueError: when both declare sizes (``backbone.out_features``, ``projector.in_features``) that differ.
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        features = getattr(backbone, "out_features", None)
        expected = getattr(projector, "in_features", None)
        if features is not None and expected is not None and features != expected:
            raise ValueError(f"backbone gives {features} features but the projector expects {expected}.")
        self.backbone = backbone
        self.projector = projector

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``h``.

        Args:
            x: ``[B, C, *spatial]`` input.

        Returns:
            ``[B, F]`` features.
        """
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections ``z = projector(backbone(x))``.

        Args:
            x: ``[B, C, *spatial]`` input.

        Returns:
            ``[B, D]`` projections.
        """
        return self.projector(self.backbone(x))


def build_simclr(
    backbone: str = "resnet18",
    in_channels: int = 3,
    projection_hidden: int = 2048,
    projection_dim: int = 256,
    projection_layers: int = 3,
    sync_batchnorm: bool = False,
    **backbone_kwargs: Any,
) -> SimCLR:
    """Build a :class:`SimCLR` model from names and sizes (usable as a ``_target_`` in a bundle config).

    Args:
        backbone: a :func:`~synclr_monai.networks.factory.build_backbone` name.
        in_channels: number of input channels.
        projection_hidden: hidden width of the projector.
        projection_dim: size of the projections.
        projection_layers: number of Linear layers in the projector.
        sync_batchnorm: convert every batch norm to ``torch.nn.SyncBatchNorm`` so that statistics are
            computed over the global batch under DDP (batch statistics otherwise leak which samples
            share a GPU, a known shortcut for contrastive learning). The parameter and buffer names do
            not change, so exports still load into plain networks.
        backbone_kwargs: passed to ``build_backbone`` (e.g. ``spatial_dims``, ``feature_size``).

    Returns:
        the model.

    Raises:
        ValueError: for an unknown backbone name or invalid sizes.
    """
    encoder = build_backbone(backbone, in_channels=in_channels, **backbone_kwargs)
    projector = ProjectionHead(
        encoder.out_features,
        hidden_features=projection_hidden,
        out_features=projection_dim,
        num_layers=projection_layers,
    )
    model = SimCLR(encoder, projector)
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
