"""Segmentation defects injected into generated synthetic bboxes (``synth --defects FRACTION``).

A lab's annotations carry errors: a cleft that was never painted, a pre-synaptic segment merged with
the neighbouring cell, a mask drawn a few voxels off, a synapse cut by the bbox edge. The synthetic
generator can plant such errors on a known set of synapses so that an outlier detector can be scored
against ground truth (``defect`` column of ``synapse_types.csv``).

Each defect edits the arrays of one generated bbox (the dict of
:func:`synclr_monai.data.synthetic.generate_bbox`) around one synapse, in place:

- ``missing_cleft``: the synapse's cleft component is removed from the semantic masks (the EM still
  shows the cleft);
- ``merged_pre``: the background cell that shares the most wall with the pre-synaptic cell is given
  the pre-synaptic cell's seg id, so the pre-synaptic channel swallows a foreign cell;
- ``shifted_mask``: the synapse's cleft component is moved by a few voxels off the real cleft;
- ``truncated``: everything beyond a plane through the synapse (perpendicular to the cleft) is blanked
  as if the bbox ended there: raw set to the bbox's mean grey (which z-scores to the zero padding
  used past a real border), seg and masks to 0.

The defects draw from their own random stream, so a dataset with defects is the dataset without
them plus the listed edits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["DEFECT_KINDS", "NO_DEFECT", "choose_defects", "inject_defect"]

DEFECT_KINDS: tuple[str, ...] = ("missing_cleft", "merged_pre", "shifted_mask", "truncated")
#: the ``defect`` value of an intact synapse
NO_DEFECT = "none"


def choose_defects(n_synapses: int, fraction: float, rng: np.random.Generator) -> list[str]:
    """Which synapses (in dataset order) get which defect.

    Args:
        n_synapses: synapses in the dataset.
        fraction: share of synapses to corrupt, in [0, 1]; the count is rounded, and at least one
            synapse is corrupted for any fraction > 0.
        rng: the defects' random stream.

    Returns:
        One entry per synapse: a name from :data:`DEFECT_KINDS` or :data:`NO_DEFECT`. The kinds cycle,
        so every kind occurs once at least four synapses are corrupted.

    Raises:
        ValueError: if ``fraction`` is outside [0, 1].
    """
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"defects fraction must be in [0, 1], got {fraction!r}")
    count = int(round(fraction * n_synapses))
    if fraction > 0:
        count = max(1, count)
    out = [NO_DEFECT] * n_synapses
    offset = int(rng.integers(len(DEFECT_KINDS)))
    for j, index in enumerate(sorted(rng.choice(n_synapses, size=count, replace=False).tolist())):
        out[index] = DEFECT_KINDS[(offset + j) % len(DEFECT_KINDS)]
    return out


def _zyx(row, prefix: str) -> np.ndarray:
    """A sheet point as ``(z, y, x)`` (sheets store ``x, y, z``)."""
    return np.array([int(row[f"{prefix}_coord_{i}"]) for i in (3, 2, 1)])


def _cleft_component(mask: np.ndarray, cleft_values: Sequence[int], centre: np.ndarray) -> np.ndarray:
    """The cleft component of the synapse at ``centre`` (the one nearest it; synapses do not share one)."""
    cleft = np.isin(mask, list(cleft_values))
    labels, n = ndimage.label(cleft)
    if n == 0:
        return np.zeros_like(cleft)
    coords = np.argwhere(labels > 0)
    nearest = coords[np.argmin(((coords - centre) ** 2).sum(axis=1))]
    return labels == labels[tuple(nearest)]


def _neighbour_cell(seg: np.ndarray, cell: int, exclude: set[int]) -> int:
    """The seg id sharing the most wall with ``cell`` (ignoring background 0 and ``exclude``)."""
    body = seg == cell
    shell = ndimage.binary_dilation(body, iterations=2) & ~body
    ids, counts = np.unique(seg[shell], return_counts=True)
    keep = [(c, i) for i, c in zip(ids.tolist(), counts.tolist()) if i != 0 and i not in exclude]
    if not keep:
        raise ValueError(f"cell {cell} has no neighbouring cell to merge with")
    return max(keep)[1]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def inject_defect(bbox: dict, index: int, kind: str, rng: np.random.Generator) -> None:
    """Plant one defect at synapse ``index`` of a generated bbox (its arrays are edited in place).

    Args:
        bbox: the dict of ``generate_bbox`` (``raw``, ``seg``, ``mask``, ``sheet``, ``label_map``,
            ``pre_ids``, ``post_ids``).
        index: the synapse's row in ``bbox["sheet"]``.
        kind: a name from :data:`DEFECT_KINDS`.
        rng: the defects' random stream.

    Raises:
        ValueError: for an unknown ``kind``.
    """
    if kind not in DEFECT_KINDS:
        raise ValueError(f"unknown defect {kind!r}; choose from {DEFECT_KINDS}")
    raw, seg, mask = bbox["raw"], bbox["seg"], bbox["mask"]
    row = bbox["sheet"].iloc[index]
    centre = _zyx(row, "central")
    label_map = bbox["label_map"]
    cleft_values = sorted({label_map.cleft, label_map.cleft2})
    pre_id, post_id = int(bbox["pre_ids"][index]), int(bbox["post_ids"][index])

    if kind == "missing_cleft":
        mask[_cleft_component(mask, cleft_values, centre)] = 0
    elif kind == "shifted_mask":
        component = _cleft_component(mask, cleft_values, centre)
        values = mask[component]
        coords = np.argwhere(component)
        # off by about the cleft's own radius (at least 4 voxels), so the mask no longer covers the cleft
        radius = float(np.sqrt(((coords - coords.mean(axis=0)) ** 2).sum(axis=1).max())) if len(coords) else 4.0
        shift = np.rint(_unit(rng.standard_normal(3)) * max(4.0, radius)).astype(int)
        moved = np.clip(coords + shift, 0, np.asarray(mask.shape) - 1)
        mask[component] = 0
        mask[tuple(moved.T)] = values
    elif kind == "merged_pre":
        # the other synapses' cells keep their ids: merging two synapses would change two at once
        synapse_cells = set(int(i) for i in bbox["pre_ids"]) | set(int(i) for i in bbox["post_ids"])
        neighbour = _neighbour_cell(seg, pre_id, synapse_cells)
        seg[seg == neighbour] = pre_id
    else:  # truncated
        points = [_zyx(row, p) for p in ("side_1", "side_2")]
        axis = _unit((points[0] - points[1]).astype(float))
        # a direction in the cleft plane, so both side points stay inside what is left
        direction = _unit(np.cross(axis, _unit(rng.standard_normal(3))))
        cells = np.isin(seg, [pre_id, post_id])
        lo = np.maximum(np.argwhere(cells).min(axis=0) - 8, 0)
        hi = np.minimum(np.argwhere(cells).max(axis=0) + 9, seg.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), axis=-1)
        depth = (grid - centre) @ direction
        offset = float(rng.uniform(2.0, 4.0))  # the cut passes just beside the cleft centre
        side_depths = [float((p - centre) @ direction) for p in points]
        offset = max(offset, *(d + 1.0 for d in side_depths))
        gone = depth > offset
        raw[box][gone] = np.uint8(np.clip(np.rint(raw.mean()), 0, 255))
        seg[box][gone] = 0
        mask[box][gone] = 0
