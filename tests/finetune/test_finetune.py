"""Cleft fine-tuning: input channels, cleft-aware crops, split, Dice evaluation, and the two-run command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from synclr_monai.finetune.cli import main
from synclr_monai.finetune.data import CleftInputd, CleftVolume, _training_item, split_volumes, training_transforms
from synclr_monai.finetune.workflow import evaluate_cleft_dice
from synclr_monai.networks import build_simclr, save_encoder


def _volume(name: str = "bbox1", shape=(40, 64, 64), seed: int = 0) -> CleftVolume:
    """A volume with a pre-synaptic block and a thin cleft sheet beside it."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=shape).astype(np.float16)
    pre = np.zeros(shape, np.uint8)
    cleft = np.zeros(shape, np.uint8)
    pre[10:20, 20:40, 20:40] = 1
    cleft[20:22, 20:40, 20:40] = 1
    return CleftVolume(name, raw, pre, cleft)


def test_input_is_raw_pre_and_a_zero_cleft_channel():
    rng = np.random.default_rng(1)
    raw = (rng.normal(size=(1, 8, 8, 8)) * 3 + 5).astype(np.float16)
    pre = (rng.random((1, 8, 8, 8)) > 0.5).astype(np.uint8)
    cleft = (rng.random((1, 8, 8, 8)) > 0.8).astype(np.uint8)
    out = CleftInputd()({"raw": raw, "pre": pre, "label": cleft, "label_fg": np.arange(3)})
    assert set(out) == {"image", "label"}  # sampling indices dropped before collation
    image, label = out["image"], out["label"]
    assert image.shape == (3, 8, 8, 8) and image.dtype == torch.float32
    assert float(image[0].mean()) == pytest.approx(0.0, abs=1e-4)  # raw z-scored over the crop
    assert float(image[0].std(correction=0)) == pytest.approx(1.0, abs=1e-3)
    torch.testing.assert_close(image[1], torch.as_tensor(pre[0], dtype=torch.float32))
    assert not image[2].any()  # the cleft is the target, never an input
    torch.testing.assert_close(label, torch.as_tensor(cleft, dtype=torch.float32))
    with pytest.raises(ValueError, match="three"):
        CleftInputd()({"raw": raw, "pre": pre[:, :4], "label": cleft})


def test_positive_crops_contain_cleft_and_keep_input_and_target_aligned():
    volume = _volume()
    # the pre channel set to a copy of the cleft: any crop/flip/rotation applied to one key only shows
    aligned = CleftVolume("bbox1", volume.raw, volume.cleft.copy(), volume.cleft)
    item = _training_item(aligned, 32, np.random.default_rng(0))
    assert item["label_fg"].size == int(volume.cleft.sum())
    transform = training_transforms(32, pos=1.0, neg=0.0)
    transform.set_random_state(3)
    for _ in range(6):
        (crop,) = transform(item)
        assert crop["image"].shape == (3, 32, 32, 32) and crop["label"].shape == (1, 32, 32, 32)
        assert crop["label"].sum() > 0  # centred on a cleft voxel
        torch.testing.assert_close(crop["image"][1], crop["label"][0])
        assert not crop["image"][2].any()
    # a bbox smaller than the crop is padded rather than rejected
    small = _training_item(_volume(shape=(20, 40, 40)), 32, np.random.default_rng(0))
    assert small["label"].shape == (1, 32, 40, 40)


def test_split_holds_out_the_last_bbox_or_the_end_of_a_single_one():
    a, b, c = _volume("bbox1"), _volume("bbox2"), _volume("bbox3")
    train, val = split_volumes([a, b, c])
    assert [v.name for v in train] == ["bbox1", "bbox2"] and [v.name for v in val] == ["bbox3"]
    train, val = split_volumes([a, b, c], holdout=["bbox1"])
    assert [v.name for v in val] == ["bbox1"]
    train, val = split_volumes([a], val_fraction=0.25)
    assert train[0].raw.shape[0] == 30 and val[0].raw.shape[0] == 10 and val[0].name == "bbox1[z30:40]"
    np.testing.assert_array_equal(val[0].cleft, a.cleft[30:])
    with pytest.raises(ValueError, match="not in the dataset"):
        split_volumes([a, b], holdout=["bbox9"])
    with pytest.raises(ValueError, match="no bbox to train on"):
        split_volumes([a], holdout=["bbox1"])


