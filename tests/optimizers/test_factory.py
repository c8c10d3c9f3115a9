"""build_optimizer: LARS, Adam and AdamW on the same groups, no weight decay on biases and norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synclr_monai.optimizers import LARS
from synclr_monai.optimizers.factory import OPTIMIZERS, build_optimizer


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.Flatten(), nn.LazyLinear(3))


def _model() -> nn.Module:
    model = tiny()
    model(torch.zeros(1, 1, 5, 5, 5))  # materialise the lazy layer
    return model


@pytest.mark.parametrize(
    "name, cls", [("lars", LARS), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_optimizer_by_name_and_decay_groups(name, cls):
    model = _model()
    opt = build_optimizer(name, model, lr=0.01, weight_decay=0.1, momentum=0.8)
    assert type(opt) is cls
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    named = dict(model.named_parameters())
    for n, p in named.items():
        if p.ndim <= 1:  # biases and batch-norm scales
            assert id(p) in no_decay and id(p) not in decay, n
        else:
            assert id(p) in decay and id(p) not in no_decay, n
    assert len(decay) + len(no_decay) == len(named)
    assert all(g["weight_decay"] in (0.0, 0.1) for g in opt.param_groups)
    if name != "lars":
        assert all(g["betas"] == (0.8, 0.999) for g in opt.param_groups)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_step_without_gradient_decays_weights_only(name):
    model = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(name, model, lr=1e-3, weight_decay=0.5)  # small: Adam moves each weight by ~lr
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        if p.ndim <= 1:
            assert torch.equal(p, before[n]), n  # no decay on biases and norms
        else:
            assert p.detach().norm() < before[n].norm(), n  # the weights shrink


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="lars"):
        build_optimizer("sgd", _model(), lr=0.1)
