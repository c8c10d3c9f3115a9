"""Ignite/MONAI handlers for contrastive training: checkpoints and resume, NaN guard, W&B, progress,
sampling-mode switch, encoder export, and embedding evaluation.

The bundle's ``train.yaml`` (``handlers``) lists them in the order they are attached, and the order
matters, as Ignite calls an event's handlers in attachment order: the NaN guard checks the loss before a
periodic checkpoint can be taken of that iteration, the checkpoint handler restores a resumed state before
the others read the epoch at ``STARTED`` (so ``DatasetEpochSetter`` comes after it), and W&B closes its
run on an exception before MONAI's StatsHandler re-raises it.
"""

from synclr_monai.handlers.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointHandler,
    find_latest_checkpoint,
    list_checkpoints,
    make_checkpointer,
    resume_from,
)
from synclr_monai.handlers.dataset_epoch import DatasetEpochSetter
from synclr_monai.handlers.encoder_export import EncoderExportHandler
from synclr_monai.handlers.nan_guard import NaNGuard, NonFiniteLossError
from synclr_monai.handlers.progress import ProgressHandler
from synclr_monai.handlers.sampling_switch import FallbackCount, SamplingModeSwitch
from synclr_monai.handlers.utils import is_main_process, resolve_dataset, training_objects
from synclr_monai.handlers.wandb import WANDB_MODES, WandBHandler, resolve_wandb_mode

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
