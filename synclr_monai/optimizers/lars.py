"""LARS (layer-wise adaptive rate scaling) and its parameter groups."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

__all__ = ["LARS", "is_lars_excluded", "lars_param_groups"]


class LARS(Optimizer):
    """SGD with momentum whose per-tensor step is scaled by a trust ratio (You et al., 2017).

    For each parameter ``w`` with gradient ``g`` in a group without ``lars_exclude``::

        d = g + weight_decay * w
        q = eta * ||w|| / ||d||      (1 when ||w|| or ||d|| is 0)
        buf = momentum * buf + q * d   (buf = q * d on the first step)
        w = w - lr * buf

    In groups with ``lars_exclude: True`` (biases and normalisation parameters, see
    :func:`lars_param_groups`) there is neither weight decay nor trust ratio: ``d = g``. This is the
    form used by SimCLR/BYOL/Barlow Twins PyTorch ports; the learning rate stays outside the momentum
    buffer, as in ``torch.optim.SGD``, so a schedule acts immediately.

    Torch has no LARS; this is written by hand. The trust ratio is computed with tensor ops
    (``torch.where``) so that a step never waits for the GPU.

    Args:
        params: parameters or parameter groups; a group may set ``lars_exclude``, ``weight_decay``, ...
        lr: learning rate, e.g. SimCLR's :func:`~synclr_monai.optimizers.scaled_lr` of 0.3 (each step is also scaled
            by the trust ratio ``eta * ||w|| / ||d||``, so the lab's 0.001 barely moves the weights).
        momentum: momentum factor in [0, 1).
        weight_decay: L2 penalty added to the gradient (non-excluded groups).
        eta: trust coefficient.
        lars_exclude: default for groups that do not set it.

    Raises:
        ValueError: for a negative lr or weight decay, momentum outside [0, 1), or a non-positive eta.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        eta: float = 0.001,
        lars_exclude: bool = False,
    ):
        if lr < 0:
            raise ValueError(f"lr must be non-negative, got {lr}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {weight_decay}.")
        if eta <= 0:
            raise ValueError(f"eta must be positive, got {eta}.")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "lars_exclude": lars_exclude,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimisation step.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.

        Returns:
            the closure's loss, or None.

        Raises:
            RuntimeError: for sparse gradients.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay, eta = group["lr"], group["momentum"], group["weight_decay"], group["eta"]
            exclude = group["lars_exclude"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients.")
                d = p.grad
                if not exclude:
                    if weight_decay != 0:
                        d = d.add(p, alpha=weight_decay)
                    w_norm = torch.linalg.vector_norm(p)
                    d_norm = torch.linalg.vector_norm(d)
                    trust = torch.where(
                        (w_norm > 0) & (d_norm > 0), eta * w_norm / d_norm, torch.ones_like(w_norm)
                    )
                    d = d.mul(trust)
                if momentum != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.detach().clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(d)
                    d = state["momentum_buffer"]
                p.add_(d, alpha=-lr)
        return loss


def is_lars_excluded(name: str, param: torch.Tensor) -> bool:
    """Whether a parameter is kept out of weight decay and trust-ratio adaptation.

    Args:
        name: the parameter's qualified name.
        param: the parameter.

    Returns:
        True for biases and for every parameter with at most one dimension (normalisation weights and biases).
    """
    return param.ndim <= 1 or name == "bias" or name.endswith(".bias")


def lars_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split a model's trainable parameters into a LARS group and an excluded group.

    Args:
        model: the model.
        weight_decay: weight decay of the adapted group.

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0,
        "lars_exclude": True}]``, leaving out empty groups and frozen parameters.

    Raises:
        ValueError: when the model has no trainable parameters.
    """
    adapted: list[nn.Parameter] = []
    excluded: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (excluded if is_lars_excluded(name, param) else adapted).append(param)
    if not adapted and not excluded:
        raise ValueError(f"{type(model).__name__} has no trainable parameters.")
    groups = [
        {"params": adapted, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": excluded, "weight_decay": 0.0, "lars_exclude": True},
    ]
    return [g for g in groups if g["params"]]
