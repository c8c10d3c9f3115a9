"""HDF5 cache of assembled bboxes.

Assembling a bbox reads ~1700 TIFF slices and labels components; the cache keeps the result (raw in
float16/float32, masks in uint8, chunked and compressed) together with a fingerprint of everything it
was built from: the source files (names, sizes, mtimes), the label map, the raw dtype, the assembly
parameters and the cache format version. A different fingerprint or an unreadable file means a
rebuild. Caches are written to a temporary name and renamed, so a crash never leaves a half cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils import atomic_output
from .bbox import VESICLE_SEARCH_RADIUS, BBoxSource, BBoxVolume, assemble_bbox
from .labels import LabelMap, label_map_for

__all__ = ["CACHE_FORMAT_VERSION", "source_fingerprint", "write_cache", "read_cache", "load_bbox"]

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 3  # 3: the mask holds the post-synaptic channel (caches marked 2 were written without it)
# chunks of 64³ match the cube sizes read in training, so a random cube touches few chunks
CHUNK = 64


def _files_of(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]


def source_fingerprint(
    source: BBoxSource,
    label_map: LabelMap,
    raw_dtype: str,
    vesicle_search_radius: int = VESICLE_SEARCH_RADIUS,
) -> str:
    """A SHA-256 over the source files' names, sizes and mtimes and the assembly settings."""
    h = hashlib.sha256()
    settings = {
        "version": CACHE_FORMAT_VERSION,
        "label_map": label_map.as_dict(),
        "raw_dtype": str(np.dtype(raw_dtype)),
        "vesicle_search_radius": vesicle_search_radius,
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    for part in (source.raw, source.seg, source.mask, source.sheet):
        for f in _files_of(part):
            st = f.stat()
            h.update(f"{f.relative_to(source.root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def write_cache(volume: BBoxVolume, path: str | Path, fingerprint: str, compression: str = "lzf") -> Path:
    """Write an assembled bbox to ``path`` atomically.

    Args:
        volume: the assembled bbox.
        path: target ``.h5`` file.
        fingerprint: from :func:`source_fingerprint`.
        compression: h5py filter (``"lzf"`` is fast; ``"gzip"`` smaller).

    Returns:
        ``path``.
    """
    import h5py

    path = Path(path)
    chunks = tuple(min(CHUNK, s) for s in volume.shape)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("raw", data=volume.raw, chunks=chunks, compression=compression)
        f.create_dataset("mask", data=volume.mask, chunks=(1, *chunks), compression=compression)
        f.attrs["name"] = volume.name
        f.attrs["fingerprint"] = fingerprint
        f.attrs["format_version"] = CACHE_FORMAT_VERSION
        f.attrs["synapses"] = volume.synapses.to_json(orient="split")
    return path


def read_cache(path: str | Path, fingerprint: str | None = None) -> BBoxVolume | None:
    """Read a cached bbox.

    Args:
        path: the ``.h5`` cache.
        fingerprint: expected fingerprint; a mismatch returns None.

    Returns:
        The volume, or None when the file is absent or stale.

    Raises:
        OSError, KeyError, ValueError: when the file exists but cannot be read (callers rebuild).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        return None
    with h5py.File(path, "r") as f:
        if int(f.attrs.get("format_version", -1)) != CACHE_FORMAT_VERSION:
            return None
        if fingerprint is not None and f.attrs.get("fingerprint") != fingerprint:
            return None
        raw = f["raw"][()]
        mask = f["mask"][()]
        name = str(f.attrs["name"])
        synapses = pd.read_json(_StringIO(f.attrs["synapses"]), orient="split", dtype={"Var1": str})
    synapses["Var1"] = synapses["Var1"].astype(str)
    return BBoxVolume(name=name, raw=raw, mask=mask, synapses=synapses)


def _StringIO(text: str):  # pandas >= 2.1 wants a buffer, not a literal JSON string
    from io import StringIO

    return StringIO(text)


def load_bbox(
    source: BBoxSource,
    cache_dir: str | Path | None = None,
    label_maps: Mapping[int, LabelMap] | None = None,
    raw_dtype: str = "float16",
    vesicle_search_radius: int = VESICLE_SEARCH_RADIUS,
) -> BBoxVolume:
    """Load an assembled bbox from the cache, (re)building the cache when it is absent, stale or broken.

    Args:
        source: the bbox's files.
        cache_dir: folder of ``bboxN.h5`` caches; None assembles without caching.
        label_maps: ``{bbox_number: LabelMap}`` (default table when None).
        raw_dtype: ``"float16"`` or ``"float32"`` for the raw channel.
        vesicle_search_radius: see :func:`assemble_bbox`.

    Returns:
        The assembled :class:`BBoxVolume`.
    """
    if np.dtype(raw_dtype) not in (np.float16, np.float32):
        raise ValueError(f"raw_dtype must be float16 or float32, got {raw_dtype!r}")
    if cache_dir is None:
        return assemble_bbox(source, label_maps, raw_dtype, vesicle_search_radius)
    label_map = label_map_for(source.number, label_maps)
    fingerprint = source_fingerprint(source, label_map, raw_dtype, vesicle_search_radius)
    path = Path(cache_dir) / f"{source.name}.h5"
    try:
        cached = read_cache(path, fingerprint)
    except Exception as err:  # any unreadable cache is rebuilt, never trusted
        warnings.warn(f"{path}: unreadable cache ({type(err).__name__}: {err}); rebuilding it", stacklevel=2)
        cached = None
    if cached is not None:
        logger.info("%s: loaded from cache %s", source.name, path)
        return cached
    logger.info("%s: assembling from %s (cache %s)", source.name, source.root, path)
    volume = assemble_bbox(source, label_maps, raw_dtype, vesicle_search_radius)
    write_cache(volume, path, fingerprint)
    return volume
