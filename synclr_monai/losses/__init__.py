"""Contrastive losses: NT-Xent with cross-process negatives, and the top-1 contrastive accuracy."""

from synclr_monai.losses.accuracy import contrastive_accuracy
from synclr_monai.losses.distributed import gather_with_grad
from synclr_monai.losses.ntxent import NTXentLoss, nt_xent_loss

__all__ = ["NTXentLoss", "contrastive_accuracy", "gather_with_grad", "nt_xent_loss"]
