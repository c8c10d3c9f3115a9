"""Projection head layout, the SimCLR model, and SyncBatchNorm conversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synclr_monai.networks import ProjectionHead, SimCLR, build_backbone, build_simclr


def _layout(head: nn.Module) -> list[tuple]:
    out = []
    for m in head:
        if isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features, m.bias is not None))
        else:
            out.append((type(m).__name__,))
    return out


def test_projection_head_lab_default():
    head = ProjectionHead(512)
    assert _layout(head) == [
        ("Linear", 512, 2048, False),
        ("BatchNorm1d",),
        ("ReLU",),
        ("Linear", 2048, 2048, False),
        ("BatchNorm1d",),
        ("ReLU",),
        ("Linear", 2048, 256, True),
    ]


def test_projection_head_two_and_one_layers():
    assert _layout(ProjectionHead(8, 16, 4, num_layers=2)) == [
        ("Linear", 8, 16, False),
        ("BatchNorm1d",),
        ("ReLU",),
        ("Linear", 16, 4, True),
    ]
    assert _layout(ProjectionHead(8, 16, 4, num_layers=1)) == [("Linear", 8, 4, True)]
    assert ProjectionHead(8, 16, 4)(torch.randn(5, 8)).shape == (5, 4)


@pytest.mark.parametrize("kwargs", [{"num_layers": 0}, {"hidden_features": 0}, {"out_features": -1}])
def test_projection_head_bad_sizes_raise(kwargs):
    with pytest.raises(ValueError, match="positive"):
        ProjectionHead(8, **kwargs)


def test_simclr_forward_is_projector_of_encode():
    torch.manual_seed(0)
    model = build_simclr("resnet10", projection_hidden=32, projection_dim=8).eval()
    x = torch.randn(3, 3, 16, 16, 16)
    with torch.no_grad():
        h = model.encode(x)
        z = model(x)
    assert h.shape == (3, 512) and z.shape == (3, 8)
    torch.testing.assert_close(z, model.projector(h))
    torch.testing.assert_close(h, model.backbone(x))


def test_simclr_trains_end_to_end():
    model = build_simclr(
        "swin", feature_size=12, depths=(1, 1, 1, 1), projection_hidden=16, projection_dim=4, projection_layers=2
    )
    z = model(torch.randn(4, 3, 16, 16, 16))
    z.pow(2).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert model.backbone.swinViT.patch_embed.proj.weight.grad.abs().sum() > 0


def test_simclr_checks_sizes():
    with pytest.raises(ValueError, match="512 features"):
        SimCLR(build_backbone("resnet10"), ProjectionHead(256))


def test_sync_batchnorm_conversion_keeps_names_and_outputs():
    torch.manual_seed(0)
    plain = build_simclr("resnet10", projection_hidden=16, projection_dim=4).eval()
    synced = build_simclr("resnet10", projection_hidden=16, projection_dim=4, sync_batchnorm=True).eval()
    kinds = {type(m) for m in synced.modules()}
    assert nn.SyncBatchNorm in kinds
    assert not kinds & {nn.BatchNorm1d, nn.BatchNorm3d}
    assert synced.state_dict().keys() == plain.state_dict().keys()
    synced.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(synced(x), plain(x))
