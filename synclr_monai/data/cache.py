"""HDF5 cache of assembled bboxes.

Assembling a bbox reads ~1700 TIFF slices and labels components; the cache keeps the result (raw in
float16/float32, masks in uint8, chunked and compressed) together with a fingerprint of everything it
was built from: the source files (names, sizes, mtimes), the label map, the raw dtype, the assembly
parameters and the cache format version. A different fingerprint or an unreadable file means a
rebuild. Caches are written to a temporary name and renamed, so a crash never leaves a half cache.

Concurrent loaders (the ranks of a DDP run, several DataLoader workers) build a bbox's cache once: the
build holds a per-bbox file lock (``bboxN.h5.lock`` beside the cache), and a process that finds the
lock taken waits, then reads the cache the other one wrote. Under the lock, temporaries left by a
killed build (``.bboxN.h5.<random>.tmp``) are removed; they are never read as a cache.

Corruption in place (a flipped bit on disk) must not load as data: every chunk of the volumes carries
HDF5's fletcher32 checksum (h5py raises on a mismatch) and the attributes (name, sheet, label values)
a SHA-256 stored beside them, so a damaged cache is caught and rebuilt like any unreadable one.
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
from .bbox import VESICLE_SEARCH_RADIUS, BBoxSource, BBoxVolume, assemble_bbox, label_problems
from .io import DataFormatError, is_zarr
from .label_maps import LabelMap, label_map_for

__all__ = ["CACHE_FORMAT_VERSION", "source_fingerprint", "write_cache", "read_cache", "load_bbox"]

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 4  # 4: the post-synaptic mask channel, fletcher32 checksums, label values, attribute hash
# chunks of 64³ match the cube sizes read in training, so a random cube touches few chunks
CHUNK = 64


def _files_of(path: Path) -> list[Path]:
    """The files a source part consists of: a slice folder's files, every file of a Zarr store (its
    metadata and chunk files, in nested folders), or the file itself."""
    if not path.is_dir():
        return [path]
    if is_zarr(path):
        return sorted(p for p in path.rglob("*") if p.is_file())
    return sorted(p for p in path.iterdir() if p.is_file())


def source_fingerprint(
    source: BBoxSource,
    label_map: LabelMap,
    raw_dtype: str,
    vesicle_search_radius: int = VESICLE_SEARCH_RADIUS,
) -> str:
    """A SHA-256 over the source files' names, sizes and mtimes and the assembly settings.

    A Zarr store counts every file in it (chunks included), so rewriting one chunk invalidates the cache.
    """
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
    attrs = {
        "name": volume.name,
        "fingerprint": fingerprint,
        "synapses": volume.synapses.to_json(orient="split"),
        "label_values": json.dumps([int(v) for v in volume.label_values]),
    }
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        # fletcher32: a per-chunk checksum that h5py verifies on every read
        f.create_dataset("raw", data=volume.raw, chunks=chunks, compression=compression, fletcher32=True)
        f.create_dataset("mask", data=volume.mask, chunks=(1, *chunks), compression=compression, fletcher32=True)
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["attrs_sha256"] = _attrs_hash(attrs)
        f.attrs["format_version"] = CACHE_FORMAT_VERSION
    return path


def _attrs_hash(attrs: Mapping[str, str]) -> str:
    """SHA-256 of the string attributes (fletcher32 covers the datasets, not the attributes)."""
    return hashlib.sha256(json.dumps(dict(attrs), sort_keys=True).encode()).hexdigest()


def read_cache(path: str | Path, fingerprint: str | None = None) -> BBoxVolume | None:
    """Read a cached bbox.

    Args:
        path: the ``.h5`` cache.
        fingerprint: expected fingerprint; a mismatch returns None.

    Returns:
        The volume, or None when the file is absent or stale.

    Raises:
        OSError, KeyError, ValueError: when the file exists but cannot be read, or a checksum does not match
            (callers rebuild).
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
        attrs = {key: str(f.attrs[key]) for key in ("name", "fingerprint", "synapses", "label_values")}
        if str(f.attrs["attrs_sha256"]) != _attrs_hash(attrs):
            raise ValueError("attribute checksum mismatch (the file was changed after it was written)")
        for key in ("raw", "mask"):
            if not f[key].fletcher32:
                raise ValueError(f"dataset {key!r} has no checksum")
        raw = f["raw"][()]  # raises OSError on a fletcher32 mismatch
        mask = f["mask"][()]
    synapses = pd.read_json(_StringIO(attrs["synapses"]), orient="split", dtype={"Var1": str})
    synapses["Var1"] = synapses["Var1"].astype(str)
    values = tuple(int(v) for v in json.loads(attrs["label_values"]))
    return BBoxVolume(name=attrs["name"], raw=raw, mask=mask, synapses=synapses, label_values=values)


