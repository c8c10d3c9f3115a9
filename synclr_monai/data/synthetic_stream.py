"""Streaming synthetic bboxes: generated and written to Zarr slab by slab, never whole in memory.

:func:`~synclr_monai.data.synthetic.generate_bbox` builds a bbox in memory (several GB at 640³, a few µs a
voxel). :func:`generate_bbox_stream` (``synth --format zarr --stream``) draws the same kind of tissue, with the
same layout, label semantics, sheet and ground truth, but generates and writes it in slabs of z planes:

- **Slabs.** The cuts between slabs are chosen so that no synapse's drawing window crosses one (each synapse is
  drawn whole, in its own small window, then pasted into its slab); slabs are about ``slab`` planes thick.
- **Whole-volume fields made local.** The neuropil partition, its warp and the illumination field are functions
  of the voxel position evaluated per slab (:mod:`~synclr_monai.data.synthetic_stream_fields`); cell walls are
  found with one plane of the neighbouring slabs; mitochondria of the background cells are placed inside a slab.
- **Imaging.** The grain, blur, tone curve and noise of :func:`~synclr_monai.data.synthetic_imaging.image_volume`
  are applied to a rolling window of planes with the Gaussian filters' halo from the neighbouring slabs, so the
  blur is exactly the whole-volume blur (the fine grain is the grain filtered once with the combined sigma).

Peak memory is bounded by a slab and its halo, not by the bbox: about 1 GB for 640 x 640 planes (the tissue of
a slab, the imaging window and the Zarr chunks being written). Pixels differ from the in-memory generator's for
the same seed (the random streams are used differently); the default TIFF path is unchanged.

Limits: isotropic voxels only, and no injected defects (both need the whole volume), Zarr output only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from .label_maps import LabelMap
from .synthetic_geometry import label_boundaries, mito_structure, plan_regions
from .synthetic_imaging import GRAIN_STD, Staining, draw_staining
from .synthetic_stream_fields import SlabField, SlabNeuropil
from .synthetic_synapse import (
    CRISTAE_VALUE,
    MITO_MATRIX_VALUE,
    MITO_MEMBRANE_VALUE,
    REFERENCE_SCALE,
    Synapse,
    build_cells,
    draw_synapse,
    sample_synapse,
)

__all__ = ["generate_bbox_stream", "DEFAULT_SLAB", "plan_slabs"]

logger = logging.getLogger(__name__)

#: Target slab thickness in planes (also the Zarr chunk edge, so slabs are written chunk-aligned).
DEFAULT_SLAB = 64
_BITS = {"mito": 1, "vesicle": 2, "cleft": 4, "cleft2_half": 8}
_ERODE_18 = ndimage.generate_binary_structure(3, 2)


# ----------------------------------------------------------------------------------------------
# slabs


def plan_slabs(depth: int, windows: Sequence[tuple[int, int]], slab: int = DEFAULT_SLAB) -> list[tuple[int, int]]:
    """Cut ``[0, depth)`` into slabs of about ``slab`` planes, never inside a window ``[start, stop)``.

    Args:
        depth: number of z planes.
        windows: ``(start, stop)`` z ranges that must each lie inside one slab.
        slab: target thickness.

    Returns:
        Consecutive ``(z0, z1)`` covering ``[0, depth)``.
    """
    blocked = np.zeros(depth + 1, bool)  # blocked[z]: a cut at z would split a window
    for start, stop in windows:
        blocked[start + 1 : stop] = True
    cuts, z0 = [], 0
    while z0 < depth:
        target = min(depth, z0 + max(1, int(slab)))
        z1 = target
        if z1 < depth and blocked[z1]:
            below = [z for z in range(z1 - 1, z0, -1) if not blocked[z]]
            above = [z for z in range(z1 + 1, depth) if not blocked[z]]
            z1 = below[0] if below and below[0] - z0 >= max(1, slab // 4) else (above[0] if above else depth)
        cuts.append((z0, z1))
        z0 = z1
    return cuts


class _Window:
    """A local array standing in for a whole volume indexed by one window (``vol[window]`` is the array)."""

    def __init__(self, array: np.ndarray, window: tuple[slice, slice, slice]) -> None:
        self.array, self.window = array, window

    def __getitem__(self, key):
        if key != self.window:
            raise IndexError(f"only the window {self.window} is held, got {key}")
        return self.array

    def __setitem__(self, key, value) -> None:
        if key != self.window:
            raise IndexError(f"only the window {self.window} is held, got {key}")
        if value is not self.array:
            self.array[...] = value


class _Patch:
    """What one synapse drew, window-local: cell codes (1 post, 2 pre), raw values (NaN: untouched), label bits."""

    def __init__(self, syn: Synapse, raw: np.ndarray, labels: dict[str, np.ndarray]) -> None:
        self.window = syn.window
        self.cells = np.zeros(syn.pre_mask.shape, np.uint8)
        self.cells[syn.post_mask] = 1
        self.cells[syn.pre_mask] = 2
        self.pre_id, self.post_id = syn.pre_id, syn.post_id
        self.raw = raw
        self.bits = np.zeros(raw.shape, np.uint8)
        for key, bit in _BITS.items():
            self.bits[labels[key]] |= bit
        syn.pre_mask = syn.post_mask = None  # the patch holds them now

    def local(self, z0: int) -> tuple[slice, slice, slice]:
        """The window relative to a slab starting at plane ``z0``."""
        zs = self.window[0]
        return (slice(zs.start - z0, zs.stop - z0), self.window[1], self.window[2])


def _draw(syn: Synapse, rng: np.random.Generator) -> _Patch:
    """Build the synapse's cells and ultrastructure in its own window."""
    build_cells(syn, rng)
    shape = syn.pre_mask.shape
    raw = np.full(shape, np.nan, np.float32)
    labels = {k: np.zeros(shape, bool) for k in _BITS}
    windows = {k: _Window(v, syn.window) for k, v in labels.items()}
    draw_synapse(syn, _Window(raw, syn.window), windows, rng)  # type: ignore[arg-type]
    return _Patch(syn, raw, labels)


