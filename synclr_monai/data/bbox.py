"""One bounding box ("bbox") of the lab's data: where its files are, and its assembled 3-channel volume.

Assembly (DESIGN.md): channel 0 is the raw EM z-scored over the whole bbox, channel 1 the union of the
pre-synaptic segments of the bbox's synapses, channel 2 the cleft mask (cleft | cleft2), channel 3 the
union of the post-synaptic segments (the mask array holds channels 1-3 as ``[3, Z, Y, X]``). The
pre-synaptic partner of a synapse is the one of its two segments (seg ids under ``side_1`` and
``side_2``) that overlaps more the vesicle cloud nearest to the cleft centre.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from .io import (
    NIFTI_SUFFIXES,
    TABLE_SUFFIXES,
    ZARR_SUFFIX,
    DataFormatError,
    is_nifti,
    is_zarr,
    list_slices,
)
from .label_maps import LabelMap

__all__ = [
    "BBoxSource",
    "BBoxVolume",
    "find_bboxes",
    "ZScoreStats",
    "zscore_volume",
    "warn_nonfinite",
    "nonfinite_per_slice",
    "label_problems",
    "label_values",
    "assign_pre_synaptic",
    "sheet_point",
    "synapse_cube",
]

logger = logging.getLogger(__name__)

#: Half-size (voxels) of the window around a cleft centre searched for its vesicle cloud.
VESICLE_SEARCH_RADIUS = 40


@dataclass(frozen=True)
class BBoxSource:
    """The files of one bbox.

    Args:
        root: the dataset root.
        number: N of ``bboxN``.
        raw: ``raw/bboxN`` slice folder (or ``raw/bboxN.nii[.gz]``, ``raw/bboxN.zarr``).
        seg: ``seg/bboxN`` slice folder (or NIfTI, Zarr).
        mask: ``bbox_N`` slice folder (or NIfTI, Zarr).
        sheet: the synapse table ``bboxN.xlsx`` (or ``bboxN.csv``, ``bboxN.parquet``).
        conflicts: messages for parts present in more than one format (e.g. ``bbox1.xlsx`` and
            ``bbox1.csv``): which one is meant is unclear, so such a bbox is refused.
    """

    root: Path
    number: int
    raw: Path
    seg: Path
    mask: Path
    sheet: Path
    conflicts: tuple[str, ...] = field(default=(), compare=False)

    @property
    def name(self) -> str:
        """``bboxN``, the prefix of every synapse id of this bbox."""
        return f"bbox{self.number}"

    def missing(self) -> list[str]:
        """Messages for each part of the bbox that does not exist on disk."""
        out = []
        for role, path in (("raw", self.raw), ("seg", self.seg), ("mask", self.mask)):
            if not path.exists():
                kind = "volume" if is_nifti(path) else "Zarr store" if is_zarr(path) else "slice folder"
                out.append(f"{path}: missing {role} {kind}")
        if not self.sheet.is_file():
            out.append(f"{self.sheet}: missing synapse sheet")
        return out

    def problems(self) -> list[str]:
        """:meth:`missing` parts and parts present in more than one format."""
        return [*self.missing(), *self.conflicts]


def _volume_candidates(base: Path, stem: str) -> list[Path]:
    """The volumes present for ``base/stem``: slice folder, NIfTI files, Zarr store."""
    found = []
    folder = base / stem
    if folder.is_dir():
        found.append(folder)
    for suffix in (*NIFTI_SUFFIXES, ZARR_SUFFIX):
        candidate = base / f"{stem}{suffix}"
        if candidate.is_file() if suffix != ZARR_SUFFIX else candidate.is_dir():
            found.append(candidate)
    return found


def _role_path(base: Path, stem: str) -> Path:
    """``base/stem`` as a slice folder if it exists, else a NIfTI file or Zarr store beside it if one exists."""
    found = _volume_candidates(base, stem)
    return found[0] if found else base / stem


def _table_candidates(root: Path, number: int) -> list[Path]:
    """The synapse tables present for bbox ``number``: ``bboxN.xlsx``, ``bboxN.csv``, ``bboxN.parquet``."""
    return [root / f"bbox{number}{suffix}" for suffix in TABLE_SUFFIXES if (root / f"bbox{number}{suffix}").is_file()]


def _conflicts(root: Path, number: int) -> tuple[str, ...]:
    """One message per part of bbox ``number`` present in more than one format."""
    out = []
    for role, base, stem in (("raw", root / "raw", f"bbox{number}"), ("seg", root / "seg", f"bbox{number}"),
                             ("mask", root, f"bbox_{number}")):
        found = _volume_candidates(base, stem)
        if len(found) > 1:
            out.append(
                f"{' and '.join(map(str, found))}: bbox{number} has {len(found)} {role} volumes; keep exactly one "
                "(slice folder, NIfTI or Zarr)"
            )
    tables = _table_candidates(root, number)
    if len(tables) > 1:
        out.append(
            f"{' and '.join(map(str, tables))}: bbox{number} has {len(tables)} synapse tables; keep exactly one "
            "(xlsx, csv or parquet)"
        )
    return tuple(out)


def find_bboxes(root: str | Path, numbers: list[int] | None = None, strict: bool = True) -> list[BBoxSource]:
    """Find the bboxes of a dataset root.

    A bbox is announced by ``raw/bboxN`` (slice folder, NIfTI or Zarr store) or by a synapse table
    ``bboxN.xlsx``, ``bboxN.csv`` or ``bboxN.parquet``. Each part must exist in exactly one format.

    Args:
        root: the dataset root (``DATA/``).
        numbers: keep only these bbox numbers (all when None).
        strict: raise if a bbox misses any of its parts or has one in two formats (otherwise the caller
            checks ``problems()``).

    Returns:
        The bboxes sorted by number.

    Raises:
        DataFormatError: if the root does not exist, holds no bbox, a requested number is absent, or
            (strict) some part of a bbox is missing or present twice; the message lists every such file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: dataset root does not exist")
    found: set[int] = set()
    pattern = re.compile(r"^bbox(\d+)(\.nii(\.gz)?|\.zarr|\.xlsx|\.csv|\.parquet)?$", re.IGNORECASE)
    for parent in (root / "raw", root):
        if parent.is_dir():
            for entry in parent.iterdir():
                m = pattern.match(entry.name)
                if not m:
                    continue
                suffix = (m.group(2) or "").lower()
                if parent == root / "raw" and suffix not in TABLE_SUFFIXES:
                    found.add(int(m.group(1)))
                elif parent == root and suffix in TABLE_SUFFIXES:
                    found.add(int(m.group(1)))
    if numbers is not None:
        absent = sorted(set(numbers) - found)
        if absent:
            raise DataFormatError(f"{root}: requested bboxes {absent} not found (found {sorted(found)})")
        found = set(numbers)
    if not found:
        raise DataFormatError(
            f"{root}: no bbox found (expected raw/bboxN slice folders or volumes and bboxN.xlsx/.csv/.parquet tables)"
        )
    sources = []
    for n in sorted(found):
        tables = _table_candidates(root, n)
        sources.append(
            BBoxSource(
                root=root,
                number=n,
                raw=_role_path(root / "raw", f"bbox{n}"),
                seg=_role_path(root / "seg", f"bbox{n}"),
                mask=_role_path(root, f"bbox_{n}"),
                sheet=tables[0] if tables else root / f"bbox{n}.xlsx",
                conflicts=_conflicts(root, n),
            )
        )
    if strict:
        problems = [msg for s in sources for msg in s.problems()]
        if problems:
            raise DataFormatError("incomplete or ambiguous dataset:\n  " + "\n  ".join(problems))
    return sources


