"""Warm-up + cosine schedule values at chosen iterations, resuming, and the scaling rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synclr_monai.optimizers import LARS, WarmupCosineLR, scaled_lr


def _lrs(schedule_kwargs: dict, base_lrs: tuple[float, ...] = (2.0,), steps: int = 20) -> list[list[float]]:
    """Learning rate of every group at each iteration, as the optimiser sees it for that step."""
    groups = [{"params": [nn.Parameter(torch.ones(1))], "lr": lr} for lr in base_lrs]
    opt = torch.optim.SGD(groups, lr=1.0)
    sched = WarmupCosineLR(opt, **schedule_kwargs)
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return seen


def test_values_at_chosen_iterations():
    lrs = [g[0] for g in _lrs({"warmup_steps": 4, "total_steps": 12, "min_lr_ratio": 0.1})]
    # warm-up: (t + 1) / 4 of 2.0
    assert lrs[0] == pytest.approx(0.5)
    assert lrs[1] == pytest.approx(1.0)
    assert lrs[3] == pytest.approx(2.0)
    # cosine from 2.0 (t = 4) via the midpoint (t = 8) to 0.2 (t = 12) and flat after
    assert lrs[4] == pytest.approx(2.0)
    assert lrs[8] == pytest.approx(0.2 + 1.8 * 0.5)
    assert lrs[6] == pytest.approx(0.2 + 1.8 * 0.5 * (1 + 2**-0.5))  # cos(pi/4)
    assert lrs[12] == pytest.approx(0.2)
    assert lrs[19] == pytest.approx(0.2)
    # monotone after the warm-up
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_no_warmup_and_groups_scale_together():
    lrs = _lrs({"warmup_steps": 0, "total_steps": 10}, base_lrs=(1.0, 0.1), steps=11)
    assert lrs[0] == pytest.approx([1.0, 0.1])
    assert lrs[5] == pytest.approx([0.5, 0.05])
    assert lrs[10] == pytest.approx([0.0, 0.0])


def test_resume_from_state_dict():
    def make():
        opt = LARS([nn.Parameter(torch.ones(2, 2))], lr=1.0)
        return opt, WarmupCosineLR(opt, warmup_steps=3, total_steps=10, min_lr_ratio=0.05)

    opt, sched = make()
    for _ in range(5):
        opt.step()
        sched.step()
    opt2, sched2 = make()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for _ in range(4):
        assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup_steps": 5, "total_steps": 0},
        {"warmup_steps": 11, "total_steps": 10},
        {"warmup_steps": -1, "total_steps": 10},
        {"warmup_steps": 1, "total_steps": 10, "min_lr_ratio": 1.5},
    ],
)
def test_bad_arguments_raise(kwargs):
    opt = torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1.0)
    with pytest.raises(ValueError):
        WarmupCosineLR(opt, **kwargs)


def test_scaled_lr():
    assert scaled_lr(0.001, 64) == pytest.approx(0.00025)
    assert scaled_lr(0.001, 512) == pytest.approx(0.002)
    assert scaled_lr(0.3, 100, reference=100) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        scaled_lr(0.001, 0)
