"""MONAI array + dictionary transforms for contrastive cubes.

Cube sampling (uniform random, mask-aware around cleft components), two-view pairing, crop-and-resize,
mask dropout and raw-only intensity jitter, plus the batched torch path that applies the same
augmentations to a whole batch on its device. A cube is ``[3, S, S, S]`` float32: raw, pre, cleft.
"""

from .batched import BatchedTwoViewAugment, batched_apply_view, gaussian_kernels_1d
from .config import CLEFT_CHANNEL, MASK_CHANNELS, PRE_CHANNEL, RAW_CHANNEL, ROTATION_PLANES, AugmentConfig
from .functional import (
    apply_view_params,
    crop_resize,
    cut_cube,
    is_lazy,
    mask_dropout,
    raw_gaussian_smooth,
    raw_intensity,
    retained_voxels,
    rotate90,
)
from .params import TwoViewParams, ViewParams, sample_two_view_params, sample_view_params
from .sampling import (
    CleftComponents,
    CleftComponentsd,
    MaskAwareCubeSamplerd,
    RandCubeSamplerd,
    check_bbox_arrays,
    find_cleft_components,
)
from .views import RandTwoViewd

__all__ = [
    "AugmentConfig",
    "BatchedTwoViewAugment",
    "CLEFT_CHANNEL",
    "CleftComponents",
    "CleftComponentsd",
    "MASK_CHANNELS",
    "MaskAwareCubeSamplerd",
    "PRE_CHANNEL",
    "RAW_CHANNEL",
    "ROTATION_PLANES",
    "RandCubeSamplerd",
    "RandTwoViewd",
    "TwoViewParams",
    "ViewParams",
    "apply_view_params",
    "batched_apply_view",
    "check_bbox_arrays",
    "crop_resize",
    "cut_cube",
    "find_cleft_components",
    "is_lazy",
    "gaussian_kernels_1d",
    "mask_dropout",
    "raw_gaussian_smooth",
    "raw_intensity",
    "retained_voxels",
    "rotate90",
    "sample_two_view_params",
    "sample_view_params",
]
