"""The optimiser by name: LARS (SimCLR's), or Adam/AdamW (SynapseCLR's), on the same parameter groups."""

from __future__ import annotations

import torch
from torch import nn

from synclr_monai.optimizers.lars import LARS, lars_param_groups

__all__ = ["OPTIMIZERS", "build_optimizer"]

#: Optimiser names accepted by :func:`build_optimizer` (the bundle's ``optimizer_name``).
OPTIMIZERS = ("lars", "adam", "adamw")


def build_optimizer(
    name: str,
    model: nn.Module,
    lr: float,
    weight_decay: float = 1e-6,
    momentum: float = 0.9,
    eta: float = 0.001,
) -> torch.optim.Optimizer:
    """Build an optimiser whose groups exempt biases and 1-D parameters from weight decay.

    Args:
        name: ``lars``, ``adam`` or ``adamw``.
        model: the network.
        lr: learning rate (LARS' is ~100x an Adam one: its trust ratio scales each step by ``eta``).
        weight_decay: decay of the weights (biases and norms: none).
        momentum: LARS momentum (Adam: ``beta1``).
        eta: LARS trust coefficient.

    Returns:
        The optimiser.

    Raises:
        ValueError: an unknown name.
    """
    groups = lars_param_groups(model, weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta)
    if name in ("adam", "adamw"):
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return cls(groups, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    raise ValueError(f"optimizer_name must be one of {OPTIMIZERS}, got {name!r}")
