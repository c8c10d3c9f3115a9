"""Assembling a bbox's 3-channel volume slab by slab, so that no process ever holds a whole source volume.

The rule is DESIGN.md's (see :mod:`synclr_monai.data.bbox`): channel 0 the raw EM z-scored over the whole
bbox, then the pre-synaptic segments, the cleft and the post-synaptic segments. It runs in two stages:

1. :func:`plan_assembly` opens the raw, segmentation and semantic-mask volumes lazily
   (:func:`~synclr_monai.data.io.open_volume`: Zarr chunks, TIFF slices or NIfTI regions), decides each
   synapse's pre-synaptic side from windows around its cleft centre, and reads the raw once for the z-score
   statistics.
2. :meth:`BBoxAssembly.slabs` yields the assembled volume in slabs of :data:`ASSEMBLY_SLAB` z-planes.

:func:`assemble_bbox` fills in-memory arrays from the slabs; the cache (:mod:`synclr_monai.data.cache`) writes
them straight into its HDF5 datasets, so building a cache needs memory for a slab, not for a bbox (a 640³ bbox
took 4.6 GB to assemble whole). Both write identical voxels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .bbox import (
    VESICLE_SEARCH_RADIUS,
    ZSCORE_SLAB,
    BBoxSource,
    BBoxVolume,
    ZScoreStats,
    _window,
    assign_pre_synaptic,
    label_values,
    nonfinite_per_slice,
    sheet_point,
    warn_nonfinite,
)
from .io import DataFormatError, open_volume, read_synapse_sheet
from .label_maps import LabelMap, label_map_for

__all__ = ["ASSEMBLY_SLAB", "BBoxAssembly", "plan_assembly", "assemble_bbox"]

logger = logging.getLogger(__name__)

#: z-planes per assembled slab: the cache's chunk edge, so each slab writes whole HDF5 chunks (a multiple of
#: :data:`~synclr_monai.data.bbox.ZSCORE_SLAB`).
ASSEMBLY_SLAB = 64


@dataclass
class BBoxAssembly:
    """What assembling a bbox needs besides its voxels: the open volumes, the z-score and the synapses' sides.

    Args:
        source: the bbox's files.
        label_map: its label map.
        raw, seg, sem: the lazily opened raw, segmentation and semantic-mask volumes.
        synapses: the sheet rows with ``bbox_name``, ``pre_side``, ``pre_seg_id`` and ``post_seg_id``.
        zscore: the raw channel's statistics.
        label_values: the non-zero values of the semantic mask, filled in by :meth:`slabs` once it has run
            to the end (empty before).
    """

    source: BBoxSource
    label_map: LabelMap
    raw: Any
    seg: Any
    sem: Any
    synapses: pd.DataFrame
    zscore: ZScoreStats
    label_values: tuple[int, ...] = field(default=())

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        return tuple(self.raw.shape)  # type: ignore[return-value]

    def _segments(self, column: str) -> list[int]:
        return sorted({int(v) for v in self.synapses[column] if int(v) != 0}) if len(self.synapses) else []

    def slabs(
        self, raw_dtype: str | np.dtype = np.float16, slab: int = ASSEMBLY_SLAB
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(z0, raw, mask)`` for consecutive slabs: ``raw`` ``[dz, Y, X]`` z-scored in ``raw_dtype``,
        ``mask`` ``[3, dz, Y, X]`` uint8 (pre-synaptic, cleft, post-synaptic).

        Raises:
            ValueError: ``slab`` not a positive multiple of :data:`~synclr_monai.data.bbox.ZSCORE_SLAB`.
            DataFormatError: an unreadable part of a volume, naming the file.
        """
        if slab <= 0 or slab % ZSCORE_SLAB:
            raise ValueError(f"slab must be a positive multiple of {ZSCORE_SLAB}, got {slab}")
        pre_ids, post_ids = self._segments("pre_seg_id"), self._segments("post_seg_id")
        found: set[int] = set()
        for z0 in range(0, self.shape[0], slab):
            raw = self.raw[z0 : z0 + slab]
            seg = self.seg[z0 : z0 + slab]
            sem = self.sem[z0 : z0 + slab]
            mask = np.zeros((3, *raw.shape), dtype=np.uint8)
            if pre_ids:
                mask[0] = np.isin(seg, pre_ids)
            mask[1] = np.isin(sem, self.label_map.cleft_values)
            if post_ids:
                mask[2] = np.isin(seg, post_ids)
            found.update(label_values(sem))
            yield z0, self.zscore.apply(raw, np.dtype(raw_dtype)), mask
        self.label_values = tuple(sorted(found))


