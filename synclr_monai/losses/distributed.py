"""All-gather across processes that carries gradients back to every contributor."""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["distributed_world", "gather_ids", "gather_with_grad"]


def distributed_world(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """The calling process's rank and the world size, ``(0, 1)`` when torch.distributed is not initialised.

    Args:
        group: process group (default: the world).

    Returns:
        ``(rank, world_size)`` within ``group``.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's tensor along dim 0; the backward returns each rank the summed gradient
    of its own rows.

    Written by hand because ``torch.distributed.nn.functional.all_gather`` is deprecated in torch 2.13
    and its suggested replacement lives in the private ``torch.distributed._functional_collectives``.
    The backward uses ``all_reduce`` rather than ``reduce_scatter`` because gloo lacks the latter; the
    tensors (a batch of projections) are small.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:  # type: ignore[override]
        rank, world = distributed_world(group)
        ctx.group, ctx.rank, ctx.rows = group, rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        # Every rank's loss depends on every rank's rows: sum the gradients over ranks, keep our rows.
        # Clone: the incoming gradient buffer may be shared and must not be reduced in place.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows], None


def gather_with_grad(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Gather ``tensor`` (``[B, ...]``, same B on every rank) from all ranks into ``[B * world, ...]``,
    rank 0's rows first, with gradients flowing back to the rank that contributed each row.

    Returns ``tensor`` itself when torch.distributed is not initialised or the world has one process.

    Args:
        tensor: this rank's rows.
        group: process group (default: the world).

    Returns:
        the concatenation over ranks.

    Raises:
        ValueError: on every rank, when the ranks' batch sizes differ (collectives need equal shapes;
            use ``drop_last=True`` in the data loader).
    """
    _, world = distributed_world(group)
    if world == 1:
        return tensor
    # Checking the sizes costs a tiny collective but turns a hang or garbled gather into an error
    # that every rank raises together.
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    counts = [int(s) for s in sizes]
    if len(set(counts)) > 1:
        raise ValueError(f"batch sizes differ across ranks {counts}; use drop_last=True so that all ranks match.")
    return _AllGatherWithGrad.apply(tensor, group)


def gather_ids(ids: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Gather an integer tensor ``[B]`` (same B on every rank) from all ranks into ``[B * world]``, rank 0's first.

    For labels that travel with gathered projections (no gradient). Returns ``ids`` itself in a world of one.

    Args:
        ids: this rank's ids.
        group: process group (default: the world).

    Returns:
        the concatenation over ranks.
    """
    _, world = distributed_world(group)
    if world == 1:
        return ids
    parts = [torch.empty_like(ids) for _ in range(world)]
    dist.all_gather(parts, ids.contiguous(), group=group)
    return torch.cat(parts)
