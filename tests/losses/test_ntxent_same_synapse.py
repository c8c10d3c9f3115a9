"""NT-Xent with cubes of one synapse kept out of each other's negatives, against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from synclr_monai.losses.ntxent import NTXentLoss, nt_xent_loss


def hand_loss(z1: torch.Tensor, z2: torch.Tensor, t: float, ids: list[int]) -> float:
    """Loop over the 2B anchors in float64; a candidate of the anchor's synapse (id >= 0) other than its
    positive is not in the denominator."""
    z = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    b = z1.shape[0]
    sid = ids + ids
    total = 0.0
    for i in range(2 * b):
        pos = (i + b) % (2 * b)
        keep = [j for j in range(2 * b) if j != i and (j == pos or sid[i] < 0 or sid[j] != sid[i])]
        sims = {j: float(z[i] @ z[j]) / t for j in keep}
        total += math.log(sum(math.exp(s) for s in sims.values())) - sims[pos]
    return total / (2 * b)


@pytest.mark.parametrize("ids", [[0, 1, 0, 2, -1, -1], [5, 5, 5, 5, 5, 5], [0, 1, 2, 3, 4, 5], [-1] * 6])
@pytest.mark.parametrize("t", [0.1, 0.5])
def test_same_synapse_equals_hand_computation(ids, t):
    g = torch.Generator().manual_seed(len(set(ids)))
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    synapse = torch.tensor(ids)
    got = nt_xent_loss(z1, z2, t, synapse=synapse)
    assert got.item() == pytest.approx(hand_loss(z1, z2, t, ids), rel=1e-5, abs=1e-6)
    assert NTXentLoss(t, mask_same_synapse=True)(z1, z2, synapse).item() == pytest.approx(got.item(), rel=1e-6)
    plain = nt_xent_loss(z1, z2, t).item()
    if len(set(i for i in ids if i >= 0)) == sum(i >= 0 for i in ids):  # no synapse twice: the plain loss
        assert got.item() == pytest.approx(plain, rel=1e-6)
    else:  # fewer negatives: a lower loss
        assert got.item() < plain


def test_all_one_synapse_leaves_only_the_positive():
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    got = nt_xent_loss(z1, z2, 0.2, synapse=torch.zeros(4, dtype=torch.long))
    assert got.item() == pytest.approx(0.0, abs=1e-6)  # softmax over the positive alone


def test_gradient_does_not_reach_a_masked_negative():
    # anchor 0's only other candidates besides its positive are pair 1, of the same synapse: zero loss, no gradient
    z1 = torch.randn(2, 3, requires_grad=True)
    z2 = torch.randn(2, 3, requires_grad=True)
    nt_xent_loss(z1, z2, 0.2, synapse=torch.tensor([7, 7])).backward()
    assert torch.count_nonzero(z1.grad) == 0 and torch.count_nonzero(z2.grad) == 0


def test_ids_ignored_when_off_and_checked_when_on():
    z1, z2 = torch.randn(3, 4), torch.randn(3, 4)
    same = torch.tensor([1, 1, 1])
    assert NTXentLoss(0.2)(z1, z2, same).item() == pytest.approx(nt_xent_loss(z1, z2, 0.2).item(), rel=1e-6)
    assert not NTXentLoss(0.2).uses_synapse_ids and NTXentLoss(0.2, mask_same_synapse=True).uses_synapse_ids
    with pytest.raises(ValueError, match="synapse ids must be a"):
        NTXentLoss(0.2, mask_same_synapse=True)(z1, z2, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="integer"):
        nt_xent_loss(z1, z2, 0.2, synapse=torch.tensor([1.0, 2.0, 3.0]))