# ----------------------------------------------------------------------------------------------
# writing


class _ZarrWriter:
    """Appends z planes to a new Zarr array, writing whole chunk rows (``chunk`` planes) at a time."""

    def __init__(self, path: Path, shape: tuple[int, int, int], dtype, chunk: int = DEFAULT_SLAB) -> None:
        import zarr

        path.parent.mkdir(parents=True, exist_ok=True)
        self.chunk = min(int(chunk), shape[0])
        chunks = tuple(min(int(chunk), int(s)) for s in shape)
        self.array = zarr.open_array(store=str(path), mode="w-", shape=shape, chunks=chunks, dtype=dtype)
        self.pending: list[np.ndarray] = []
        self.z = 0  # planes written

    def push(self, planes: np.ndarray) -> None:
        self.pending.append(planes)
        held = sum(len(p) for p in self.pending)
        if held >= self.chunk:
            self._flush(held - held % self.chunk)

    def _flush(self, n: int) -> None:
        data = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.array[self.z : self.z + n] = data[:n]
        self.z += n
        self.pending = [data[n:]] if n < len(data) else []

    def close(self) -> None:
        held = sum(len(p) for p in self.pending)
        if held:
            self._flush(held)
        if self.z != self.array.shape[0]:
            raise RuntimeError(f"{self.array}: wrote {self.z} of {self.array.shape[0]} planes")


