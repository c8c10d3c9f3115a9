"""Decoupled NT-Xent (positive left out of the denominator) against a direct hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from synclr_monai.losses.ntxent import NTXentLoss, nt_xent_loss


def hand_loss(z1: torch.Tensor, z2: torch.Tensor, t: float, decoupled: bool) -> float:
    """Loop over the 2B anchors in float64 with plain Python arithmetic."""
    z = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    b = z1.shape[0]
    total = 0.0
    for i in range(2 * b):
        pos = (i + b) % (2 * b)
        sims = {j: float(z[i] @ z[j]) / t for j in range(2 * b) if j != i}
        negatives = sum(math.exp(s) for j, s in sims.items() if j != pos)
        denominator = negatives if decoupled else negatives + math.exp(sims[pos])
        total += math.log(denominator) - sims[pos]
    return total / (2 * b)


@pytest.mark.parametrize("t", [0.1, 0.5])
@pytest.mark.parametrize("b", [2, 3])
def test_decoupled_equals_hand_computation(t, b):
    g = torch.Generator().manual_seed(b)
    z1, z2 = torch.randn(b, 4, generator=g), torch.randn(b, 4, generator=g)
    got = nt_xent_loss(z1, z2, t, decoupled=True)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(hand_loss(z1, z2, t, True), rel=1e-5, abs=1e-6)
    assert nt_xent_loss(z1, z2, t).item() == pytest.approx(hand_loss(z1, z2, t, False), rel=1e-5, abs=1e-6)
    # the module (single process) gives the same value
    assert NTXentLoss(t, decoupled=True)(z1, z2).item() == pytest.approx(got.item(), rel=1e-6)
    # leaving the positive out of the denominator always lowers the loss
    assert got.item() < nt_xent_loss(z1, z2, t).item()


def test_decoupled_gradient_matches_autograd_of_the_formula():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    nt_xent_loss(z1, z2, 0.2, decoupled=True).backward()
    grads = z1.grad.clone(), z2.grad.clone()
    z1.grad = z2.grad = None
    # the formula written out with tensors: mean over anchors of logsumexp(negatives) - positive
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sims = z @ z.T / 0.2
    n = z.shape[0]
    pos = (torch.arange(n) + 3) % n
    keep = ~torch.eye(n, dtype=torch.bool)
    keep[torch.arange(n), pos] = False
    loss = (torch.logsumexp(sims.masked_fill(~keep, float("-inf")), dim=1) - sims[torch.arange(n), pos]).mean()
    loss.backward()
    torch.testing.assert_close(grads[0].double(), z1.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads[1].double(), z2.grad, rtol=1e-4, atol=1e-6)
    assert "decoupled=True" in repr(NTXentLoss(decoupled=True))
