"""LARS: parameter groups, a step worked by hand, and the excluded groups against torch SGD."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from synclr_monai.optimizers import LARS, lars_param_groups


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 3, 3)  # weight 5-D (adapted), bias (excluded)
        self.norm = nn.BatchNorm3d(3)  # weight and bias 1-D (excluded)
        self.head = nn.Linear(3, 2, bias=False)  # weight 2-D (adapted)
        self.scale = nn.Parameter(torch.ones(()))  # 0-D (excluded)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_param_groups_exclude_biases_and_1d_params():
    model = Tiny()
    groups = lars_param_groups(model, weight_decay=1e-6)
    assert len(groups) == 2
    adapted, excluded = groups
    assert {id(p) for p in adapted["params"]} == {id(model.conv.weight), id(model.head.weight)}
    assert {id(p) for p in excluded["params"]} == {
        id(model.conv.bias),
        id(model.norm.weight),
        id(model.norm.bias),
        id(model.scale),
    }
    assert adapted["weight_decay"] == 1e-6 and not adapted["lars_exclude"]
    assert excluded["weight_decay"] == 0.0 and excluded["lars_exclude"]


def test_param_groups_drop_empty_groups_and_refuse_frozen_models():
    assert len(lars_param_groups(nn.Linear(3, 2, bias=False), 0.1)) == 1
    with pytest.raises(ValueError, match="no trainable"):
        lars_param_groups(nn.Linear(3, 2).requires_grad_(False), 0.1)


def test_two_steps_match_hand_computation():
    lr, momentum, wd, eta = 0.5, 0.9, 0.1, 0.01
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
        model.bias.copy_(torch.tensor([1.0]))
    opt = LARS(lars_param_groups(model, wd), lr=lr, momentum=momentum, weight_decay=wd, eta=eta)

    # Step 1: g = [0.2, -0.1], bias grad 2.
    model.weight.grad = torch.tensor([[0.2, -0.1]])
    model.bias.grad = torch.tensor([2.0])
    opt.step()
    # weight: d = g + wd*w = [0.5, 0.3]; q = eta*5/sqrt(0.34); buf = q*d; w -= lr*buf
    q1 = eta * 5.0 / math.sqrt(0.5**2 + 0.3**2)
    buf_w = [q1 * 0.5, q1 * 0.3]
    w = [3.0 - lr * buf_w[0], 4.0 - lr * buf_w[1]]
    # bias: excluded, plain momentum SGD: buf = 2; b = 1 - 0.5*2 = 0
    buf_b = 2.0
    b = 1.0 - lr * buf_b
    torch.testing.assert_close(model.weight, torch.tensor([w]))
    torch.testing.assert_close(model.bias, torch.tensor([b]))

    # Step 2: g = [0, 1], bias grad -1.
    model.weight.grad = torch.tensor([[0.0, 1.0]])
    model.bias.grad = torch.tensor([-1.0])
    opt.step()
    d = [0.0 + wd * w[0], 1.0 + wd * w[1]]
    q2 = eta * math.hypot(*w) / math.hypot(*d)
    buf_w = [momentum * buf_w[0] + q2 * d[0], momentum * buf_w[1] + q2 * d[1]]
    w = [w[0] - lr * buf_w[0], w[1] - lr * buf_w[1]]
    buf_b = momentum * buf_b - 1.0
    b = b - lr * buf_b
    torch.testing.assert_close(model.weight, torch.tensor([w]))
    torch.testing.assert_close(model.bias, torch.tensor([b]))


def test_zero_weights_use_trust_ratio_one():
    # A zero-initialised tensor has ||w|| = 0: the ratio falls back to 1 so it can leave zero.
    p = nn.Parameter(torch.zeros(2, 2))
    p.grad = torch.ones(2, 2)
    LARS([p], lr=0.1, momentum=0.0, weight_decay=0.0).step()
    torch.testing.assert_close(p.detach(), torch.full((2, 2), -0.1))


def test_excluded_group_equals_torch_sgd():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    lars = LARS([{"params": a.parameters(), "lars_exclude": True}], lr=0.05, momentum=0.9, weight_decay=0.5)
    sgd = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        x = torch.randn(5, 4)
        for model, opt in ((a, lars), (b, sgd)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_trust_ratio_makes_the_step_scale_free():
    # The adapted update has norm lr * eta * ||w||, whatever the gradient's scale.
    for scale in (1e-3, 1.0, 1e3):
        p = nn.Parameter(torch.tensor([3.0, 4.0]).reshape(1, 2))
        p.grad = scale * torch.tensor([[1.0, -2.0]])
        LARS([p], lr=1.0, momentum=0.0, weight_decay=0.0, eta=0.1).step()
        step = torch.linalg.vector_norm(p.detach() - torch.tensor([[3.0, 4.0]]))
        assert step.item() == pytest.approx(0.5, rel=1e-5)


def test_momentum_buffer_in_state_dict_round_trip():
    p = nn.Parameter(torch.ones(2, 2))
    opt = LARS([p], lr=0.1)
    p.grad = torch.ones(2, 2)
    opt.step()
    q = nn.Parameter(p.detach().clone())
    opt2 = LARS([q], lr=0.1)
    buffer = io.BytesIO()  # through serialisation, as a checkpoint would (load_state_dict shares tensors)
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    p.grad = q.grad = torch.full((2, 2), 0.5)
    opt.step()
    opt2.step()
    torch.testing.assert_close(p, q)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": -1.0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"eta": 0.0}, "eta"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LARS([nn.Parameter(torch.ones(1))], **{"lr": 0.1, **kwargs})


def test_sparse_gradients_raise():
    emb = nn.Embedding(4, 2, sparse=True)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        LARS(emb.parameters(), lr=0.1).step()
