"""NT-Xent, the SimCLR contrastive loss, with negatives from every process under torch.distributed."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from synclr_monai.losses.distributed import distributed_world, gather_with_grad

__all__ = ["NTXentLoss", "check_projections", "nt_xent_loss"]


def check_projections(z1: torch.Tensor, z2: torch.Tensor) -> None:
    """Check that two projection batches are ``[B, D]`` with the same shape and B >= 1.

    Args:
        z1: projections of the first views.
        z2: projections of the second views.

    Raises:
        ValueError: naming the shapes when they are not.
    """
    if z1.ndim != 2 or z1.shape != z2.shape or z1.shape[0] < 1:
        raise ValueError(
            "expected two [B, D] projection batches of the same shape, "
            f"got {tuple(z1.shape)} and {tuple(z2.shape)}."
        )


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")


def _nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    z1_all: torch.Tensor,
    z2_all: torch.Tensor,
    offset: int,
    temperature: float,
    decoupled: bool = False,
) -> torch.Tensor:
    """Mean NT-Xent over the local anchors against all candidates.

    Args:
        z1: ``[B, D]`` normalised local first views (anchors).
        z2: ``[B, D]`` normalised local second views (anchors).
        z1_all: ``[N, D]`` normalised first views of all ranks (candidates); rows ``offset:offset+B`` are ``z1``.
        z2_all: ``[N, D]`` normalised second views of all ranks (candidates), in the same order.
        offset: index of the local rows in ``z1_all``/``z2_all``.
        temperature: softmax temperature.
        decoupled: decoupled contrastive loss (Yeh et al., 2022): the positive is left out of the
            denominator, which removes the small-batch bias of NT-Xent's gradient.

    Returns:
        scalar mean over the 2B anchors.
    """
    b, n = z1.shape[0], z1_all.shape[0]
    anchors = torch.cat([z1, z2])  # [2B, D]
    candidates = torch.cat([z1_all, z2_all])  # [2N, D]
    logits = anchors @ candidates.T / temperature  # [2B, 2N]
    local = torch.arange(b, device=z1.device) + offset
    rows = torch.arange(2 * b, device=z1.device)
    own = torch.cat([local, local + n])  # each anchor's own column
    positive = torch.cat([local + n, local])  # its other view
    # An anchor is never its own negative: its column gets zero weight in the softmax.
    logits = logits.index_put((rows, own), torch.tensor(float("-inf"), device=logits.device))
    if not decoupled:
        return F.cross_entropy(logits, positive)
    pos = logits[rows, positive]
    negatives = logits.index_put((rows, positive), torch.tensor(float("-inf"), device=logits.device))
    return (torch.logsumexp(negatives, dim=1) - pos).mean()


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, decoupled: bool = False) -> torch.Tensor:
    """NT-Xent on one process: mean over the 2B anchors of ``-log softmax`` of the positive pair.

    For anchor ``z1[i]`` the positive is ``z2[i]`` (and vice versa) and the other ``2B - 2`` samples are
    negatives; similarities are cosine similarities divided by ``temperature``. Computed in float32
    with autocast disabled, whatever the input dtype.

    Args:
        z1: ``[B, D]`` projections of the first views.
        z2: ``[B, D]`` projections of the second views.
        temperature: softmax temperature (> 0).
        decoupled: leave the positive out of the denominator (decoupled contrastive loss).

    Returns:
        scalar float32 loss.

    Raises:
        ValueError: on mismatched or non-2-D inputs, or a non-positive temperature.
    """
    check_projections(z1, z2)
    _check_temperature(temperature)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1n, z2n = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
        return _nt_xent(z1n, z2n, z1n, z2n, 0, temperature, decoupled)


class NTXentLoss(nn.Module):
    """NT-Xent loss (SimCLR), called as ``loss(z1, z2)`` on two ``[B, D]`` projection batches.

    Under torch.distributed (when ``gather_distributed``), the normalised projections of all ranks are
    gathered with gradients, so each of the 2B local anchors has ``2 * B * world - 1`` candidates: its
    positive and ``2 * B * world - 2`` negatives. Each rank returns the mean over its own anchors; with
    equal B on all ranks the mean of these values, which is what DDP's gradient averaging optimises,
    equals the single-process loss on the concatenated batch of ``B * world`` pairs, and so do the
    gradients.

    Args:
        temperature: softmax temperature (> 0); 0.1 is the lab's default.
        gather_distributed: gather negatives from all ranks when torch.distributed is initialised.
        group: process group to gather over (default: the world).
        decoupled: decoupled contrastive loss (positive left out of the denominator), for small batches.

    Raises:
        ValueError: for a non-positive temperature.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        gather_distributed: bool = True,
        group: dist.ProcessGroup | None = None,
        decoupled: bool = False,
    ):
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature
        self.decoupled = bool(decoupled)
        self.gather_distributed = gather_distributed
        self.group = group

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            z1: ``[B, D]`` projections of the first views (any float dtype; computed in float32).
            z2: ``[B, D]`` projections of the second views.

        Returns:
            scalar float32 loss, the mean over this rank's 2B anchors.

        Raises:
            ValueError: on mismatched or non-2-D inputs, or when B differs across ranks.
        """
        check_projections(z1, z2)
        rank, world = distributed_world(self.group) if self.gather_distributed else (0, 1)
        if world == 1:
            return nt_xent_loss(z1, z2, self.temperature, self.decoupled)
        # Logits in float32 even under AMP: with bf16 the similarities / 0.1 lose most of their precision.
        with torch.autocast(device_type=z1.device.type, enabled=False):
            z1n, z2n = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
            z1_all = gather_with_grad(z1n, self.group)
            z2_all = gather_with_grad(z2n, self.group)
            return _nt_xent(z1n, z2n, z1_all, z2_all, rank * z1.shape[0], self.temperature, self.decoupled)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_distributed={self.gather_distributed}, decoupled={self.decoupled}"
