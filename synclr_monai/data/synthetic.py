"""Synthetic 3-D EM synapse dataset in the lab's exact on-disk layout.

``generate_dataset`` writes, for bbox N = 1..n (the lab's layout, README "Data")::

    DIR/raw/bboxN/slice_001.tif ...   uint8 EM-like slices, one per z
    DIR/seg/bboxN/slice_001.tif ...   uint16 (uint32 if needed) instance ids, 0 = extracellular
    DIR/bbox_N/slice_001.tif ...      uint8 semantic masks with bbox N's default label values
    DIR/bboxN.xlsx                    one row per synapse (Var1, central/side_1/side_2 coords as x, y, z)
    DIR/synapse_types.csv             bbox_name, Var1, type: each synapse's ground-truth class
    DIR/bbox_staining.csv             bbox_name + the bbox's staining profile (brightness, contrast,
                                      gamma, noise_std, blur_sigma, illumination)
    DIR/dataset.json                  the generator's settings: seed, shape, voxel_size_nm, difficulty,
                                      staining_strength, ... (a record; nothing reads it back)
    DIR/label_maps.json               only with more than 7 bboxes: the label values of bboxes 8..
                                      (the default table covers bbox1..7; every loader reads this file)

Each bbox holds a warped-Voronoi neuropil background and ``synapses_per_bbox`` synapses, each in its
own region of the bbox: a pre-synaptic bouton and a post-synaptic shaft or spine (perturbed
ellipsoids with dark membranes) touching at a cleft (a flat or cup-shaped sheet), a vesicle cloud
on the pre side, a post-synaptic density, and mitochondria with cristae. Four classes
(:data:`~synclr_monai.data.synthetic_synapse.TYPE_NAMES`) differ in vesicle size/number, cleft
extent/curvature, PSD thickness and a mitochondrion against the cleft; orientation (any 3-D cleft
normal), position and sizes vary within a class. Which of ``side_1``/``side_2`` is pre-synaptic is
random per synapse.

What makes real data hard, as options (all off except the staining by default):

- staining (``staining_strength``, CLI ``--staining``): each bbox draws its own brightness,
  contrast, gamma, noise level, blur and illumination, as different EM sessions do
  (:mod:`~synclr_monai.data.synthetic_imaging`); 0 stains every bbox alike.
- anisotropic voxels (``voxel_size``, CLI ``--voxel-size Z Y X`` in nm, default 8 8 8): the tissue is
  drawn on a cubic grid of the finest voxel size and coarse axes are reduced block-wise (raw
  averaged, labels by majority with the cleft kept), so synapses keep their physical size; the
  sheet's points are those of the written voxels. Generation time grows with the finer grid
  (about ``max(voxel) / min(voxel)`` times for serial sections).
- difficulty (``difficulty``, CLI ``--difficulty``, 0..1, default 0): the classes' distinguishing
  parameters are pulled toward their common mean, keeping a fifth of their differences at 1
  (:func:`~synclr_monai.data.synthetic_synapse.synapse_types`); the within-class jitter stays.
  ``synapse_types.csv`` remains the ground truth.

With ``volume_format="zarr"`` (CLI ``--format zarr``) the three volumes are Zarr arrays chunked 64³
(``DIR/raw/bboxN.zarr``, ``DIR/seg/bboxN.zarr``, ``DIR/bbox_N.zarr``) instead of slice folders, and with
``table_format="csv"`` (CLI ``--table csv``) the synapse tables are ``DIR/bboxN.csv``: much faster to
write for large datasets, with the same voxels and rows. Adding ``stream=True`` (CLI ``--stream``) generates and
writes each bbox slab by slab (:mod:`~synclr_monai.data.synthetic_stream`): memory bounded by a slab, not the
bbox, other pixels for the same seed (same layout, label semantics, sheets and ground truth); isotropic voxels
and no defects only.

The same seed and options give byte-identical files: every bbox draws from its own
``numpy.random.SeedSequence(seed).spawn`` stream, TIFFs carry no date, and the xlsx is re-packed
with fixed document-property and zip-entry timestamps.

The dataset is written into a hidden sibling folder and renamed into place at the end, so a reader
never sees a half-written dataset (e.g. a bbox whose raw stack has fewer slices than its seg stack)
and an interrupted run leaves no mixture of old and new slices.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import logging
import os
import re
import shutil
import sys
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage
from tqdm import tqdm

from .label_maps import DATASET_LABEL_MAPS_FILE, DEFAULT_LABEL_MAPS, LabelMap, label_map_for
from .synthetic_defects import NO_DEFECT, choose_defects, inject_defect
from .synthetic_geometry import label_boundaries, mito_structure, neuropil_partition, plan_regions
from .synthetic_imaging import (
    MAX_STAINING_STRENGTH,
    Staining,
    block_index,
    check_voxel_size,
    downsample_labels,
    draw_staining,
    generation_grid,
    image_volume,
)
from .synthetic_synapse import (
    CRISTAE_VALUE,
    MITO_MATRIX_VALUE,
    MITO_MEMBRANE_VALUE,
    REFERENCE_SCALE,
    SYNAPSE_TYPES,
    TYPE_NAMES,
    Synapse,
    build_cells,
    draw_synapse,
    sample_synapse,
    synapse_types,
)

__all__ = [
    "SHEET_COLUMNS",
    "TYPES_COLUMNS",
    "STAINING_COLUMNS",
    "TYPE_NAMES",
    "DEFAULT_VOXEL_SIZE",
    "Staining",
    "generate_bbox",
    "generate_dataset",
    "main",
]

logger = logging.getLogger(__name__)

SHEET_COLUMNS: tuple[str, ...] = (
    "Var1",
    "central_coord_1",
    "central_coord_2",
    "central_coord_3",
    "side_1_coord_1",
    "side_1_coord_2",
    "side_1_coord_3",
    "side_2_coord_1",
    "side_2_coord_2",
    "side_2_coord_3",
)
TYPES_COLUMNS: tuple[str, ...] = ("bbox_name", "Var1", "type")
STAINING_COLUMNS: tuple[str, ...] = ("bbox_name", *(f.name for f in fields(Staining)))

BORDER_MARGIN = 10  # voxels between every cleft centre and the volume border
CYTOPLASM_RANGE = (132.0, 165.0)  # per-cell mean intensity of cytoplasm
MEMBRANE_VALUE = 70.0
DEFAULT_VOXEL_SIZE: tuple[float, float, float] = (8.0, 8.0, 8.0)  # nm, (z, y, x)
# fixed timestamp written into the xlsx (document properties and zip entries)
FIXED_XLSX_TIME = datetime.datetime(2000, 1, 1, 0, 0, 0)
_DEFECTS_STREAM = 0xDEFEC7  # second seed word of the defects' random stream
_LAYOUT_ENTRY = re.compile(
    r"^(raw|seg|synapse_types\.csv|bbox_staining\.csv|dataset\.json|label_maps\.json|bbox_\d+(\.zarr)?"
    r"|bbox\d+\.(xlsx|csv))$"
)
VOLUME_FORMATS: tuple[str, ...] = ("tiff", "zarr")
TABLE_FORMATS: tuple[str, ...] = ("xlsx", "csv")


# ----------------------------------------------------------------------------------------------
# validation


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as err:
        raise ValueError(f"shape must be three integers (Z, Y, X), got {shape!r}") from err
    if len(out) != 3 or any(s != float(t) for s, t in zip(out, shape)):
        raise ValueError(f"shape must be three integers (Z, Y, X), got {shape!r}")
    if min(out) < 2 * BORDER_MARGIN + 1:
        raise ValueError(
            f"shape {out} is too small: each axis needs at least {2 * BORDER_MARGIN + 1} voxels "
            f"(cleft centres keep {BORDER_MARGIN} voxels from the border)"
        )
    return out


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _label_map(number: int) -> LabelMap:
    """bbox N's label values: the lab's default table for 1..7, then the same seven maps in turn (bbox 8 as bbox 1,
    ...), which :func:`generate_dataset` records in the dataset's ``label_maps.json``."""
    if number < 1:
        raise ValueError(f"bbox numbers start at 1, got {number}")
    return label_map_for((number - 1) % len(DEFAULT_LABEL_MAPS) + 1)