def _StringIO(text: str):  # pandas >= 2.1 wants a buffer, not a literal JSON string
    from io import StringIO

    return StringIO(text)


def load_bbox(
    source: BBoxSource,
    cache_dir: str | Path | None = None,
    label_maps: Mapping[int, LabelMap] | None = None,
    raw_dtype: str = "float16",
    vesicle_search_radius: int = VESICLE_SEARCH_RADIUS,
    require_labels: bool = True,
) -> BBoxVolume:
    """Load an assembled bbox from the cache, (re)building the cache when it is absent, stale or broken.

    Args:
        source: the bbox's files.
        cache_dir: folder of ``bboxN.h5`` caches; None assembles without caching.
        label_maps: ``{bbox_number: LabelMap}`` (default table when None).
        raw_dtype: ``"float16"`` or ``"float32"`` for the raw channel.
        vesicle_search_radius: see :func:`assemble_bbox`.
        require_labels: refuse a bbox whose masks do not fit its label map (no cleft voxel, or no synapse
            with a pre-synaptic segment; see :func:`~synclr_monai.data.bbox.label_problems`), checked on
            cached loads too. False: load it anyway (its empty channels are trained on as they are).

    Returns:
        The assembled :class:`BBoxVolume`.

    Raises:
        DataFormatError: unreadable or inconsistent files, or (``require_labels``) masks that do not fit the
            label map, naming the bbox, the mask file and the label values it holds.
    """
    if np.dtype(raw_dtype) not in (np.float16, np.float32):
        raise ValueError(f"raw_dtype must be float16 or float32, got {raw_dtype!r}")
    label_map = label_map_for(source.number, label_maps)
    volume = _load_or_build(source, cache_dir, label_maps, label_map, raw_dtype, vesicle_search_radius)
    if require_labels:
        problems = label_problems(volume, source, label_map)
        if problems:
            raise DataFormatError("\n".join(problems))
    return volume


def _try_read(path: Path, fingerprint: str, warn: bool) -> BBoxVolume | None:
    """The cached volume, or None when absent, stale or (with a warning when ``warn``) unreadable."""
    try:
        return read_cache(path, fingerprint)
    except Exception as err:  # any unreadable cache is rebuilt, never trusted
        if warn:
            warnings.warn(f"{path}: unreadable cache ({type(err).__name__}: {err}); rebuilding it", stacklevel=4)
        return None


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of ``path`` left by a killed build (call only while holding the build lock)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        logger.info("%s: removing the temporary file %s left by an interrupted build", path, tmp)
        tmp.unlink(missing_ok=True)


def _load_or_build(
    source: BBoxSource,
    cache_dir: str | Path | None,
    label_maps: Mapping[int, LabelMap] | None,
    label_map: LabelMap,
    raw_dtype: str,
    vesicle_search_radius: int,
) -> BBoxVolume:
    """The cached volume, or the assembled one after writing it to the cache, built once across processes.

    A valid cache is read without locking. Otherwise the per-bbox lock ``bboxN.h5.lock`` is taken (waiting,
    with a log line, while another process builds), the cache is read again (the other process may just have
    written it), and only if it is still absent, stale or broken is the bbox assembled and written.
    """
    from filelock import FileLock, Timeout

    if cache_dir is None:
        return assemble_bbox(source, label_maps, raw_dtype, vesicle_search_radius)
    fingerprint = source_fingerprint(source, label_map, raw_dtype, vesicle_search_radius)
    path = Path(cache_dir) / f"{source.name}.h5"
    cached = _try_read(path, fingerprint, warn=False)
    if cached is not None:
        logger.info("%s: loaded from cache %s", source.name, path)
        return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info(
            "%s: waiting for another process building the cache %s (lock %s)", source.name, path, lock.lock_file
        )
        lock.acquire()
    try:
        cached = _try_read(path, fingerprint, warn=True)
        if cached is not None:
            logger.info("%s: loaded from cache %s (built by another process)", source.name, path)
            return cached
        _remove_stale_temporaries(path)
        logger.info("%s: assembling from %s (cache %s)", source.name, source.root, path)
        volume = assemble_bbox(source, label_maps, raw_dtype, vesicle_search_radius)
        write_cache(volume, path, fingerprint)
        return volume
    finally:
        lock.release()
