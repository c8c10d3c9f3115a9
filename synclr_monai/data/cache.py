"""HDF5 cache of assembled bboxes.

Assembling a bbox reads ~1700 TIFF slices and labels components; the cache keeps the result (raw in
float16/float32, uncompressed, masks in uint8, LZF-compressed, both in 64³ chunks), written slab by slab as
:func:`build_cache` assembles it (:mod:`synclr_monai.data.assembly`: memory for a slab, not a bbox), together with a
fingerprint of everything it was built from: the source files (names, sizes, mtimes), the label map, the raw dtype, the assembly
parameters and the cache format version. A different fingerprint or an unreadable file means a
rebuild. Caches are written to a temporary name and renamed, so a crash never leaves a half cache.

Concurrent loaders (the ranks of a DDP run, several DataLoader workers) build a bbox's cache once: the
build holds a per-bbox file lock (``bboxN.h5.lock`` beside the cache), and a process that finds the
lock taken waits, then reads the cache the other one wrote. Under the lock, temporaries left by a
killed build (``.bboxN.h5.<random>.tmp``) are removed; they are never read as a cache.

Corruption in place (a flipped bit on disk) must not load as data: every chunk of the volumes carries
HDF5's fletcher32 checksum (h5py raises on a mismatch) and the attributes (name, sheet, label values,
component table) a SHA-256 stored beside them, so a damaged cache is caught and rebuilt like any unreadable one.

The cache also stores the cleft's connected components (group ``cleft_components``: per component its
bounding box, voxel count and bit-packed crop mask, for components of at least
:data:`COMPONENT_TABLE_MIN_SIZE` voxels at connectivity :data:`COMPONENT_TABLE_CONNECTIVITY`), so that
mask-aware sampling out of core (``data_mode: chunked``) never needs the whole cleft in memory:
:func:`read_component_table` rebuilds :class:`~synclr_monai.transforms.sampling.CleftComponents` for any
``min_size`` at or above the stored one. :func:`open_cached_bbox` checks a cache (building it when needed)
and reads only its header, for :class:`~synclr_monai.data.lazy.H5Volume` handles on its datasets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils import atomic_output
from .assembly import assemble_bbox, plan_assembly
from .bbox import VESICLE_SEARCH_RADIUS, BBoxSource, BBoxVolume, label_problems
from .components import SlabComponents
from .io import DataFormatError, is_zarr
from .label_maps import LabelMap, label_map_for, resolve_label_maps
from .lazy import H5Volume, pack_mask_bits, unpack_mask_bits

__all__ = [
    "CACHE_FORMAT_VERSION",
    "COMPONENT_TABLE_MIN_SIZE",
    "COMPONENT_TABLE_CONNECTIVITY",
    "CachedBBox",
    "source_fingerprint",
    "write_cache",
    "build_cache",
    "read_cache",
    "read_cache_header",
    "read_component_table",
    "load_bbox",
    "open_cached_bbox",
]

logger = logging.getLogger(__name__)

# 4: the post-synaptic mask channel, fletcher32 checksums, label values, attribute hash; 5: the cleft component
# table, the raw channel uncompressed; 6: the mask channels bit-packed into one [Z, Y, X] uint8 dataset
CACHE_FORMAT_VERSION = 6
# chunks of 64³ match the cube sizes read in training, so a random cube touches few chunks
CHUNK = 64
#: Smallest cleft component (voxels) the cache's component table keeps; smaller ones are specks of the mask.
COMPONENT_TABLE_MIN_SIZE = 10
#: Connectivity of the stored cleft components (the default of mask-aware sampling).
COMPONENT_TABLE_CONNECTIVITY = 26
_HASHED_ATTRS = ("name", "fingerprint", "synapses", "label_values", "cleft_components", "mask_channels")


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


def _table_of(comps, cleft_voxels: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Cleft components as ``([K, 7] int64 starts|stops|size, packed crop bits, metadata)``; ``cleft_voxels``
    counts every cleft voxel, components under the table's minimum size included."""
    table = np.concatenate([comps.starts, comps.stops, comps.sizes[:, None]], axis=1).astype(np.int64)
    bits = np.concatenate([m.ravel() for m in comps.masks]) if len(comps) else np.zeros(0, dtype=bool)
    packed = np.packbits(bits)
    meta = {
        "min_size": COMPONENT_TABLE_MIN_SIZE,
        "connectivity": COMPONENT_TABLE_CONNECTIVITY,
        "count": len(comps),
        "cleft_voxels": int(cleft_voxels),
        "sha256": _table_hash(table, packed),
    }
    return table, packed, meta


