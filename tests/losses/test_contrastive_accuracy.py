"""Top-1 contrastive accuracy against hand-worked and looped references."""

from __future__ import annotations

import pytest
import torch

from synclr_monai.losses import contrastive_accuracy


def reference_accuracy(z1: torch.Tensor, z2: torch.Tensor) -> float:
    z = torch.nn.functional.normalize(torch.cat([z1, z2]).double(), dim=1)
    n, b = z.shape[0], z.shape[0] // 2
    hits = 0
    for i in range(n):
        scores = {k: float(z[i] @ z[k]) for k in range(n) if k != i}
        best = max(scores, key=scores.get)
        hits += best == (i + b) % n
    return hits / n


def test_hand_worked_case():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    z1 = torch.stack([e1, e2])
    z2 = torch.stack([e1, -e2])
    # z1[0] and z2[0] find each other; z1[1] and z2[1] point apart, so both miss.
    assert contrastive_accuracy(z1, z2).item() == pytest.approx(0.5)


def test_aligned_views_are_all_correct():
    z1 = torch.randn(10, 16)
    assert contrastive_accuracy(z1, 3 * z1).item() == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(12, 4, generator=g)
    z2 = z1 + 0.8 * torch.randn(12, 4, generator=g)  # noisy views: accuracy strictly between 0 and 1
    acc = contrastive_accuracy(z1, z2)
    assert acc.dtype == torch.float32 and acc.ndim == 0
    assert acc.item() == pytest.approx(reference_accuracy(z1, z2))


def test_no_gradient_and_float32_under_autocast():
    z1 = torch.randn(4, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        acc = contrastive_accuracy(z1, z1.detach().bfloat16())
    assert not acc.requires_grad
    assert acc.dtype == torch.float32


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        contrastive_accuracy(torch.randn(3, 4), torch.randn(3, 5))
