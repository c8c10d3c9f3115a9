"""Reading the lab's files: TIFF slice stacks, NIfTI and Zarr / OME-Zarr volumes, synapse tables.

Every reader returns volumes indexed ``[z, y, x]`` and raises :class:`DataFormatError` naming the
file and what is wrong with it. A volume is a TIFF slice folder (``raw/bboxN/``), a NIfTI file
(``raw/bboxN.nii.gz``) or a Zarr store (``raw/bboxN.zarr``: a Zarr array, or an OME-Zarr group whose
level 0 is read); a synapse table is an Excel sheet (``bboxN.xlsx``), a CSV or a Parquet file (the
latter needs ``pyarrow``), all with the same columns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError

__all__ = [
    "DataFormatError",
    "slice_number",
    "slice_gaps",
    "SHEET_COLUMNS",
    "LUMINOSITY_WEIGHTS",
    "list_slices",
    "read_slice",
    "read_tiff_stack",
    "read_synapse_sheet",
    "read_nifti",
    "read_volume",
    "open_volume",
    "ZarrVolume",
    "TiffStackVolume",
    "NiftiVolume",
    "read_zarr",
    "write_zarr_volume",
    "is_nifti",
    "volume_shape",
    "is_zarr",
    "TABLE_SUFFIXES",
]

#: Columns every synapse sheet must have: id, cleft centre and one point inside each partner, (x, y, z).
SHEET_COLUMNS: tuple[str, ...] = (
    "Var1",
    *(f"central_coord_{i}" for i in (1, 2, 3)),
    *(f"side_1_coord_{i}" for i in (1, 2, 3)),
    *(f"side_2_coord_{i}" for i in (1, 2, 3)),
)
#: ITU-R 601 luma weights the lab used to turn RGB slices into gray.
LUMINOSITY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ZARR_SUFFIX = ".zarr"
#: Synapse-table formats, in the order they are looked for: ``bboxN.xlsx``, ``bboxN.csv``, ``bboxN.parquet``.
TABLE_SUFFIXES = (".xlsx", ".csv", ".parquet")
#: Edge of the chunks :func:`write_zarr_volume` writes (the training cubes are 64-80 voxels).
ZARR_CHUNK = 64


class DataFormatError(DataError):
    """A data file is missing, unreadable or not in the expected format (a ``ValueError``)."""


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def is_zarr(path: str | Path) -> bool:
    """Whether ``path`` names a Zarr store (a folder ending in ``.zarr``)."""
    return str(path).lower().rstrip("/").endswith(ZARR_SUFFIX)


def slice_number(path: str | Path) -> int | None:
    """The slice number of a file name: its last run of digits (``slice_009.tif`` -> 9), None without one."""
    found = re.findall(r"\d+", Path(path).name.split(".")[0])
    return int(found[-1]) if found else None


def _format_numbers(numbers: Sequence[int], limit: int = 12) -> str:
    shown = ", ".join(map(str, numbers[:limit]))
    return shown + (f", ... ({len(numbers)} in all)" if len(numbers) > limit else "")


def slice_gaps(folder: str | Path, files: Sequence[Path]) -> str | None:
    """What is wrong with the numbering of a stack's slices, or None when it is consecutive.

    Stacking sorted files gives z = position in the list, so a slice number missing from the middle
    (``slice_009.tif`` absent) would shift every slice above it by one in z, silently, and the same gap in
    the raw, seg and mask stacks would even keep their counts equal. Names without a number are not checked.

    Args:
        folder: the stack folder (for the message).
        files: its slice files.

    Returns:
        A message naming the missing or repeated slice numbers, or None.
    """
    numbers = [slice_number(f) for f in files]
    if not numbers or any(n is None for n in numbers):
        return None
    present = sorted(numbers)  # type: ignore[arg-type]
    repeated = sorted({n for n in present if present.count(n) > 1})
    if repeated:
        names = [f.name for f in files if slice_number(f) in repeated][:6]
        return f"{folder}: slice numbers {_format_numbers(repeated)} appear more than once ({names})"
    missing = sorted(set(range(present[0], present[-1] + 1)) - set(present))
    if missing:
        return (
            f"{folder}: slice numbers {_format_numbers(missing)} are missing (found {len(present)} slices numbered "
            f"{present[0]}..{present[-1]}); a gap would shift every slice above it in z: restore the missing slices"
        )
    return None


def list_slices(folder: str | Path, check_numbering: bool = True) -> list[Path]:
    """The TIFF slices of a stack folder in natural order.

    Args:
        folder: a folder of ``*.tif``/``*.tiff`` files, one per z.
        check_numbering: raise when the slice numbers have a gap or a repeat (see :func:`slice_gaps`).

    Returns:
        The slice paths, naturally sorted by file name.

    Raises:
        DataFormatError: if the folder does not exist, holds no TIFF file, or (``check_numbering``) its
            slice numbers are not consecutive.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: slice folder does not exist")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES]
    if not files:
        raise DataFormatError(f"{folder}: no .tif slices in the folder")
    # tifffile's natural sort (slice_2 before slice_10); the names share the folder, so sorting the paths sorts them
    import tifffile

    files = [Path(f) for f in tifffile.natural_sorted(str(f) for f in files)]
    if check_numbering:
        problem = slice_gaps(folder, files)
        if problem:
            raise DataFormatError(problem)
    return files


