"""NT-Xent against a plain per-anchor reference, in value and gradient."""

from __future__ import annotations

import math

import pytest
import torch

from synclr_monai.losses import NTXentLoss, nt_xent_loss


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss written out: for each of the 2B anchors, -log(exp(s_pos/t) / sum_{k != i} exp(s_ik/t))."""
    z = torch.cat([z1, z2]).double()
    n = z.shape[0]
    b = n // 2
    unit = [z[i] / torch.sqrt((z[i] * z[i]).sum()) for i in range(n)]
    total = 0.0
    for i in range(n):
        positive = i + b if i < b else i - b
        denominator = 0.0
        for k in range(n):
            if k != i:
                denominator = denominator + torch.exp((unit[i] * unit[k]).sum() / temperature)
        numerator = torch.exp((unit[i] * unit[positive]).sum() / temperature)
        total = total - torch.log(numerator / denominator)
    return total / n


@pytest.mark.parametrize("b, d, temperature", [(1, 3, 0.1), (2, 3, 0.1), (5, 16, 0.5), (8, 32, 1.0), (3, 7, 0.07)])
def test_value_and_gradient_match_reference(b, d, temperature):
    g = torch.Generator().manual_seed(b * 100 + d)
    z1 = torch.randn(b, d, generator=g) * 3.0
    z2 = torch.randn(b, d, generator=g)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    r1, r2 = z1.clone().double().requires_grad_(), z2.clone().double().requires_grad_()

    loss = NTXentLoss(temperature=temperature)(a1, a2)
    expected = reference_nt_xent(r1, r2, temperature)
    loss.backward()
    expected.backward()

    assert loss.dtype == torch.float32 and loss.ndim == 0
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a1.grad.double(), r1.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a2.grad.double(), r2.grad, rtol=1e-4, atol=1e-6)
    # The functional form is the same computation.
    torch.testing.assert_close(nt_xent_loss(z1, z2, temperature), loss.detach())


def test_single_pair_has_only_its_positive():
    # With B = 1 each anchor's only candidate is its positive: the loss is exactly 0.
    loss = nt_xent_loss(torch.randn(1, 4), torch.randn(1, 4), 0.1)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_aligned_pairs_score_lower_than_random_pairs():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(16, 32, generator=g)
    aligned = nt_xent_loss(z1, z1 * 2.0, 0.1)  # same direction: cosine 1 for every positive pair
    random = nt_xent_loss(z1, torch.randn(16, 32, generator=g), 0.1)
    assert aligned < random
    # Random pairs sit near chance, log(2B - 1).
    assert random.item() > 0.5 * math.log(31)


def test_scale_invariance():
    # Projections are L2-normalised: scaling a whole view changes nothing.
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    torch.testing.assert_close(nt_xent_loss(z1, z2), nt_xent_loss(5 * z1, 0.1 * z2))


def test_float32_logits_under_autocast():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(32, 64, generator=g), torch.randn(32, 64, generator=g)
    exact = nt_xent_loss(z1, z2, 0.1)
    loss_fn = NTXentLoss(0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = loss_fn(z1, z2)
        from_bf16 = loss_fn(z1.bfloat16(), z2.bfloat16())
    # Under active autocast a bf16 matmul would be off by ~1e-2; the loss disables it.
    assert inside.dtype == torch.float32 and from_bf16.dtype == torch.float32
    torch.testing.assert_close(inside, exact, rtol=0, atol=1e-6)
    torch.testing.assert_close(from_bf16, nt_xent_loss(z1.bfloat16().float(), z2.bfloat16().float()), rtol=0, atol=1e-6)


def test_no_gather_without_process_group():
    # gather_distributed is a no-op when torch.distributed is not initialised.
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    torch.testing.assert_close(NTXentLoss(0.2, gather_distributed=True)(z1, z2), NTXentLoss(0.2, False)(z1, z2))


@pytest.mark.parametrize(
    "z1, z2",
    [(torch.randn(4, 8), torch.randn(5, 8)), (torch.randn(8), torch.randn(8)), (torch.randn(0, 8), torch.randn(0, 8))],
)
def test_bad_shapes_raise(z1, z2):
    with pytest.raises(ValueError, match="projection batches"):
        NTXentLoss()(z1, z2)


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_bad_temperature_raises(temperature):
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(temperature)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(torch.randn(2, 3), torch.randn(2, 3), temperature)
