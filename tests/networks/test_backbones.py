"""Backbone factory: feature sizes on 16^3 / 32^3 / 80^3 inputs, padding, and argument checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synclr_monai.networks import BACKBONE_NAMES, ResNetFeatureEncoder, SwinEncoder, build_backbone

SWIN_TINY = {"feature_size": 12}


@pytest.mark.parametrize(
    "name, features", [("resnet10", 512), ("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)]
)
def test_resnet_feature_sizes(name, features):
    net = build_backbone(name).eval()
    assert isinstance(net, ResNetFeatureEncoder)
    assert net.out_features == features
    with torch.no_grad():
        for size in (16, 32):
            assert net(torch.randn(2, 3, size, size, size)).shape == (2, features)


def test_resnet_80_cube_and_passthrough_kwargs():
    # widen_factor (a MONAI ResNet argument) keeps the 80^3 run light: 512 * 0.25 = 128 features.
    net = build_backbone("resnet10", widen_factor=0.25).eval()
    assert net.out_features == 128
    assert net.resnet.conv1.stride == (2, 2, 2)  # the encoder's default stem
    assert build_backbone("resnet10", conv1_t_stride=1).resnet.conv1.stride == (1, 1, 1)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 80, 80, 80)).shape == (1, 128)


def test_resnet_other_dims_and_channels():
    net = build_backbone("resnet18", in_channels=1, spatial_dims=2).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 32, 32)).shape == (2, 512)


@pytest.mark.parametrize("size", [16, 32, 80])
def test_swin_feature_sizes(size):
    net = build_backbone("swin", **SWIN_TINY).eval()
    assert isinstance(net, SwinEncoder)
    assert net.out_features == 12 * 16
    with torch.no_grad():
        assert net(torch.randn(1, 3, size, size, size)).shape == (1, 192)


def test_swin_pads_symmetrically_with_zeros():
    net = build_backbone("swin", **SWIN_TINY).eval()
    x = torch.randn(2, 3, 16, 20, 32)
    padded = torch.zeros(2, 3, 32, 32, 32)
    padded[:, :, 8:24, 6:26, :] = x  # 16 -> 32 (8 + 8), 20 -> 32 (6 + 6), 32 unchanged
    torch.testing.assert_close(net.pad(x), padded)
    with torch.no_grad():
        expected = F.adaptive_avg_pool3d(net.swinViT(padded, True)[-1], 1).flatten(1)
        torch.testing.assert_close(net(x), expected)


def test_swin_is_the_swinunetr_encoder():
    net = build_backbone("swin", feature_size=24, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2))
    assert all(k.startswith("swinViT.") for k in net.state_dict())
    assert net.out_features == 384
    assert net.config["depths"] == (1, 1, 1, 1)


def test_backbone_gradients_flow():
    net = build_backbone("resnet10")
    net(torch.randn(2, 3, 16, 16, 16)).sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net.resnet.conv1.weight.grad.abs().sum() > 0


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        build_backbone("vgg16")
    for name in BACKBONE_NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "kwargs", [{"pretrained": True}, {"num_classes": 3}, {"feed_forward": True}, {"n_input_channels": 1}]
)
def test_resnet_reserved_kwargs_raise(kwargs):
    with pytest.raises(ValueError, match="do not pass"):
        build_backbone("resnet18", **kwargs)


def test_swin_bad_arguments_raise():
    with pytest.raises(ValueError, match="decoder"):
        build_backbone("swin", out_channels=2)
    with pytest.raises(ValueError, match="12"):
        build_backbone("swin", feature_size=16)


@pytest.mark.parametrize("name", ["resnet10", "swin"])
def test_wrong_input_layout_raises(name):
    net = build_backbone(name, **(SWIN_TINY if name == "swin" else {}))
    with pytest.raises(ValueError, match=r"\[B, 3, S, S, S\]"):
        net(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="expected input"):
        net(torch.randn(3, 16, 16, 16))
