"""Export the trained backbone as a plain state dict and load it into MONAI networks.

The exported keys are those of the MONAI network the backbone wraps, so the file needs no renaming:

- ResNet backbones: the keys of a MONAI :class:`~monai.networks.nets.ResNet` (``conv1.weight``,
  ``layer1.0.conv1.weight``, ...), without the classifier ``fc``.
- Swin backbones: the keys of the ``swinViT`` part of a MONAI :class:`~monai.networks.nets.SwinUNETR`
  (``swinViT.patch_embed.proj.weight``, ...).

Loading finds the (single) MONAI ``ResNet`` or ``SwinTransformer`` inside the target network, so the
same file loads into a ``SwinUNETR`` (its ``swinViT``), a ``ResNet`` (its classifier stays as it is),
networks that contain one (e.g. our ResNet U-Net in :mod:`.segmentation`), our backbones, and :class:`SimCLR`.

:func:`exportable_encoder` builds the module whose state-dict keys are exactly the file's keys and whose
forward gives the pooled backbone features; it is the bundle's ``network_def``, so that
``python -m monai.bundle ckpt_export`` (which loads the file with ``load_state_dict(strict=True)``)
turns the export into TorchScript.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import ResNet
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn

from synclr_monai.errors import MissingFileError, UserError
from synclr_monai.networks.utils import unwrap_parallel
from synclr_monai.utils import atomic_output

__all__ = [
    "ENCODER_FORMAT",
    "EncoderMismatchError",
    "encoder_input_spec",
    "encoder_keys",
    "encoder_state_dict",
    "exportable_encoder",
    "load_encoder",
    "metadata_path",
    "read_encoder_metadata",
    "save_encoder",
]

logger = logging.getLogger(__name__)

#: value of the ``format`` entry in the sidecar JSON.
ENCODER_FORMAT = "synclr-monai-encoder/1"
#: key prefix of Swin exports: the submodule name inside SwinUNETR.
SWIN_PREFIX = "swinViT."
#: prefix of the ResNet classifier, which is not part of the encoder.
RESNET_HEAD_PREFIX = "fc."
#: how many key names an error message lists per category.
_MAX_LISTED = 25


class EncoderMismatchError(UserError, RuntimeError):
    """The encoder file does not fit the target network (bad input: the command lines exit with code 2).

    Args:
        message: the explanation, listing the offending keys.
        missing: target keys the file does not provide.
        unexpected: file keys the target does not have.
        mismatched: ``{key: (shape in file, shape in network)}`` for keys present in both.
    """

    def __init__(
        self,
        message: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]],
    ):
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


def _find_encoder(network: nn.Module, kinds: tuple[type[nn.Module], ...]) -> tuple[str, nn.Module]:
    """Find the single submodule of one of ``kinds`` in ``network``.

    Args:
        network: the module to search (itself included).
        kinds: the encoder classes to look for.

    Returns:
        the submodule's qualified name as a key prefix (``""`` or ``"name."``) and the submodule.

    Raises:
        TypeError: when there is none, or more than one (ambiguous).
    """
    found = [(name, module) for name, module in network.named_modules() if isinstance(module, kinds)]
    names = " or ".join(k.__name__ for k in kinds)
    if not found:
        raise TypeError(f"{type(network).__name__} contains no MONAI {names} to hold the encoder.")
    if len(found) > 1:
        raise TypeError(f"{type(network).__name__} contains several MONAI {names}: {[n for n, _ in found]}; pass one.")
    name, module = found[0]
    return (f"{name}." if name else ""), module


def encoder_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's weights under the keys of the MONAI network it wraps, on the CPU.

    Args:
        model: a :class:`SimCLR`, a backbone, a MONAI ``ResNet``/``SwinUNETR``, or any module holding
            exactly one MONAI ``ResNet`` or ``SwinTransformer``; (Distributed)DataParallel wrappers are removed.

    Returns:
        ResNet keys without the classifier (``conv1.weight``, ...) or Swin keys under ``swinViT.``.

    Raises:
        TypeError: when the model holds no MONAI ResNet/SwinTransformer, or several.
    """
    _, encoder = _find_encoder(unwrap_parallel(model), (ResNet, SwinTransformer))
    prefix = SWIN_PREFIX if isinstance(encoder, SwinTransformer) else ""
    return {
        f"{prefix}{key}": value.detach().cpu().clone()
        for key, value in encoder.state_dict().items()
        if prefix or not key.startswith(RESNET_HEAD_PREFIX)
    }


