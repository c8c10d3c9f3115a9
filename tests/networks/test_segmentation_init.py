"""Segmentation networks initialised from an exported encoder: every encoder tensor loaded, sizes from the sidecar."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from monai.networks.nets import SwinUNETR
from torch import nn

from synclr_monai.networks import build_backbone, build_simclr, save_encoder
from synclr_monai.networks.export import encoder_keys, exportable_encoder
from synclr_monai.networks.segmentation import ResNetUNet, build_segmentation_net, check_segmentation_size


def _perturbed(module: nn.Module, seed: int = 5) -> nn.Module:
    """Non-default values everywhere (BN statistics too), so that equal tensors mean copied tensors."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) * 0.2 + 0.9 if "running_var" in name else torch.randn_like(t) * 0.05)
            elif "num_batches_tracked" in name:
                t.fill_(3)
    return module


def test_resnet_unet_loads_every_encoder_tensor_and_keeps_the_features(tmp_path):
    source = _perturbed(build_simclr("resnet10", projection_hidden=16, projection_dim=4)).eval()
    path = save_encoder(source, tmp_path / "model.pt")
    file_keys = torch.load(path, weights_only=True).keys()

    net = build_segmentation_net("resnet10", path)
    assert isinstance(net, ResNetUNet)
    expected = sorted(encoder_keys(net, "resnet"))
    assert net.loaded_encoder_keys == expected
    assert len(expected) == len(file_keys) and all(k.startswith("encoder.resnet.") for k in expected)
    for key, value in source.backbone.resnet.state_dict().items():
        torch.testing.assert_close(net.state_dict()[f"encoder.resnet.{key}"], value, rtol=0, atol=0)

    net.eval()
    x = torch.randn(2, 3, 32, 32, 32)
    with torch.no_grad():
        # the pooled features of the segmentation net's encoder are the pretrained backbone's
        torch.testing.assert_close(net.encoder(x), source.encode(x))
        # the deepest skip feature map is the pretrained last stage before pooling
        last = net.encode(x)[-1]
        torch.testing.assert_close(last.mean(dim=(2, 3, 4)), source.encode(x))
        assert net(x).shape == (2, 2, 32, 32, 32)


def test_from_scratch_loads_nothing_and_decoder_does_not_depend_on_the_encoder(tmp_path):
    path = save_encoder(_perturbed(build_backbone("resnet10")), tmp_path / "model.pt")
    torch.manual_seed(0)
    scratch = build_segmentation_net("resnet10", None)
    torch.manual_seed(0)
    pretrained = build_segmentation_net("resnet10", path)
    assert scratch.loaded_encoder_keys == []
    # same seed: the decoder and head start equal; only the encoder differs
    for key, value in scratch.state_dict().items():
        if key.startswith("encoder."):
            continue
        torch.testing.assert_close(pretrained.state_dict()[key], value, rtol=0, atol=0)
    assert not torch.equal(scratch.encoder.resnet.conv1.weight, pretrained.encoder.resnet.conv1.weight)


def test_resnet_arguments_come_from_the_sidecar(tmp_path):
    # shortcut "A" has no downsampling convolutions: the keys only match when the sidecar is honoured
    source = _perturbed(build_backbone("resnet10", shortcut_type="A"))
    path = save_encoder(source, tmp_path / "model.pt")
    net = build_segmentation_net("resnet10", path)
    assert not any("downsample" in k for k in net.loaded_encoder_keys)
    assert len(net.loaded_encoder_keys) == len(source.state_dict())
    # an explicit argument that contradicts the sidecar is refused before anything is built
    with pytest.raises(ValueError, match=r"model\.json: the encoder was trained with backbone_kwargs .*shortcut_type"):
        build_segmentation_net("resnet10", path, shortcut_type="B")


def test_swin_unetr_takes_its_sizes_from_the_sidecar(tmp_path):
    source = _perturbed(build_simclr("swin", feature_size=12, projection_hidden=16, projection_dim=4)).eval()
    path = save_encoder(source, tmp_path / "model.pt")
    net = build_segmentation_net("swin", path)  # feature_size=12 read from model.json, not passed
    assert isinstance(net, SwinUNETR)
    assert net.loaded_encoder_keys == sorted(k for k in net.state_dict() if k.startswith("swinViT."))
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(net.state_dict()[key], value, rtol=0, atol=0)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 64, 64, 64)).shape == (1, 2, 64, 64, 64)


def test_wrong_backbone_and_missing_file_are_reported(tmp_path):
    path = save_encoder(build_backbone("resnet10"), tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"model\.json: the encoder was trained with backbone='resnet10'"):
        build_segmentation_net("resnet18", path)
    with pytest.raises(FileNotFoundError):
        build_segmentation_net("resnet10", tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="trained on 3 input channels"):
        build_segmentation_net("resnet10", path, in_channels=1)


def test_stem_without_two_halvings_is_rejected_and_sizes_are_checked():
    with pytest.raises(ValueError, match="conv1_t_stride=2"):
        ResNetUNet("resnet10", backbone_kwargs={"conv1_t_stride": 1})
    with pytest.raises(ValueError, match="conv1_t_stride=2"):
        ResNetUNet("resnet10", backbone_kwargs={"no_max_pool": True})
    with pytest.raises(ValueError, match="multiples of 32"):
        ResNetUNet("resnet10")(torch.zeros(1, 3, 32, 32, 40))
    check_segmentation_size("resnet18", 32)
    check_segmentation_size("swin", 64)
    for backbone, size in (("resnet18", 48), ("swin", 32)):
        with pytest.raises(ValueError, match="crop size"):
            check_segmentation_size(backbone, size)


def test_exportable_encoder_has_the_export_keys_and_the_backbone_forward(tmp_path):
    source = _perturbed(build_backbone("resnet10")).eval()
    path = save_encoder(source, tmp_path / "model.pt")
    target = exportable_encoder("resnet10", backbone_kwargs={"in_channels": 3, "spatial_dims": 3})
    state = torch.load(path, weights_only=True)
    target.load_state_dict(state, strict=True)  # what ckpt_export does
    x = torch.randn(2, 3, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x), source(x))
    with pytest.raises(ValueError, match="in_channels"):
        exportable_encoder("resnet10", backbone_kwargs={"in_channels": 1})


def test_exported_files_get_the_permissions_of_plain_files(tmp_path):
    # the atomic write goes through mkstemp (0600); the export must be readable as a normal file would be
    previous = os.umask(0o022)
    try:
        path = save_encoder(build_backbone("resnet10"), tmp_path / "model.pt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.with_suffix(".json").stat().st_mode) == 0o644
