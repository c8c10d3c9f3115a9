"""Encoder export: round trips into MONAI SwinUNETR / ResNet / our models, and clear mismatch errors."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import SwinUNETR, resnet10, resnet18
from torch import nn

from synclr_monai.networks import (
    EncoderMismatchError,
    build_backbone,
    build_simclr,
    load_encoder,
    read_encoder_metadata,
    save_encoder,
)
from synclr_monai.networks.export import encoder_state_dict, metadata_path


def _perturbed(module: nn.Module) -> nn.Module:
    """Give every tensor (BN running stats too) non-default values, so that equality means copied."""
    torch.manual_seed(123)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5)
            elif "num_batches_tracked" in name:
                t.fill_(7)
    return module


def test_resnet_round_trip_into_monai_resnet(tmp_path):
    model = _perturbed(build_simclr("resnet10", projection_hidden=16, projection_dim=4))
    path = save_encoder(model, tmp_path / "model.pt", metadata={"epoch": 3})

    # The file is a plain state dict with MONAI ResNet keys and no classifier.
    state = torch.load(path, weights_only=True)
    assert "conv1.weight" in state and not any(k.startswith(("fc.", "resnet.", "backbone.")) for k in state)

    target = resnet10(n_input_channels=3, num_classes=5)
    fc_before = {k: v.clone() for k, v in target.fc.state_dict().items()}
    loaded = load_encoder(target, path)

    expected = model.backbone.resnet.state_dict()
    assert sorted(loaded) == sorted(expected)  # every encoder tensor, the classifier left out
    for key, value in target.state_dict().items():
        if key.startswith("fc."):
            torch.testing.assert_close(value, fc_before[key[3:]])  # untouched head
        else:
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


def test_resnet_round_trip_into_our_models_gives_equal_features(tmp_path):
    source = _perturbed(build_backbone("resnet10")).eval()
    path = save_encoder(source, tmp_path / "enc.pt")
    backbone = build_backbone("resnet10").eval()
    simclr = build_simclr("resnet10", projection_hidden=16, projection_dim=4).eval()
    assert load_encoder(backbone, path)[0].startswith("resnet.")
    assert all(k.startswith("backbone.resnet.") for k in load_encoder(simclr, path))
    x = torch.randn(2, 3, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), source(x))
        torch.testing.assert_close(simclr.encode(x), source(x))


def test_swin_round_trip_into_swinunetr(tmp_path):
    model = _perturbed(build_simclr("swin", feature_size=12, projection_hidden=16, projection_dim=4))
    path = save_encoder(model, tmp_path / "model.pt")
    state = torch.load(path, weights_only=True)
    assert all(k.startswith("swinViT.") for k in state)

    target = SwinUNETR(in_channels=3, out_channels=2, feature_size=12)
    decoder_before = {k: v.clone() for k, v in target.state_dict().items() if not k.startswith("swinViT.")}
    loaded = load_encoder(target, path)

    expected = model.backbone.state_dict()
    assert sorted(loaded) == sorted(k for k in target.state_dict() if k.startswith("swinViT."))
    for key, value in target.state_dict().items():
        if key.startswith("swinViT."):
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
        else:
            torch.testing.assert_close(value, decoder_before[key], rtol=0, atol=0)

    # The segmentation network's encoder now computes what the trained backbone computed.
    x = torch.randn(1, 3, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target.swinViT(x)[-1], model.backbone.swinViT(x)[-1])
    # And the file loads straight into SwinUNETR with torch alone.
    unexpected = SwinUNETR(in_channels=3, out_channels=2, feature_size=12).load_state_dict(state, strict=False)
    assert not unexpected.unexpected_keys


def test_sidecar_metadata_and_atomic_write(tmp_path):
    path = save_encoder(build_backbone("swin", feature_size=12), tmp_path / "sub" / "model.pt", {"epoch": 7})
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "model.pt"]  # no temporary files left
    meta = read_encoder_metadata(path)
    assert meta == json.loads(metadata_path(path).read_text())
    assert meta["backbone"] == "swin" and meta["kind"] == "swin" and meta["epoch"] == 7
    assert meta["out_features"] == 192
    assert meta["backbone_kwargs"]["feature_size"] == 12
    # The metadata is enough to rebuild the backbone and load the file.
    rebuilt = build_backbone(meta["backbone"], **meta["backbone_kwargs"])
    assert len(load_encoder(rebuilt, path)) == meta["num_tensors"]
    assert read_encoder_metadata(tmp_path / "absent.pt") is None


def test_mismatched_architecture_lists_keys(tmp_path):
    path = save_encoder(build_backbone("resnet10"), tmp_path / "r10.pt")
    with pytest.raises(EncoderMismatchError) as err:
        load_encoder(resnet18(n_input_channels=3), path)
    message = str(err.value)
    assert "missing from the file" in message and "layer1.1.conv1.weight" in message
    assert "layer1.1.conv1.weight" in err.value.missing


def test_shape_mismatch_lists_keys_and_loads_nothing(tmp_path):
    path = save_encoder(build_backbone("resnet10"), tmp_path / "r10.pt")
    target = resnet10(n_input_channels=1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(EncoderMismatchError) as err:
        load_encoder(target, path)
    assert "conv1.weight: (64, 3, 7, 7, 7) vs (64, 1, 7, 7, 7)" in str(err.value)
    assert list(err.value.mismatched) == ["conv1.weight"]
    for k, v in target.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    # Non-strict: everything but conv1 loads.
    loaded = load_encoder(target, path, strict=False)
    assert "conv1.weight" not in loaded and "layer1.0.conv1.weight" in loaded
    assert len(loaded) == len(encoder_state_dict(build_backbone("resnet10"))) - 1


def test_swin_size_mismatch_lists_keys(tmp_path):
    path = save_encoder(build_backbone("swin", feature_size=12), tmp_path / "s.pt")
    with pytest.raises(EncoderMismatchError, match=r"swinViT\.patch_embed\.proj\.weight"):
        load_encoder(SwinUNETR(in_channels=3, out_channels=2, feature_size=24), path)


def test_wrong_kind_of_network_raises(tmp_path):
    path = save_encoder(build_backbone("resnet10"), tmp_path / "r.pt")
    with pytest.raises(TypeError, match="no MONAI ResNet"):
        load_encoder(SwinUNETR(in_channels=3, out_channels=2, feature_size=12), path)
    with pytest.raises(TypeError, match="no MONAI"):
        save_encoder(nn.Linear(2, 2), tmp_path / "x.pt")


def test_bad_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_encoder(resnet10(), tmp_path / "missing.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="mapping"):
        load_encoder(resnet10(), tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_encoder(resnet10(), tmp_path / "junk.pt")
    torch.save({"conv1.weight": nn.Linear(2, 2)}, tmp_path / "pickled.pt")  # refused by weights_only
    with pytest.raises(ValueError, match="cannot read"):
        load_encoder(resnet10(), tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="json"):
        save_encoder(build_backbone("resnet10"), tmp_path / "enc.json")
