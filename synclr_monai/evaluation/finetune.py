"""Does the pretrained encoder help? Cleft segmentation fine-tuned from it versus trained from scratch.

``python -m synclr_monai finetune --dataset-dir DATA --encoder bundle/models/model.pt`` trains the same
MONAI segmentation network (:func:`~synclr_monai.networks.segmentation.build_segmentation_net`: a
``SwinUNETR`` for ``swin``, a U-Net on the MONAI ResNet otherwise) twice with identical seeds, crops and
budget, once starting from the exported encoder and once from random weights, and prints the held-out
cleft Dice of both (and writes ``finetune.json``).

Inputs and target
-----------------
The cleft mask is the target, so it cannot be an input. The network keeps the 3-channel layout the
encoder was pre-trained on, with the cleft channel zeroed: channel 0 the raw EM (z-scored over the bbox,
then again over each cube, as in pre-training), channel 1 the pre-synaptic mask, channel 2 zeros.
Pre-training dropped the cleft mask with probability 0.3 (``RandMaskDropoutd``), so a zero cleft channel
is an input the encoder has seen. The target is the cleft mask, as two classes (background, cleft).

Training and evaluation
-----------------------
- Split: the last bbox (or those named in ``holdout``) is held out; with a single bbox, the last
  ``val_fraction`` of its z-slices are.
- Training crops: MONAI's ``RandCropByPosNegLabeld`` on the cleft mask (half of the crops centred on a
  cleft voxel, half on background), then random flips and in-plane 90-degree rotations; MONAI's
  ``SupervisedTrainer`` with ``DiceCELoss`` and AdamW for ``iterations`` steps.
- Evaluation: MONAI ``sliding_window_inference`` over each whole held-out bbox (every window's raw
  channel z-scored as in training, Gaussian blending), arg-max, and MONAI ``DiceMetric`` of the cleft
  class; the reported ``dice`` is the mean over held-out bboxes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.inferers import SimpleInferer, sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from monai.transforms import Compose, EnsureTyped, MapTransform, RandCropByPosNegLabeld, RandFlipd, RandRotate90d
from monai.utils import set_determinism
from torch import nn

from synclr_monai.errors import run_command
from synclr_monai.utils import atomic_output, text_table

__all__ = [
    "CleftInputd",
    "CleftVolume",
    "compare_initialisations",
    "evaluate_cleft_dice",
    "finetune_cleft_segmentation",
    "format_table",
    "load_cleft_volumes",
    "main",
    "split_volumes",
    "zscore_raw_channel",
]

logger = logging.getLogger(__name__)

#: fine-tuning runs compared by the command, in table order.
INITIALISATIONS: tuple[str, ...] = ("pretrained", "scratch")
#: background voxels kept per bbox as crop centres (``RandCropByPosNegLabeld`` would otherwise hold the
#: flat index of every background voxel: 1.5 GB of int64 for a 575^3 bbox).
MAX_BACKGROUND_CENTRES = 100_000


@dataclass
class CleftVolume:
    """One training or evaluation volume.

    Args:
        name: e.g. ``bbox3`` or ``bbox1[z48:64]`` for part of a bbox.
        raw: ``[Z, Y, X]`` raw EM z-scored over the bbox (float16 or float32).
        pre: ``[Z, Y, X]`` pre-synaptic mask {0, 1} (input).
        cleft: ``[Z, Y, X]`` cleft mask {0, 1} (target).
    """

    name: str
    raw: np.ndarray
    pre: np.ndarray
    cleft: np.ndarray

    def __post_init__(self) -> None:
        if not (self.raw.ndim == 3 and self.raw.shape == self.pre.shape == self.cleft.shape):
            raise ValueError(
                f"{self.name}: raw {self.raw.shape}, pre {self.pre.shape} and cleft {self.cleft.shape} "
                "must be 3-D and equal"
            )


def load_cleft_volumes(
    dataset_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None, label_maps: Mapping | None = None
) -> list[CleftVolume]:
    """Load every bbox of a dataset root as (raw, pre, cleft) volumes, by bbox number.

    Args:
        dataset_dir: dataset root in the lab's layout.
        cache_dir: HDF5 cache folder for assembled bboxes (None: assemble every time).
        label_maps: label-map overrides for other datasets.

    Returns:
        one volume per bbox (views of the loaded arrays: float16 raw and uint8 masks, no copies).

    Raises:
        DataFormatError: (a ``ValueError``) when the root holds no complete bbox.
    """
    from synclr_monai.data import find_bboxes, load_bbox

    volumes = []
    for source in find_bboxes(dataset_dir):
        volume = load_bbox(source, cache_dir=cache_dir, label_maps=label_maps)
        volumes.append(CleftVolume(volume.name, volume.raw, volume.pre, volume.cleft))
        logger.info("%s: %s voxels, %d cleft voxels", volume.name, volume.shape, int(volume.cleft.sum()))
    return volumes


def split_volumes(
    volumes: Sequence[CleftVolume], holdout: Sequence[str] | None = None, val_fraction: float = 0.25
) -> tuple[list[CleftVolume], list[CleftVolume]]:
    """Split volumes into training and held-out ones.

    Args:
        volumes: the loaded bboxes.
        holdout: names of the bboxes to hold out; None holds out the last one, or, with a single bbox,
            its last ``val_fraction`` of z-slices.
        val_fraction: fraction of z-slices held out when there is a single bbox.

    Returns:
        ``(train, val)``.

    Raises:
        ValueError: when there are no volumes, a held-out name is unknown, nothing is left to train on,
            or ``val_fraction`` leaves an empty part.
    """
    if not volumes:
        raise ValueError("no volume to split")
    names = [v.name for v in volumes]
    if holdout:
        unknown = sorted(set(holdout) - set(names))
        if unknown:
            raise ValueError(f"held-out bboxes {unknown} are not in the dataset ({names})")
        train = [v for v in volumes if v.name not in holdout]
        val = [v for v in volumes if v.name in holdout]
        if not train:
            raise ValueError(f"holding out {list(holdout)} leaves no bbox to train on")
        return train, val
    if len(volumes) > 1:
        return list(volumes[:-1]), [volumes[-1]]
    volume = volumes[0]
    depth = volume.raw.shape[0]
    cut = int(round(depth * (1.0 - val_fraction)))
    if not 0 < cut < depth:
        raise ValueError(f"val_fraction={val_fraction} leaves an empty part of {volume.name} ({depth} slices)")

    def part(sl: slice) -> CleftVolume:
        return CleftVolume(
            f"{volume.name}[z{sl.start or 0}:{sl.stop or depth}]", volume.raw[sl], volume.pre[sl], volume.cleft[sl]
        )

    logger.info("one bbox: training on z < %d, evaluating on z >= %d of %s", cut, cut, volume.name)
    return [part(slice(0, cut))], [part(slice(cut, depth))]


def zscore_raw_channel(x: torch.Tensor) -> torch.Tensor:
    """Z-score channel 0 (raw EM) of each sample of a batch over space; the mask channels are kept.

    This is the per-cube normalisation of pre-training, applied to training crops and to every
    sliding window alike. A constant raw channel becomes zeros.

    Args:
        x: ``[B, C, *spatial]``.

    Returns:
        a new tensor of the same shape.
    """
    dims = tuple(range(2, x.ndim))
    raw = x[:, :1].float()
    mean = raw.mean(dim=dims, keepdim=True)
    std = raw.std(dim=dims, keepdim=True, correction=0)
    raw = torch.where(std > 0, (raw - mean) / std.clamp_min(1e-12), torch.zeros_like(raw))
    return torch.cat([raw.to(x.dtype), x[:, 1:]], dim=1)


class CleftInputd(MapTransform):
    """Build the network input and target from cropped ``raw``, ``pre`` and ``label`` (cleft) arrays.

    Output ``image``: float32 ``[3, *spatial]`` = (raw z-scored over the crop, pre-synaptic mask, zeros),
    or ``[1, *spatial]`` (the raw alone) for an encoder pre-trained on one channel (input mode ``raw`` or
    ``masked``: masking the EM by the synapse mask would hand the network its target);
    ``label``: float32 ``[1, *spatial]`` cleft mask. The cleft channel of the input is zero because the
    cleft is the target (see the module docstring). Every other key is dropped, so that the sampling
    indices do not reach the collation.

    Args:
        keys: the raw, pre-synaptic and cleft keys, in that order.
        image_key: output key of the input.
        label_key: output key of the target.
        channels: 3 or 1 input channels.
    """

    def __init__(
        self,
        keys: KeysCollection = ("raw", "pre", "label"),
        image_key: str = "image",
        label_key: str = "label",
        channels: int = 3,
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 3:
            raise ValueError(f"CleftInputd needs the raw, pre and cleft keys, got {self.keys}")
        if channels not in (1, 3):
            raise ValueError(f"CleftInputd: channels must be 1 or 3, got {channels}")
        self.image_key = image_key
        self.label_key = label_key
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, torch.Tensor]:
        """Build ``{image_key: [3, ...], label_key: [1, ...]}`` from ``[1, ...]`` raw, pre and cleft arrays."""
        raw, pre, cleft = (torch.as_tensor(np.asarray(data[k]), dtype=torch.float32) for k in self.keys)
        if not raw.shape == pre.shape == cleft.shape or raw.shape[0] != 1:
            raise ValueError(f"expected three [1, *spatial] arrays, got {raw.shape}, {pre.shape}, {cleft.shape}")
        image = torch.cat([raw, pre, torch.zeros_like(raw)], dim=0)[: self.channels]
        return {self.image_key: zscore_raw_channel(image[None])[0], self.label_key: cleft}


def _padded(array: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad ``array`` at the end of each axis shorter than ``size`` (only small volumes are copied)."""
    pads = [(0, max(0, size - s)) for s in array.shape]
    return np.pad(array, pads) if any(after for _, after in pads) else array


