"""Ignite/MONAI handlers for contrastive training: checkpoints and resume, NaN guard, W&B, progress,
sampling-mode switch, encoder export, and embedding evaluation."""

from synclr_monai.handlers.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointHandler,
    find_latest_checkpoint,
    list_checkpoints,
    make_checkpointer,
    resume_from,
)
from synclr_monai.handlers.dataset_epoch import DatasetEpochSetter
from synclr_monai.handlers.defaults import attach_default_handlers, default_train_handlers
from synclr_monai.handlers.encoder_export import EncoderExportHandler
from synclr_monai.handlers.nan_guard import NaNGuard, NonFiniteLossError
from synclr_monai.handlers.progress import ProgressHandler
from synclr_monai.handlers.sampling_switch import FallbackCount, SamplingModeSwitch
from synclr_monai.handlers.utils import is_main_process, resolve_dataset, training_objects
from synclr_monai.handlers.wandb import WANDB_MODES, WandBHandler, attach_wandb, resolve_wandb_mode

__all__ = [
    "CHECKPOINT_FILE",
    "WANDB_MODES",
    "CheckpointHandler",
    "DatasetEpochSetter",
    "EncoderExportHandler",
    "FallbackCount",
    "NaNGuard",
    "NonFiniteLossError",
    "ProgressHandler",
    "SamplingModeSwitch",
    "WandBHandler",
    "attach_default_handlers",
    "attach_wandb",
    "default_train_handlers",
    "find_latest_checkpoint",
    "is_main_process",
    "list_checkpoints",
    "make_checkpointer",
    "resolve_dataset",
    "resolve_wandb_mode",
    "resume_from",
    "training_objects",
]


def __getattr__(name: str):
    # The embedding-evaluation handler is written separately and pulls in the evaluation stack
    # (scikit-learn...): import it only when asked for.
    if name == "EmbeddingEvalHandler":
        from synclr_monai.handlers.embedding_eval import EmbeddingEvalHandler

        return EmbeddingEvalHandler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
