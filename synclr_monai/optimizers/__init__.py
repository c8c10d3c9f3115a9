"""Optimisation: LARS with parameter groups that exclude biases and norms, and the learning-rate schedule."""

from synclr_monai.optimizers.lars import LARS, is_lars_excluded, lars_param_groups
from synclr_monai.optimizers.factory import OPTIMIZERS, build_optimizer
from synclr_monai.optimizers.lr_scheduler import WarmupCosineLR, scaled_lr, warmup_cosine_for_epochs

__all__ = [
    "LARS",
    "OPTIMIZERS",
    "WarmupCosineLR",
    "build_optimizer",
    "is_lars_excluded",
    "lars_param_groups",
    "scaled_lr",
    "warmup_cosine_for_epochs",
]