class _Imager:
    """The imaging of :func:`~.synthetic_imaging.image_volume` on a rolling window of planes.

    Tissue planes (float32 gray levels) come in slab by slab; planes go out as uint8 once the Gaussian filters'
    halo beyond them is held, so the blur equals the whole-volume blur.
    """

    def __init__(
        self, shape: tuple[int, int, int], staining: Staining, illumination: SlabField, rng: np.random.Generator,
        out: Callable[[np.ndarray], None],
    ) -> None:  # fmt: skip
        self.depth = shape[0]
        self.staining, self.illumination, self.rng, self.out = staining, illumination, rng, out
        self.sigma_blur = float(staining.blur_sigma)
        self.sigma_grain = math.sqrt(1.0 + self.sigma_blur**2)  # grain (sigma 1) then blurred
        self.halo = int(4.0 * self.sigma_grain + 0.5)  # gaussian_filter's radius at truncate 4
        # std of white noise after the sigma-1 grain filter (what image_volume divides the grain by)
        w = ndimage.gaussian_filter1d(np.eye(1, 9, 4, dtype=np.float64)[0], 1.0)
        self.grain_gain = np.float32(GRAIN_STD / float(np.sqrt(np.sum(w**2)) ** 3))
        self.tissue: np.ndarray | None = None
        self.noise: np.ndarray | None = None
        self.first = 0  # plane index of the buffer's first plane
        self.emitted = 0  # planes sent out

    def push(self, z0: int, tissue: np.ndarray) -> None:
        tissue = tissue + np.float32(self.staining.illumination) * self.illumination.slab(z0, z0 + len(tissue))
        noise = self.rng.standard_normal(tissue.shape, dtype=np.float32)
        if self.tissue is None:
            self.tissue, self.noise, self.first = tissue, noise, z0
        else:
            self.tissue = np.concatenate([self.tissue, tissue])
            self.noise = np.concatenate([self.noise, noise])
        end = self.first + len(self.tissue)
        ready = self.depth if end == self.depth else end - self.halo
        if ready > self.emitted:
            self._emit(ready)

    def _emit(self, stop: int) -> None:
        lo = self.emitted - self.first  # buffer index of the first plane to emit
        a = max(0, lo - self.halo)
        b = min(len(self.tissue), stop - self.first + self.halo)
        img = self.tissue[a:b].copy()
        if self.sigma_blur > 0:
            img = ndimage.gaussian_filter(img, self.sigma_blur)
        img += self.grain_gain * ndimage.gaussian_filter(self.noise[a:b], self.sigma_grain)
        img = img[lo - a : stop - self.first - a]
        img = self.staining.tone(img)
        img += np.float32(self.staining.noise_std) * self.rng.standard_normal(img.shape, dtype=np.float32)
        self.out(np.clip(np.rint(img), 0, 255).astype(np.uint8))
        self.emitted = stop
        keep = max(0, stop - self.halo - self.first)  # planes still needed as halo
        self.tissue, self.noise = self.tissue[keep:].copy(), self.noise[keep:].copy()
        self.first += keep


# ----------------------------------------------------------------------------------------------
# neuropil mitochondria


def _neuropil_mito_plan(shape, slabs, scale, rng) -> list[list[tuple]]:
    """Mitochondria of the background cells, per slab: ``(centre, axis, half_length, radius, seed)``.

    Drawn as :func:`~.synthetic._neuropil_mitochondria` draws them (one per 40000 voxels on average), with
    each capsule moved along z, if needed, to lie inside one slab.
    """
    shape_a = np.asarray(shape, float)
    count = rng.poisson(float(np.prod(shape)) / 40000.0)
    base = float(np.clip(0.13 * scale, 2.2, 5.0))
    starts = np.array([z0 for z0, _ in slabs])
    per_slab: list[list[tuple]] = [[] for _ in slabs]
    for _ in range(count):
        centre = rng.uniform(0, 1, 3) * (shape_a - 1)
        radius = base * rng.uniform(0.8, 1.2)
        half_length = radius * rng.uniform(1.2, 3.0)
        axis = rng.standard_normal(3)
        seed = int(rng.integers(2**63))
        ez = abs(axis[0]) / max(np.linalg.norm(axis), 1e-12) * half_length + radius + 1.0
        k = int(np.searchsorted(starts, centre[0], side="right")) - 1
        z0, z1 = slabs[k]
        lo, hi = z0 + ez if z0 > 0 else 0.0, z1 - 1 - ez if z1 < shape[0] else shape[0] - 1.0
        if lo > hi:
            continue  # the slab is too thin for this capsule
        centre[0] = min(max(centre[0], lo), hi)
        per_slab[k].append((centre, axis, half_length, radius, seed))
    return per_slab


def _draw_neuropil_mito(seg, raw, bits, z0: int, first_id: int, mito: tuple) -> None:
    """One background mitochondrion into a slab (arrays starting at plane ``z0``), if it fits in its cell."""
    centre, axis, half_length, radius, seed = mito
    rng = np.random.default_rng(seed)
    local = centre - np.array([z0, 0.0, 0.0])
    shape = seg.shape
    cell = int(seg[tuple(np.rint(local).astype(int))])
    if cell < first_id:
        return
    reach = int(np.ceil(half_length + radius + 2))
    win = tuple(slice(max(0, int(c) - reach), min(int(s), int(c) + reach + 1)) for c, s in zip(local, shape))
    body, membrane, cristae = mito_structure(win, local, axis, half_length, radius, rng)
    full = int(body.sum())
    # distance_transform_edt(inside) > 1.5 is the erosion by the 18-neighbourhood (lattice distances 1 and sqrt 2)
    body &= ndimage.binary_erosion(seg[win] == cell, _ERODE_18, border_value=1)
    if body.sum() < 0.6 * full:
        return
    raw_w = raw[win]
    raw_w[body] = MITO_MATRIX_VALUE
    raw_w[body & cristae] = CRISTAE_VALUE
    raw_w[body & (membrane | ~ndimage.binary_erosion(body))] = MITO_MEMBRANE_VALUE
    bits[win][body] |= _BITS["mito"]


