"""Small helpers shared by the backbones, the export and the handlers."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["check_input_shape", "unwrap_parallel"]


def unwrap_parallel(model: nn.Module | None) -> nn.Module | None:
    """The model inside any (Distributed)DataParallel wrappers (``None`` stays ``None``)."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def check_input_shape(x: torch.Tensor, in_channels: int, spatial_dims: int) -> None:
    """Check that ``x`` is a channel-first batch ``[B, in_channels, *spatial]``.

    Args:
        x: the tensor to check.
        in_channels: expected number of channels.
        spatial_dims: expected number of spatial dimensions.

    Raises:
        ValueError: naming the expected and the actual shape when they disagree.
    """
    if x.ndim != spatial_dims + 2 or x.shape[1] != in_channels:
        expected = ", ".join(["B", str(in_channels)] + ["S"] * spatial_dims)
        raise ValueError(f"expected input of shape [{expected}], got {tuple(x.shape)}.")
