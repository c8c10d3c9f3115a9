"""NT-Xent, the SimCLR contrastive loss, with negatives from every process under torch.distributed."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from synclr_monai.losses.distributed import distributed_world, gather_ids, gather_with_grad

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


def _check_synapse(synapse: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    if synapse is None:
        return None
    synapse = torch.as_tensor(synapse)
    if synapse.shape != (batch,) or synapse.is_floating_point():
        raise ValueError(
            f"synapse ids must be a [B] = [{batch}] integer tensor, got {tuple(synapse.shape)} {synapse.dtype}."
        )
    return synapse.long()


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
    synapse: torch.Tensor | None = None,
    synapse_all: torch.Tensor | None = None,
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
        synapse: ``[B]`` int64 synapse ids of the local pairs (negative: unknown), or None.
        synapse_all: ``[N]`` ids of all ranks' pairs, in the order of ``z1_all``; with ``synapse``, a candidate of
            the anchor's own synapse (another cube of it) is left out of the anchor's negatives.

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
    if synapse is not None and synapse_all is not None:
        # Another cube of the anchor's synapse is not a negative (a false one, and the hardest): weight zero.
        # The positive keeps its column; unknown ids (< 0) match nothing.
        anchor_ids = torch.cat([synapse, synapse]).to(logits.device)
        candidate_ids = torch.cat([synapse_all, synapse_all]).to(logits.device)
        same = (anchor_ids[:, None] == candidate_ids[None, :]) & (anchor_ids[:, None] >= 0)
        same[rows, positive] = False
        logits = logits.masked_fill(same, float("-inf"))
    if not decoupled:
        return F.cross_entropy(logits, positive)
    pos = logits[rows, positive]
    negatives = logits.index_put((rows, positive), torch.tensor(float("-inf"), device=logits.device))
    return (torch.logsumexp(negatives, dim=1) - pos).mean()


def nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.1,
    decoupled: bool = False,
    synapse: torch.Tensor | None = None,
) -> torch.Tensor:
    """NT-Xent on one process: mean over the 2B anchors of ``-log softmax`` of the positive pair.

    For anchor ``z1[i]`` the positive is ``z2[i]`` (and vice versa) and the other ``2B - 2`` samples are
    negatives; similarities are cosine similarities divided by ``temperature``. Computed in float32
    with autocast disabled, whatever the input dtype.

    Args:
        z1: ``[B, D]`` projections of the first views.
        z2: ``[B, D]`` projections of the second views.
        temperature: softmax temperature (> 0).
        decoupled: leave the positive out of the denominator (decoupled contrastive loss).
        synapse: ``[B]`` integer synapse id of each pair (negative: unknown), or None. Pairs with the same
            non-negative id are cubes of one synapse and are not each other's negatives.

    Returns:
        scalar float32 loss.

    Raises:
        ValueError: on mismatched or non-2-D inputs, a non-positive temperature, or ``synapse`` not ``[B]``.
    """
    check_projections(z1, z2)
    _check_temperature(temperature)
    synapse = _check_synapse(synapse, z1.shape[0])
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1n, z2n = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
        return _nt_xent(z1n, z2n, z1n, z2n, 0, temperature, decoupled, synapse, synapse)


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
        mask_same_synapse: when ``forward`` gets synapse ids (the dataset's ``"synapse"``), a cube of the anchor's
            own synapse is left out of its negatives. Mask-aware batches often hold two cubes of one synapse
            (16 cubes drawn from the 12 synapses of one bbox hold ~7 repeats); as negatives they push one synapse
            away from itself. Off: the ids are ignored.

    Raises:
        ValueError: for a non-positive temperature.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        gather_distributed: bool = True,
        group: dist.ProcessGroup | None = None,
        decoupled: bool = False,
        mask_same_synapse: bool = False,
    ):
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature
        self.decoupled = bool(decoupled)
        self.mask_same_synapse = bool(mask_same_synapse)
        self.gather_distributed = gather_distributed
        self.group = group

    @property
    def uses_synapse_ids(self) -> bool:
        """Whether ``forward`` wants the batch's synapse ids (the trainer passes them when True)."""
        return self.mask_same_synapse

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, synapse: torch.Tensor | None = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            z1: ``[B, D]`` projections of the first views (any float dtype; computed in float32).
            z2: ``[B, D]`` projections of the second views.
            synapse: ``[B]`` integer synapse ids of the pairs (negative: unknown); used with
                ``mask_same_synapse`` only. Under torch.distributed they are gathered with the projections.

        Returns:
            scalar float32 loss, the mean over this rank's 2B anchors.

        Raises:
            ValueError: on mismatched or non-2-D inputs, ``synapse`` not ``[B]``, or when B differs across ranks.
        """
        check_projections(z1, z2)
        synapse = _check_synapse(synapse, z1.shape[0]) if self.mask_same_synapse else None
        rank, world = distributed_world(self.group) if self.gather_distributed else (0, 1)
        if world == 1:
            return nt_xent_loss(z1, z2, self.temperature, self.decoupled, synapse)
        # Logits in float32 even under AMP: with bf16 the similarities / 0.1 lose most of their precision.
        with torch.autocast(device_type=z1.device.type, enabled=False):
            z1n, z2n = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
            z1_all = gather_with_grad(z1n, self.group)
            z2_all = gather_with_grad(z2n, self.group)
            synapse_all = None
            if synapse is not None:
                synapse = synapse.to(z1.device)
                synapse_all = gather_ids(synapse, self.group)
            return _nt_xent(
                z1n, z2n, z1_all, z2_all, rank * z1.shape[0], self.temperature, self.decoupled, synapse, synapse_all
            )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, gather_distributed={self.gather_distributed}, decoupled={self.decoupled}, "
            f"mask_same_synapse={self.mask_same_synapse}"
        )