# ----------------------------------------------------------------------------------------------
# the bbox


def generate_bbox_stream(
    number: int,
    paths: dict[str, Path],
    shape: tuple[int, int, int],
    synapses_per_bbox: int,
    rng: np.random.Generator,
    types: Sequence[str],
    *,
    label_map: LabelMap,
    stypes: dict,
    strength: float,
    place_centre: Callable,
    synapse_window: Callable,
    border_margin: int,
    cytoplasm_range: tuple[float, float],
    membrane_value: float,
    staining: Staining | None = None,
    slab: int = DEFAULT_SLAB,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Generate one bbox slab by slab, writing its raw, seg and mask Zarr arrays as it goes.

    Called by :func:`~synclr_monai.data.synthetic.generate_dataset` (``stream=True``), which validates the
    arguments and passes its layout helpers (``place_centre``, ``synapse_window``) and constants.

    Args:
        number: bbox number N.
        paths: ``{"raw", "seg", "mask"}`` Zarr stores to create.
        shape: ``(Z, Y, X)`` (isotropic voxels).
        synapses_per_bbox: synapses to place.
        rng: the bbox's random generator.
        types: class name of each synapse.
        label_map: the bbox's label values.
        stypes: the synapse classes at the dataset's difficulty.
        strength: staining strength.
        place_centre, synapse_window: the in-memory generator's layout helpers.
        border_margin, cytoplasm_range, membrane_value: the in-memory generator's constants.
        staining: an explicit profile instead of a drawn one.
        slab: target slab thickness in planes.
        progress: called with the number of planes done after each slab.

    Returns:
        The dict of :func:`~synclr_monai.data.synthetic.generate_bbox` without ``raw``, ``seg`` and ``mask``
        (they are on disk), plus ``slabs`` (the number of slabs).
    """
    count = int(synapses_per_bbox)
    regions, scale = plan_regions(shape, count, rng, border_margin=border_margin)
    if scale < 0.75 * REFERENCE_SCALE:
        logger.warning(
            "bbox %s: %d synapses in %s leave each a scale of %.0f voxels, below the reference %.0f: vesicles and "
            "PSDs are drawn %.1fx smaller than the synapse types define", number, count, shape, scale,
            REFERENCE_SCALE, REFERENCE_SCALE / scale,
        )  # fmt: skip
    neuropil = SlabNeuropil(shape, float(np.clip(0.9 * scale, 10.0, 40.0)), rng)
    first_background = 2 * count + 1
    n_ids = neuropil.n_seeds + first_background
    seg_dtype = np.uint16 if n_ids <= np.iinfo(np.uint16).max else np.uint32
    cell_ids = rng.permutation(2 * count) + 1

    synapses: list[Synapse] = []
    for j, (region, tname) in enumerate(zip(regions, types)):
        centre = place_centre(region, scale, shape, rng)
        syn = sample_synapse(stypes[tname], centre, synapse_window(centre, region, scale), scale, rng)
        syn.pre_id, syn.post_id = int(cell_ids[2 * j]), int(cell_ids[2 * j + 1])
        synapses.append(syn)
    syn_seeds = rng.spawn(count)
    lut = rng.uniform(*cytoplasm_range, size=n_ids + 1).astype(np.float32)
    lut[0] = membrane_value
    pre_sides = [int(rng.integers(1, 3)) for _ in synapses]
    if staining is None:
        staining = draw_staining(rng, strength)
    illumination = SlabField(shape, max(16.0, min(shape) / 2.0), rng)

    slabs = plan_slabs(shape[0], [(s.window[0].start, s.window[0].stop) for s in synapses], slab)
    starts = np.array([z0 for z0, _ in slabs])
    by_slab: list[list[int]] = [[] for _ in slabs]
    for j, syn in enumerate(synapses):
        by_slab[int(np.searchsorted(starts, syn.window[0].start, side="right")) - 1].append(j)
    mitos = _neuropil_mito_plan(shape, slabs, scale, rng)
    wall_rng, image_rng = rng.spawn(2)

    writers = {
        "raw": _ZarrWriter(paths["raw"], shape, np.uint8, slab),
        "seg": _ZarrWriter(paths["seg"], shape, seg_dtype, slab),
        "mask": _ZarrWriter(paths["mask"], shape, np.uint8, slab),
    }
    imager = _Imager(shape, staining, illumination, image_rng, writers["raw"].push)
    patches: dict[int, _Patch] = {}

    def drawn(k: int) -> list[_Patch]:
        for j in by_slab[k]:
            if j not in patches:
                patches[j] = _draw(synapses[j], np.random.default_rng(syn_seeds[j]))
        return [patches[j] for j in by_slab[k]]

    def background(z0: int, z1: int) -> np.ndarray:
        lab = neuropil.slab(z0, z1)
        seg = np.where(lab > 0, lab + (first_background - 1), 0).astype(np.int32)
        return seg

    def paste_cells(seg: np.ndarray, z0: int, items: list[_Patch]) -> None:
        for p in items:
            lo, hi = p.window[0].start - z0, p.window[0].stop - z0
            if hi <= 0 or lo >= len(seg):  # the patch misses these planes
                continue
            a, b = max(lo, 0), min(hi, len(seg))
            w = (slice(a, b), p.window[1], p.window[2])
            cells = p.cells[a - lo : b - lo]
            seg_w = seg[w]
            seg_w[cells == 1] = p.post_id
            seg_w[cells == 2] = p.pre_id

    below: np.ndarray | None = None  # the previous slab's last plane of the final segmentation
    for k, (z0, z1) in enumerate(slabs):
        here = drawn(k)
        # the slab plus one plane on each side (the walls between slabs)
        seg = background(z0, min(shape[0], z1 + 1))
        paste_cells(seg, z0, here)
        if z1 < shape[0]:
            paste_cells(seg, z0, drawn(k + 1))
        ext = seg if below is None else np.concatenate([below, seg])
        walls = label_boundaries(ext)[0 if below is None else 1 :][: z1 - z0]
        seg = seg[: z1 - z0]
        below = seg[-1:].copy()
        raw = lut[seg]
        raw[walls] = np.float32(membrane_value) + wall_rng.normal(0.0, 6.0, int(walls.sum())).astype(np.float32)
        del walls, ext
        bits = np.zeros(seg.shape, np.uint8)
        for p in here:
            w = p.local(z0)
            drawn_here = ~np.isnan(p.raw)
            raw[w][drawn_here] = p.raw[drawn_here]
            bits[w] |= p.bits
        for j in by_slab[k]:
            del patches[j]
        for mito in mitos[k]:
            _draw_neuropil_mito(seg, raw, bits, z0, first_background, mito)
        mask = np.zeros(seg.shape, np.uint8)
        mask[(bits & _BITS["mito"]) > 0] = label_map.mito
        mask[(bits & _BITS["vesicle"]) > 0] = label_map.vesicle
        cleft = (bits & _BITS["cleft"]) > 0
        mask[cleft] = label_map.cleft
        mask[cleft & ((bits & _BITS["cleft2_half"]) > 0)] = label_map.cleft2
        del bits, cleft
        writers["seg"].push(seg.astype(seg_dtype))
        writers["mask"].push(mask)
        del seg, mask
        imager.push(z0, raw)
        del raw
        if progress is not None:
            progress(z1 - z0)
    for w in writers.values():
        w.close()

    rows, info = [], []
    for j, (syn, pre_side) in enumerate(zip(synapses, pre_sides)):
        var1 = f"{'spine' if syn.post_kind == 'spine' else 'non_spine'}_synapse_{j + 1:03d}"
        side_1, side_2 = (syn.pre_point, syn.post_point) if pre_side == 1 else (syn.post_point, syn.pre_point)
        rows.append([var1, *syn.centre[::-1].tolist(), *side_1[::-1].tolist(), *side_2[::-1].tolist()])
        info.append(
            [var1, syn.stype.name, pre_side, syn.pre_id, syn.post_id, syn.n_vesicles]
            + [syn.post_kind, syn.mito_near_cleft]
        )
    return {
        "name": f"bbox{number}",
        "number": int(number),
        "label_map": label_map,
        "rows": rows,
        "info": info,
        "staining": staining,
        "synapse_types": stypes,
        "slabs": len(slabs),
    }
