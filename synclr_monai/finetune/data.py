"""The data of cleft fine-tuning: volumes, the split, the network input and the training crops.

Inputs and target
-----------------
The cleft mask is the target, so it cannot be an input. The network keeps the 3-channel layout the
encoder was pre-trained on, with the cleft channel zeroed: channel 0 the raw EM (z-scored over the bbox,
then again over each crop or window, as in pre-training), channel 1 the pre-synaptic mask, channel 2 zeros.
Pre-training dropped the cleft mask with probability 0.3 (the views' mask dropout), so a zero cleft channel
is an input the encoder has seen. An encoder pre-trained on one channel (input mode ``masked`` or ``raw``)
gets the raw EM alone (masking the EM by the synapse mask would hand the network its target). The target
is the cleft mask, as two classes (background, cleft).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    NormalizeIntensity,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
)
from torch import nn

__all__ = [
    "CleftInputd",
    "CleftVolume",
    "RawChannelZScore",
    "evaluation_items",
    "load_cleft_volumes",
    "split_volumes",
    "training_items",
    "training_transforms",
    "zscore_raw_channel",
]

logger = logging.getLogger(__name__)

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
    from synclr_monai.data import find_bboxes, load_bbox, resolve_label_maps

    # the overrides (string keys from YAML/JSON, partial tables) merged into the default and the dataset's table
    table = resolve_label_maps(label_maps, dataset_dir)
    volumes = []
    for source in find_bboxes(dataset_dir):
        volume = load_bbox(source, cache_dir=cache_dir, label_maps=table)
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
        a new plain tensor of the same shape.
    """
    # MONAI's NormalizeIntensity (population std; a constant channel minus its mean is zeros), per sample
    raw = torch.stack([torch.as_tensor(_RAW_ZSCORE(sample[:1].float())).as_subclass(torch.Tensor) for sample in x])
    return torch.cat([raw.to(x.dtype), x[:, 1:]], dim=1)


_RAW_ZSCORE = NormalizeIntensity(channel_wise=True)


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


def training_items(volumes: Sequence[CleftVolume], crop_size: int, n_items: int, seed: int = 0) -> list[dict[str, Any]]:
    """The training data list: ``n_items`` items cycling over the volumes (one per crop of the budget).

    Each item holds the volume's channel-first arrays (views, no copies) and its precomputed crop centres
    for ``RandCropByPosNegLabeld``; one pass over the list is the whole budget (no iterator restarts).

    Args:
        volumes: the training volumes.
        crop_size: edge of the crops (smaller volumes are zero-padded to it).
        n_items: crops of the run (``iterations * batch_size``).
        seed: seed of the background-centre subsample.

    Returns:
        the list of items.
    """
    if not volumes:
        raise ValueError("no training volume")
    rng = np.random.default_rng(seed)
    items = [_training_item(v, crop_size, rng) for v in volumes]
    return [items[i % len(items)] for i in range(n_items)]


def evaluation_items(volumes: Sequence[CleftVolume], channels: int = 3) -> list[dict[str, Any]]:
    """The evaluation data list: one whole held-out volume per item, as the network's input and target.

    Args:
        volumes: the held-out volumes.
        channels: 3 (raw, pre, zeros) or 1 (raw), as :class:`CleftInputd`.

    Returns:
        ``[{"image": float32 [C, Z, Y, X], "label": float32 [1, Z, Y, X], "name": str}]``. float32 although the
        raw channel is stored as float16: the sliding window blends in the input's dtype, and float16
        accumulation loses precision (a 575^3 bbox then takes 2.3 GB of memory for the input).
    """
    items = []
    for volume in volumes:
        image = torch.stack(
            [
                torch.as_tensor(np.asarray(volume.raw, dtype=np.float32)),
                torch.as_tensor(np.asarray(volume.pre, dtype=np.float32)),
                torch.zeros(volume.raw.shape, dtype=torch.float32),
            ][:channels]
        )
        label = torch.as_tensor(np.asarray(volume.cleft, dtype=np.float32))[None]
        items.append({"image": image, "label": label, "name": volume.name})
    return items


class RawChannelZScore(nn.Module):
    """``network`` applied to its input with the raw channel z-scored over each window (:func:`zscore_raw_channel`).

    The evaluator's sliding window hands the network windows of a whole volume; pre-training and the training
    crops normalise each cube by itself, so every window is normalised the same way before the forward pass.

    Args:
        network: the segmentation network.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(zscore_raw_channel(x.float()))