@dataclass
class BBoxVolume:
    """An assembled bbox.

    Args:
        name: ``bboxN``.
        raw: ``[Z, Y, X]`` raw EM z-scored over the whole bbox (float16 or float32).
        mask: ``[3, Z, Y, X]`` uint8 in {0, 1}: channel 0 pre-synaptic segments, channel 1 cleft, channel 2
            post-synaptic segments (``[2, Z, Y, X]`` without the post-synaptic channel is accepted too).
        synapses: the sheet rows with ``bbox_name`` added (and, after assembly, ``pre_side``,
            ``pre_seg_id``, ``post_seg_id``).
        label_values: the non-zero label values found in the semantic mask (for error messages when the
            label map does not fit the masks); empty when unknown.
    """

    name: str
    raw: np.ndarray
    mask: np.ndarray
    synapses: pd.DataFrame = field(default_factory=pd.DataFrame)
    label_values: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.raw.ndim != 3 or self.mask.ndim != 4 or self.mask.shape[0] not in (2, 3) or self.mask.shape[1:] != self.raw.shape:
            raise ValueError(f"{self.name}: raw {self.raw.shape} and mask {self.mask.shape} do not match")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        return tuple(self.raw.shape)  # type: ignore[return-value]

    @property
    def pre(self) -> np.ndarray:
        """``[Z, Y, X]`` pre-synaptic mask (a view)."""
        return self.mask[0]

    @property
    def cleft(self) -> np.ndarray:
        """``[Z, Y, X]`` cleft mask (a view)."""
        return self.mask[1]

    @property
    def post(self) -> np.ndarray | None:
        """``[Z, Y, X]`` post-synaptic mask (a view), or None for a volume assembled without it."""
        return self.mask[2] if self.mask.shape[0] > 2 else None


