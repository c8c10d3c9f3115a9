"""Validation of a dataset root: ``python -m synclr_monai check DIR``.

Every problem is reported (not just the first), each naming the file and what is wrong, and the
command exits with code 2 when there is any. Warnings (e.g. a sheet with no synapse) are printed but
do not fail the check.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EXIT_USER_ERROR, DataError, UserError, report_user_error
from .bbox import BBoxSource, find_bboxes, label_values, nonfinite_per_slice, sheet_point
from .io import (
    DataFormatError,
    TiffStackVolume,
    is_nifti,
    is_zarr,
    list_slices,
    open_volume,
    read_slice,
    read_synapse_sheet,
    slice_gaps,
)
from .label_maps import LabelMap, label_map_for, resolve_label_maps

__all__ = ["BBoxSummary", "CheckReport", "check_bbox", "check_dataset", "main"]

logger = logging.getLogger(__name__)


@dataclass
class BBoxSummary:
    """What the check found for one bbox."""

    name: str
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    synapses: int | None = None
    label_values: list[int] = field(default_factory=list)
    cleft_voxels: int | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """Per-bbox summaries and every problem found."""

    root: Path
    bboxes: list[BBoxSummary] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def format(self) -> str:
        """A human-readable table followed by the problems."""
        lines = [f"dataset {self.root}"]
        header = f"{'bbox':<8} {'shape (z,y,x)':<18} {'dtype':<8} {'synapses':>8} {'cleft voxels':>13}  label values"
        lines.append(header)
        for b in self.bboxes:
            shape = "x".join(map(str, b.shape)) if b.shape else "?"
            syn = "?" if b.synapses is None else str(b.synapses)
            cleft = "?" if b.cleft_voxels is None else str(b.cleft_voxels)
            lines.append(
                f"{b.name:<8} {shape:<18} {b.dtype or '?':<8} {syn:>8} {cleft:>13}  {b.label_values}"
            )
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines.extend(f"  - {w}" for w in self.warnings)
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  - {p}" for p in self.problems)
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def _nonfinite_problem(where: Path, count: int) -> str:
    return (
        f"{where}: {count} non-finite voxel(s) (NaN/inf); training leaves them out of the z-score statistics "
        "and sets them to the bbox mean, but fix the file if they should hold data"
    )


#: z-planes read at a time from Zarr and NIfTI volumes (TIFF stacks are read slice by slice).
CHECK_SLAB = 64


def _stack_info(
    path: Path, role: str, problems: list[str], visit: Callable[[np.ndarray], None] | None = None
) -> tuple[tuple[int, ...] | None, Any]:
    """Read a role's volume part by part, recording what is wrong: for a TIFF stack slice by slice (unreadable
    slices, gaps in the numbering, shape mismatches); for NIfTI and Zarr slab by slab (unreadable file or
    chunks, bad shape); and (raw) non-finite voxels. ``visit`` sees every slab (``[dz, Y, X]``) read.

    Returns:
        The shape and the volume opened lazily (:func:`~synclr_monai.data.io.open_volume`, for point lookups),
        or None for either when the volume cannot be read whole. Memory: one slab, never the volume.
    """
    if is_nifti(path) or is_zarr(path):
        try:
            vol = open_volume(path, role)
            bad = 0
            for z in range(0, vol.shape[0], CHECK_SLAB):
                slab = vol[z : z + CHECK_SLAB]
                if role == "raw":
                    bad += int(nonfinite_per_slice(slab).sum())
                if visit is not None:
                    visit(slab)
        except DataFormatError as err:
            problems.append(str(err))
            return None, None
        if bad:
            problems.append(_nonfinite_problem(path, bad))
        return tuple(vol.shape), vol
    try:
        files = list_slices(path, check_numbering=False)
    except DataFormatError as err:
        problems.append(str(err))
        return None, None
    gap = slice_gaps(path, files)
    if gap:
        problems.append(gap)
    shape0 = None
    complete = True
    for f in files:
        try:
            sl = read_slice(f, role)
        except DataFormatError as err:
            problems.append(str(err))
            complete = False
            continue
        if shape0 is None:
            shape0 = sl.shape
        elif sl.shape != shape0:
            problems.append(f"{f}: slice shape {sl.shape} differs from the stack's {shape0}")
            complete = False
            continue
        if role == "raw" and np.issubdtype(sl.dtype, np.floating) and not np.all(np.isfinite(sl)):
            problems.append(_nonfinite_problem(f, int(sl.size - np.count_nonzero(np.isfinite(sl)))))
        if visit is not None:
            visit(sl[None])
    if shape0 is None:
        return None, None
    shape = (len(files), *shape0)
    if not complete:
        return shape, None
    return shape, TiffStackVolume(path, role, cache_slices=8, check_numbering=False)


def check_bbox(source: BBoxSource, label_map: LabelMap | None) -> BBoxSummary:
    """Check one bbox's files and sheet; every problem goes into the summary."""
    summary = BBoxSummary(name=source.name)
    problems = summary.problems
    problems.extend(source.problems())
    if label_map is None:
        problems.append(f"{source.root}: no label map for {source.name} (add it to the label_maps config)")

    found: set[int] = set()
    cleft_values = label_map.cleft_values if label_map is not None else ()

    def count_labels(slab: np.ndarray) -> None:
        found.update(label_values(slab))
        if label_map is not None:
            summary.cleft_voxels += int(np.count_nonzero(np.isin(slab, cleft_values)))

    summary.cleft_voxels = 0 if label_map is not None else None
    shapes: dict[str, tuple[int, ...] | None] = {}
    vols: dict[str, Any] = {}
    for role, path, kind in (("raw", source.raw, "raw"), ("seg", source.seg, "label"), ("mask", source.mask, "label")):
        if path.exists():
            shapes[role], vols[role] = _stack_info(path, kind, problems, count_labels if role == "mask" else None)
        else:
            shapes[role], vols[role] = None, None
    raw_shape = shapes.get("raw")
    if vols.get("raw") is not None:
        summary.dtype = str(vols["raw"].dtype)
    summary.shape = raw_shape
    for role, path in (("seg", source.seg), ("mask", source.mask)):
        s = shapes.get(role)
        if raw_shape is not None and s is not None and s != raw_shape:
            what = "slice count" if s[0] != raw_shape[0] else "slice shape"
            problems.append(
                f"{path}: {what} mismatch: {role} is {s} (slices, y, x) but raw {source.raw} is {raw_shape}"
            )

    mask = vols.get("mask")
    if mask is None:
        summary.cleft_voxels = None  # unknown: the mask could not be read whole
    else:
        summary.label_values = sorted(found)
        if label_map is not None:
            if summary.cleft_voxels == 0:
                problems.append(
                    f"{source.mask}: no cleft voxels (label values {label_map.cleft_values} of the label map "
                    f"for {source.name}; found values {summary.label_values})"
                )

    if source.sheet.is_file():
        try:
            sheet = read_synapse_sheet(source.sheet)
        except DataFormatError as err:
            problems.append(str(err))
            sheet = None
        if sheet is not None:
            summary.synapses = len(sheet)
            if not len(sheet):
                summary.warnings.append(
                    f"{source.sheet}: the sheet lists no synapse (a header and no rows); {source.name} adds no "
                    "pre-synaptic channel, and mask-aware sampling and inference will refuse it"
                )
            seg = vols.get("seg")
            shape = raw_shape or shapes.get("seg")
            rows = [row for _, row in sheet.iterrows()]
            # the side points' seg ids, looked up in z order so that a TIFF segmentation decodes each slice once
            sides = {sheet_point(row, prefix) for row in rows for prefix in ("side_1", "side_2")}
            seg_shape = seg.shape if seg is not None else ()
            inside = sorted(p for p in sides if seg is not None and all(0 <= c < s for c, s in zip(p, seg_shape)))
            seg_at = {p: int(seg[p]) for p in inside}
            for row in rows:
                for prefix in ("central", "side_1", "side_2"):
                    p = sheet_point(row, prefix)
                    if shape is not None and not all(0 <= c < s for c, s in zip(p, shape)):
                        problems.append(
                            f"{source.sheet}: synapse {row['Var1']!r}: {prefix} point (x, y, z) = "
                            f"{p[::-1]} lies outside the volume (x, y, z) = {tuple(shape[::-1])}"
                        )
                    elif prefix != "central" and seg is not None and seg_at.get(p) == 0:
                        problems.append(
                            f"{source.sheet}: synapse {row['Var1']!r}: {prefix} point (x, y, z) = {p[::-1]} "
                            f"lies on background (seg id 0) in {source.seg}"
                        )
    return summary


