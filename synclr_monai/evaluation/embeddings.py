"""Per-synapse embeddings: cutting synapse-centred cubes, encoding them, and the embeddings file.

The embeddings file (``embeddings.h5``) holds

- ``bbox_name`` and ``Var1``: UTF-8 string datasets ``[N]``, the synapse ids;
- ``embeddings``: float32 ``[N, F]``, one encoder feature vector per synapse;
- attributes ``format`` (``"synclr-monai-embeddings"``), ``format_version`` and the provenance the
  writer passes (``dataset_dir``, ``cube_size``, ``backbone``, ``checkpoint``, ...).

A CSV twin (``embeddings.csv``: ``bbox_name, Var1, e0 .. e{F-1}``) is written beside it for tools
that do not read HDF5. The inference workflow that writes it from a dataset and an exported encoder is
:mod:`synclr_monai.inference` (the bundle's ``inference.yaml``); the synapse cubes come from
:mod:`synclr_monai.data.synapse_cubes`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from synclr_monai.errors import MissingFileError
from synclr_monai.utils import atomic_output

__all__ = [
    "EMBEDDINGS_FORMAT",
    "EMBEDDINGS_FORMAT_VERSION",
    "compute_embeddings",
    "write_embeddings",
    "read_embeddings",
]

logger = logging.getLogger(__name__)

EMBEDDINGS_FORMAT = "synclr-monai-embeddings"
EMBEDDINGS_FORMAT_VERSION = 1

# Attribute listing which attrs were stored as JSON (dicts, lists, None) so reading restores them.
_JSON_ATTRS_KEY = "json_attrs"
_RESERVED_ATTRS = ("format", "format_version", _JSON_ATTRS_KEY)

CubeItem = tuple[str, str, "np.ndarray | torch.Tensor"]


def _split_item(item: Any, index: int) -> CubeItem:
    """Normalise one input item to ``(bbox_name, Var1, cube)``."""
    if isinstance(item, Mapping):
        try:
            return str(item["bbox_name"]), str(item["Var1"]), item["image"]
        except KeyError as err:
            raise ValueError(f"item {index}: a dict item needs the keys 'bbox_name', 'Var1', 'image'") from err
    if isinstance(item, (tuple, list)):
        if len(item) != 3:
            raise ValueError(f"item {index}: expected (bbox_name, Var1, cube), got a {len(item)}-tuple")
        return str(item[0]), str(item[1]), item[2]
    if isinstance(item, (np.ndarray, torch.Tensor)):
        # Bare cubes (e.g. rows of an [N, 3, S, S, S] array) get positional ids.
        return "", str(index), item
    raise TypeError(f"item {index}: expected a cube, a (bbox_name, Var1, cube) tuple or a dict, got {type(item)}")


def _encode_batch(
    encoder: Callable[[torch.Tensor], torch.Tensor], cubes: list, device: torch.device, amp: bool
) -> np.ndarray:
    """Stack cubes into a batch, encode it and return float32 ``[B, F]`` on the CPU."""
    batch = torch.stack([torch.as_tensor(np.asarray(c) if not isinstance(c, torch.Tensor) else c) for c in cubes])
    batch = batch.to(device=device, dtype=torch.float32, non_blocking=True)
    with torch.autocast(device_type=device.type, enabled=amp):
        features = encoder(batch)
    if features.ndim != 2 or features.shape[0] != batch.shape[0]:
        raise ValueError(f"encoder must return [B, F] features, got shape {tuple(features.shape)} for B={len(cubes)}")
    return features.float().cpu().numpy()


def compute_embeddings(
    encoder: Callable[[torch.Tensor], torch.Tensor] | nn.Module,
    cubes: Iterable[Any] | np.ndarray | torch.Tensor,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    amp: bool = False,
    progress: bool = True,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Encode cubes in batches.

    Args:
        encoder: maps a float32 ``[B, 3, S, S, S]`` batch to ``[B, F]`` features; an ``nn.Module`` is
            moved to ``device`` and put in eval mode (its previous mode is restored afterwards).
        cubes: an iterable (generator, list, dataset) of ``(bbox_name, Var1, cube)`` tuples, of dicts
            with ``bbox_name``, ``Var1``, ``image``, or of bare cubes (ids then ``""`` and the
            position); or an ``[N, 3, S, S, S]`` array/tensor.
        batch_size: cubes per forward pass.
        device: where to run the encoder.
        amp: autocast the forward pass (mixed precision).
        progress: show a tqdm bar.

    Returns:
        ``(ids, vectors)``: a frame with ``bbox_name``, ``Var1`` (str) and a float32 ``[N, F]`` array.

    Raises:
        ValueError: if ``batch_size`` < 1, there are no cubes, or the encoder output is not ``[B, F]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    module = encoder if isinstance(encoder, nn.Module) else getattr(encoder, "__self__", None)
    module = module if isinstance(module, nn.Module) else None
    was_training = module.training if module is not None else False
    if isinstance(encoder, nn.Module):
        encoder.to(device)
    total = len(cubes) if hasattr(cubes, "__len__") else None
    names: list[str] = []
    var1s: list[str] = []
    chunks: list[np.ndarray] = []
    pending: list = []
    try:
        if module is not None:
            module.eval()
        with torch.inference_mode():
            for index, item in enumerate(tqdm(cubes, total=total, disable=not progress, desc="embedding", unit="cube")):
                name, var1, cube = _split_item(item, index)
                names.append(name)
                var1s.append(var1)
                pending.append(cube)
                if len(pending) == batch_size:
                    chunks.append(_encode_batch(encoder, pending, device, amp))
                    pending = []
            if pending:
                chunks.append(_encode_batch(encoder, pending, device, amp))
    finally:
        if module is not None:
            module.train(was_training)
    if not chunks:
        raise ValueError("no cubes to embed")
    ids = pd.DataFrame({"bbox_name": names, "Var1": var1s})
    return ids, np.concatenate(chunks).astype(np.float32, copy=False)


def _check_ids_vectors(ids: pd.DataFrame, vectors: np.ndarray) -> np.ndarray:
    """Validate ids against vectors and return the vectors as float32 ``[N, F]``."""
    missing = [c for c in ("bbox_name", "Var1") if c not in ids.columns]
    if missing:
        raise ValueError(f"ids lack the column(s) {missing}")
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be [N, F], got shape {vectors.shape}")
    if len(ids) != vectors.shape[0]:
        raise ValueError(f"{len(ids)} ids but {vectors.shape[0]} vectors")
    return vectors


def write_embeddings(
    out_dir: str | os.PathLike,
    ids: pd.DataFrame,
    vectors: np.ndarray,
    attrs: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``embeddings.h5`` and ``embeddings.csv`` into ``out_dir`` (each atomically).

    Args:
        out_dir: output folder (created when missing).
        ids: ``bbox_name``, ``Var1`` per vector.
        vectors: ``[N, F]`` features (stored as float32).
        attrs: provenance stored as HDF5 attributes; str/int/float/bool as they are, anything else
            (dicts, lists, None, paths) as JSON / str.

    Returns:
        ``(h5_path, csv_path)``.

    Raises:
        ValueError: if ids and vectors disagree in length, vectors are not 2-D, or an attribute name
            is reserved.
    """
    vectors = _check_ids_vectors(ids, vectors)
    out_dir = Path(out_dir)
    h5_path, csv_path = out_dir / "embeddings.h5", out_dir / "embeddings.csv"
    names = ids["bbox_name"].astype(str).tolist()
    var1s = ids["Var1"].astype(str).tolist()
    utf8 = h5py.string_dtype("utf-8")
    with atomic_output(h5_path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("bbox_name", data=np.array(names, dtype=object), dtype=utf8)
            f.create_dataset("Var1", data=np.array(var1s, dtype=object), dtype=utf8)
            f.create_dataset("embeddings", data=vectors)
            f.attrs["format"] = EMBEDDINGS_FORMAT
            f.attrs["format_version"] = EMBEDDINGS_FORMAT_VERSION
            json_keys = []
            for key, value in (attrs or {}).items():
                if key in _RESERVED_ATTRS:
                    raise ValueError(f"attribute name {key!r} is reserved by the embeddings format")
                if isinstance(value, os.PathLike):
                    value = os.fspath(value)
                if isinstance(value, (str, bool, int, float, np.integer, np.floating)):
                    f.attrs[key] = value
                else:
                    f.attrs[key] = json.dumps(value, default=str)
                    json_keys.append(key)
            f.attrs[_JSON_ATTRS_KEY] = json.dumps(json_keys)
    table = pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])
    table.insert(0, "Var1", var1s)
    table.insert(0, "bbox_name", names)
    with atomic_output(csv_path) as tmp:
        # float32 round-trips exactly through 9 significant digits.
        table.to_csv(tmp, index=False, float_format="%.9g")
    logger.info("wrote %d embeddings of dimension %d to %s and %s", len(ids), vectors.shape[1], h5_path, csv_path)
    return h5_path, csv_path