def nonfinite_per_slice(raw: np.ndarray) -> np.ndarray:
    """Count of NaN/inf voxels in each z-slice of ``raw`` (zeros for integer volumes, which cannot hold them)."""
    if not np.issubdtype(raw.dtype, np.floating):
        return np.zeros(raw.shape[0], dtype=np.int64)
    return np.array([int(raw.shape[1] * raw.shape[2] - np.count_nonzero(np.isfinite(sl))) for sl in raw])


class ZScoreStats:
    """Mean and standard deviation of a raw volume accumulated slab by slab (float64 sums), and the z-score.

    Non-finite voxels (NaN, inf; possible only in float stacks) are left out of the statistics and z-score
    to 0, the volume's mean: one NaN voxel would otherwise make the standard deviation NaN and the whole channel
    zero. Feeding the same slabs in the same order gives bit-identical statistics, so the in-memory and the
    streamed assembly (:mod:`synclr_monai.data.assembly`) write identical raw channels.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.total_sq = 0.0
        self.n = 0

    def add(self, slab: np.ndarray) -> None:
        """Accumulate a ``[dz, Y, X]`` slab."""
        values = slab.astype(np.float64)
        if np.issubdtype(slab.dtype, np.floating):
            values = values[np.isfinite(values)]
        self.total += values.sum()
        self.total_sq += np.square(values).sum()
        self.n += values.size

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def std(self) -> float:
        mean = self.mean
        return float(np.sqrt(max(self.total_sq / self.n - mean * mean, 0.0))) if self.n else 0.0

    def apply(self, slab: np.ndarray, dtype: np.dtype = np.float16) -> np.ndarray:
        """``(slab - mean) / std`` in ``dtype`` (zeros for a constant volume; non-finite voxels 0)."""
        mean, std = self.mean, self.std
        values = slab.astype(np.float32)
        scored = (values - mean) / std if std > 0 else np.zeros_like(values)
        if np.issubdtype(slab.dtype, np.floating):
            scored[~np.isfinite(values)] = 0.0
        return scored.astype(dtype, copy=False)


#: z-slices per slab of the z-score statistics (fixed: the float64 sums depend on the slab boundaries).
ZSCORE_SLAB = 32


def zscore_volume(raw: np.ndarray, dtype: np.dtype = np.float16, chunk: int = ZSCORE_SLAB) -> np.ndarray:
    """Z-score a whole volume, computed slab by slab so that no float64 copy of it is ever held.

    Non-finite voxels (NaN, inf) are left out of the mean and standard deviation and set to 0 (see
    :class:`ZScoreStats`); :func:`~synclr_monai.data.assembly.assemble_bbox` warns when it happens.

    Args:
        raw: ``[Z, Y, X]`` intensities.
        dtype: output dtype (float16 keeps a 575³ bbox at 380 MB).
        chunk: z-slices per slab.

    Returns:
        ``(raw - mean) / std`` in ``dtype``; a constant volume gives zeros.
    """
    stats = ZScoreStats()
    for z in range(0, raw.shape[0], chunk):
        stats.add(raw[z : z + chunk])
    out = np.empty(raw.shape, dtype=dtype)
    for z in range(0, raw.shape[0], chunk):
        out[z : z + chunk] = stats.apply(raw[z : z + chunk], dtype)
    return out


def warn_nonfinite(source: BBoxSource, counts: np.ndarray) -> None:
    """Warn, naming the slices, when the raw stack holds NaN/inf voxels (``counts`` per z-slice; they z-score to 0)."""
    total = int(counts.sum())
    if not total:
        return
    bad = np.nonzero(counts)[0]
    if source.raw.is_dir() and not is_zarr(source.raw):
        files = list_slices(source.raw, check_numbering=False)
        where = ", ".join(f"{files[z].name} ({counts[z]})" for z in bad[:5])
    else:
        where = ", ".join(f"z={z} ({counts[z]})" for z in bad[:5])
    more = f" and {len(bad) - 5} more slices" if len(bad) > 5 else ""
    message = (
        f"{source.raw}: {total} non-finite raw voxel(s) (NaN/inf) in {where}{more}; they are left out of the "
        "z-score statistics and set to 0 (the bbox mean). Fix the slices if they should hold data."
    )
    logger.warning(message)
    warnings.warn(message, stacklevel=3)


def sheet_point(row: Mapping, prefix: str) -> tuple[int, int, int]:
    """The ``(z, y, x)`` voxel of a sheet point (``prefix`` ``central``, ``side_1`` or ``side_2``).

    Sheets give ``(x, y, z)`` = ``(coord_1, coord_2, coord_3)``; coordinates are rounded to the
    nearest voxel.
    """
    x, y, z = (int(round(float(row[f"{prefix}_coord_{i}"]))) for i in (1, 2, 3))
    return z, y, x


def _window(center: tuple[int, int, int], radius: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(c - radius, 0), min(c + radius + 1, s)) for c, s in zip(center, shape))


def assign_pre_synaptic(
    seg: np.ndarray,
    vesicle: np.ndarray,
    center: tuple[int, int, int],
    side_ids: tuple[int, int],
    side_points: tuple[tuple[int, int, int], tuple[int, int, int]],
    radius: int = VESICLE_SEARCH_RADIUS,
) -> int:
    """Decide which side of a synapse is pre-synaptic.

    The vesicle-cloud component nearest the cleft centre (searched in a cube of half-size ``radius``)
    is found; the side whose segment overlaps it more is pre-synaptic. On a tie (e.g. neither segment
    touches the cloud) the side whose point is nearer the cloud's centroid wins.

    Args:
        seg: ``[Z, Y, X]`` instance segmentation.
        vesicle: ``[Z, Y, X]`` boolean vesicle-cloud mask.
        center: cleft centre ``(z, y, x)``.
        side_ids: seg ids of side 1 and side 2.
        side_points: ``(z, y, x)`` of side 1 and side 2.
        radius: search half-size in voxels.

    Returns:
        1 or 2, the pre-synaptic side; 0 when no vesicle cloud lies in the window.
    """
    win = _window(center, radius, seg.shape)
    ves = vesicle[win]
    labels, n = ndimage.label(ves)
    if n == 0:
        return 0
    # distance from the centre to the nearest voxel of each component
    local_center = tuple(c - s.start for c, s in zip(center, win))
    coords = np.nonzero(labels)
    d2 = sum((c - lc) ** 2 for c, lc in zip(coords, local_center))
    comp_ids = labels[coords]
    nearest = np.full(n + 1, np.inf)
    np.minimum.at(nearest, comp_ids, d2)
    best = int(np.argmin(nearest[1:]) + 1)
    cloud = labels == best
    seg_win = seg[win]
    overlaps = [int(np.count_nonzero(cloud & (seg_win == sid))) if sid != 0 else 0 for sid in side_ids]
    if overlaps[0] != overlaps[1]:
        return 1 if overlaps[0] > overlaps[1] else 2
    centroid = np.array([c[comp_ids == best].mean() + s.start for c, s in zip(coords, win)])
    dists = [float(np.linalg.norm(np.array(p) - centroid)) for p in side_points]
    return 1 if dists[0] <= dists[1] else 2


def __getattr__(name: str):
    # assemble_bbox moved to synclr_monai.data.assembly (slab-wise assembly); the old import path still works
    if name == "assemble_bbox":
        from .assembly import assemble_bbox

        return assemble_bbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def label_values(labels: np.ndarray) -> tuple[int, ...]:
    """The non-zero values of a label volume (a bincount when the values are small: far faster than unique)."""
    if labels.size == 0:
        return ()
    lo, hi = int(labels.min()), int(labels.max())
    if lo >= 0 and hi < 1 << 20:
        counts = np.bincount(labels.ravel(), minlength=hi + 1)
        return tuple(int(v) for v in np.nonzero(counts)[0] if v != 0)
    return tuple(int(v) for v in np.unique(labels) if v != 0)


def label_problems(
    volume: BBoxVolume, source: BBoxSource, label_map: LabelMap, has_cleft: bool | None = None
) -> list[str]:
    """Why an assembled bbox does not fit its label map, the rule ``check`` applies too; empty when it fits.

    A bbox is refused when its mask has no cleft voxel (channel 2 would be empty: the label map names
    values the mask does not hold), or when its sheet lists synapses but none got a pre-synaptic segment
    (channel 1 empty: no vesicle cloud of the map's vesicle value near any cleft centre, or the sheets'
    side points on background). An empty sheet is not a label problem (see the sampling/inference checks).

    Args:
        volume: the assembled bbox (or anything with its ``name``, ``synapses`` and ``label_values``, such as
            a :class:`~synclr_monai.data.cache.CachedBBox`, when ``has_cleft`` is given).
        source: its files (for the message).
        label_map: the label map used.
        has_cleft: whether the bbox has a cleft voxel, when known without the mask (None: look at ``volume.cleft``).

    Returns:
        One message per problem, naming the bbox, the mask file, the label values found and what to do.
    """
    found = list(volume.label_values) if volume.label_values else "unknown"
    fix = (
        f"fix the 'label_maps' entry for {volume.name} (now {label_map.as_dict()}), or set require_labels: false "
        "to train on it anyway"
    )
    problems = []
    if not (np.any(volume.cleft) if has_cleft is None else has_cleft):
        problems.append(
            f"{source.mask}: {volume.name} has no cleft voxel: the label map's cleft values {label_map.cleft_values} "
            f"are not in the mask, which holds the values {found}; {fix}"
        )
    synapses = volume.synapses
    if len(synapses) and "pre_seg_id" in synapses and not (synapses["pre_seg_id"] != 0).any():
        problems.append(
            f"{source.mask}: {volume.name}: none of its {len(synapses)} synapses has a pre-synaptic segment (no "
            f"vesicle cloud of value {label_map.vesicle} near a cleft centre, or side points on background in "
            f"{source.seg}); the mask holds the values {found}; {fix}"
        )
    return problems


def synapse_cube(
    volume: BBoxVolume,
    row: Mapping,
    cube_size: int,
    input_mode: str = "channels",
    voxel_size: tuple[float, float, float] | None = None,
    az_radius: int = 2,
    pose: str = "native",
) -> np.ndarray:
    """The encoder's input for one synapse: the cube centred at its cleft centre.

    Normalised exactly as training cubes are (:func:`~synclr_monai.transforms.functional.cut_cube`):
    float64 statistics of the cube's voxels inside the volume, zero padding past the borders.

    Args:
        volume: the assembled bbox, or a bbox read out of core (``name``, ``shape``, ``raw`` a ``[1, Z, Y, X]``
            and ``mask`` a ``[3, Z, Y, X]`` :class:`~synclr_monai.data.lazy.H5Volume`, as
            :func:`~synclr_monai.data.synapse_cubes.open_lazy_bbox` gives): only the cube is read.
        row: a sheet row (``central_coord_1..3`` in (x, y, z)).
        cube_size: edge S of the cube.
        input_mode: ``channels`` (raw, pre, cleft), ``masked`` or ``raw`` (see
            :func:`~synclr_monai.transforms.artefacts.to_input_mode`).
        voxel_size: ``(z, y, x)`` voxel size; anisotropic voxels make the cube a physical cube sampled at
            the finest voxel size, as the training views are (None: isotropic).
        az_radius: dilation radius of the synapse mask in the ``masked`` mode.
        pose: ``native`` (the cube as it lies) or ``canonical`` (turned into the frame of the synapse's own
            cleft, :class:`~synclr_monai.transforms.pose.CanonicalPose`, from a context around the centre).

    Returns:
        ``[3 or 1, S, S, S]`` float32.

    Raises:
        ValueError: the centre lies outside the volume, or an unknown input mode or pose.
    """
    import torch

    from ..transforms.artefacts import to_input_mode
    from ..transforms.config import is_anisotropic
    from ..transforms.functional import cut_cube, is_lazy
    from ..transforms.geometry import affine_resample
    from ..transforms.params import view_matrices
    from ..transforms.pose import CanonicalPose, check_pose, pose_context_size

    size = int(cube_size)
    check_pose(pose)
    center = sheet_point(row, "central")
    if not all(0 <= c < d for c, d in zip(center, volume.shape)):
        raise ValueError(f"{volume.name}: synapse {row.get('Var1')!r} centre {center} lies outside {volume.shape}")
    start = [c - size // 2 for c in center]
    # an out-of-core raw (data_mode chunked: an H5Volume) already has its channel axis; only the cube is read
    raw = volume.raw if is_lazy(volume.raw) else volume.raw[None]
    if pose == "canonical":
        # z-scored over the S-cube as the training contexts are, then turned about the centre
        context = cut_cube(raw, volume.mask, start, size, context=pose_context_size(size), pad=True)
        x = CanonicalPose(size, voxel_size)(torch.from_numpy(context))
        return to_input_mode(x[None], input_mode, np.array([az_radius]))[0].contiguous().numpy()
    cube = cut_cube(raw, volume.mask, start, size, pad=True)
    x = torch.from_numpy(cube)
    if is_anisotropic(voxel_size):
        matrix = view_matrices(np.eye(3)[None], np.zeros((1, 3), bool), np.ones(1), tuple(voxel_size))[0]
        x = affine_resample(x, matrix, np.zeros(3), size)
    return to_input_mode(x[None], input_mode, np.array([az_radius]))[0].contiguous().numpy()