class _FromPreChannel(nn.Module):
    """Predicts 'cleft' where the pre channel is set; checks that it is never given the cleft."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not x[:, 2].any()
        fg = x[:, 1:2] * 10 - 5
        return torch.cat([-fg, fg], dim=1)


def test_dice_evaluation_over_a_whole_volume():
    volume = _volume(shape=(40, 70, 64))  # not a multiple of the window: padded by the sliding window
    oracle = CleftVolume("oracle", volume.raw, volume.cleft, volume.cleft)  # pre channel == target
    assert evaluate_cleft_dice(_FromPreChannel(), [oracle], roi_size=32)["oracle"] == pytest.approx(1.0)
    # predicting the pre block instead: no overlap with the cleft
    assert evaluate_cleft_dice(_FromPreChannel(), [volume], roi_size=32)["bbox1"] == pytest.approx(0.0)
    half = volume.cleft.copy()
    half[:, :, 30:] = 0  # half of the cleft predicted: Dice 2 * 0.5 / 1.5
    partial = CleftVolume("partial", volume.raw, half, volume.cleft)
    assert evaluate_cleft_dice(_FromPreChannel(), [partial], roi_size=32)["partial"] == pytest.approx(2 / 3, abs=1e-4)


def test_finetune_loads_every_encoder_key_and_the_command_compares_both(synthetic_root, tmp_path, capsys):
    path = save_encoder(build_simclr("resnet10", projection_hidden=16, projection_dim=4), tmp_path / "model.pt")
    n_file = len(torch.load(path, weights_only=True))
    out = tmp_path / "out"
    argv = ["--dataset-dir", str(synthetic_root), "--encoder", str(path), "--iterations", "2", "--batch-size", "2"]
    assert main([*argv, "--out", str(out), "--no-progress", "--cache-dir", str(tmp_path / "cache")]) == 0
    results = json.loads((out / "finetune.json").read_text())
    assert list(results) == ["pretrained", "scratch"]
    pre, scratch = results["pretrained"], results["scratch"]
    # every tensor of the file went into the network, and they were all of its encoder tensors
    assert pre["encoder_tensors_loaded"] == pre["encoder_tensors"] == n_file
    assert scratch["encoder_tensors_loaded"] == 0 and scratch["encoder_tensors"] == n_file
    assert pre["backbone"] == "resnet10"  # read from model.json
    assert pre["train_bboxes"] == ["bbox1"] and pre["val_bboxes"] == ["bbox2"]
    assert 0.0 <= pre["dice"] <= 1.0 and np.isfinite(pre["final_loss"])
    assert pre["backbone_kwargs"] == scratch["backbone_kwargs"]  # the same architecture
    for key in ("seed", "iterations", "batch_size", "crop_size", "train_bboxes", "val_bboxes"):
        assert pre[key] == scratch[key]
    table = capsys.readouterr().out
    assert "pretrained" in table and "scratch" in table and f"{pre['dice']:.4f}" in table
    # a backbone that contradicts the export is a clear error, not a traceback
    assert main([*argv, "--backbone", "resnet18", "--out", str(out)]) == 2
    assert "model.json: the encoder was trained with backbone='resnet10'" in capsys.readouterr().err


def test_finetune_of_a_one_channel_encoder_and_kwargs_that_contradict_model_json(tmp_path, capsys):
    from synclr_monai.finetune import finetune_cleft_segmentation

    # a masked-input (1-channel) encoder, the training default: fine-tuning takes its channels from model.json
    model = build_simclr("resnet10", in_channels=1, projection_hidden=16, projection_dim=4)
    path = save_encoder(model, tmp_path / "model.pt", metadata={"input_mode": "masked", "in_channels": 1})
    volumes = [_volume("bbox1"), _volume("bbox2", seed=1)]
    result = finetune_cleft_segmentation(None, path, volumes=volumes, iterations=1, batch_size=2, progress=False)
    assert result["encoder_tensors_loaded"] == result["encoder_tensors"] == len(torch.load(path, weights_only=True))
    # an argument that changes no weight shape (a strict load would pass) but contradicts model.json is refused
    with pytest.raises(ValueError, match=r"model\.json: the encoder was trained with backbone_kwargs .*'act'"):
        finetune_cleft_segmentation(
            None, path, backbone_kwargs={"act": "elu"}, volumes=volumes, iterations=1, batch_size=2, progress=False
        )
