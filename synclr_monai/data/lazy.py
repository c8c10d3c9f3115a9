"""Training cubes read out of core: HDF5 datasets of the bbox caches behind a small array interface.

``data_mode: memory`` holds every assembled bbox in each process (raw float16 + 3 uint8 mask channels:
5 bytes a voxel; the lab's seven 575³ bboxes are ~5 GB per process). ``data_mode: chunked`` keeps in each
bbox item only :class:`H5Volume` handles on its cache's ``raw`` and ``mask`` datasets (stored in 64³ chunks);
a cube is read with the same slicing :func:`~synclr_monai.transforms.functional.cut_cube` applies to arrays,
so the samplers and the views run unchanged, and the cleft components come from the cache's component table
(:func:`~synclr_monai.data.cache.read_component_table`), never from a whole-volume label array.

File handles: an h5py file handle must not cross ``fork`` (DataLoader workers, ranks started by forking).
Handles are opened lazily, on the first read in a process, and kept in a per-process pool keyed by the pid:
a process that finds a pool opened by another pid (its parent, before the fork) starts a new one and never
touches the inherited handles. The pool keeps at most :data:`MAX_OPEN_FILES` files open (least recently
used closed first; with ``same_bbox_batches`` a worker reads one bbox per batch), each with an HDF5 chunk
cache of :data:`CHUNK_CACHE_BYTES` per dataset, so a worker's memory is bounded by
``MAX_OPEN_FILES x 2 x CHUNK_CACHE_BYTES`` (64 MiB) plus the cube being cut, whatever the number and size
of the bboxes.

``data_mode: auto`` (:func:`choose_data_mode`) picks memory when the summed assembled size of the bboxes
(from the volumes' shapes, nothing loaded) fits in ``max_cache_gb``, chunked otherwise.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DATA_MODES",
    "CHUNK_CACHE_BYTES",
    "MAX_OPEN_FILES",
    "H5Volume",
    "pack_mask_bits",
    "unpack_mask_bits",
    "assembled_nbytes",
    "choose_data_mode",
    "close_open_files",
]

logger = logging.getLogger(__name__)

#: Values of the ``data_mode`` config key.
DATA_MODES = ("auto", "memory", "chunked")
#: HDF5 chunk cache per dataset and open file (16 raw chunks of 64³ float16).
CHUNK_CACHE_BYTES = 8 * 2**20
#: Cache files a process keeps open at once (least recently used closed first).
MAX_OPEN_FILES = 4
_CHUNK_CACHE_SLOTS = 1021  # a prime well above the chunks that fit in the cache (HDF5's advice)

# the per-process pool: {path: (h5py.File, {dataset name: h5py.Dataset})}, valid only in the process _POOL_PID
_POOL: OrderedDict[str, tuple[Any, dict[str, Any]]] = OrderedDict()
_POOL_PID: int | None = None
# pools inherited through fork: kept referenced and never used, closed or freed in the child
_INHERITED: list[OrderedDict] = []


def _dataset(path: str, key: str, fingerprint: str | None) -> Any:
    """The h5py dataset ``key`` of ``path``, opened in this process (see the module docstring)."""
    global _POOL, _POOL_PID
    import h5py

    pid = os.getpid()
    if _POOL_PID != pid:
        if _POOL:
            _INHERITED.append(_POOL)
        _POOL, _POOL_PID = OrderedDict(), pid
    entry = _POOL.get(path)
    if entry is None:
        while len(_POOL) >= MAX_OPEN_FILES:
            _, (old, _) = _POOL.popitem(last=False)
            old.close()
        try:
            f = h5py.File(
                path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=_CHUNK_CACHE_SLOTS, rdcc_w0=0.75
            )
        except OSError as err:
            raise OSError(f"{path}: cannot open the bbox cache for out-of-core reading ({err})") from err
        if fingerprint is not None and f.attrs.get("fingerprint") != fingerprint:
            f.close()
            raise RuntimeError(
                f"{path}: the cache was rebuilt from other sources since this dataset was created; restart the run"
            )
        entry = _POOL[path] = (f, {})
    _POOL.move_to_end(path)
    f, datasets = entry
    if key not in datasets:
        datasets[key] = f[key]
    return datasets[key]


def close_open_files() -> None:
    """Close the cache files this process opened (e.g. before deleting or rebuilding a cache)."""
    if _POOL_PID == os.getpid():
        while _POOL:
            _, (f, _) = _POOL.popitem()
            f.close()


def _axis_length(index: Any, n: int) -> int | None:
    """Length of an axis indexed by ``index`` (None: an int, the axis is dropped)."""
    if isinstance(index, (int, np.integer)):
        if not -n <= int(index) < n:
            raise IndexError(f"index {index} is out of range for an axis of length {n}")
        return None
    return len(range(n)[index])


def pack_mask_bits(mask: np.ndarray) -> np.ndarray:
    """``[C, ...]`` binary masks (C <= 8) as one uint8 array, channel c in bit c.

    The cache stores its mask channels this way: a cube read out of core then decompresses one byte a voxel
    instead of one per channel (a 164³ context cube's three masks: 33 ms instead of 97 ms, ``benchmarks/cache_reads.py``).
    """
    mask = np.asarray(mask)
    if mask.shape[0] > 8:
        raise ValueError(f"at most 8 mask channels fit in a byte, got {mask.shape[0]}")
    out = np.zeros(mask.shape[1:], dtype=np.uint8)
    for c, channel in enumerate(mask):
        out |= (channel != 0).astype(np.uint8) << c
    return out


def unpack_mask_bits(bits: np.ndarray, channels: Iterable[int] | int) -> np.ndarray:
    """Channels of a :func:`pack_mask_bits` array: ``[len(channels), ...]`` uint8 in {0, 1} (``[...]`` for an int)."""
    if isinstance(channels, (int, np.integer)):
        return (bits >> int(channels)) & 1
    channels = list(channels)
    out = np.empty((len(channels), *bits.shape), dtype=np.uint8)
    for i, c in enumerate(channels):
        np.bitwise_and(bits >> c, 1, out=out[i])
    return out


class H5Volume:
    """A read-only ``[C, Z, Y, X]`` array backed by a dataset of a bbox cache, read slice by slice.

    Indexing with ints and slices (as :func:`~synclr_monai.transforms.functional.cut_cube` does) reads only
    the chunks the selection touches and returns a NumPy array. Converting the whole volume
    (``np.asarray``) is refused: that is the memory this class exists to avoid.

    No file handle lives on the instance (see the module docstring), so it pickles into spawned workers.

    Args:
        path: the ``.h5`` cache.
        key: the dataset (``"raw"``, ``[Z, Y, X]``, or ``"mask"``, ``[C, Z, Y, X]``).
        shape: the dataset's shape.
        dtype: the dataset's dtype.
        add_channel: present a ``[Z, Y, X]`` dataset as ``[1, Z, Y, X]`` (the raw channel of a bbox item).
        fingerprint: the cache's fingerprint, checked when the file is opened (None: not checked).
        packed_bits: the dataset is ``[Z, Y, X]`` uint8 holding the ``shape[0]`` channels as bits
            (:func:`pack_mask_bits`, the cache's mask); indexing unpacks the channels it selects.
    """

    #: marks out-of-core arrays for the transforms (:func:`~synclr_monai.transforms.functional.is_lazy`)
    is_lazy = True

    def __init__(
        self,
        path: str | Path,
        key: str,
        shape: tuple[int, ...],
        dtype: Any,
        add_channel: bool = False,
        fingerprint: str | None = None,
        packed_bits: bool = False,
    ) -> None:
        self.path, self.key = str(path), str(key)
        self.add_channel = bool(add_channel)
        self.packed_bits = bool(packed_bits)
        if self.packed_bits and self.add_channel:
            raise ValueError("H5Volume: packed_bits and add_channel exclude each other")
        shape = tuple(int(n) for n in shape)
        self._stored_shape = shape[1:] if self.packed_bits else shape
        self.shape = ((1,) if self.add_channel else ()) + shape
        self.dtype = np.dtype(dtype)
        self.fingerprint = fingerprint

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes the whole volume would take in memory (none of it is held)."""
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        packed = ", packed_bits=True" if self.packed_bits else ""
        return f"H5Volume({self.path!r}, {self.key!r}, shape={self.shape}, dtype={self.dtype}{packed})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(
            f"{self!r} is read out of core (data_mode: chunked); converting it to an array would load the whole "
            "volume: index it with slices instead"
        )

    def _normalise(self, key: Any) -> tuple:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis or k is None or not isinstance(k, (int, np.integer, slice)) for k in key):
            raise TypeError(f"{self!r}: only ints and slices can index an out-of-core volume, got {key!r}")
        if len(key) > self.ndim:
            raise IndexError(f"{self!r}: {len(key)} indices for {self.ndim} axes")
        return key + (slice(None),) * (self.ndim - len(key))

    def __getitem__(self, key: Any) -> np.ndarray:
        key = self._normalise(key)
        lengths = [_axis_length(k, n) for k, n in zip(key, self.shape)]
        if any(n == 0 for n in lengths):  # an empty selection: no read (h5py refuses some of them)
            return np.empty(tuple(n for n in lengths if n is not None), dtype=self.dtype)
        stored_key = key[1:] if self.add_channel or self.packed_bits else key
        out = np.asarray(_dataset(self.path, self.key, self.fingerprint)[stored_key])
        if self.packed_bits:
            return unpack_mask_bits(out, range(self.shape[0])[key[0]])  # an int keeps no channel axis
        if self.add_channel and lengths[0] is not None:  # a slice over the virtual channel axis keeps it
            out = out[None]
        return out

    def cleft_components(self, channel: int = 1, min_size: int = 100, connectivity: int = 26):
        """The cleft's connected components, from the cache's component table.

        When the table cannot give them (``min_size`` below the stored minimum, or another connectivity) they
        are computed from the whole cleft channel, read once, with a warning saying what that costs and how to
        avoid it.

        Args:
            channel: the cleft channel of this mask (1 in the cache's ``[pre, cleft, post]`` mask).
            min_size: smallest component kept.
            connectivity: 6, 18 or 26.

        Returns:
            The :class:`~synclr_monai.transforms.sampling.CleftComponents`.

        Raises:
            ValueError: not the cache's mask dataset, or a channel other than the cleft's.
        """
        from ..transforms.sampling import find_cleft_components
        from .cache import COMPONENT_TABLE_CONNECTIVITY, COMPONENT_TABLE_MIN_SIZE, read_component_table

        if self.key != "mask" or int(channel) != 1:
            raise ValueError(
                f"{self!r}: the component table describes the cleft channel (1) of the cache's 'mask', "
                f"not channel {channel} of {self.key!r}"
            )
        comps = read_component_table(self.path, min_size, connectivity)
        if comps is not None:
            return comps
        warnings.warn(
            f"{self.path}: the cache's cleft component table holds components of >= {COMPONENT_TABLE_MIN_SIZE} "
            f"voxels at connectivity {COMPONENT_TABLE_CONNECTIVITY}; min_component_size {min_size} at connectivity "
            f"{connectivity} needs them rebuilt from the whole cleft channel ({int(np.prod(self._stored_shape[1:]))} "
            f"bytes, read once per bbox in the process that builds the dataset); use min_component_size >= "
            f"{COMPONENT_TABLE_MIN_SIZE} to read them from the table",
            stacklevel=2,
        )
        return find_cleft_components(self[1], min_size, connectivity)