def _to_2d(arr: np.ndarray, role: str, path: Path) -> np.ndarray:
    """Reduce one decoded slice to 2-D: gray from RGB(A) for raw, channel 0 for label slices."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3:
        # samples may be stored last (Y, X, C: the usual RGB TIFF) or first (C, Y, X: planar)
        if arr.shape[-1] <= 4 and arr.shape[0] > 4:
            channels_last = True
        elif arr.shape[0] <= 4 and arr.shape[-1] > 4:
            channels_last = False
        else:
            raise DataFormatError(f"{path}: cannot tell the channel axis of a slice shaped {arr.shape}")
        if role == "raw" and (arr.shape[-1] if channels_last else arr.shape[0]) >= 3:
            rgb = arr[..., :3] if channels_last else np.moveaxis(arr[:3], 0, -1)
            return rgb.astype(np.float32) @ LUMINOSITY_WEIGHTS
        return arr[..., 0] if channels_last else arr[0]
    raise DataFormatError(f"{path}: expected a 2-D slice (optionally with channels), got shape {arr.shape}")


def read_slice(path: str | Path, role: str = "raw") -> np.ndarray:
    """Read one TIFF slice as a 2-D array.

    Args:
        path: the ``.tif`` file.
        role: ``"raw"`` converts RGB(A) to gray with the luminosity weights (float32 result);
            ``"label"`` takes channel 0 of multi-channel files (integer result).

    Raises:
        DataFormatError: if the file cannot be decoded or is not a 2-D image.
    """
    import tifffile

    path = Path(path)
    if role not in ("raw", "label"):
        raise ValueError(f"role must be 'raw' or 'label', got {role!r}")
    try:
        arr = tifffile.imread(path)
    except Exception as err:  # tifffile raises many types for broken files
        raise DataFormatError(f"{path}: unreadable TIFF ({type(err).__name__}: {err})") from err
    arr = np.asarray(arr)
    while arr.ndim > 2 and arr.shape[0] == 1:  # single-page stacks written as (1, Y, X)
        arr = arr[0]
    arr = _to_2d(arr, role, path)
    if role == "label" and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise DataFormatError(f"{path}: label slice holds non-integer values (dtype {arr.dtype})")
        arr = arr.astype(np.int64)
    return arr


def read_tiff_stack(folder: str | Path, role: str = "raw") -> np.ndarray:
    """Read a folder of TIFF slices into one ``[z, y, x]`` volume.

    Args:
        folder: the slice folder (``raw/bboxN``, ``seg/bboxN`` or ``bbox_N``).
        role: ``"raw"`` or ``"label"``, as in :func:`read_slice`.

    Returns:
        The stacked volume; raw keeps its integer dtype unless slices were RGB (then float32),
        labels keep their integer dtype.

    Raises:
        DataFormatError: if the folder is missing or empty, a slice is unreadable, or slices differ in shape.
    """
    return TiffStackVolume(folder, role)[:]


def read_nifti(path: str | Path, role: str = "raw") -> np.ndarray:
    """Read a NIfTI volume and return it indexed ``[z, y, x]``.

    NIfTI stores voxels as ``(i, j, k)`` = ``(x, y, z)``; the axes are reversed so that NIfTI and TIFF
    inputs index the same way. A 4-D file takes its first volume (channel 0) along the 4th axis.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        role: ``"raw"`` (float32, or the stored integer type) or ``"label"`` (integer).

    Raises:
        DataFormatError: if the file cannot be read or is not 3-D.
    """
    return NiftiVolume(path, role)[:]


def _label_values(arr: np.ndarray, where: Path | str) -> np.ndarray:
    """Integer labels from a label array: bool to uint8, integral floats to int64, anything else an error."""
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise DataFormatError(f"{where}: label volume holds non-integer values (dtype {arr.dtype})")
        return arr.astype(np.int64)
    return arr


def _ome_axes(axes: object) -> list[tuple[str, str]] | None:
    """``[(name, type), ...]`` of OME-Zarr ``axes`` metadata (0.4: dicts; 0.3: names), None without any."""
    if not isinstance(axes, (list, tuple)) or not axes:
        return None
    out = []
    for axis in axes:
        if isinstance(axis, dict):
            out.append((str(axis.get("name", "")).lower(), str(axis.get("type", "")).lower()))
        else:
            out.append((str(axis).lower(), ""))
    return out


class ZarrVolume:
    """A Zarr volume opened lazily: indexing ``[z, y, x]`` reads only the chunks it touches.

    The same rules as for TIFF stacks apply to what indexing returns: a raw volume with a channel axis of
    3 or more channels becomes gray with :data:`LUMINOSITY_WEIGHTS` (float32), otherwise channel 0 is taken;
    label volumes take channel 0 and come back as integers (integral floats as int64, bool as uint8).

    Args:
        path: the ``.zarr`` store (for messages).
        role: ``"raw"`` or ``"label"``.
        array: the Zarr array (level 0 of an OME-Zarr image): ``[Z, Y, X]``, or with leading axes of which
            one may be the channel axis and the others must have size 1 (e.g. OME-Zarr's ``t, c, z, y, x``).
        channel_axis: index of the channel axis among the leading axes; None when there is none.
        where: how messages name the array (the store, or ``store/level``).

    Raises:
        DataFormatError: a leading non-channel axis with more than one entry.
    """

    ndim = 3

    def __init__(self, path: Path, role: str, array, channel_axis: int | None, where: str | None = None) -> None:
        self.path = Path(path)
        self.role = role
        self.array = array
        self.where = where or str(path)
        lead = array.ndim - 3
        prefix: list[int | slice] = []
        self._luminosity = False
        for axis in range(lead):
            size = int(array.shape[axis])
            if axis == channel_axis:
                if role == "raw" and size >= 3:
                    prefix.append(slice(0, 3))
                    self._luminosity = True
                else:
                    prefix.append(0)
            elif size != 1:
                raise DataFormatError(
                    f"{self.where}: array shaped {tuple(array.shape)} has {size} entries on leading axis {axis}, "
                    "which is not the channel axis; expected [z, y, x], a leading channel axis, or leading axes of "
                    "size 1"
                )
            else:
                prefix.append(0)
        self._prefix = tuple(prefix)
        stored = np.dtype(array.dtype)
        if self._luminosity:
            self.dtype = np.dtype(np.float32)
        elif role == "label" and stored == bool:
            self.dtype = np.dtype(np.uint8)
        elif role == "label" and not np.issubdtype(stored, np.integer):
            self.dtype = np.dtype(np.int64)
        else:
            self.dtype = stored

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        return tuple(int(s) for s in self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def chunks(self) -> tuple[int, int, int]:
        """The stored chunk edges along ``(Z, Y, X)``."""
        return tuple(int(c) for c in self.array.chunks[-3:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"ZarrVolume({str(self.where)!r}, role={self.role!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key) -> np.ndarray:
        """Read a region: ``key`` indexes ``[z, y, x]`` (integers, slices, an Ellipsis)."""
        key = key if isinstance(key, tuple) else (key,)
        try:
            arr = np.asarray(self.array[(*self._prefix, *key)])
        except IndexError as err:
            raise IndexError(f"{self.where}: bad index {key!r} for a volume shaped {self.shape}: {err}") from err
        except Exception as err:  # codecs and stores raise many types for damaged chunks
            raise DataFormatError(f"{self.where}: unreadable Zarr chunk data ({type(err).__name__}: {err})") from err
        if self._luminosity:
            arr = np.moveaxis(arr, 0, -1).astype(np.float32) @ LUMINOSITY_WEIGHTS
        if self.role == "label":
            arr = _label_values(arr, self.where)
        return arr

    def read(self, slab: int = ZARR_CHUNK) -> np.ndarray:
        """The whole volume in memory, read ``slab`` z-slices at a time."""
        out = np.empty(self.shape, dtype=self.dtype)
        for z in range(0, self.shape[0], slab):
            out[z : z + slab] = self[z : z + slab]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.read()
        return out if dtype is None else out.astype(dtype, copy=False)


def _region(key, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    """``key`` (integers, slices with step 1, an Ellipsis) as three bounded slices, and the axes that integers drop."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = key.index(Ellipsis)
        key = (*key[:at], *([slice(None)] * (len(shape) - len(key) + 1)), *key[at + 1 :])
    if len(key) > len(shape):
        raise IndexError(f"too many indices ({len(key)}) for a volume shaped {tuple(shape)}")
    key = (*key, *([slice(None)] * (len(shape) - len(key))))
    slices, dropped = [], []
    for axis, (k, n) in enumerate(zip(key, shape)):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step != 1:
                raise IndexError(f"only slices with step 1 are supported, got {k}")
            slices.append(slice(start, max(start, stop)))
        else:
            i = int(k) + (n if int(k) < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {k} is out of bounds for axis {axis} with size {n}")
            slices.append(slice(i, i + 1))
            dropped.append(axis)
    return tuple(slices), tuple(dropped)


class TiffStackVolume:
    """A TIFF slice folder opened lazily: indexing ``[z, y, x]`` decodes only the slices it touches.

    Slices follow :func:`read_slice`'s rules (RGB raw to gray, channel 0 of labels, integral float labels to
    int64); the stack's shape and dtype come from its first slice. A slice of another shape is an error naming
    it when it is read. The last ``cache_slices`` decoded slices are kept, so that overlapping windows (the
    pre-synaptic search around neighbouring synapses) decode each slice once.

    Args:
        folder: the slice folder.
        role: ``"raw"`` or ``"label"``.
        cache_slices: decoded slices kept (0: none).
        check_numbering: refuse gaps in the slices' numbering (False: take the files as they sort).

    Raises:
        DataFormatError: a missing or empty folder, gaps in the numbering, or an unreadable first slice.
    """

    ndim = 3

    def __init__(
        self, folder: str | Path, role: str = "raw", cache_slices: int = 0, check_numbering: bool = True
    ) -> None:
        from functools import lru_cache

        self.path = Path(folder)
        self.role = role
        self.files = list_slices(folder, check_numbering)
        first = read_slice(self.files[0], role)
        self._plane = first.shape
        self.dtype = first.dtype
        self.shape = (len(self.files), *first.shape)
        self._read = lru_cache(maxsize=cache_slices)(self._decode) if cache_slices else self._decode

    def _decode(self, z: int) -> np.ndarray:
        plane = read_slice(self.files[z], self.role)
        if plane.shape != self._plane:
            raise DataFormatError(
                f"{self.files[z]}: slice shape {plane.shape} differs from {self.files[0].name}'s {self._plane}"
            )
        return plane

    def __repr__(self) -> str:
        return f"TiffStackVolume({str(self.path)!r}, role={self.role!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key) -> np.ndarray:
        (zs, ys, xs), dropped = _region(key, self.shape)
        out = np.empty((zs.stop - zs.start, ys.stop - ys.start, xs.stop - xs.start), dtype=self.dtype)
        for i, z in enumerate(range(zs.start, zs.stop)):
            plane = self._read(z)[ys, xs]
            if plane.dtype != out.dtype:  # slices of another integer width: widen the whole stack
                out = out.astype(np.promote_types(out.dtype, plane.dtype), copy=False)
            out[i] = plane
        return out.squeeze(dropped) if dropped else out


class NiftiVolume:
    """A NIfTI file opened lazily (nibabel's array proxy): indexing ``[z, y, x]`` reads only that region.

    NIfTI stores ``(x, y, z)``; indexing is reversed to ``[z, y, x]`` as in :func:`read_nifti`, whose dtype
    rules apply (a 4-D file gives its first volume; integral float labels become int64). Reading a region of a
    ``.nii.gz`` decompresses the file up to it, so slabs in z order are cheap and random regions are not.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        role: ``"raw"`` or ``"label"``.

    Raises:
        DataFormatError: an unreadable file or one that is not 3-D (or 4-D).
    """

    ndim = 3

    def __init__(self, path: str | Path, role: str = "raw") -> None:
        import nibabel as nib

        self.path = Path(path)
        self.role = role
        try:
            self._proxy = nib.load(str(path)).dataobj
        except Exception as err:
            raise DataFormatError(f"{path}: unreadable NIfTI ({type(err).__name__}: {err})") from err
        shape = tuple(int(n) for n in self._proxy.shape)
        if len(shape) not in (3, 4):
            raise DataFormatError(f"{path}: expected a 3-D NIfTI volume, got shape {shape}")
        self._four_d = len(shape) == 4
        self.shape = shape[2::-1]
        stored = np.dtype(self._proxy.dtype)
        self.dtype = np.dtype(np.int64) if role == "label" and not np.issubdtype(stored, np.integer) else stored

    def __repr__(self) -> str:
        return f"NiftiVolume({str(self.path)!r}, role={self.role!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key) -> np.ndarray:
        (zs, ys, xs), dropped = _region(key, self.shape)
        try:
            arr = np.asarray(self._proxy[(xs, ys, zs, 0) if self._four_d else (xs, ys, zs)])
        except Exception as err:
            raise DataFormatError(f"{self.path}: unreadable NIfTI data ({type(err).__name__}: {err})") from err
        arr = np.ascontiguousarray(arr.transpose(2, 1, 0))
        if self.role == "label" and not np.issubdtype(arr.dtype, np.integer):
            arr = _label_values(arr, self.path)
        return arr.squeeze(dropped) if dropped else arr


def _zarr_level0(path: Path):
    """The array of a Zarr store: the store itself, or level 0 of an OME-Zarr group; with its channel axis."""
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as err:  # a folder without Zarr metadata, broken JSON, ...
        raise DataFormatError(f"{path}: unreadable Zarr store ({type(err).__name__}: {err})") from err
    where = str(path)
    axes = None
    if not isinstance(node, zarr.Array):
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
        try:
            image = multiscales[0]
            level = str(image["datasets"][0]["path"])
        except (TypeError, KeyError, IndexError) as err:
            raise DataFormatError(
                f"{path}: a Zarr group without OME-Zarr 'multiscales' metadata naming its datasets; expected a Zarr "
                "array [z, y, x] or an OME-Zarr image (level 0 = the first dataset)"
            ) from err
        where = f"{path}/{level}"
        try:
            node = node[level]
        except Exception as err:
            raise DataFormatError(
                f"{where}: level 0 named by the OME-Zarr multiscales metadata is missing or unreadable "
                f"({type(err).__name__}: {err})"
            ) from err
        if not isinstance(node, zarr.Array):
            raise DataFormatError(f"{where}: level 0 of the OME-Zarr image is not an array")
        axes = _ome_axes(image.get("axes"))
    ndim = node.ndim
    if ndim < 3 or ndim > 5:
        raise DataFormatError(
            f"{where}: expected a 3-D [z, y, x] array (optionally with leading channel axes), got shape "
            f"{tuple(node.shape)}"
        )
    channel_axis: int | None = None
    if axes is not None:
        if len(axes) != ndim:
            raise DataFormatError(
                f"{where}: the OME-Zarr axes {[a for a, _ in axes]} do not match the array's {ndim} dimensions"
            )
        names = [name for name, _ in axes[-3:]]
        if names != ["z", "y", "x"]:
            raise DataFormatError(f"{where}: expected the last three axes to be z, y, x, got {names}")
        found = [i for i, (name, kind) in enumerate(axes[:-3]) if kind == "channel" or name == "c"]
        channel_axis = found[0] if found else None
    elif ndim > 3:
        channel_axis = ndim - 4  # [c, z, y, x], or OME's [t, c, z, y, x]
    return node, channel_axis, where


def open_volume(
    path: str | Path, role: str = "raw", cache_slices: int = 0
) -> "ZarrVolume | TiffStackVolume | NiftiVolume":
    """Open a volume lazily, for reading parts of it: a Zarr store, a TIFF slice folder or a NIfTI file.

    Every result indexes ``[z, y, x]`` and has ``shape``, ``dtype`` and ``ndim``; indexing returns NumPy
    arrays and reads only what the index touches (Zarr: its chunks; TIFF: its slices; NIfTI: its region).

    Args:
        path: a ``.zarr`` store, a TIFF slice folder or a NIfTI file.
        role: ``"raw"`` or ``"label"`` (see :func:`read_slice`).
        cache_slices: for a TIFF folder, decoded slices kept for reuse (see :class:`TiffStackVolume`).

    Raises:
        DataFormatError: an unreadable or badly shaped volume, naming the file.
    """
    if role not in ("raw", "label"):
        raise ValueError(f"role must be 'raw' or 'label', got {role!r}")
    path = Path(path)
    if is_zarr(path):
        if not path.is_dir():
            raise DataFormatError(f"{path}: Zarr store does not exist")
        array, channel_axis, where = _zarr_level0(path)
        return ZarrVolume(path, role, array, channel_axis, where)
    if is_nifti(path):
        return NiftiVolume(path, role)
    return TiffStackVolume(path, role, cache_slices)


def read_zarr(path: str | Path, role: str = "raw") -> np.ndarray:
    """Read a Zarr array or the level 0 of an OME-Zarr image as a ``[z, y, x]`` volume in memory.

    Args:
        path: the ``.zarr`` store.
        role: ``"raw"`` or ``"label"`` (see :class:`ZarrVolume` for the channel and dtype rules).

    Raises:
        DataFormatError: a missing or unreadable store, a group without multiscales metadata, a bad shape,
            damaged chunks, or non-integer labels, naming the store.
    """
    volume = open_volume(path, role)
    assert isinstance(volume, ZarrVolume)
    return volume.read()


def write_zarr_volume(path: str | Path, volume: np.ndarray, chunk: int = ZARR_CHUNK) -> Path:
    """Write a ``[z, y, x]`` volume as a Zarr array chunked ``chunk``³ (clipped to the volume).

    Args:
        path: the ``.zarr`` store to create (it must not exist).
        volume: the array.
        chunk: chunk edge in voxels.

    Returns:
        ``path``.
    """
    import zarr

    path = Path(path)
    chunks = tuple(min(int(chunk), int(s)) for s in volume.shape)
    array = zarr.open_array(store=str(path), mode="w-", shape=volume.shape, chunks=chunks, dtype=volume.dtype)
    array[...] = volume
    return path


def read_volume(path: str | Path, role: str = "raw") -> np.ndarray:
    """Read a TIFF slice folder, a NIfTI file or a Zarr store, whichever ``path`` is, into memory."""
    if is_zarr(path):
        return read_zarr(path, role)
    return read_nifti(path, role) if is_nifti(path) else read_tiff_stack(path, role)


def read_synapse_sheet(path: str | Path, required: Sequence[str] = SHEET_COLUMNS) -> pd.DataFrame:
    """Read a synapse table (``bboxN.xlsx``, ``bboxN.csv`` or ``bboxN.parquet``) and validate its columns.

    Args:
        path: the Excel, CSV or Parquet file (the same columns in each; ``Var1`` is read as text from Excel and
            CSV, so ids such as ``007`` keep their zeros; Parquet keeps the type it was written with, so write
            ``Var1`` as strings there). Parquet needs ``pyarrow``.
        required: the columns that must be present.

    Returns:
        A DataFrame with ``Var1`` as ``str`` and the coordinate columns as float; rows with an empty
        ``Var1`` are dropped.

    Raises:
        DataFormatError: if the file is unreadable, misses columns, or has non-numeric coordinates; for a
            Parquet table when pyarrow is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: synapse sheet does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, dtype={"Var1": str})
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_excel(path, engine="openpyxl", dtype={"Var1": str})
    except ImportError as err:
        if suffix != ".parquet":
            raise
        raise DataFormatError(
            f"{path}: reading a Parquet synapse table needs pyarrow: pip install pyarrow (or save the table as "
            f"{path.stem}.csv or {path.stem}.xlsx)"
        ) from err
    except Exception as err:
        raise DataFormatError(f"{path}: unreadable sheet ({type(err).__name__}: {err})") from err
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataFormatError(f"{path}: missing sheet columns {missing} (found {list(df.columns)})")
    df = df[df["Var1"].notna() & (df["Var1"].astype(str).str.strip() != "")].copy()
    df["Var1"] = df["Var1"].astype(str).str.strip()
    coord_cols = [c for c in required if c != "Var1"]
    for col in coord_cols:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna()
        if bad.any():
            rows = df.loc[bad, "Var1"].tolist()[:5]
            raise DataFormatError(f"{path}: column {col!r} has missing or non-numeric values (synapses {rows})")
        df[col] = values.astype(float)
    dup = df["Var1"][df["Var1"].duplicated()].tolist()
    if dup:
        raise DataFormatError(f"{path}: duplicate synapse ids in Var1: {dup[:5]}")
    return df.reset_index(drop=True)


def volume_shape(path: Path) -> tuple[int, int, int]:
    """``(Z, Y, X)`` of a TIFF slice folder, NIfTI file or Zarr store, read from headers only (no pixel data)."""
    if is_zarr(path):
        return tuple(int(n) for n in open_volume(path).shape)  # a lazy ZarrVolume: metadata only
    if is_nifti(path):
        import nibabel as nib

        x, y, z = nib.load(str(path)).shape[:3]
        return int(z), int(y), int(x)
    import tifffile

    files = list_slices(path)
    with tifffile.TiffFile(files[0]) as tif:
        page_shape = tif.pages[0].shape
    y, x = page_shape[:2] if len(page_shape) == 2 or page_shape[-1] <= 4 else page_shape[-2:]
    return len(files), int(y), int(x)
