"""Checks of a training configuration that fail at start, with one clear message, instead of mid-run."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TrainingConfigError", "volume_shape", "check_training_config"]

logger = logging.getLogger(__name__)


class TrainingConfigError(ValueError):
    """A configuration value that cannot work (the message names the key and the allowed values)."""


def volume_shape(path: Path) -> tuple[int, int, int]:
    """``(Z, Y, X)`` of a TIFF slice folder or NIfTI file, read from headers only (no pixel data)."""
    from synclr_monai.data.io import is_nifti, list_slices

    if is_nifti(path):
        import nibabel as nib

        x, y, z = nib.load(str(path)).shape[:3]
        return int(z), int(y), int(x)
    import tifffile

    files = list_slices(path)
    with tifffile.TiffFile(files[0]) as tif:
        page_shape = tif.pages[0].shape
    y, x = page_shape[:2] if len(page_shape) == 2 or page_shape[-1] <= 4 else page_shape[-2:]
    return len(files), int(y), int(x)


def check_training_config(
    dataset_dir: str | Path,
    cube_size: int,
    backbone: str,
    batch_size: int,
    accumulation_steps: int = 1,
    max_epochs: int = 1,
    bboxes: list[int] | None = None,
    cubes_per_bbox: int | None = None,
    amp_dtype: str = "bfloat16",
    sampling: str = "random",
    mask_aware_epoch: int | None = None,
    world_size: int = 1,
) -> dict[str, Any]:
    """Validate the training configuration against the data before anything is built.

    Args:
        dataset_dir: the dataset root.
        cube_size: edge of the training cubes.
        backbone: backbone name (``resnet10/18/34/50``, ``swin``).
        batch_size: cubes per batch (per process).
        accumulation_steps: iterations per optimizer step.
        max_epochs: epochs to train.
        bboxes: bbox numbers to use (None: all).
        cubes_per_bbox: samples per bbox per epoch.
        amp_dtype: ``bfloat16`` or ``float16``.
        sampling: initial sampling mode.
        mask_aware_epoch: epoch of the switch to mask-aware sampling (None: never).
        world_size: number of processes (DDP).

    Returns:
        A summary ``{"bboxes": {name: shape}, "iterations_per_epoch": int}`` (logged too).

    Raises:
        TrainingConfigError: naming the bad key, its value and what would work.
    """
    from synclr_monai.data.bbox import find_bboxes
    from synclr_monai.networks.factory import BACKBONE_NAMES

    if backbone not in BACKBONE_NAMES:
        raise TrainingConfigError(f"backbone: unknown {backbone!r}; choose one of {list(BACKBONE_NAMES)}")
    for key, value, low in (
        ("cube_size", cube_size, 8),
        ("batch_size", batch_size, 2),
        ("accumulation_steps", accumulation_steps, 1),
        ("max_epochs", max_epochs, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise TrainingConfigError(f"{key}: must be an integer >= {low}, got {value!r}")
    if cubes_per_bbox is not None and (not isinstance(cubes_per_bbox, int) or cubes_per_bbox < 1):
        raise TrainingConfigError(f"cubes_per_bbox: must be an integer >= 1, got {cubes_per_bbox!r}")
    if amp_dtype not in ("bfloat16", "float16"):
        raise TrainingConfigError(f"amp_dtype: must be 'bfloat16' or 'float16', got {amp_dtype!r}")
    if sampling not in ("random", "mask_aware"):
        raise TrainingConfigError(f"sampling: must be 'random' or 'mask_aware', got {sampling!r}")
    if mask_aware_epoch is not None and (not isinstance(mask_aware_epoch, int) or mask_aware_epoch < 1):
        raise TrainingConfigError(f"mask_aware_epoch: must be null or an epoch >= 1, got {mask_aware_epoch!r}")

    try:
        sources = find_bboxes(dataset_dir, numbers=bboxes)
    except ValueError as err:
        raise TrainingConfigError(f"dataset_dir: {err}") from err
    shapes = {s.name: volume_shape(s.raw) for s in sources}
    too_small = {name: shape for name, shape in shapes.items() if min(shape) < cube_size}
    if too_small:
        raise TrainingConfigError(
            f"cube_size: {cube_size} is larger than the volume (Z, Y, X) of {too_small}; use a cube_size of at "
            f"most {min(min(s) for s in too_small.values())} or drop these bboxes with 'bboxes'"
        )
    summary: dict[str, Any] = {"bboxes": shapes}
    if cubes_per_bbox is not None:
        samples = cubes_per_bbox * len(sources)
        per_rank = samples // max(world_size, 1)
        iterations = per_rank // batch_size
        if iterations < accumulation_steps:
            raise TrainingConfigError(
                f"batch_size: {batch_size} x accumulation_steps {accumulation_steps} x {world_size} process(es) "
                f"needs at least {batch_size * accumulation_steps * world_size} samples per epoch, but "
                f"cubes_per_bbox {cubes_per_bbox} x {len(sources)} bboxes gives {samples}; raise cubes_per_bbox"
            )
        summary["iterations_per_epoch"] = iterations
    logger.info("training on %d bboxes %s; %s", len(sources), shapes, summary.get("iterations_per_epoch", ""))
    return summary