def _training_item(volume: CleftVolume, crop_size: int, rng: np.random.Generator) -> dict[str, Any]:
    """A dataset item for ``RandCropByPosNegLabeld``: channel-first views and precomputed crop centres."""
    raw, pre, cleft = (_padded(a, crop_size) for a in (volume.raw, volume.pre, volume.cleft))
    flat = cleft.reshape(-1)
    foreground = np.flatnonzero(flat)
    if flat.size <= 4 * MAX_BACKGROUND_CENTRES:
        background = np.flatnonzero(flat == 0)
    else:  # a uniform sample of background voxels, without listing them all
        candidates = np.unique(rng.integers(0, flat.size, size=2 * MAX_BACKGROUND_CENTRES))
        background = candidates[flat[candidates] == 0]
    if background.size > MAX_BACKGROUND_CENTRES:
        background = np.sort(rng.choice(background, MAX_BACKGROUND_CENTRES, replace=False))
    if foreground.size == 0:
        logger.warning("%s: no cleft voxel; its crops are all background", volume.name)
    return {
        "raw": raw[None],
        "pre": pre[None],
        "label": cleft[None],
        "label_fg": foreground,
        "label_bg": background,
    }


def training_transforms(crop_size: int, pos: float = 1.0, neg: float = 1.0, channels: int = 3) -> Compose:
    """Cleft-aware random crops, input assembly and spatial augmentation.

    Args:
        crop_size: edge of the cubic crops.
        pos: relative weight of crops centred on a cleft voxel.
        neg: relative weight of crops centred on background.

    Returns:
        the composed transform, from a :func:`_training_item` to ``{"image", "label"}`` tensors.
    """
    keys = ["image", "label"]
    return Compose(
        [
            RandCropByPosNegLabeld(
                keys=["raw", "pre", "label"],
                label_key="label",
                spatial_size=(crop_size,) * 3,
                pos=pos,
                neg=neg,
                num_samples=1,
                fg_indices_key="label_fg",
                bg_indices_key="label_bg",
            ),
            CleftInputd(("raw", "pre", "label"), channels=channels),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys, prob=0.5, spatial_axis=2),
            # in-plane only: EM volumes are often anisotropic along z
            RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(1, 2)),
            EnsureTyped(keys, dtype=torch.float32, track_meta=False),
        ]
    )


