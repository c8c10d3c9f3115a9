"""Reading the lab's files: TIFF slice stacks, synapse sheets and NIfTI volumes.

Every reader returns volumes indexed ``[z, y, x]`` and raises :class:`DataFormatError` naming the
file and what is wrong with it.
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
    "natural_sort_key",
    "list_slices",
    "read_slice",
    "read_tiff_stack",
    "read_synapse_sheet",
    "read_nifti",
    "is_nifti",
    "volume_shape",
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


class DataFormatError(DataError):
    """A data file is missing, unreadable or not in the expected format (a ``ValueError``)."""


def natural_sort_key(path: str | Path) -> list:
    """Sort key that orders embedded numbers numerically (``slice_2`` before ``slice_10``)."""
    name = Path(path).name
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


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
    files = sorted(files, key=natural_sort_key)
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
    files = list_slices(folder)
    first = read_slice(files[0], role)
    vol = np.empty((len(files), *first.shape), dtype=first.dtype)
    vol[0] = first
    for z, path in enumerate(files[1:], start=1):
        sl = read_slice(path, role)
        if sl.shape != first.shape:
            raise DataFormatError(f"{path}: slice shape {sl.shape} differs from {files[0].name}'s {first.shape}")
        if sl.dtype != vol.dtype:
            vol = vol.astype(np.promote_types(vol.dtype, sl.dtype), copy=False)
        vol[z] = sl
    return vol


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
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
        arr = np.asanyarray(img.dataobj)
    except Exception as err:
        raise DataFormatError(f"{path}: unreadable NIfTI ({type(err).__name__}: {err})") from err
    if arr.ndim == 4:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise DataFormatError(f"{path}: expected a 3-D NIfTI volume, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr.transpose(2, 1, 0))
    if role == "label" and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise DataFormatError(f"{path}: label volume holds non-integer values (dtype {arr.dtype})")
        arr = arr.astype(np.int64)
    return arr


def read_volume(path: str | Path, role: str = "raw") -> np.ndarray:
    """Read a TIFF slice folder or a NIfTI file, whichever ``path`` is."""
    return read_nifti(path, role) if is_nifti(path) else read_tiff_stack(path, role)


def read_synapse_sheet(path: str | Path, required: Sequence[str] = SHEET_COLUMNS) -> pd.DataFrame:
    """Read a synapse sheet (``bboxN.xlsx``) and validate its columns.

    Args:
        path: the Excel file (``.csv`` is accepted too, with the same columns).
        required: the columns that must be present.

    Returns:
        A DataFrame with ``Var1`` as ``str`` and the coordinate columns as float; rows with an empty
        ``Var1`` are dropped.

    Raises:
        DataFormatError: if the file is unreadable, misses columns, or has non-numeric coordinates.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: synapse sheet does not exist")
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path, dtype={"Var1": str})
        else:
            df = pd.read_excel(path, engine="openpyxl", dtype={"Var1": str})
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
    """``(Z, Y, X)`` of a TIFF slice folder or NIfTI file, read from headers only (no pixel data)."""
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
