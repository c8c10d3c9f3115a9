"""``python -m synclr_monai finetune``: does the pretrained encoder help? Cleft Dice from it versus from scratch.

Trains the same MONAI segmentation network (:func:`~synclr_monai.networks.segmentation.build_segmentation_net`: a
``SwinUNETR`` for ``swin``, a U-Net on the MONAI ResNet otherwise) twice with identical seeds, crops and
budget, once starting from the exported encoder and once from random weights, prints the held-out cleft
Dice of both and writes ``finetune.json`` (:func:`~synclr_monai.finetune.workflow.compare_initialisations`).
One run of the same workflow is the bundle's ``bundle/configs/finetune.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from synclr_monai.errors import run_command
from synclr_monai.finetune.workflow import compare_initialisations
from synclr_monai.utils import atomic_output, text_table

__all__ = ["format_table", "main"]


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table with one row per run: Dice, final loss and loaded encoder tensors.

    Args:
        results: ``{init: summary}`` as returned by :func:`compare_initialisations`.

    Returns:
        the table (no trailing newline).
    """
    header = ("init", "backbone", "steps", "cleft Dice", "final loss", "encoder loaded")
    rows = [
        (
            init,
            str(r["backbone"]),
            str(r["iterations"]),
            f"{r['dice']:.4f}",
            f"{r['final_loss']:.4f}",
            f"{r['encoder_tensors_loaded']}/{r['encoder_tensors']}",
        )
        for init, r in results.items()
    ]
    return text_table(header, rows, right=(2, 3, 4, 5))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synclr_monai finetune",
        description="Cleft segmentation fine-tuned from the exported encoder versus from scratch "
        "(same network, seed and budget); prints both held-out Dice scores and writes OUT/finetune.json. "
        "Input channels: raw EM, pre-synaptic mask, zeros (the cleft is the target).",
    )
    parser.add_argument("--dataset-dir", required=True, help="dataset root in the lab's layout")
    parser.add_argument("--encoder", required=True, help="exported encoder, e.g. bundle/models/model.pt")
    parser.add_argument("--backbone", default=None, help="backbone name (default: from the encoder's model.json)")
    parser.add_argument(
        "--backbone-kwargs",
        default=None,
        help="JSON backbone arguments, checked against those of model.json (the truth; a contradiction is an "
        "error), e.g. '{\"feature_size\": 24}'",
    )
    parser.add_argument("--iterations", type=int, default=200, help="optimiser steps per run (default 200)")
    parser.add_argument(
        "--crop-size", type=int, default=32, help="crop/window edge, multiple of 32 (default 32; >= 64 for swin)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument(
        "--holdout", action="append", default=None, help="held-out bbox name (repeatable; default: the last bbox)"
    )
    parser.add_argument("--val-fraction", type=float, default=0.25, help="z-fraction held out with a single bbox")
    parser.add_argument("--cache-dir", default=None, help="HDF5 cache folder for assembled bboxes")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--out", default="outputs/finetune", help="folder of finetune.json (default outputs/finetune)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _run(args: argparse.Namespace) -> int:
    """Run both fine-tunings for the parsed arguments, write ``finetune.json`` and print the table."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backbone_kwargs = json.loads(args.backbone_kwargs) if args.backbone_kwargs else None
    if backbone_kwargs is not None and not isinstance(backbone_kwargs, dict):
        raise ValueError("--backbone-kwargs must be a JSON object")
    results = compare_initialisations(
        args.dataset_dir,
        args.encoder,
        backbone=args.backbone,
        backbone_kwargs=backbone_kwargs,
        cache_dir=args.cache_dir,
        crop_size=args.crop_size,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=device,
        holdout=args.holdout,
        val_fraction=args.val_fraction,
        num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    out = Path(args.out) / "finetune.json"
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    print(format_table(results))
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m synclr_monai finetune``: fine-tune from the encoder and from scratch, print both Dice.

    Args:
        argv: command-line arguments (without the command name).

    Returns:
        0 on success, 2 for bad usage or input (an invalid argument, a missing file, an encoder that does not
        fit: the message names it); see :func:`synclr_monai.errors.run_command`.
    """
    return run_command(_parser(), _run, None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