def evaluate_cleft_dice(
    network: nn.Module,
    volumes: Sequence[CleftVolume],
    roi_size: int,
    device: str | torch.device = "cpu",
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    channels: int = 3,
) -> dict[str, float]:
    """Dice of the predicted cleft over each whole volume, by sliding-window inference.

    Args:
        network: maps ``[B, channels, *roi]`` to ``[B, 2, *roi]`` logits.
        channels: 3 (raw, pre, zeros) or 1 (raw) input channels, as :class:`CleftInputd`.
        volumes: the held-out volumes.
        roi_size: window edge (the training crop size).
        device: where the network runs; the whole volume and the logits stay on the CPU.
        sw_batch_size: windows per forward pass.
        overlap: window overlap.

    Returns:
        ``{name: dice}``; NaN for a volume without cleft voxels (Dice is undefined there).
    """
    network.eval()
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=True)
    scores: dict[str, float] = {}

    def predictor(window: torch.Tensor) -> torch.Tensor:
        return network(zscore_raw_channel(window.float()))

    with torch.no_grad():
        for volume in volumes:
            # float32 although the raw channel is stored as float16: sliding_window_inference blends
            # the windows in the input's dtype, and float16 accumulation loses precision. (A 575^3
            # bbox then takes 2.3 GB of CPU memory for the input and 1.5 GB for the logits.)
            image = torch.stack(
                [
                    torch.as_tensor(np.asarray(volume.raw, dtype=np.float32)),
                    torch.as_tensor(np.asarray(volume.pre, dtype=np.float32)),
                    torch.zeros(volume.raw.shape, dtype=torch.float32),
                ][:channels]
            )[None]
            logits = sliding_window_inference(
                image,
                roi_size=(roi_size,) * 3,
                sw_batch_size=sw_batch_size,
                predictor=predictor,
                overlap=overlap,
                mode="gaussian",
                sw_device=device,
                device="cpu",
            )
            pred = one_hot(logits.argmax(dim=1, keepdim=True), num_classes=2)
            target = one_hot(torch.as_tensor(np.asarray(volume.cleft))[None, None].long(), num_classes=2)
            metric.reset()
            metric(y_pred=pred, y=target)
            scores[volume.name] = float(metric.aggregate().item())
            logger.info("%s: cleft Dice %.4f", volume.name, scores[volume.name])
    return scores