def _default_types(number: int, count: int, rng: np.random.Generator) -> list[str]:
    """Classes of a bbox's synapses: cycling through the classes across bboxes, order shuffled.

    Cycling (offset by the bbox number) guarantees every class occurs once at least
    ``len(TYPE_NAMES)`` synapses are generated in total, even with one synapse per bbox.
    """
    start = (number - 1) * count
    names = [TYPE_NAMES[(start + j) % len(TYPE_NAMES)] for j in range(count)]
    return [names[i] for i in rng.permutation(count)]


# ----------------------------------------------------------------------------------------------
# one bbox in memory


def _place_centre(region, scale: float, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A cleft centre inside ``region`` with room for the cells, ``BORDER_MARGIN`` from the border."""
    slack = np.maximum(0.0, region.extent / 2.0 - 1.05 * scale)  # extra room in long regions
    jitter = rng.uniform(-1, 1, 3) * slack + rng.uniform(-0.06, 0.06, 3) * scale
    centre = np.rint(region.centre + jitter).astype(int)
    return np.clip(centre, BORDER_MARGIN, np.asarray(shape) - 1 - BORDER_MARGIN)


def _synapse_window(centre: np.ndarray, region, scale: float) -> tuple[slice, slice, slice]:
    """The slices a synapse may draw in: a cube around its centre, clipped to its region."""
    half = int(np.ceil(1.1 * scale))
    return tuple(
        slice(max(lo, int(c) - half), min(hi, int(c) + half + 1)) for c, lo, hi in zip(centre, region.lo, region.hi)
    )


def _neuropil_mitochondria(
    seg: np.ndarray, raw: np.ndarray, mito: np.ndarray, first_id: int, scale: float, rng: np.random.Generator
) -> None:
    """Scatter mitochondria in background cells (ids >= ``first_id``), each kept inside its cell."""
    shape = np.asarray(seg.shape)
    count = rng.poisson(seg.size / 40000.0)
    base = float(np.clip(0.13 * scale, 2.2, 5.0))
    for _ in range(count):
        centre = rng.uniform(0, 1, 3) * (shape - 1)
        radius = base * rng.uniform(0.8, 1.2)
        half_length = radius * rng.uniform(1.2, 3.0)
        axis = rng.standard_normal(3)
        cell = int(seg[tuple(np.rint(centre).astype(int))])
        if cell < first_id:
            continue
        reach = int(np.ceil(half_length + radius + 2))
        win = tuple(slice(max(0, int(c) - reach), min(int(s), int(c) + reach + 1)) for c, s in zip(centre, shape))
        body, membrane, cristae = mito_structure(win, centre, axis, half_length, radius, rng)
        full = int(body.sum())
        body &= ndimage.distance_transform_edt(seg[win] == cell) > 1.5
        if body.sum() < 0.6 * full:  # does not fit in its cell: skip rather than draw a stump
            continue
        raw_w = raw[win]
        raw_w[body] = MITO_MATRIX_VALUE
        raw_w[body & cristae] = CRISTAE_VALUE
        raw_w[body & (membrane | ~ndimage.binary_erosion(body))] = MITO_MEMBRANE_VALUE
        mito[win] |= body


def _check_fraction(value: float, name: str, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in [0, {high:g}], got {value!r}")
    out = float(value)
    if not 0.0 <= out <= high:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, {high:g}], got {value!r}")
    return out


def _written_point(point: np.ndarray, cell: int, seg: np.ndarray, edges, window, voxel: np.ndarray) -> np.ndarray:
    """A generation-grid point inside ``cell`` mapped to the written grid, kept inside ``cell`` there.

    The block holding the point is usually still ``cell`` after the block-wise reduction of the
    segmentation; if not (a point near the cell's wall in a thick section), the nearest voxel of
    ``cell`` among its deeper ones (at least half the deepest, physical distances) in the synapse's
    window is taken.
    """
    q = block_index(point, edges)
    if seg[tuple(q)] == cell:
        return q
    lo = block_index([s.start for s in window], edges)
    hi = block_index([s.stop - 1 for s in window], edges) + 1
    win = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    inside = seg[win] == cell
    if not inside.any():  # the whole window lost the cell (not seen): search the whole volume
        win = tuple(slice(0, n) for n in seg.shape)
        lo = np.zeros(3, np.int64)
        inside = seg == cell
    depth = ndimage.distance_transform_edt(inside, sampling=voxel)
    cand = np.argwhere(depth >= 0.5 * depth.max())
    dist = np.linalg.norm((cand + lo - q) * voxel, axis=1)
    return cand[int(np.argmin(dist))] + lo


def generate_bbox(
    number: int,
    shape: Sequence[int] = (64, 128, 128),
    synapses_per_bbox: int = 4,
    rng: np.random.Generator | int | None = None,
    types: Sequence[str] | None = None,
    *,
    difficulty: float = 0.0,
    voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE,
    staining_strength: float = 1.0,
    staining: Staining | None = None,
) -> dict:
    """Generate one synthetic bbox in memory.

    Args:
        number: the bbox number N (selects the label map of its masks: the default one for 1..7, see
            :func:`_label_map`).
        shape: written volume shape ``(Z, Y, X)``.
        synapses_per_bbox: synapses to place (each gets its own region of the volume).
        rng: a ``numpy.random.Generator`` or a seed.
        types: class of each synapse (names from ``TYPE_NAMES``); default: the classes cycle with
            the synapse's position in the dataset (bbox number, then index), so every class occurs
            once ``len(TYPE_NAMES)`` synapses exist, in a shuffled order within the bbox.
        difficulty: 0..1, how alike the classes are (:func:`~.synthetic_synapse.synapse_types`).
        voxel_size: ``(z, y, x)`` voxel size in nm; anisotropic voxels are drawn on a finer cubic
            grid and reduced (:mod:`~.synthetic_imaging`).
        staining_strength: 0..2, how far this bbox's staining may stray from the common centre
            (0 all bboxes alike, 1 the documented ranges).
        staining: an explicit profile instead of a drawn one.

    Returns:
        A dict with
        ``name`` (``"bboxN"``), ``number``, ``label_map`` (:class:`LabelMap`),
        ``raw`` (uint8 ``[Z, Y, X]``), ``seg`` (uint16/uint32 ``[Z, Y, X]`` instance ids, 0 =
        extracellular), ``mask`` (uint8 ``[Z, Y, X]`` with the label map's values),
        ``sheet`` (DataFrame with ``SHEET_COLUMNS``; coordinates are ``(x, y, z)``),
        ``types`` (list of class names, one per sheet row), ``pre_side`` (list of 1 or 2: which
        side point lies in the pre-synaptic cell), ``pre_ids`` / ``post_ids`` (lists of the
        partners' seg ids), ``synapses`` (DataFrame ``Var1, type, pre_side, pre_id, post_id,
        n_vesicles, post_kind, mito_near_cleft``), ``staining`` (:class:`Staining`),
        ``synapse_types`` (the class parameters used), ``voxel_size`` and ``difficulty``.

    Raises:
        ValueError: for a bbox number without a default label map, a bad shape, count, difficulty,
            voxel size or staining strength, unknown types, or when the synapses do not fit.
    """
    label_map = _label_map(int(number))
    shape = _check_shape(shape)
    count = _check_positive_int(synapses_per_bbox, "synapses_per_bbox")
    difficulty = _check_fraction(difficulty, "difficulty")
    strength = _check_fraction(staining_strength, "staining_strength", MAX_STAINING_STRENGTH)
    voxel = check_voxel_size(voxel_size)
    stypes = synapse_types(difficulty)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if types is None:
        types = _default_types(int(number), count, rng)
    types = list(types)
    if len(types) != count or any(t not in SYNAPSE_TYPES for t in types):
        raise ValueError(f"types must be {count} names from {TYPE_NAMES}, got {types!r}")

    # the tissue is drawn on a cubic grid (the finest voxel size); anisotropic axes are reduced at the end
    gen_shape, edges = generation_grid(shape, voxel)
    regions, scale = plan_regions(gen_shape, count, rng, border_margin=BORDER_MARGIN)
    if scale < 0.75 * REFERENCE_SCALE:
        # the classes' dimensions are given at the reference scale: far below it vesicles and PSDs
        # shrink under a voxel and the types can no longer be told apart in the EM
        logger.warning(
            "bbox %s: %d synapses in %s leave each a scale of %.0f voxels, below the reference %.0f: vesicles "
            "and PSDs are drawn %.1fx smaller than the synapse types define (fewer synapses or a larger shape "
            "keep them resolved)", number, count, tuple(int(v) for v in shape), scale, REFERENCE_SCALE,
            REFERENCE_SCALE / scale,
        )

    # background neuropil; synapse cells get ids 1..2K (shuffled), background cells follow
    neuropil = neuropil_partition(gen_shape, float(np.clip(0.9 * scale, 10.0, 40.0)), rng)
    first_background = 2 * count + 1
    n_ids = int(neuropil.max()) + first_background
    seg = np.where(neuropil > 0, neuropil + (first_background - 1), 0)
    seg = seg.astype(np.uint16 if n_ids <= np.iinfo(np.uint16).max else np.uint32)
    del neuropil
    cell_ids = rng.permutation(2 * count) + 1

    synapses: list[Synapse] = []
    for j, (region, tname) in enumerate(zip(regions, types)):
        centre = _place_centre(region, scale, gen_shape, rng)
        syn = sample_synapse(stypes[tname], centre, _synapse_window(centre, region, scale), scale, rng)
        syn.pre_id, syn.post_id = int(cell_ids[2 * j]), int(cell_ids[2 * j + 1])
        build_cells(syn, rng)
        seg_w = seg[syn.window]
        seg_w[syn.post_mask] = syn.post_id
        seg_w[syn.pre_mask] = syn.pre_id
        synapses.append(syn)

    # cytoplasm gray per cell, dark membranes on every cell wall and in the extracellular gaps
    lut = rng.uniform(*CYTOPLASM_RANGE, size=n_ids + 1).astype(np.float32)
    lut[0] = MEMBRANE_VALUE
    raw = lut[seg]
    walls = label_boundaries(seg)
    raw[walls] = MEMBRANE_VALUE + rng.normal(0.0, 6.0, int(walls.sum())).astype(np.float32)
    del walls

    labels = {k: np.zeros(gen_shape, bool) for k in ("mito", "vesicle", "cleft", "cleft2_half")}
    for syn in synapses:
        draw_synapse(syn, raw, labels, rng)
    _neuropil_mitochondria(seg, raw, labels["mito"], first_background, scale, rng)
    # which side point is pre-synaptic: drawn before the imaging, so the sheet does not depend on it
    pre_sides = [int(rng.integers(1, 3)) for _ in synapses]

    mask = np.zeros(gen_shape, np.uint8)
    mask[labels["mito"]] = label_map.mito
    mask[labels["vesicle"]] = label_map.vesicle
    mask[labels["cleft"]] = label_map.cleft
    mask[labels["cleft"] & labels["cleft2_half"]] = label_map.cleft2
    del labels

    # EM look: per-bbox staining, section integration, blur, tone curve, noise (synthetic_imaging)
    if staining is None:
        staining = draw_staining(rng, strength)
    elif not isinstance(staining, Staining):
        raise ValueError(f"staining must be a Staining profile or None, got {staining!r}")
    raw = image_volume(raw, staining, edges, rng)
    if edges is not None:
        seg = downsample_labels(seg, edges)
        mask = downsample_labels(mask, edges, priority=label_map.cleft_values)

    rows, info = [], []
    pitch = np.asarray(voxel) / min(voxel)  # written voxel edges in generation voxels
    for j, (syn, pre_side) in enumerate(zip(synapses, pre_sides)):
        var1 = f"{'spine' if syn.post_kind == 'spine' else 'non_spine'}_synapse_{j + 1:03d}"
        centre = block_index(syn.centre, edges)
        pre_point, post_point = syn.pre_point, syn.post_point
        if edges is not None:
            pre_point = _written_point(pre_point, syn.pre_id, seg, edges, syn.window, pitch)
            post_point = _written_point(post_point, syn.post_id, seg, edges, syn.window, pitch)
        side_1, side_2 = (pre_point, post_point) if pre_side == 1 else (post_point, pre_point)
        # sheet coordinates are (x, y, z); the arrays are indexed [z, y, x]
        rows.append([var1, *centre[::-1].tolist(), *side_1[::-1].tolist(), *side_2[::-1].tolist()])
        info.append(
            [var1, syn.stype.name, pre_side, syn.pre_id, syn.post_id, syn.n_vesicles]
            + [syn.post_kind, syn.mito_near_cleft]
        )
    sheet, table = _sheet_frames(rows, info)
    return {
        "name": f"bbox{number}",
        "number": int(number),
        "label_map": label_map,
        "raw": raw,
        "seg": seg,
        "mask": mask,
        "sheet": sheet,
        "types": table["type"].tolist(),
        "pre_side": table["pre_side"].tolist(),
        "pre_ids": table["pre_id"].tolist(),
        "post_ids": table["post_id"].tolist(),
        "synapses": table,
        "staining": staining,
        "synapse_types": stypes,
        "voxel_size": voxel,
        "difficulty": difficulty,
    }


# ----------------------------------------------------------------------------------------------
# writing


def _write_stack(folder: Path, volume: np.ndarray) -> None:
    """One TIFF per z, named ``slice_001.tif`` ... (zero padded to max(3, digits of Z))."""
    folder.mkdir(parents=True)
    width = max(3, len(str(volume.shape[0])))
    for z in range(volume.shape[0]):
        # metadata=None: no JSON description; tifffile writes no DateTime tag unless asked
        tifffile.imwrite(folder / f"slice_{z + 1:0{width}d}.tif", volume[z], photometric="minisblack", metadata=None)


def _deterministic_xlsx(data: bytes) -> bytes:
    """Re-pack an xlsx with fixed timestamps so that equal content gives equal bytes.

    openpyxl stamps the save time into ``docProps/core.xml`` (created/modified) and every zip entry
    carries the current time; both are replaced by :data:`FIXED_XLSX_TIME`.
    """
    from openpyxl.packaging.core import DocumentProperties
    from openpyxl.xml.functions import fromstring, tostring

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            payload = src.read(item.filename)
            if item.filename == "docProps/core.xml":
                props = DocumentProperties.from_tree(fromstring(payload))
                props.created = props.modified = FIXED_XLSX_TIME
                payload = tostring(props.to_tree())
            entry = zipfile.ZipInfo(item.filename, date_time=FIXED_XLSX_TIME.timetuple()[:6])
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = item.external_attr
            dst.writestr(entry, payload)
    return out.getvalue()


def _write_sheet(path: Path, sheet: pd.DataFrame) -> None:
    buf = io.BytesIO()
    with pd.ExcelWriter(buf, engine="openpyxl") as writer:
        sheet.to_excel(writer, index=False, sheet_name="Sheet1")
    path.write_bytes(_deterministic_xlsx(buf.getvalue()))


def _write_table(path: Path, sheet: pd.DataFrame) -> None:
    """The synapse table as ``.xlsx`` (deterministic bytes) or ``.csv``, by the suffix of ``path``."""
    if path.suffix == ".csv":
        sheet.to_csv(path, index=False, lineterminator="\n")
    else:
        _write_sheet(path, sheet)


def _bbox_paths(root: Path, name: str, number: int, volume_format: str, table_format: str) -> dict[str, Path]:
    """Where bbox ``number``'s raw, seg, mask and table go (slice folders or ``.zarr`` stores)."""
    ext = ".zarr" if volume_format == "zarr" else ""
    return {
        "raw": root / "raw" / f"{name}{ext}",
        "seg": root / "seg" / f"{name}{ext}",
        "mask": root / f"bbox_{number}{ext}",
        "sheet": root / f"{name}.{table_format}",
    }


def _write_bbox(root: Path, bbox: dict, volume_format: str = "tiff", table_format: str = "xlsx") -> None:
    from .io import write_zarr_volume

    paths = _bbox_paths(root, bbox["name"], bbox["number"], volume_format, table_format)
    for role in ("raw", "seg", "mask"):
        if volume_format == "zarr":
            paths[role].parent.mkdir(parents=True, exist_ok=True)
            write_zarr_volume(paths[role], bbox[role])
        else:
            _write_stack(paths[role], bbox[role])
    _write_table(paths["sheet"], bbox["sheet"])


def _sheet_frames(rows: list, info: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sheet (``SHEET_COLUMNS``, int64 coordinates) and the per-synapse table of a bbox's rows."""
    sheet = pd.DataFrame(rows, columns=list(SHEET_COLUMNS))
    sheet[list(SHEET_COLUMNS[1:])] = sheet[list(SHEET_COLUMNS[1:])].astype(np.int64)
    table = pd.DataFrame(
        info, columns=["Var1", "type", "pre_side", "pre_id", "post_id", "n_vesicles", "post_kind", "mito_near_cleft"]
    )
    return sheet, table


def _stream_bbox(
    root: Path,
    number: int,
    shape: tuple[int, int, int],
    count: int,
    rng: np.random.Generator,
    *,
    difficulty: float,
    strength: float,
    table_format: str,
    progress: bool = False,
) -> dict:
    """Generate and write one bbox slab by slab (:mod:`~synclr_monai.data.synthetic_stream`), Zarr volumes."""
    from .synthetic_stream import generate_bbox_stream

    label_map = _label_map(int(number))
    types = _default_types(int(number), count, rng)
    paths = _bbox_paths(root, f"bbox{number}", number, "zarr", table_format)
    bar = tqdm(total=shape[0], desc=f"bbox{number}", unit="plane", leave=False, disable=not progress)
    try:
        out = generate_bbox_stream(
            number, paths, shape, count, rng, types, label_map=label_map, stypes=synapse_types(difficulty),
            strength=strength, place_centre=_place_centre, synapse_window=_synapse_window,
            border_margin=BORDER_MARGIN, cytoplasm_range=CYTOPLASM_RANGE, membrane_value=MEMBRANE_VALUE,
            progress=bar.update,
        )  # fmt: skip
    finally:
        bar.close()
    sheet, table = _sheet_frames(out.pop("rows"), out.pop("info"))
    _write_table(paths["sheet"], sheet)
    out.update(sheet=sheet, synapses=table, types=table["type"].tolist(), pre_side=table["pre_side"].tolist())
    return out


def _check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _check_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse to clobber anything but an empty folder or (with ``overwrite``) an earlier synthetic dataset."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    entries = sorted(p.name for p in out_dir.iterdir())
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f"{out_dir} is not empty; pass overwrite=True (--overwrite) to replace a generated dataset"
        )
    foreign = [e for e in entries if not _LAYOUT_ENTRY.match(e)]
    if foreign:
        raise FileExistsError(
            f"{out_dir} holds entries that are not part of a synthetic dataset ({', '.join(foreign[:5])}); "
            "refusing to replace it"
        )


def generate_dataset(
    out_dir: str | os.PathLike,
    n_bboxes: int = 2,
    shape: Sequence[int] = (64, 128, 128),
    synapses_per_bbox: int = 4,
    seed: int = 0,
    *,
    difficulty: float = 0.0,
    voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE,
    staining_strength: float = 1.0,
    overwrite: bool = False,
    progress: bool = False,
    defects: float = 0.0,
    volume_format: str = "tiff",
    table_format: str = "xlsx",
    stream: bool = False,
) -> pd.DataFrame:
    """Write a synthetic dataset in the lab's layout (see the module docstring).

    Args:
        out_dir: dataset root to create (must not exist, or be empty).
        n_bboxes: number of bboxes; past 7 (the default label maps' bboxes) the dataset root gets a
            ``label_maps.json`` with the label values of bboxes 8.., which every reader takes from there.
        shape: ``(Z, Y, X)`` of every bbox.
        synapses_per_bbox: synapses in each bbox.
        seed: non-negative integer; equal seeds (and options) give byte-identical files.
        difficulty: 0..1, how alike the synapse classes are (0: the four classes as designed, 1: they
            differ only slightly; :func:`~.synthetic_synapse.synapse_types`).
        voxel_size: ``(z, y, x)`` voxel size in nm (default isotropic 8 nm; e.g. ``(40, 8, 8)`` for
            serial sections): structures keep their physical size and span fewer voxels on coarse axes.
        staining_strength: 0..2, how much the staining differs between bboxes (0 alike, 1 the
            documented ranges of :mod:`~.synthetic_imaging`).
        overwrite: replace an existing dataset folder (only one holding nothing but layout entries).
        progress: show a progress bar over bboxes and print each bbox written.
        defects: share of synapses given a segmentation defect
            (:mod:`~synclr_monai.data.synthetic_defects`); when > 0 the table gains a ``defect`` column.
        volume_format: ``"tiff"`` (slice folders, the lab's layout) or ``"zarr"`` (one Zarr array per volume,
            chunked 64³: ``raw/bboxN.zarr``, ``seg/bboxN.zarr``, ``bbox_N.zarr``).
        table_format: ``"xlsx"`` (the lab's sheets) or ``"csv"`` (``bboxN.csv``, the same columns).
        stream: generate and write each bbox slab by slab (:mod:`~synclr_monai.data.synthetic_stream`): memory
            bounded by a slab instead of the bbox, several times faster, other pixels than the in-memory
            generator for the same seed; needs ``volume_format="zarr"``, isotropic voxels and no defects.

    Returns:
        The ``synapse_types.csv`` table (``bbox_name, Var1, type``, and ``defect`` with ``defects`` > 0).

    Raises:
        ValueError: for bad arguments, including synapses that do not fit.
        FileExistsError: if ``out_dir`` is a non-empty folder and ``overwrite`` is not set (or
            it holds files the generator did not write).
    """
    n_bboxes = _check_positive_int(n_bboxes, "n_bboxes")
    shape = _check_shape(shape)
    count = _check_positive_int(synapses_per_bbox, "synapses_per_bbox")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    difficulty = _check_fraction(difficulty, "difficulty")
    strength = _check_fraction(staining_strength, "staining_strength", MAX_STAINING_STRENGTH)
    voxel = check_voxel_size(voxel_size)
    volume_format = _check_choice(volume_format, "volume_format", VOLUME_FORMATS)
    table_format = _check_choice(table_format, "table_format", TABLE_FORMATS)
    if stream:
        problems = [
            what
            for what, bad in (
                (f"volume_format 'zarr' (got {volume_format!r})", volume_format != "zarr"),
                (f"isotropic voxels (got voxel_size {voxel})", len(set(voxel)) != 1),
                (f"no defects (got {defects})", bool(defects)),
            )
            if bad
        ]
        if problems:
            raise ValueError("stream (slab-by-slab generation) needs " + " and ".join(problems))
    gen_shape, _ = generation_grid(shape, voxel)
    plan_regions(gen_shape, count, np.random.default_rng(0), border_margin=BORDER_MARGIN)  # fail before writing
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    # one independent stream per bbox: bbox N is the same whatever n_bboxes is
    streams = np.random.SeedSequence(int(seed)).spawn(n_bboxes)
    # defects draw from their own stream: the dataset with defects is the one without plus the edits
    defect_rng = np.random.default_rng([int(seed), _DEFECTS_STREAM])
    planned = choose_defects(n_bboxes * count, defects, defect_rng) if defects else None
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    rows, stains = [], []
    try:
        bar = tqdm(range(1, n_bboxes + 1), desc="synth", unit="bbox", disable=not progress)
        for number in bar:
            if stream:
                bbox = _stream_bbox(
                    tmp, number, shape, count, np.random.default_rng(streams[number - 1]), difficulty=difficulty,
                    strength=strength, table_format=table_format, progress=progress,
                )  # fmt: skip
                rows += [(bbox["name"], v, t, NO_DEFECT) for v, t in zip(bbox["sheet"]["Var1"], bbox["types"])]
                stains.append({"bbox_name": bbox["name"], **asdict(bbox["staining"])})
                paths = _bbox_paths(out_dir, bbox["name"], number, volume_format, table_format)
                message = (
                    f"{bbox['name']}: {shape[0]} slices of {shape[1]}x{shape[2]}, {count} synapses, streamed in "
                    f"{bbox['slabs']} slabs -> {paths['raw']}, {paths['seg']}, {paths['mask']}, {paths['sheet']}"
                )
                if progress:
                    bar.write(message)
                logger.info(message)
                continue
            bbox = generate_bbox(
                number,
                shape,
                count,
                np.random.default_rng(streams[number - 1]),
                difficulty=difficulty,
                voxel_size=voxel,
                staining_strength=strength,
            )
            kinds = planned[(number - 1) * count : number * count] if planned else [NO_DEFECT] * count
            for j, kind in enumerate(kinds):
                if kind != NO_DEFECT:
                    inject_defect(bbox, j, kind, defect_rng)
            _write_bbox(tmp, bbox, volume_format, table_format)
            rows += [(bbox["name"], v, t, d) for v, t, d in zip(bbox["sheet"]["Var1"], bbox["types"], kinds)]
            stains.append({"bbox_name": bbox["name"], **asdict(bbox["staining"])})
            paths = _bbox_paths(out_dir, bbox["name"], number, volume_format, table_format)
            message = (
                f"{bbox['name']}: {shape[0]} slices of {shape[1]}x{shape[2]}, {count} synapses -> "
                f"{paths['raw']}, {paths['seg']}, {paths['mask']}, {paths['sheet']}"
            )
            if progress:
                bar.write(message)
            logger.info(message)
        types = pd.DataFrame(rows, columns=[*TYPES_COLUMNS, "defect"])
        if not planned:
            types = types.drop(columns="defect")
        types.to_csv(tmp / "synapse_types.csv", index=False, lineterminator="\n")
        pd.DataFrame(stains, columns=list(STAINING_COLUMNS)).to_csv(
            tmp / "bbox_staining.csv", index=False, lineterminator="\n"
        )
        settings = {
            "generator": "python -m synclr_monai synth",
            "seed": int(seed),
            "bboxes": n_bboxes,
            "shape": list(shape),
            "synapses_per_bbox": count,
            "voxel_size_nm": list(voxel),
            "difficulty": difficulty,
            "staining_strength": strength,
            "volume_format": volume_format,
            "table_format": table_format,
            "stream": bool(stream),
        }
        (tmp / "dataset.json").write_text(json.dumps(settings, indent=2) + "\n")
        extra = {f"bbox{n}": _label_map(n).as_dict() for n in range(1, n_bboxes + 1) if n not in DEFAULT_LABEL_MAPS}
        if extra:  # read by every loader (data.label_maps.dataset_label_maps): bboxes past the default table
            (tmp / DATASET_LABEL_MAPS_FILE).write_text(json.dumps(extra, indent=2) + "\n")
        if out_dir.exists():  # empty, or an earlier dataset being replaced: swap, then delete it
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return types


# ----------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synclr_monai synth",
        description="Write a synthetic EM synapse dataset in the lab's layout (raw/, seg/, bbox_N/, bboxN.xlsx) "
        "plus synapse_types.csv.",
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset root to create")
    parser.add_argument(
        "--bboxes", type=int, default=2, help="number of bboxes (default 2; past 7 their label values go into "
        "DIR/label_maps.json)",
    )  # fmt: skip
    parser.add_argument(
        "--shape", type=int, nargs=3, default=[64, 128, 128], metavar=("Z", "Y", "X"), help="bbox shape"
    )
    parser.add_argument("--synapses-per-bbox", type=int, default=4, help="synapses per bbox (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--difficulty",
        type=float,
        default=0.0,
        help="0..1: how alike the synapse classes are (0 = the four classes as designed, 1 = they differ only "
        "slightly; default 0)",
    )
    parser.add_argument(
        "--voxel-size",
        type=float,
        nargs=3,
        default=list(DEFAULT_VOXEL_SIZE),
        metavar=("Z", "Y", "X"),
        help="voxel size in nm (default 8 8 8; e.g. 40 8 8 for serial sections: structures keep their physical "
        "size and span fewer slices)",
    )
    parser.add_argument(
        "--staining",
        type=float,
        default=1.0,
        help=f"0..{MAX_STAINING_STRENGTH:g}: how much brightness, contrast, gamma, noise, blur and illumination "
        "differ between bboxes (0 = all alike, 1 = the documented ranges; default 1)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing generated dataset")
    parser.add_argument(
        "--format",
        dest="volume_format",
        choices=VOLUME_FORMATS,
        default="tiff",
        help="volumes as TIFF slice folders (default, the lab's layout) or as Zarr arrays chunked 64^3 "
        "(raw/bboxN.zarr, seg/bboxN.zarr, bbox_N.zarr; much faster for large datasets)",
    )
    parser.add_argument(
        "--table",
        dest="table_format",
        choices=TABLE_FORMATS,
        default="xlsx",
        help="synapse tables as bboxN.xlsx (default, the lab's sheets) or bboxN.csv (the same columns)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="with --format zarr: generate and write each bbox slab by slab (memory bounded by a slab, not the "
        "bbox; several times faster; other pixels than the default generator; isotropic voxels, no defects)",
    )
    parser.add_argument(
        "--defects",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="share of synapses given a segmentation defect (missing cleft, merged pre segment, shifted mask, "
        "truncated at the edge), listed in the defect column of synapse_types.csv (default 0)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m synclr_monai synth``: parse ``argv``, write the dataset, return the exit code.

    Args:
        argv: arguments after ``synth``.

    Returns:
        0 on success, 2 for bad arguments or an existing output folder.
    """
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as stop:  # argparse exits on --help and on errors; return its code instead
        return int(stop.code or 0)
    try:
        types = generate_dataset(
            args.out,
            n_bboxes=args.bboxes,
            shape=args.shape,
            synapses_per_bbox=args.synapses_per_bbox,
            seed=args.seed,
            difficulty=args.difficulty,
            voxel_size=args.voxel_size,
            staining_strength=args.staining,
            overwrite=args.overwrite,
            progress=True,
            defects=args.defects,
            volume_format=args.volume_format,
            table_format=args.table_format,
            stream=args.stream,
        )
    except (ValueError, FileExistsError) as err:
        print(f"synth: error: {err}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{name} {n}" for name, n in types["type"].value_counts().sort_index().items())
    print(f"wrote {args.bboxes} bboxes with {len(types)} synapses ({counts}) to {args.out}")
    print(f"ground-truth classes: {args.out / 'synapse_types.csv'}")
    print(f"staining of each bbox: {args.out / 'bbox_staining.csv'}; settings: {args.out / 'dataset.json'}")
    if "defect" in types:
        print(f"defects: {int((types['defect'] != NO_DEFECT).sum())} synapses (column 'defect')")
    return 0