def encoder_keys(network: nn.Module, kind: str) -> list[str]:
    """The state-dict names of the encoder part of ``network``, i.e. what a full encoder load must fill.

    Args:
        network: a module holding exactly one MONAI ``ResNet`` (``kind="resnet"``) or ``SwinTransformer``
            (``kind="swin"``); (Distributed)DataParallel wrappers are removed.
        kind: ``"resnet"`` or ``"swin"`` (the ``kind`` entry of the sidecar JSON).

    Returns:
        the names as in ``network.state_dict()`` (a ResNet's classifier ``fc`` excluded).

    Raises:
        ValueError: for an unknown ``kind``.
        TypeError: when the network holds no such encoder, or several.
    """
    if kind not in ("resnet", "swin"):
        raise ValueError(f"kind must be 'resnet' or 'swin', got {kind!r}.")
    is_swin = kind == "swin"
    prefix, encoder = _find_encoder(unwrap_parallel(network), (SwinTransformer,) if is_swin else (ResNet,))
    return [prefix + k for k in encoder.state_dict() if is_swin or not k.startswith(RESNET_HEAD_PREFIX)]


def exportable_encoder(
    backbone: str = "resnet18",
    in_channels: int = 3,
    backbone_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """The backbone as the module whose state dict has exactly the keys of an encoder export.

    This is the bundle's ``network_def``: MONAI's ``ckpt_export`` loads ``model.pt`` into it with a strict
    ``load_state_dict`` and converts it to TorchScript. Our :class:`ResNetFeatureEncoder` holds the MONAI ResNet as
    ``resnet`` (keys ``resnet.*``) while the export has the plain ResNet keys, so for ResNets the MONAI
    ``ResNet`` itself is returned (built with ``feed_forward=False``, its forward is exactly the backbone's:
    the globally pooled ``[B, F]`` features). A :class:`SwinEncoder`'s keys (``swinViT.*``) already equal
    the export's, so it is returned as is.

    TorchScript: the ResNet scripts (``torch.jit.script``, any input size). MONAI's Swin transformer does
    not script (variadic arguments), so export it with ``use_trace=True`` and an ``input_shape``; the traced
    module then only accepts that spatial size (any batch size).

    Args:
        backbone: a :func:`~synclr_monai.networks.factory.build_backbone` name.
        in_channels: number of input channels.
        backbone_kwargs: backbone arguments as one mapping (convenient in configs); ``in_channels`` and
            ``spatial_dims`` entries there (as in the sidecar JSON) are allowed.
        kwargs: more backbone arguments; they take precedence over ``backbone_kwargs``.

    Returns:
        the MONAI ``ResNet`` (feature mode) or the :class:`SwinEncoder`, randomly initialised.

    Raises:
        ValueError: for an unknown backbone or invalid arguments, or an ``in_channels`` entry in
            ``backbone_kwargs`` that contradicts ``in_channels``.
    """
    # imported here: the factory imports the encoders, which need nothing from this module
    from synclr_monai.networks.factory import build_backbone
    from synclr_monai.networks.resnet_encoder import ResNetFeatureEncoder

    merged = {**dict(backbone_kwargs or {}), **kwargs}
    channels = merged.pop("in_channels", in_channels)
    if channels != in_channels:
        raise ValueError(f"backbone_kwargs say in_channels={channels} but in_channels={in_channels} was given.")
    network = build_backbone(backbone, in_channels=in_channels, **merged)
    return network.resnet if isinstance(network, ResNetFeatureEncoder) else network


def metadata_path(path: str | os.PathLike) -> Path:
    """The sidecar JSON of an encoder file: the same path with the suffix ``.json``.

    Args:
        path: the encoder file, e.g. ``bundle/models/model.pt``.

    Returns:
        e.g. ``bundle/models/model.json``.
    """
    return Path(path).with_suffix(".json")


def save_encoder(
    model_or_backbone: nn.Module, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Save the backbone alone as a plain state dict (atomically), with a sidecar JSON.

    The sidecar (:func:`metadata_path`) records the format, the backbone's name, arguments and feature
    size when known (our backbones carry ``name``, ``config`` and ``out_features``), the encoder kind,
    and the entries of ``metadata`` (which take precedence).

    Args:
        model_or_backbone: see :func:`encoder_state_dict`.
        path: destination, conventionally ``*.pt``.
        metadata: extra JSON-serialisable entries (values that are not are stored as their ``repr``).

    Returns:
        the path written.

    Raises:
        ValueError: when ``path`` ends in ``.json`` (it would collide with the sidecar).
        TypeError: when the model holds no MONAI ResNet/SwinTransformer, or several.
    """
    path = Path(path)
    if path.suffix == ".json":
        raise ValueError(f"{path}: the encoder file must not end in .json; the sidecar metadata uses that name.")
    state = encoder_state_dict(model_or_backbone)
    backbone = unwrap_parallel(model_or_backbone)
    backbone = getattr(backbone, "backbone", backbone)  # SimCLR -> its backbone, for name/config
    info: dict[str, Any] = {
        "format": ENCODER_FORMAT,
        "kind": "swin" if next(iter(state)).startswith(SWIN_PREFIX) else "resnet",
        "backbone": getattr(backbone, "name", type(backbone).__name__),
        "backbone_kwargs": dict(getattr(backbone, "config", {})),
        "out_features": getattr(backbone, "out_features", None),
        "num_tensors": len(state),
    }
    info.update(metadata or {})
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    with atomic_output(metadata_path(path)) as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=repr))
    return path


#: What an encoder expects of its input, recorded in the sidecar by training (defaults: a sidecar without them).
INPUT_SPEC_DEFAULTS: dict[str, Any] = {"input_mode": "channels", "voxel_size": None, "az_radius": 2, "pose": "native"}


def encoder_input_spec(
    path: str | os.PathLike, required: Sequence[str] = ("backbone", "cube_size"), **given: Any
) -> dict[str, Any]:
    """The architecture and input of an exported encoder: its sidecar, checked against given values.

    The sidecar (``model.json``) is the single truth: ``backbone``, ``backbone_kwargs``, ``in_channels``,
    ``cube_size``, ``input_mode``, ``voxel_size``, ``az_radius`` and ``pose`` are read from it; a value in ``given``
    that is not None must agree with it.

    Args:
        path: the encoder file (its sidecar beside it).
        required: entries that must resolve to a value (building the network alone, e.g. for
            ``ckpt_export``, needs no ``cube_size``: pass ``("backbone",)``; ``cube_size`` may then be None).
        given: values asked for by the caller (``None``: take the sidecar's).

    Returns:
        The resolved entries (``in_channels`` follows from ``input_mode``).

    Raises:
        ValueError: a given value contradicts the sidecar, or a value needed is in neither.
    """
    from synclr_monai.transforms.config import input_channels
    from synclr_monai.transforms.pose import POSES

    meta = read_encoder_metadata(path) or {}
    out: dict[str, Any] = {}
    keys = ("backbone", "backbone_kwargs", "cube_size", *INPUT_SPEC_DEFAULTS)
    for key in keys:
        value, recorded = given.get(key), meta.get(key)
        if key == "backbone_kwargs" and value is not None:
            value = dict(value)
            if recorded is not None:
                # the sidecar also records arguments the builder fills in; compare the ones given
                recorded_cmp = {k: recorded.get(k) for k in value}
                if recorded_cmp != value:
                    raise ValueError(
                        f"{metadata_path(path)}: the encoder was trained with backbone_kwargs {recorded}, "
                        f"but {value} was asked for; leave it unset to use the recorded one"
                    )
                value = recorded
        elif value is not None and recorded is not None and _norm(value) != _norm(recorded):
            raise ValueError(
                f"{metadata_path(path)}: the encoder was trained with {key}={recorded!r}, but {key}={value!r} "
                f"was asked for; leave it unset (null) to use the recorded value"
            )
        out[key] = value if value is not None else recorded if recorded is not None else INPUT_SPEC_DEFAULTS.get(key)
    for key in required:
        if out.get(key) is None:
            if not Path(path).is_file():
                raise MissingFileError(f"encoder file {path} does not exist")
            raise ValueError(f"{metadata_path(path)}: no {key} recorded for {path}; pass {key} explicitly")
    if out["backbone"] is None:
        if not Path(path).is_file():
            raise MissingFileError(f"encoder file {path} does not exist")
        raise ValueError(f"{metadata_path(path)}: no backbone recorded for {path}; pass backbone explicitly")
    out["backbone_kwargs"] = {
        k: v for k, v in dict(out["backbone_kwargs"] or {}).items() if k not in ("in_channels", "spatial_dims")
    }
    out["cube_size"] = None if out["cube_size"] is None else int(out["cube_size"])
    out["in_channels"] = input_channels(out["input_mode"])
    if out["pose"] not in POSES:
        raise ValueError(f"{metadata_path(path)}: pose must be one of {POSES}, got {out['pose']!r}")
    recorded_channels = meta.get("in_channels")
    if recorded_channels is not None and int(recorded_channels) != out["in_channels"]:
        raise ValueError(f"{metadata_path(path)}: in_channels {recorded_channels} does not fit input_mode {out['input_mode']!r}")
    return out


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return value


def read_encoder_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """Read the sidecar JSON of an encoder file.

    Args:
        path: the encoder file (not the JSON).

    Returns:
        the metadata, or None when there is no sidecar.

    Raises:
        ValueError: when the sidecar is not valid JSON.
    """
    side = metadata_path(path)
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{side}: invalid encoder metadata JSON ({e}).") from e


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """Load a plain state dict safely and check that it is one."""
    if not path.is_file():
        raise MissingFileError(f"encoder file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in several types; report them uniformly
        raise ValueError(f"{path}: cannot read an encoder state dict ({type(e).__name__}: {e}).") from e
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path}: expected a non-empty mapping of parameter names to tensors, got {type(state).__name__}."
        )
    return dict(state)


def _listing(title: str, items: list[str]) -> str:
    """One line of an error message: ``title (n): a, b, ... (+k more)``."""
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def load_encoder(network: nn.Module, path: str | os.PathLike, strict: bool = True) -> list[str]:
    """Load an exported encoder into ``network``.

    The file's kind is told by its keys (``swinViT.*`` for Swin, else ResNet); the weights go into
    the single MONAI ``SwinTransformer`` or ``ResNet`` found in ``network``: a ``SwinUNETR``'s
    ``swinViT``, a ``ResNet`` (all but its classifier ``fc``), our backbones, a :class:`SimCLR`'s backbone,
    or any network that contains exactly one. The rest of ``network`` (decoder, classifier, projector)
    is left as it is.

    Args:
        network: the module to load into; (Distributed)DataParallel wrappers are fine.
        path: an encoder file written by :func:`save_encoder` (or any state dict with those keys).
        strict: when True, every encoder tensor of ``network`` must come from the file and every file
            tensor must fit, else nothing is loaded and an error lists the differences. When False, the
            fitting tensors are loaded and the rest is logged as a warning.

    Returns:
        the names (as in ``network.state_dict()``) of the tensors loaded.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not a state dict of tensors, or (non-strict) nothing fits.
        TypeError: when ``network`` holds no MONAI encoder of the file's kind, or several.
        EncoderMismatchError: (strict) listing the missing, unexpected and shape-mismatched keys.
    """
    path = Path(path)
    state = _read_state(path)
    swin_keys = [k.startswith(SWIN_PREFIX) for k in state]
    if any(swin_keys) and not all(swin_keys):
        raise ValueError(f"{path}: mixes Swin ({SWIN_PREFIX}*) and other keys; not an encoder export.")
    is_swin = all(swin_keys)
    prefix, encoder = _find_encoder(network, (SwinTransformer,) if is_swin else (ResNet,))
    # Target keys, relative to the encoder module; a ResNet's classifier belongs to the task, not the encoder.
    target = {k: v.shape for k, v in encoder.state_dict().items() if is_swin or not k.startswith(RESNET_HEAD_PREFIX)}
    source = {(k[len(SWIN_PREFIX) :] if is_swin else k): v for k, v in state.items()}
    file_name = {k: orig for k, orig in zip(source, state)}  # report unexpected keys as written in the file

    missing = [prefix + k for k in target if k not in source]
    unexpected = [file_name[k] for k in source if k not in target]
    mismatched = {
        prefix + k: (tuple(v.shape), tuple(target[k]))
        for k, v in source.items()
        if k in target and v.shape != target[k]
    }
    fitting = {k: v for k, v in source.items() if k in target and v.shape == target[k]}
    where = f"{type(network).__name__}" + (f" (its {prefix[:-1]})" if prefix else "")
    problems = (
        (_listing("missing from the file", missing) if missing else "")
        + (_listing("unexpected in the file", unexpected) if unexpected else "")
        + (
            _listing(
                "shape mismatch (file vs network)", [f"{k}: {a} vs {b}" for k, (a, b) in mismatched.items()]
            )
            if mismatched
            else ""
        )
    )
    if problems and strict:
        raise EncoderMismatchError(
            f"encoder weights in {path} do not fit {where}:{problems}\n"
            "Check the backbone arguments (architecture, in_channels, feature_size, shortcut_type) "
            "or pass strict=False to load only the tensors that fit.",
            missing,
            unexpected,
            mismatched,
        )
    if not fitting:
        raise ValueError(f"no tensor of {path} fits {where}:{problems}")
    if problems:
        logger.warning(
            "loading %d of %d encoder tensors into %s; skipped:%s", len(fitting), len(state), where, problems
        )
    # Own bookkeeping above, then torch's load_state_dict on the encoder module: MONAI's
    # copy_model_state would silently skip shape mismatches, which strict mode must report.
    encoder.load_state_dict(fitting, strict=False)
    return [prefix + k for k in fitting]