def finetune_cleft_segmentation(
    dataset_dir: str | os.PathLike | None,
    encoder_path: str | os.PathLike | None,
    backbone: str | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
    crop_size: int = 32,
    iterations: int = 200,
    batch_size: int = 4,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    holdout: Sequence[str] | None = None,
    val_fraction: float = 0.25,
    cache_dir: str | os.PathLike | None = None,
    label_maps: Mapping | None = None,
    num_workers: int = 0,
    sw_batch_size: int = 4,
    progress: bool = True,
    volumes: Sequence[CleftVolume] | None = None,
    input_channels: int | None = None,
) -> dict[str, Any]:
    """Train a cleft segmentation network from the exported encoder (or from scratch) and score it.

    Input channels: raw EM, pre-synaptic mask and a zero cleft channel (the cleft is the target; the
    encoder saw zeroed cleft channels in pre-training through mask dropout), see the module docstring.
    The global random generators are seeded with ``seed`` (MONAI ``set_determinism``) before the network
    is built, so two calls that differ only in ``encoder_path`` share the decoder's initial weights and
    the sequence of training crops.

    Args:
        dataset_dir: dataset root in the lab's layout (ignored when ``volumes`` is given).
        encoder_path: the exported encoder (``bundle/models/model.pt``), or None to train from scratch.
        backbone: backbone name; None takes it from the export's sidecar (else ``resnet18``).
        backbone_kwargs: backbone arguments; with an export they must agree with its sidecar (which is the
            truth; a contradiction is an error naming ``model.json``). Pass the pretrained run's to a
            from-scratch run for the same architecture.
        crop_size: edge of the training crops and evaluation windows (multiple of 32; at least 64 for swin).
        iterations: optimiser steps.
        batch_size: crops per step.
        lr: AdamW learning rate (all parameters, encoder included).
        weight_decay: AdamW weight decay.
        seed: seed of every random draw (weights, crops, augmentation).
        device: e.g. ``"cpu"`` or ``"cuda"``.
        holdout: names of the held-out bboxes (default: the last one; see :func:`split_volumes`).
        val_fraction: fraction of z-slices held out when the dataset has a single bbox.
        cache_dir: HDF5 cache folder for assembled bboxes.
        label_maps: label-map overrides for other datasets.
        num_workers: DataLoader workers.
        sw_batch_size: windows per forward pass in evaluation.
        progress: show a progress bar.
        volumes: already loaded volumes (skips loading ``dataset_dir``).

        input_channels: 3 (raw, pre-synaptic mask, zeros) or 1 (raw); None: 1 when the encoder's sidecar
            names a one-channel input mode (``raw``, ``masked``), else 3.

    Returns:
        a JSON-serialisable summary: ``init`` (``pretrained``/``scratch``), ``dice`` (mean cleft Dice over
        held-out bboxes), ``dice_per_bbox``, ``final_loss`` (mean of the last 10 steps), the counts
        ``encoder_tensors_loaded`` and ``encoder_tensors`` (equal when pretrained), the split, the settings
        and ``seconds``.

    Raises:
        ValueError: for invalid sizes, an unknown backbone, a backbone, backbone argument or input channel
            count that contradicts the export's sidecar, or a dataset without bboxes.
        FileNotFoundError: when the encoder file does not exist.
        EncoderMismatchError: when the export does not fit the network.
    """
    from ignite.engine import Events
    from ignite.handlers import ProgressBar

    from synclr_monai.networks.export import encoder_keys
    from synclr_monai.networks.segmentation import (
        build_segmentation_net,
        check_segmentation_size,
        segmentation_backbone,
    )

    if iterations < 1 or batch_size < 1:
        raise ValueError(f"iterations and batch_size must be positive, got {iterations} and {batch_size}")
    if input_channels is None:
        input_channels = _encoder_input_channels(encoder_path)
    name, kwargs = segmentation_backbone(encoder_path, backbone, backbone_kwargs, input_channels)
    check_segmentation_size(name, crop_size, int(kwargs.get("patch_size", 2)))
    if volumes is None:
        if dataset_dir is None:
            raise ValueError("give dataset_dir or volumes")
        volumes = load_cleft_volumes(dataset_dir, cache_dir=cache_dir, label_maps=label_maps)
    train, val = split_volumes(volumes, holdout, val_fraction)
    init = "pretrained" if encoder_path is not None else "scratch"
    start = time.perf_counter()

    set_determinism(seed=seed)
    network = build_segmentation_net(name, encoder_path, in_channels=input_channels, out_channels=2, **kwargs)
    total = len(encoder_keys(network, "swin" if name == "swin" else "resnet"))
    loaded = len(network.loaded_encoder_keys)
    network = network.to(device)

    rng = np.random.default_rng(seed)
    items = [_training_item(v, crop_size, rng) for v in train]
    # One pass over a list that cycles the bboxes is exactly the budget: no iterator restarts.
    data = [items[i % len(items)] for i in range(iterations * batch_size)]
    loader = DataLoader(
        Dataset(data, transform=training_transforms(crop_size, channels=input_channels)),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
    )
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    trainer = SupervisedTrainer(
        device=torch.device(device),
        max_epochs=1,
        epoch_length=iterations,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer,
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
        inferer=SimpleInferer(),
        decollate=False,
    )
    losses: list[float] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine: Any) -> None:
        losses.append(float(engine.state.output["loss"].detach().item()))
        if engine.state.iteration % max(1, iterations // 10) == 0:
            logger.info("%s: step %d/%d loss %.4f", init, engine.state.iteration, iterations, losses[-1])

    if progress:
        ProgressBar(persist=False, desc=f"finetune ({init})").attach(
            trainer, output_transform=lambda out: {"loss": float(out["loss"].detach().item())}
        )
    logger.info(
        "%s %s: %d steps of %d crops of %d^3 on %s, held out %s",
        init,
        name,
        iterations,
        batch_size,
        crop_size,
        [v.name for v in train],
        [v.name for v in val],
    )
    trainer.run()

    dice = evaluate_cleft_dice(
        network, val, crop_size, device=device, sw_batch_size=sw_batch_size, channels=input_channels
    )
    finite = [d for d in dice.values() if math.isfinite(d)]
    tail = losses[-10:]
    return {
        "init": init,
        "encoder_path": str(encoder_path) if encoder_path is not None else None,
        "backbone": name,
        "backbone_kwargs": kwargs,
        "encoder_tensors_loaded": loaded,
        "encoder_tensors": total,
        "dice": float(np.mean(finite)) if finite else float("nan"),
        "dice_per_bbox": dice,
        "final_loss": float(np.mean(tail)) if tail else float("nan"),
        "train_bboxes": [v.name for v in train],
        "val_bboxes": [v.name for v in val],
        "crop_size": crop_size,
        "iterations": iterations,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "device": str(device),
        "seconds": round(time.perf_counter() - start, 2),
    }


def _encoder_input_channels(encoder_path: str | os.PathLike | None) -> int:
    """Input channels of fine-tuning: 3 (raw, pre, zeros), or 1 (raw) for an encoder pre-trained on one channel."""
    if encoder_path is None:
        return 3
    from synclr_monai.networks.export import read_encoder_metadata

    meta = read_encoder_metadata(encoder_path) or {}
    if "input_mode" in meta:
        return 3 if meta["input_mode"] == "channels" else 1
    # an export without an input mode (e.g. save_encoder without training's metadata): its recorded channels
    return int((meta.get("backbone_kwargs") or {}).get("in_channels", 3))


def compare_initialisations(
    dataset_dir: str | os.PathLike,
    encoder_path: str | os.PathLike,
    backbone: str | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    label_maps: Mapping | None = None,
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """Fine-tune from the exported encoder and from scratch, with the same architecture, seed and budget.

    Args:
        dataset_dir: dataset root (loaded once for both runs).
        encoder_path: the exported encoder.
        backbone: backbone name (default: from the sidecar).
        backbone_kwargs: backbone arguments, checked against the sidecar's; the from-scratch network gets the
            sidecar's.
        cache_dir: HDF5 cache folder for assembled bboxes.
        label_maps: label-map overrides.
        kwargs: the other :func:`finetune_cleft_segmentation` arguments.

    Returns:
        ``{"pretrained": summary, "scratch": summary}``.
    """
    from synclr_monai.networks.segmentation import segmentation_backbone

    channels = _encoder_input_channels(encoder_path)  # the scratch network sees the same input
    name, resolved = segmentation_backbone(encoder_path, backbone, backbone_kwargs, channels)
    volumes = load_cleft_volumes(dataset_dir, cache_dir=cache_dir, label_maps=label_maps)
    return {
        init: finetune_cleft_segmentation(
            dataset_dir,
            path,
            backbone=name,
            backbone_kwargs=resolved,
            volumes=volumes,
            input_channels=channels,
            **kwargs,
        )
        for init, path in zip(INITIALISATIONS, (encoder_path, None))
    }


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table with one row per run: Dice, final loss and loaded encoder tensors.

    Args:
        results: ``{init: summary}`` as returned by :func:`compare_initialisations`.

    Returns:
        the table (no trailing newline).
    """
    header = ("init", "backbone", "steps", "cleft Dice", "final loss", "encoder loaded")
    rows = [
        (
            init,
            str(r["backbone"]),
            str(r["iterations"]),
            f"{r['dice']:.4f}",
            f"{r['final_loss']:.4f}",
            f"{r['encoder_tensors_loaded']}/{r['encoder_tensors']}",
        )
        for init, r in results.items()
    ]
    return text_table(header, rows, right=(2, 3, 4, 5))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synclr_monai finetune",
        description="Cleft segmentation fine-tuned from the exported encoder versus from scratch "
        "(same network, seed and budget); prints both held-out Dice scores and writes OUT/finetune.json. "
        "Input channels: raw EM, pre-synaptic mask, zeros (the cleft is the target).",
    )
    parser.add_argument("--dataset-dir", required=True, help="dataset root in the lab's layout")
    parser.add_argument("--encoder", required=True, help="exported encoder, e.g. bundle/models/model.pt")
    parser.add_argument("--backbone", default=None, help="backbone name (default: from the encoder's model.json)")
    parser.add_argument(
        "--backbone-kwargs",
        default=None,
        help="JSON backbone arguments, checked against those of model.json (the truth; a contradiction is an "
        "error), e.g. '{\"feature_size\": 24}'",
    )
    parser.add_argument("--iterations", type=int, default=200, help="optimiser steps per run (default 200)")
    parser.add_argument(
        "--crop-size", type=int, default=32, help="crop/window edge, multiple of 32 (default 32; >= 64 for swin)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument(
        "--holdout", action="append", default=None, help="held-out bbox name (repeatable; default: the last bbox)"
    )
    parser.add_argument("--val-fraction", type=float, default=0.25, help="z-fraction held out with a single bbox")
    parser.add_argument("--cache-dir", default=None, help="HDF5 cache folder for assembled bboxes")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--out", default="outputs/finetune", help="folder of finetune.json (default outputs/finetune)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _run(args: argparse.Namespace) -> int:
    """Run both fine-tunings for the parsed arguments, write ``finetune.json`` and print the table."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backbone_kwargs = json.loads(args.backbone_kwargs) if args.backbone_kwargs else None
    if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
        raise ValueError("--backbone-kwargs must be a JSON object")
    results = compare_initialisations(
        args.dataset_dir,
        args.encoder,
        backbone=args.backbone,
        backbone_kwargs=backbone_kwargs,
        cache_dir=args.cache_dir,
        crop_size=args.crop_size,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=device,
        holdout=args.holdout,
        val_fraction=args.val_fraction,
        num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    out = Path(args.out) / "finetune.json"
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    print(format_table(results))
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m synclr_monai finetune``: fine-tune from the encoder and from scratch, print both Dice.

    Args:
        argv: command-line arguments (without the command name).

    Returns:
        0 on success, 2 for bad usage or input (an invalid argument, a missing file, an encoder that does not
        fit: the message names it); see :func:`synclr_monai.errors.run_command`.
    """
    return run_command(_parser(), _run, None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
