"""Checks of a training configuration that fail at start, with one clear message, instead of mid-run."""

from __future__ import annotations

import ast
import difflib
import inspect
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from synclr_monai.engines.accumulation import total_optimizer_steps
from synclr_monai.errors import ConfigError

__all__ = [
    "TrainingConfigError",
    "check_training_config",
    "check_config_keys",
    "cli_overrides",
    "check_cli_overrides",
]

logger = logging.getLogger(__name__)


class TrainingConfigError(ConfigError):
    """A configuration value that cannot work (the message names the key and the allowed values)."""


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
    input_mode: str = "channels",
    pose: str = "native",
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
        input_mode: the encoder's input (``channels``, ``masked``, ``raw``).
        pose: ``native`` or ``canonical``.

    A run with mask-aware sampling needs synapses: a bbox whose sheet lists none is refused.

    Returns:
        A summary ``{"bboxes": {name: shape}, "iterations_per_epoch": int, "optimizer_steps": int}`` (logged
        too; the two counts only when ``cubes_per_bbox`` is given).

    Raises:
        TrainingConfigError: naming the bad key, its value and what would work.
        DataFormatError: a bbox's files do not fit the run (e.g. no synapse in a mask-aware run).
    """
    from synclr_monai.data.bbox import find_bboxes
    from synclr_monai.data.io import volume_shape
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
    from synclr_monai.transforms.config import INPUT_MODES
    from synclr_monai.transforms.pose import POSES

    if input_mode not in INPUT_MODES:
        raise TrainingConfigError(f"input_mode: must be one of {', '.join(INPUT_MODES)}, got {input_mode!r}")
    if pose not in POSES:
        raise TrainingConfigError(f"pose: must be one of {', '.join(POSES)}, got {pose!r}")
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
    if sampling == "mask_aware" or mask_aware_epoch is not None:
        _require_synapses(sources, "mask-aware sampling (sampling: mask_aware or mask_aware_epoch set)")
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
        summary["optimizer_steps"] = total_optimizer_steps(max_epochs, iterations, accumulation_steps)
    logger.info(
        "training on %d bboxes %s; %s iterations per epoch, %s optimizer steps",
        len(sources),
        shapes,
        summary.get("iterations_per_epoch", "?"),
        summary.get("optimizer_steps", "?"),
    )
    return summary


def _require_synapses(sources: Sequence[Any], why: str) -> None:
    """Raise naming each sheet that lists no synapse, for runs that need synapses."""
    from synclr_monai.data.io import DataFormatError, read_synapse_sheet

    empty = [s for s in sources if len(read_synapse_sheet(s.sheet)) == 0]
    if empty:
        raise DataFormatError(
            "; ".join(f"{s.sheet}: {s.name}'s sheet lists no synapse (a header and no rows)" for s in empty)
            + f", but {why} needs synapses: add them, leave the bbox out with 'bboxes', or sample at random "
            "(sampling: random, mask_aware_epoch: null)"
        )


def _missing_part(config: Any, parts: list[str]) -> str | None:
    """The first of ``parts[:-1]`` (a nested id's path) that ``config`` lacks, as ``a#b``; None when all exist.

    The last part may be new: it adds an argument to a component (``train#dataloader#prefetch_factor``).
    """
    node = config
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return "#".join(parts[: depth + 1])
    return None


def check_config_keys(
    overrides: Iterable[str], known: Iterable[str] | Mapping[str, Any], source: str = "the config"
) -> None:
    """Refuse override keys whose id the config does not define (a typo would be silently ignored).

    Args:
        overrides: override ids as given (``cube_size``, ``augment#blur_prob``, ``train#dataloader::num_workers``).
        known: the config (its nested ids are checked too: every part of an id but the last must exist), or
            only its top-level keys.
        source: the config files, for the message.

    Raises:
        TrainingConfigError: listing each unknown key with the closest known names ("did you mean ...?").
    """
    config = known if isinstance(known, Mapping) else None
    known = sorted(set(known))
    unknown = []
    for key in overrides:
        parts = str(key).replace("::", "#").split("#")
        top = parts[0]
        if top and top not in known:
            close = difflib.get_close_matches(top, known, n=2, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            unknown.append(f"{top}{hint}")
        elif config is not None and len(parts) > 2:
            missing = _missing_part(config, parts)
            if missing is not None:
                unknown.append(f"{key} ({missing} is not in the config)")
    if unknown:
        raise TrainingConfigError(
            f"unknown config key(s): {', '.join(unknown)}: not defined in {source}, so the value would be "
            "ignored; check the spelling (the keys are listed in bundle/docs/README.md)"
        )


def _run_parameters() -> set[str]:
    from monai.bundle.scripts import run

    return {name for name in inspect.signature(run).parameters if name != "override"}


def cli_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The config files and the override keys of a ``monai.bundle run`` command line (as Fire reads it).

    Args:
        argv: the arguments after ``python -m monai.bundle`` (``["run", "training", "--config_file", ...]``).

    Returns:
        ``(config_files, override_keys)``; flags that are ``run()``'s own parameters are not overrides.
    """
    run_params = _run_parameters()
    flags: dict[str, str | None] = {}
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            if not eq:
                has_value = i + 1 < len(tokens) and not tokens[i + 1].startswith("--")
                value = tokens[i + 1] if has_value else None
                i += 1 if has_value else 0
            flags[name.replace("-", "_")] = value
        i += 1
    files: list[str] = []
    args_file = flags.get("args_file")
    if args_file:
        import yaml

        with open(args_file) as f:
            from_file = yaml.safe_load(f) or {}
        for name, value in from_file.items():
            flags.setdefault(str(name), value)
    config = flags.get("config_file")
    if config:
        if isinstance(config, str) and config.strip()[:1] in "[(":
            try:
                config = ast.literal_eval(config)
            except (ValueError, SyntaxError):
                pass
        files = [str(c) for c in (config if isinstance(config, (list, tuple)) else [config])]
    keys = [name for name in flags if name not in run_params]
    return files, keys


def check_cli_overrides(argv: Sequence[str] | None = None) -> list[str]:
    """Refuse unknown keys on a ``python -m monai.bundle run`` command line (``--cube_sise 16``).

    ``monai.bundle`` accepts any ``--key value`` as an override and adds it to the config, where an
    unknown key is simply never read. The bundle's ``initialize`` calls this: it reads the command line
    (``sys.argv``), loads the config files it names and compares the top-level keys. Outside the
    ``monai.bundle`` command line (a Python call of ``monai.bundle.run``) it does nothing.

    Args:
        argv: the full command line; default ``sys.argv``.

    Returns:
        The override keys checked.

    Raises:
        TrainingConfigError: an unknown key, with the closest known names.
    """
    argv = list(sys.argv if argv is None else argv)
    program = os.path.normpath(argv[0]) if argv else ""
    if not (program.endswith(os.path.join("monai", "bundle", "__main__.py")) and len(argv) > 1 and argv[1] == "run"):
        return []
    files, keys = cli_overrides(argv[2:])
    if not files or not keys:
        return keys
    from monai.bundle import ConfigParser

    config = ConfigParser.load_config_files(files if len(files) > 1 else files[0])
    check_config_keys(keys, {"_meta_": {}, **dict(config)}, source=" + ".join(files))
    return keys