def _table_hash(table: np.ndarray, packed: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(table, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(packed, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _write_slabs(
    path: Path,
    name: str,
    fingerprint: str,
    shape: tuple[int, int, int],
    raw_dtype: np.dtype,
    slabs: Iterator[tuple[int, np.ndarray, np.ndarray]],
    header: Callable[[], tuple[pd.DataFrame, tuple[int, ...]]],
    compression: str | None = "lzf",
    raw_compression: str | None = None,
    mask_channels: int = 3,
) -> Path:
    """Write a cache atomically from ``(z0, raw, mask)`` slabs, the cleft component table built along the way.

    ``header()`` gives the synapses and label values once the slabs are written (the streamed assembly knows the
    label values only then).
    """
    import h5py

    chunks = tuple(min(CHUNK, s) for s in shape)
    components = SlabComponents(shape, COMPONENT_TABLE_MIN_SIZE, COMPONENT_TABLE_CONNECTIVITY)
    cleft_voxels = 0
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        # fletcher32: a per-chunk checksum that h5py verifies on every read
        raw = f.create_dataset(
            "raw", shape=shape, dtype=raw_dtype, chunks=chunks, compression=raw_compression, fletcher32=True
        )
        # the channels as bits of one byte: an out-of-core cube decompresses one byte a voxel, not one per channel
        mask = f.create_dataset(
            "mask", shape=shape, dtype=np.uint8, chunks=chunks, compression=compression, fletcher32=True
        )
        for z0, raw_slab, mask_slab in slabs:
            z1 = z0 + raw_slab.shape[0]
            raw[z0:z1] = raw_slab
            mask[z0:z1] = pack_mask_bits(mask_slab)
            components.add(mask_slab[1])
            cleft_voxels += int(np.count_nonzero(mask_slab[1]))
        table, packed, meta = _table_of(components.result(), cleft_voxels)
        synapses, label_values = header()
        attrs = {
            "name": name,
            "fingerprint": fingerprint,
            "synapses": synapses.to_json(orient="split"),
            "label_values": json.dumps([int(v) for v in label_values]),
            "cleft_components": json.dumps(meta, sort_keys=True),
            "mask_channels": str(int(mask_channels)),
        }
        # small and read whole; its SHA-256 is in the (hashed) attribute "cleft_components"
        group = f.create_group("cleft_components")
        group.create_dataset("table", data=table.reshape(-1, 7))
        group.create_dataset("masks", data=packed)
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["attrs_sha256"] = _attrs_hash(attrs)
        f.attrs["format_version"] = CACHE_FORMAT_VERSION
    return path


def write_cache(
    volume: BBoxVolume,
    path: str | Path,
    fingerprint: str,
    compression: str | None = "lzf",
    raw_compression: str | None = None,
) -> Path:
    """Write an assembled bbox and its cleft component table to ``path`` atomically.

    Args:
        volume: the assembled bbox.
        path: target ``.h5`` file.
        fingerprint: from :func:`source_fingerprint`.
        compression: h5py filter of the masks (``"lzf"`` is fast; ``"gzip"`` smaller; None: none).
        raw_compression: h5py filter of the raw channel; None (default): uncompressed, because out-of-core
            training (``data_mode: chunked``) decompresses every chunk a cube touches, and LZF on 64³ float16
            chunks costs ~7x the read itself (docs/results.md, "Scale: chunked mode") for little gain on EM.

    Returns:
        ``path``.
    """
    mask = volume.mask
    slabs = ((z, volume.raw[z : z + CHUNK], mask[:, z : z + CHUNK]) for z in range(0, volume.shape[0], CHUNK))
    return _write_slabs(
        Path(path), volume.name, fingerprint, volume.shape, volume.raw.dtype, slabs,
        lambda: (volume.synapses, volume.label_values), compression, raw_compression, mask.shape[0],
    )  # fmt: skip


def build_cache(
    source: BBoxSource,
    path: str | Path,
    fingerprint: str,
    label_maps: Mapping[int, LabelMap] | None = None,
    raw_dtype: str = "float16",
    vesicle_search_radius: int = VESICLE_SEARCH_RADIUS,
) -> Path:
    """Assemble a bbox slab by slab straight into its cache (memory: one slab, not the bbox).

    Writes the same file as ``write_cache(assemble_bbox(source, ...), path, fingerprint)``.

    Args:
        source: the bbox's files.
        path: target ``.h5`` file (written to a temporary name, then renamed).
        fingerprint: from :func:`source_fingerprint`.
        label_maps: ``{bbox_number: LabelMap}`` (None: the default table and the dataset's ``label_maps.json``).
        raw_dtype: ``"float16"`` or ``"float32"`` for the raw channel.
        vesicle_search_radius: see :func:`~synclr_monai.data.assembly.assemble_bbox`.

    Returns:
        ``path``.

    Raises:
        DataFormatError: as :func:`~synclr_monai.data.assembly.plan_assembly`; nothing is left at ``path``.
    """
    plan = plan_assembly(source, label_maps, vesicle_search_radius)
    return _write_slabs(
        Path(path), source.name, fingerprint, plan.shape, np.dtype(raw_dtype), plan.slabs(raw_dtype, CHUNK),
        lambda: (plan.synapses, plan.label_values),
    )  # fmt: skip


def _attrs_hash(attrs: Mapping[str, str]) -> str:
    """SHA-256 of the string attributes (fletcher32 covers the datasets, not the attributes)."""
    return hashlib.sha256(json.dumps(dict(attrs), sort_keys=True).encode()).hexdigest()


def _checked_attrs(f, fingerprint: str | None) -> dict[str, str] | None:
    """The hashed string attributes of an open cache, or None when its version or fingerprint differ.

    Raises:
        ValueError: the attribute checksum does not match, or a volume dataset carries no checksum.
        KeyError: a missing attribute or dataset.
    """
    if int(f.attrs.get("format_version", -1)) != CACHE_FORMAT_VERSION:
        return None
    if fingerprint is not None and f.attrs.get("fingerprint") != fingerprint:
        return None
    attrs = {key: str(f.attrs[key]) for key in _HASHED_ATTRS}
    if str(f.attrs["attrs_sha256"]) != _attrs_hash(attrs):
        raise ValueError("attribute checksum mismatch (the file was changed after it was written)")
    for key in ("raw", "mask"):
        if not f[key].fletcher32:
            raise ValueError(f"dataset {key!r} has no checksum")
    return attrs


def _synapses_of(attrs: Mapping[str, str]) -> pd.DataFrame:
    synapses = pd.read_json(_StringIO(attrs["synapses"]), orient="split", dtype={"Var1": str})
    synapses["Var1"] = synapses["Var1"].astype(str)
    return synapses


def _read_table(f, meta: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """The component table and packed crop bits of an open cache, checked against their SHA-256."""
    table = np.asarray(f["cleft_components/table"][()], dtype=np.int64).reshape(-1, 7)
    packed = np.asarray(f["cleft_components/masks"][()], dtype=np.uint8).reshape(-1)
    if _table_hash(table, packed) != meta["sha256"] or len(table) != int(meta["count"]):
        raise ValueError("cleft component table checksum mismatch (the file was changed after it was written)")
    return table, packed


def read_cache(path: str | Path, fingerprint: str | None = None) -> BBoxVolume | None:
    """Read a cached bbox (whole volumes into memory; the component table is checked, not returned).

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
        attrs = _checked_attrs(f, fingerprint)
        if attrs is None:
            return None
        _read_table(f, json.loads(attrs["cleft_components"]))
        raw = f["raw"][()]  # raises OSError on a fletcher32 mismatch
        mask = unpack_mask_bits(f["mask"][()], range(int(attrs["mask_channels"])))
    values = tuple(int(v) for v in json.loads(attrs["label_values"]))
    return BBoxVolume(name=attrs["name"], raw=raw, mask=mask, synapses=_synapses_of(attrs), label_values=values)


@dataclass(frozen=True)
class CachedBBox:
    """A checked bbox cache, described from its header only (no voxel read).

    Args:
        path: the ``.h5`` cache.
        name: ``bboxN``.
        fingerprint: the cache's source fingerprint.
        shape: ``(Z, Y, X)``.
        raw_dtype: dtype of the raw dataset.
        mask_channels: channels of the mask dataset (3: pre, cleft, post).
        synapses: the sheet rows (as :attr:`BBoxVolume.synapses`).
        label_values: the non-zero values of the semantic mask.
        cleft_voxels: number of cleft voxels (channel 1 of the mask).
    """

    path: Path
    name: str
    fingerprint: str
    shape: tuple[int, int, int]
    raw_dtype: np.dtype
    mask_channels: int
    synapses: pd.DataFrame = field(compare=False)
    label_values: tuple[int, ...] = ()
    cleft_voxels: int = 0

    def volumes(self) -> tuple[H5Volume, H5Volume]:
        """Out-of-core handles on the cache: ``raw`` ``[1, Z, Y, X]`` and ``mask`` ``[C, Z, Y, X]`` uint8."""
        raw = H5Volume(self.path, "raw", self.shape, self.raw_dtype, add_channel=True, fingerprint=self.fingerprint)
        mask = H5Volume(
            self.path, "mask", (self.mask_channels, *self.shape), "uint8", fingerprint=self.fingerprint,
            packed_bits=True,
        )  # fmt: skip
        return raw, mask

    @property
    def nbytes(self) -> int:
        """Bytes the assembled bbox takes in memory (raw plus mask channels)."""
        return int(np.prod(self.shape)) * (np.dtype(self.raw_dtype).itemsize + self.mask_channels)


def read_cache_header(path: str | Path, fingerprint: str | None = None) -> CachedBBox | None:
    """Check a cache's header (version, fingerprint, attribute and table checksums) without reading voxels.

    The volumes' chunks keep their fletcher32 checksums, verified by h5py whenever a chunk is read later.

    Args:
        path: the ``.h5`` cache.
        fingerprint: expected fingerprint; a mismatch returns None.

    Returns:
        The cache's description, or None when the file is absent or stale.

    Raises:
        OSError, KeyError, ValueError: when the file exists but cannot be read or a checksum does not match.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        return None
    with h5py.File(path, "r") as f:
        attrs = _checked_attrs(f, fingerprint)
        if attrs is None:
            return None
        meta = json.loads(attrs["cleft_components"])
        _read_table(f, meta)
        raw, mask = f["raw"], f["mask"]
        if raw.ndim != 3 or mask.shape != raw.shape or mask.dtype != np.uint8:
            raise ValueError(f"raw {raw.shape} and packed mask {mask.shape} {mask.dtype} do not match")
        shape, raw_dtype, channels = tuple(int(n) for n in raw.shape), raw.dtype, int(attrs["mask_channels"])
    return CachedBBox(
        path=path,
        name=attrs["name"],
        fingerprint=attrs["fingerprint"],
        shape=shape,  # type: ignore[arg-type]
        raw_dtype=np.dtype(raw_dtype),
        mask_channels=channels,
        synapses=_synapses_of(attrs),
        label_values=tuple(int(v) for v in json.loads(attrs["label_values"])),
        cleft_voxels=int(meta["cleft_voxels"]),
    )


def read_component_table(path: str | Path, min_size: int = 100, connectivity: int = COMPONENT_TABLE_CONNECTIVITY):
    """The cleft components of at least ``min_size`` voxels, from a cache's component table.

    Args:
        path: the ``.h5`` cache.
        min_size: smallest component kept (as :func:`~synclr_monai.transforms.sampling.find_cleft_components`).
        connectivity: connectivity of the components (6, 18, 26).

    Returns:
        The :class:`~synclr_monai.transforms.sampling.CleftComponents` (equal to what
        ``find_cleft_components`` gives on the whole cleft channel), or None when the table cannot give them:
        ``min_size`` below the stored :data:`COMPONENT_TABLE_MIN_SIZE`, or another connectivity.

    Raises:
        OSError, KeyError, ValueError: an unreadable cache or a table whose checksum does not match, naming the file.
    """
    import h5py

    from ..transforms.sampling import CleftComponents

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            attrs = _checked_attrs(f, None)
            if attrs is None:
                raise ValueError(f"not a cache of format version {CACHE_FORMAT_VERSION}")
            meta = json.loads(attrs["cleft_components"])
            if int(connectivity) != int(meta["connectivity"]) or max(int(min_size), 1) < int(meta["min_size"]):
                return None
            table, packed = _read_table(f, meta)
            shape = tuple(int(n) for n in f["raw"].shape)
    except (OSError, KeyError, ValueError) as err:
        raise type(err)(f"{path}: cannot read the cleft component table ({err})") from err
    starts, stops, sizes = table[:, :3], table[:, 3:6], table[:, 6]
    lengths = np.prod(stops - starts, axis=1)
    bits = np.unpackbits(packed, count=int(lengths.sum())).astype(bool)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    keep = np.flatnonzero(sizes >= max(int(min_size), 1))
    masks = [bits[offsets[k] : offsets[k + 1]].reshape(stops[k] - starts[k]) for k in keep]
    return CleftComponents(shape, starts[keep], stops[keep], sizes[keep], masks)


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
        label_maps: ``{bbox_number: LabelMap}`` (None: the default table and the dataset's ``label_maps.json``).
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
    if label_maps is None:  # read the dataset's label_maps.json once, not again in every step below
        label_maps = resolve_label_maps(None, source.root)
    label_map = label_map_for(source.number, label_maps)
    if cache_dir is None:
        volume = assemble_bbox(source, label_maps, raw_dtype, vesicle_search_radius)
    else:
        volume = _load_or_build(source, cache_dir, label_maps, label_map, raw_dtype, vesicle_search_radius, read_cache)
    if require_labels:
        problems = label_problems(volume, source, label_map)
        if problems:
            raise DataFormatError("\n".join(problems))
    return volume


def open_cached_bbox(
    source: BBoxSource,
    cache_dir: str | Path,
    label_maps: Mapping[int, LabelMap] | None = None,
    raw_dtype: str = "float16",
    vesicle_search_radius: int = VESICLE_SEARCH_RADIUS,
    require_labels: bool = True,
) -> CachedBBox:
    """Make sure a bbox's cache is built and valid, and describe it without reading its voxels.

    The out-of-core counterpart of :func:`load_bbox` (``data_mode: chunked``): a valid cache is only
    checked (header, attribute and component-table checksums); an absent, stale or broken one is built as
    :func:`load_bbox` builds it (slab by slab: the build holds one slab of the bbox, not the bbox).

    Args:
        source: the bbox's files.
        cache_dir: folder of ``bboxN.h5`` caches (required: the cache is what is read out of core).
        label_maps: ``{bbox_number: LabelMap}`` (None: the default table and the dataset's ``label_maps.json``).
        raw_dtype: ``"float16"`` or ``"float32"`` for the raw channel.
        vesicle_search_radius: see :func:`assemble_bbox`.
        require_labels: as in :func:`load_bbox`, judged from the cache's header (cleft voxel count, sheet).

    Returns:
        The cache's :class:`CachedBBox`.

    Raises:
        ValueError: no ``cache_dir`` or a bad ``raw_dtype``.
        DataFormatError: as :func:`load_bbox`.
    """
    if cache_dir is None:
        raise ValueError(f"{source.name}: reading bboxes out of core (data_mode: chunked) needs a cache_dir")
    if np.dtype(raw_dtype) not in (np.float16, np.float32):
        raise ValueError(f"raw_dtype must be float16 or float32, got {raw_dtype!r}")
    if label_maps is None:  # read the dataset's label_maps.json once, not again in every step below
        label_maps = resolve_label_maps(None, source.root)
    label_map = label_map_for(source.number, label_maps)
    cached = _load_or_build(
        source, cache_dir, label_maps, label_map, raw_dtype, vesicle_search_radius, read_cache_header
    )
    if require_labels:
        problems = label_problems(cached, source, label_map, has_cleft=cached.cleft_voxels > 0)
        if problems:
            raise DataFormatError("\n".join(problems))
    return cached


def _try_read(path: Path, fingerprint: str, warn: bool, reader: Callable = read_cache):
    """``reader(path, fingerprint)``, or None when absent, stale or (with a warning when ``warn``) unreadable."""
    try:
        return reader(path, fingerprint)
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
    cache_dir: str | Path,
    label_maps: Mapping[int, LabelMap] | None,
    label_map: LabelMap,
    raw_dtype: str,
    vesicle_search_radius: int,
    reader: Callable = read_cache,
):
    """``reader``'s view of the cache (the volume, or its header), built once across processes when needed.

    A valid cache is read without locking. Otherwise the per-bbox lock ``bboxN.h5.lock`` is taken (waiting,
    with a log line, while another process builds), the cache is read again (the other process may just have
    written it), and only if it is still absent, stale or broken is the bbox assembled slab by slab into it
    (:func:`build_cache`); then ``reader`` reads the new cache.
    """
    from filelock import FileLock, Timeout

    fingerprint = source_fingerprint(source, label_map, raw_dtype, vesicle_search_radius)
    path = Path(cache_dir) / f"{source.name}.h5"
    cached = _try_read(path, fingerprint, False, reader)
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
        cached = _try_read(path, fingerprint, True, reader)
        if cached is not None:
            logger.info("%s: loaded from cache %s (built by another process)", source.name, path)
            return cached
        _remove_stale_temporaries(path)
        logger.info("%s: assembling from %s into the cache %s", source.name, source.root, path)
        build_cache(source, path, fingerprint, label_maps, raw_dtype, vesicle_search_radius)
        return reader(path, fingerprint)
    finally:
        lock.release()
