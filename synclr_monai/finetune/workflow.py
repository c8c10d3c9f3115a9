"""Cleft segmentation fine-tuned from the pretrained encoder (or from scratch), as MONAI workflows.

Training: MONAI's ``SupervisedTrainer`` (``DiceCELoss``, AdamW) over cleft-aware random crops
(``RandCropByPosNegLabeld``: half centred on a cleft voxel, half on background; flips and in-plane 90-degree
turns) for ``iterations`` steps. Evaluation: MONAI's ``SupervisedEvaluator`` over each whole held-out volume
with a ``SlidingWindowInferer`` (Gaussian blending; every window's raw channel z-scored as in training),
arg-max, and the ``MeanDice`` handler on the cleft class; the reported ``dice`` is the mean over the held-out
bboxes. The bundle's ``finetune.yaml`` wires the same objects (``train#trainer``, ``validate#evaluator``);
:func:`finetune_cleft_segmentation` builds them for Python callers and the ``finetune`` command.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import MeanDice, from_engine
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.transforms import AsDiscreted
from monai.utils import set_determinism
from torch import nn

from synclr_monai.finetune.data import (
    CleftVolume,
    RawChannelZScore,
    evaluation_items,
    load_cleft_volumes,
    split_volumes,
    training_items,
    training_transforms,
)

__all__ = [
    "INITIALISATIONS",
    "cleft_dice_per_volume",
    "cleft_evaluator",
    "cleft_trainer",
    "compare_initialisations",
    "evaluate_cleft_dice",
    "finetune_cleft_segmentation",
    "write_dice_summary",
]

logger = logging.getLogger(__name__)

#: fine-tuning runs compared by the command, in table order.
INITIALISATIONS: tuple[str, ...] = ("pretrained", "scratch")
#: the evaluator's key metric.
DICE_KEY = "val_mean_dice"


def cleft_trainer(
    network: nn.Module,
    volumes: Sequence[CleftVolume],
    crop_size: int = 32,
    iterations: int = 200,
    batch_size: int = 4,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    channels: int = 3,
    handlers: Sequence[Any] | None = None,
) -> SupervisedTrainer:
    """MONAI's ``SupervisedTrainer`` for the cleft: one epoch of ``iterations`` steps over the training crops.

    Args:
        network: the segmentation network (``[B, C, *roi] -> [B, 2, *roi]`` logits), on ``device``.
        volumes: the training volumes.
        crop_size: edge of the crops.
        iterations: optimiser steps.
        batch_size: crops per step.
        lr, weight_decay: AdamW's (all parameters, encoder included).
        seed: seed of the background-centre subsample (seed the global generators with MONAI's
            ``set_determinism`` for the crops and weights).
        device: where the network runs.
        num_workers: DataLoader workers.
        channels: input channels, 3 (raw, pre, zeros) or 1 (raw).
        handlers: Ignite/MONAI handlers of the trainer.

    Returns:
        the trainer.
    """
    loader = DataLoader(
        Dataset(
            training_items(volumes, crop_size, iterations * batch_size, seed),
            training_transforms(crop_size, channels=channels),
        ),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
    )
    return SupervisedTrainer(
        device=torch.device(device),
        max_epochs=1,
        epoch_length=iterations,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay),
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
        inferer=SimpleInferer(),
        train_handlers=list(handlers or []),
        decollate=False,
    )


def cleft_evaluator(
    network: nn.Module,
    volumes: Sequence[CleftVolume],
    roi_size: int,
    device: str | torch.device = "cpu",
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    channels: int = 3,
    handlers: Sequence[Any] | None = None,
) -> SupervisedEvaluator:
    """MONAI's ``SupervisedEvaluator``: cleft Dice of each whole volume by sliding-window inference.

    The volumes and the logits stay on the CPU (the evaluator's device); only the windows go to ``device``.

    Args:
        network: maps ``[B, channels, *roi]`` to ``[B, 2, *roi]`` logits; wrapped in :class:`RawChannelZScore`.
        volumes: the held-out volumes.
        roi_size: window edge (the training crop size).
        device: where the network runs.
        sw_batch_size: windows per forward pass.
        overlap: window overlap.
        channels: 3 (raw, pre, zeros) or 1 (raw) input channels.
        handlers: more handlers of the evaluator (e.g. a progress bar).

    Returns:
        the evaluator; after ``run()``, ``state.metrics["val_mean_dice"]`` is the mean cleft Dice and
        :func:`cleft_dice_per_volume` gives each volume's.
    """
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(evaluation_items(volumes, channels)), batch_size=1, num_workers=0),
        network=RawChannelZScore(network),
        inferer=SlidingWindowInferer(
            roi_size=(roi_size,) * 3,
            sw_batch_size=sw_batch_size,
            overlap=overlap,
            mode="gaussian",
            sw_device=torch.device(device),
            device=torch.device("cpu"),
        ),  # fmt: skip
        postprocessing=AsDiscreted(keys=["pred", "label"], argmax=(True, False), to_onehot=(2, 2)),
        key_val_metric={DICE_KEY: MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))},
        val_handlers=list(handlers or []),
    )


def cleft_dice_per_volume(evaluator: SupervisedEvaluator, volumes: Sequence[CleftVolume]) -> dict[str, float]:
    """``{name: Dice}`` of a finished :func:`cleft_evaluator` run; NaN for a volume without cleft voxels."""
    details = evaluator.state.metric_details[DICE_KEY]
    return {v.name: float(d) for v, d in zip(volumes, torch.as_tensor(details).reshape(len(volumes), -1)[:, 0])}


def evaluate_cleft_dice(
    network: nn.Module, volumes: Sequence[CleftVolume], roi_size: int, **kwargs: Any
) -> dict[str, float]:
    """Dice of the predicted cleft over each whole volume: runs :func:`cleft_evaluator` (``kwargs``: its other
    arguments) and returns ``{name: dice}``, NaN for a volume without cleft voxels (Dice is undefined there)."""
    evaluator = cleft_evaluator(network, volumes, roi_size, **kwargs)
    evaluator.run()
    scores = cleft_dice_per_volume(evaluator, volumes)
    for name, dice in scores.items():
        logger.info("%s: cleft Dice %.4f", name, dice)
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

    The global random generators are seeded with ``seed`` (MONAI ``set_determinism``) before the network is
    built, so two calls that differ only in ``encoder_path`` share the decoder's initial weights and the
    sequence of training crops.

    Args:
        dataset_dir: dataset root in the lab's layout (ignored when ``volumes`` is given).
        encoder_path: the exported encoder (``bundle/models/model.pt``), or None to train from scratch.
        backbone: backbone name; None takes it from the export's sidecar (else ``resnet18``).
        backbone_kwargs: backbone arguments; with an export they must agree with its sidecar (the truth; a
            contradiction is an error naming ``model.json``). Pass the pretrained run's to a from-scratch run.
        crop_size: edge of the training crops and evaluation windows (multiple of 32; at least 64 for swin).
        iterations: optimiser steps.
        batch_size: crops per step.
        lr: AdamW learning rate (all parameters, encoder included).
        weight_decay: AdamW weight decay.
        seed: seed of every random draw (weights, crops, augmentation).
        device: e.g. ``"cpu"`` or ``"cuda"``.
        holdout: names of the held-out bboxes (default: the last one; see
            :func:`~synclr_monai.finetune.data.split_volumes`).
        val_fraction: fraction of z-slices held out when the dataset has a single bbox.
        cache_dir: HDF5 cache folder for assembled bboxes.
        label_maps: label-map overrides for other datasets.
        num_workers: DataLoader workers.
        sw_batch_size: windows per forward pass in evaluation.
        progress: show progress bars.
        volumes: already loaded volumes (skips loading ``dataset_dir``).
        input_channels: 3 (raw, pre-synaptic mask, zeros) or 1 (raw); None: from the encoder's sidecar
            (:func:`~synclr_monai.networks.segmentation.segmentation_input_channels`).

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
        segmentation_input_channels,
    )

    if iterations < 1 or batch_size < 1:
        raise ValueError(f"iterations and batch_size must be positive, got {iterations} and {batch_size}")
    if input_channels is None:
        input_channels = segmentation_input_channels(encoder_path)
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
    trainer = cleft_trainer(
        network, train, crop_size, iterations, batch_size, lr, weight_decay, seed, device, num_workers, input_channels
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
        init, name, iterations, batch_size, crop_size, [v.name for v in train], [v.name for v in val],
    )  # fmt: skip
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
    from synclr_monai.networks.segmentation import segmentation_backbone, segmentation_input_channels

    channels = segmentation_input_channels(encoder_path)  # the scratch network sees the same input
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
        )  # fmt: skip
        for init, path in zip(INITIALISATIONS, (encoder_path, None))
    }


def write_dice_summary(
    evaluator: SupervisedEvaluator, volumes: Sequence[CleftVolume], path: str | os.PathLike, **settings: Any
) -> dict[str, Any]:
    """Log and write (atomically, JSON) the cleft Dice of a finished :func:`cleft_evaluator` run.

    Args:
        evaluator: the finished evaluator.
        volumes: its volumes, in its order.
        path: the JSON file.
        settings: more entries of the summary (``init``, ``iterations``, ...).

    Returns:
        ``{"dice": mean over volumes with cleft voxels, "dice_per_bbox": {...}, **settings}``.
    """
    import json
    from pathlib import Path

    from synclr_monai.utils import atomic_output

    per_volume = cleft_dice_per_volume(evaluator, volumes)
    finite = [d for d in per_volume.values() if math.isfinite(d)]
    summary = {"dice": float(np.mean(finite)) if finite else float("nan"), "dice_per_bbox": per_volume, **settings}
    with atomic_output(Path(path)) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    logger.info("held-out cleft Dice %.4f %s; wrote %s", summary["dice"], per_volume, path)
    return summary
