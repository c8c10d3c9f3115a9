"""Fine-tuning: cleft segmentation started from the pretrained encoder, against the same network from scratch."""

from synclr_monai.finetune.data import (
    CleftInputd,
    CleftVolume,
    RawChannelZScore,
    evaluation_items,
    load_cleft_volumes,
    split_volumes,
    training_items,
    training_transforms,
    zscore_raw_channel,
)
from synclr_monai.finetune.workflow import (
    INITIALISATIONS,
    cleft_dice_per_volume,
    cleft_evaluator,
    cleft_trainer,
    compare_initialisations,
    evaluate_cleft_dice,
    finetune_cleft_segmentation,
)

__all__ = [
    "INITIALISATIONS",
    "CleftInputd",
    "CleftVolume",
    "RawChannelZScore",
    "cleft_dice_per_volume",
    "cleft_evaluator",
    "cleft_trainer",
    "compare_initialisations",
    "evaluate_cleft_dice",
    "evaluation_items",
    "finetune_cleft_segmentation",
    "load_cleft_volumes",
    "split_volumes",
    "training_items",
    "training_transforms",
    "zscore_raw_channel",
]
