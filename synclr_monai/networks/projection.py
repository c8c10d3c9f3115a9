"""The SimCLR projection MLP."""

from __future__ import annotations

from monai.networks.layers import get_act_layer, get_norm_layer
from torch import nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Sequential):
    """SimCLR projector: ``num_layers - 1`` blocks of Linear-Norm-Act, then a final Linear.

    With the defaults this is Linear-BN-ReLU-Linear-BN-ReLU-Linear (``in -> 2048 -> 2048 -> 256``),
    the lab's projector; ``num_layers=2`` gives SimCLR v1's Linear-BN-ReLU-Linear and ``num_layers=1``
    a single Linear. The hidden Linears have no bias because the batch norm right after removes it.

    Args:
        in_features: size of the backbone features.
        hidden_features: width of the hidden layers.
        out_features: size of the projections.
        num_layers: number of Linear layers (at least 1).
        norm: MONAI normalisation name or (name, args) for the hidden layers (1-D), e.g. ``"batch"``.
        act: MONAI activation name or (name, args), e.g. ``"relu"``.

    Raises:
        ValueError: when a size or ``num_layers`` is not positive.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int = 2048,
        out_features: int = 256,
        num_layers: int = 3,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ):
        for arg, value in (
            ("in_features", in_features),
            ("hidden_features", hidden_features),
            ("out_features", out_features),
            ("num_layers", num_layers),
        ):
            if value < 1:
                raise ValueError(f"{arg} must be positive, got {value}.")
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_layers - 1):
            layers += [
                nn.Linear(width, hidden_features, bias=False),
                get_norm_layer(norm, spatial_dims=1, channels=hidden_features),
                get_act_layer(act),
            ]
            width = hidden_features
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features