def _pre_synaptic_sides(
    source: BBoxSource, seg: Any, sem: Any, synapses: pd.DataFrame, label_map: LabelMap, radius: int
) -> None:
    """Add ``pre_side``, ``pre_seg_id``, ``post_seg_id`` to ``synapses``, reading only a window per synapse.

    Same decision as on whole volumes: :func:`~synclr_monai.data.bbox.assign_pre_synaptic` on the window
    around the cleft centre that it would cut itself, in the window's coordinates.
    """
    shape = tuple(seg.shape)
    rows = list(synapses.iterrows())
    points = []
    for _, row in rows:
        pts = [sheet_point(row, p) for p in ("central", "side_1", "side_2")]
        for p in pts:
            if not all(0 <= c < s for c, s in zip(p, shape)):
                raise DataFormatError(
                    f"{source.sheet}: synapse {row['Var1']!r} has point (z, y, x) = {p} outside the volume {shape}"
                )
        points.append(pts)
    sides, pre_ids, post_ids = [0] * len(rows), [0] * len(rows), [0] * len(rows)
    # in z order, so that neighbouring windows reuse decoded TIFF slices
    for i in sorted(range(len(rows)), key=lambda k: points[k][0][0]):
        center, p1, p2 = points[i]
        side_ids = (int(seg[p1]), int(seg[p2]))
        win = _window(center, radius, shape)
        offset = np.array([s.start for s in win])
        local = [tuple(int(v) for v in np.subtract(p, offset)) for p in (center, p1, p2)]
        side = assign_pre_synaptic(
            seg[win], sem[win] == label_map.vesicle, local[0], side_ids, (local[1], local[2]), radius
        )
        if side == 0 or side_ids[side - 1] == 0:
            logger.warning(
                "%s: synapse %s: no vesicle cloud within %d voxels of the cleft centre or pre side on background; "
                "it adds nothing to the pre-synaptic channel",
                source.sheet, rows[i][1]["Var1"], radius,
            )  # fmt: skip
            continue
        sides[i], pre_ids[i], post_ids[i] = side, side_ids[side - 1], side_ids[2 - side]
    synapses["pre_side"] = sides
    synapses["pre_seg_id"] = pre_ids
    synapses["post_seg_id"] = post_ids


def plan_assembly(
    source: BBoxSource,
    label_maps: Mapping[int, LabelMap] | None = None,
    vesicle_search_radius: int = VESICLE_SEARCH_RADIUS,
) -> BBoxAssembly:
    """Open a bbox's volumes lazily, assign each synapse's pre-synaptic side and compute the z-score.

    Args:
        source: the bbox's files.
        label_maps: ``{bbox_number: LabelMap}``; the lab's default table when None.
        vesicle_search_radius: half-size of the window searched for each synapse's vesicle cloud.

    Returns:
        The :class:`BBoxAssembly`, ready for :meth:`BBoxAssembly.slabs`.

    Raises:
        DataFormatError: unreadable or inconsistent files (shape mismatch between raw, seg and mask, sheet
            points outside the volume), each message naming the file.
        KeyError: if no label map exists for the bbox.
    """
    label_map = label_map_for(source.number, label_maps, root=source.root)
    window_slices = 2 * vesicle_search_radius + 2
    raw = open_volume(source.raw, "raw")
    seg = open_volume(source.seg, "label", cache_slices=window_slices)
    sem = open_volume(source.mask, "label", cache_slices=window_slices)
    for path, vol in ((source.seg, seg), (source.mask, sem)):
        if tuple(vol.shape) != tuple(raw.shape):
            raise DataFormatError(
                f"{path}: volume shape {tuple(vol.shape)} (slices, y, x) differs from raw {source.raw}'s "
                f"{tuple(raw.shape)}"
            )
    synapses = read_synapse_sheet(source.sheet)
    synapses.insert(0, "bbox_name", source.name)
    _pre_synaptic_sides(source, seg, sem, synapses, label_map, vesicle_search_radius)
    for vol in (seg, sem):  # the window cache has done its work
        clear = getattr(getattr(vol, "_read", None), "cache_clear", None)
        if clear is not None:
            clear()
    zscore = ZScoreStats()
    nonfinite = np.zeros(raw.shape[0], dtype=np.int64)
    for z in range(0, raw.shape[0], ZSCORE_SLAB):
        slab = raw[z : z + ZSCORE_SLAB]
        zscore.add(slab)
        nonfinite[z : z + ZSCORE_SLAB] = nonfinite_per_slice(slab)
    warn_nonfinite(source, nonfinite)
    return BBoxAssembly(source, label_map, raw, seg, sem, synapses, zscore)


def assemble_bbox(
    source: BBoxSource,
    label_maps: Mapping[int, LabelMap] | None = None,
    raw_dtype: str | np.dtype = np.float16,
    vesicle_search_radius: int = VESICLE_SEARCH_RADIUS,
) -> BBoxVolume:
    """Read a bbox's files and build its 3-channel volume in memory.

    Args:
        source: the bbox's files.
        label_maps: ``{bbox_number: LabelMap}``; the lab's default table when None.
        raw_dtype: dtype of the z-scored raw channel (float16 or float32).
        vesicle_search_radius: half-size of the window searched for each synapse's vesicle cloud.

    Returns:
        The assembled :class:`~synclr_monai.data.bbox.BBoxVolume`.

    Raises:
        DataFormatError: on unreadable or inconsistent files (shape mismatch between raw, seg and mask,
            sheet points outside the volume), each message naming the file.
        KeyError: if no label map exists for the bbox.
    """
    plan = plan_assembly(source, label_maps, vesicle_search_radius)
    raw = np.empty(plan.shape, dtype=np.dtype(raw_dtype))
    mask = np.empty((3, *plan.shape), dtype=np.uint8)
    for z0, raw_slab, mask_slab in plan.slabs(raw_dtype):
        raw[z0 : z0 + len(raw_slab)] = raw_slab
        mask[:, z0 : z0 + len(raw_slab)] = mask_slab
    return BBoxVolume(source.name, raw, mask, plan.synapses, plan.label_values)
