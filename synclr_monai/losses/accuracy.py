"""Top-1 contrastive accuracy: a cheap training-time signal next to the NT-Xent value."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from synclr_monai.losses.ntxent import check_projections

__all__ = ["contrastive_accuracy"]


@torch.no_grad()
def contrastive_accuracy(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Fraction of the 2B anchors whose positive is the most similar of their 2B - 1 candidates.

    Computed on this process's batch only, in float32 with autocast disabled, without gradients.
    Chance level is ``1 / (2B - 1)``.

    Args:
        z1: ``[B, D]`` projections of the first views.
        z2: ``[B, D]`` projections of the second views.

    Returns:
        0-dim float32 tensor in [0, 1] (``float(...)`` gives a Python float).

    Raises:
        ValueError: on mismatched or non-2-D inputs.
    """
    check_projections(z1, z2)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        sim = z @ z.T
        sim.fill_diagonal_(float("-inf"))  # an anchor is not its own candidate
        b = z1.shape[0]
        positive = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
        return (sim.argmax(dim=1) == positive).float().mean()
