"""The contrastive trainer on MONAI's SupervisedTrainer (Ignite): AMP, gradient accumulation, clipping, DDP shutdown."""

from synclr_monai.engines.accumulation import AccumulationPhase, accumulation_phase, total_optimizer_steps
from synclr_monai.engines.amp import AMP_DTYPES, make_grad_scaler, resolve_amp_dtype
from synclr_monai.engines.distributed import shutdown_distributed
from synclr_monai.engines.trainer import (
    EPOCH_LOSS,
    ContrastiveTrainer,
    OutputKeys,
    default_train_metrics,
    lower_is_better,
)

__all__ = [
    "AMP_DTYPES",
    "EPOCH_LOSS",
    "AccumulationPhase",
    "ContrastiveTrainer",
    "OutputKeys",
    "accumulation_phase",
    "default_train_metrics",
    "lower_is_better",
    "make_grad_scaler",
    "resolve_amp_dtype",
    "shutdown_distributed",
    "total_optimizer_steps",
]