def check_dataset(root: str | Path, label_maps: dict | None = None) -> CheckReport:
    """Validate a dataset root.

    Args:
        root: the dataset root.
        label_maps: label-map overrides merged into the default table.

    Returns:
        A :class:`CheckReport`; ``report.ok`` is False when any problem was found.
    """
    root = Path(root)
    report = CheckReport(root=root)
    try:
        sources = find_bboxes(root, strict=False)
    except DataFormatError as err:
        report.problems.append(str(err))
        return report
    try:
        table = resolve_label_maps(label_maps, root)
    except DataError as err:  # a bad label_maps.json in the root
        report.problems.append(str(err))
        return report
    from tqdm.auto import tqdm

    for source in tqdm(sources, desc="checking bboxes", unit="bbox", disable=None):
        try:
            lm = label_map_for(source.number, table)
        except KeyError:
            lm = None
        summary = check_bbox(source, lm)
        report.bboxes.append(summary)
        report.problems.extend(summary.problems)
        report.warnings.extend(summary.warnings)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m synclr_monai check DIR [--label-maps FILE]``: print the summary; exit 2 on problems."""
    parser = argparse.ArgumentParser(prog="python -m synclr_monai check", description=__doc__)
    parser.add_argument(
        "root", type=Path, help="dataset root (holding raw/, seg/, bbox_N/ and bboxN.xlsx/.csv/.parquet)"
    )
    parser.add_argument(
        "--label-maps", type=Path, default=None, help="YAML/JSON file {bbox_number: {mito, vesicle, cleft, cleft2}}"
    )
    parser.add_argument("--debug", action="store_true", help="print full tracebacks (also SYNCLR_DEBUG=1)")
    args = parser.parse_args(argv)
    overrides = None
    try:
        if args.label_maps is not None:
            import yaml

            if not args.label_maps.is_file():
                raise DataFormatError(f"{args.label_maps}: label-map file does not exist")
            overrides = yaml.safe_load(args.label_maps.read_text())
        report = check_dataset(args.root, overrides)
    except UserError as err:
        report_user_error(err, debug=args.debug)
        return EXIT_USER_ERROR
    print(report.format())
    return 0 if report.ok else EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