def _attr_value(value: Any) -> Any:
    """HDF5 attribute to a plain Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_h5(path: Path) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not an embeddings file: not readable as HDF5 ({err})") from err
    with f:
        fmt = _attr_value(f.attrs.get("format", None))
        if fmt != EMBEDDINGS_FORMAT:
            raise ValueError(
                f"{path} is not an embeddings file: attribute 'format' is {fmt!r}, expected {EMBEDDINGS_FORMAT!r}"
            )
        missing = [k for k in ("bbox_name", "Var1", "embeddings") if k not in f]
        if missing:
            raise ValueError(f"embeddings file {path} lacks the dataset(s) {missing}")
        names = f["bbox_name"].asstr()[()].tolist()
        var1s = f["Var1"].asstr()[()].tolist()
        vectors = np.asarray(f["embeddings"][()], dtype=np.float32)
        raw_attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
    if vectors.ndim != 2 or not (len(names) == len(var1s) == vectors.shape[0]):
        raise ValueError(
            f"embeddings file {path} is inconsistent: {len(names)} bbox names, {len(var1s)} Var1, "
            f"embeddings of shape {vectors.shape}"
        )
    json_keys = json.loads(raw_attrs.pop(_JSON_ATTRS_KEY, "[]"))
    attrs = {k: (json.loads(v) if k in json_keys else v) for k, v in raw_attrs.items()}
    return pd.DataFrame({"bbox_name": names, "Var1": var1s}), vectors, attrs


def _read_csv(path: Path) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    try:
        table = pd.read_csv(path, dtype={"bbox_name": str, "Var1": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not an embeddings file: not a readable CSV ({err})") from err
    feature_cols = [c for c in table.columns if c.startswith("e") and c[1:].isdigit()]
    if "bbox_name" not in table.columns or "Var1" not in table.columns or not feature_cols:
        raise ValueError(
            f"{path} is not an embeddings file: needs columns bbox_name, Var1, e0..; found {list(table.columns)[:8]}"
        )
    feature_cols.sort(key=lambda c: int(c[1:]))
    try:
        vectors = table[feature_cols].to_numpy(dtype=np.float32)
    except ValueError as err:
        raise ValueError(f"embeddings file {path} has non-numeric feature values: {err}") from err
    ids = pd.DataFrame({"bbox_name": table["bbox_name"].astype(str), "Var1": table["Var1"].astype(str)})
    return ids, vectors, {}


def read_embeddings(path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Read an embeddings file written by :func:`write_embeddings`.

    Args:
        path: ``embeddings.h5`` (or the ``embeddings.csv`` twin, which carries no attributes).

    Returns:
        ``(ids, vectors, attrs)``: ``bbox_name``/``Var1`` str frame, float32 ``[N, F]`` array and the
        attributes (without the format markers).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file, if it is not an embeddings file or is inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"embeddings file {path} does not exist")
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    ids, vectors, attrs = _read_h5(path)
    attrs.pop("format", None)
    attrs.pop("format_version", None)
    return ids, vectors, attrs


def __getattr__(name: str) -> Any:
    # moved in 0.3 (the inference workflow and the synapse cubes have their own modules); still importable here
    if name == "run_inference":
        from synclr_monai.inference import run_inference

        return run_inference
    if name == "iter_dataset_cubes":
        from synclr_monai.data.synapse_cubes import iter_dataset_cubes

        return iter_dataset_cubes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