def assembled_nbytes(source: Any, raw_dtype: str = "float16", mask_channels: int = 3) -> int:
    """Bytes one assembled bbox takes in memory, from its raw volume's shape (headers only, no voxel read).

    Args:
        source: a :class:`~synclr_monai.data.bbox.BBoxSource`.
        raw_dtype: the raw channel's dtype.
        mask_channels: mask channels (pre, cleft, post).

    Returns:
        ``Z * Y * X * (itemsize(raw_dtype) + mask_channels)``.
    """
    from .io import volume_shape

    return int(np.prod(volume_shape(source.raw))) * (np.dtype(raw_dtype).itemsize + int(mask_channels))


def choose_data_mode(
    data_mode: str,
    data: Iterable[Mapping[str, Any]],
    max_cache_gb: float = 8.0,
    raw_dtype: str = "float16",
) -> str:
    """Resolve the ``data_mode`` config key to ``"memory"`` or ``"chunked"``.

    Args:
        data_mode: ``"memory"``, ``"chunked"`` or ``"auto"`` (memory when the bboxes fit in ``max_cache_gb``).
        data: the data list ``[{"bbox": BBoxSource}, ...]`` (:func:`~synclr_monai.data.bbox_loading.bbox_data_list`).
        max_cache_gb: memory budget (GB, 10^9 bytes) of the assembled bboxes in one process.
        raw_dtype: the raw channel's dtype.

    Returns:
        ``"memory"`` or ``"chunked"`` (the choice and the sizes behind it are logged).

    Raises:
        ValueError: an unknown ``data_mode`` or a negative budget, naming the config key.
    """
    if data_mode not in DATA_MODES:
        raise ValueError(f"data_mode: must be one of {list(DATA_MODES)}, got {data_mode!r}")
    if data_mode != "auto":
        return data_mode
    if not isinstance(max_cache_gb, (int, float)) or isinstance(max_cache_gb, bool) or max_cache_gb < 0:
        raise ValueError(f"max_cache_gb: must be a number of GB >= 0, got {max_cache_gb!r}")
    sources = [item["bbox"] for item in data if "bbox" in item]
    total = sum(assembled_nbytes(s, raw_dtype) for s in sources)
    mode = "memory" if total <= max_cache_gb * 1e9 else "chunked"
    logger.info(
        "data_mode auto: %d bboxes take %.2f GB assembled (budget max_cache_gb %.2f GB per process): %s",
        len(sources),
        total / 1e9,
        max_cache_gb,
        mode,
    )
    return mode
