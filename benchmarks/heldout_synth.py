"""A held-out synthetic dataset: 3-D EM synapse volumes from a second, independent generator.

``synclr_monai.data.synthetic`` makes the data that the defaults (views, input mode, optimisation) were
chosen on, so a good score there may only say that the defaults fit that generator. This generator was
written from DESIGN.md's description of the lab's on-disk format alone, without reading the package's
generator, so that ``benchmarks/representation.py --data DIR`` can check on data the defaults were never
tuned on. Keep it independent: do not import from, or copy from, ``synclr_monai.data.synthetic``.

What it writes (the lab's layout, DESIGN.md "The real data, exactly as the lab stores it"), in ``--out``:

- ``raw/bboxN/slice_001.tif ...`` uint8 EM, ``seg/bboxN/...`` uint16 instance ids, ``bbox_N/...`` uint8
  semantic masks with the label values of DESIGN.md's table (mito, vesicle cloud, cleft, cleft2), and
  ``bboxN.xlsx`` (``Var1``, ``central_coord_1..3``, ``side_1_coord_1..3``, ``side_2_coord_1..3`` in
  ``(x, y, z)``; the pre-synaptic side is side 1 or side 2 at random);
- ``synapse_types.csv`` (``bbox_name,Var1,type``): the ground-truth class of each synapse.

Model (isotropic 14 nm voxels, ``VOXEL_NM``):

- neuropil: a generalised Voronoi partition of random-walk "neurite" polylines (and a few blob seeds),
  warped by a smooth displacement field, so that cells are tube-like and share boundaries;
- each synapse: a pre-synaptic bouton (truncated ball + thin axon) apposed across a flat contact disc to a
  post-synaptic spine head (ball + neck + dendritic shaft) or a dendritic shaft (truncated cylinder), the
  whole assembly in a random 3-D orientation;
- raw: dark membranes, textured cytoplasm, the cleft (two membranes and a light gap), PSD, vesicles,
  dense-core vesicles, mitochondria (double membrane, matrix, cristae), PSF blur, Poisson + Gaussian
  noise, per-bbox staining.

Four types, each differing from the common base in one attribute (equal counts per bbox):

- ``perforated``: the cleft / PSD disc has 1-2 holes (perforations), the disc as large as the base's;
- ``dense_core``: vesicle density cut to ~40 % and 3-5 dense-core vesicles added;
- ``thick_psd``: the PSD ~5 voxels (70 nm) thick and darker instead of ~2 voxels (28 nm);
- ``mito_bouton``: a mitochondrion in the bouton beside the vesicle cloud.

After writing, the files are read back and checked (shapes, points inside the volume and on two different
segments, a cleft near each centre, the vesicle rule of DESIGN.md finding the true pre-synaptic side, the
type table); ``--no-verify`` skips that. The output is a pure function of the arguments and the seed (byte for
byte, but for the write time in the xlsx files' metadata).

Usage::

    python benchmarks/heldout_synth.py --out DIR --seed S [--bboxes 4] [--synapses-per-bbox 12] \\
        [--shape Z Y X] [--overwrite] [--no-verify]
    python benchmarks/representation.py --data DIR ...
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi

VOXEL_NM = 14.0
#: bbox number -> (mito, vesicle, cleft, cleft2) label values, DESIGN.md's table. Cycled for bbox > 7, which
#: DESIGN.md does not define: the package's reader then needs a label_maps.json in the dataset root.
LABEL_MAP = {1: (5, 6, 7, 7), 2: (1, 3, 2, 4), 3: (6, 7, 9, 8), 4: (3, 2, 1, 4),
             5: (1, 3, 2, 4), 6: (5, 6, 7, 7), 7: (1, 2, 4, 3)}  # fmt: skip
TYPES = ["perforated", "dense_core", "thick_psd", "mito_bouton"]
BORDER = 24  # min distance of a cleft centre from the volume border (a 32³ cube around it stays inside)
MIN_SEP = 32  # min Chebyshev distance between cleft centres (their 32³ cubes do not overlap)
#: top-level entries of a dataset this script writes: what --overwrite may remove
_OWN_ENTRY = re.compile(r"^(raw|seg|bbox_\d+|bbox\d+\.xlsx|synapse_types\.csv)$")
#: entries a user may add to the dataset (label maps for bbox > 7): --overwrite keeps them
_KEPT_ENTRIES = {"label_maps.json"}

Synapse = dict[str, Any]
Grid = tuple[np.ndarray, np.ndarray, np.ndarray]


def labels_for(bn: int) -> tuple[int, int, int, int]:
    """The ``(mito, vesicle, cleft, cleft2)`` label values of bbox ``bn`` (1-based; cycles after 7)."""
    return LABEL_MAP[(bn - 1) % 7 + 1]


# ----------------------------------------------------------------------------- geometry helpers
def sigmoid(x: np.ndarray) -> np.ndarray:
    # clipped so that exp never overflows (float32 warnings) far from the edge
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def rand_unit(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random unit 3-vector."""
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def rand_rot(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation (a random unit quaternion); its columns are an orthonormal frame."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])  # fmt: skip


def perp_unit(rng: np.random.Generator, n: np.ndarray) -> np.ndarray:
    """A random unit vector perpendicular to the unit vector ``n``."""
    v = rng.normal(size=3)
    v -= v.dot(n) * n
    return v / np.linalg.norm(v)


def box(center: Sequence[float], half: float, shape: Sequence[int]) -> tuple[tuple[slice, ...] | None, Grid | None]:
    """The part of the volume within ``half`` voxels of ``center``, and its coordinates.

    Everything is painted through such boxes so that a shape costs its own size, not the volume's.

    Args:
        center: ``(z, y, x)``, voxels.
        half: half-size of the box, voxels.
        shape: the volume's shape.

    Returns:
        ``(slices, grid)``: the box's slices into the volume and open float32 grids ``(z, y, x)`` of absolute
        voxel coordinates that broadcast to the box; ``(None, None)`` when the box misses the volume.
    """
    c = np.asarray(center, float)
    lo = np.maximum(np.floor(c - half).astype(int), 0)
    hi = np.minimum(np.ceil(c + half).astype(int) + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return None, None
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    g = (np.arange(lo[0], hi[0], dtype=np.float32)[:, None, None],
         np.arange(lo[1], hi[1], dtype=np.float32)[None, :, None],
         np.arange(lo[2], hi[2], dtype=np.float32)[None, None, :])  # fmt: skip
    return sl, g


def rel(g: Grid, p: Sequence[float]) -> Grid:
    """The grid ``g`` relative to the point ``p`` (float32, still open grids)."""
    return (g[0] - np.float32(p[0]), g[1] - np.float32(p[1]), g[2] - np.float32(p[2]))


def dot(o: Grid, v: Sequence[float]) -> np.ndarray:
    """The dot product of the offsets ``o`` with the vector ``v``, in float32."""
    return o[0] * np.float32(v[0]) + o[1] * np.float32(v[1]) + o[2] * np.float32(v[2])


def random_walk(
    rng: np.random.Generator, start: Sequence[float], direction: Sequence[float], step: float, length: float,
    sigma: float = 0.08,
) -> list[np.ndarray]:
    """A polyline of ``int(length / step)`` steps whose direction drifts by ``sigma`` per step.

    Returns:
        The ``int(length / step) + 1`` vertices, ``start`` first.
    """
    pts = [np.asarray(start, float)]
    d = np.asarray(direction, float)
    for _ in range(int(length / step)):
        d = d + sigma * rng.normal(size=3)
        d /= np.linalg.norm(d)
        pts.append(pts[-1] + step * d)
    return pts


def inside_vol(p: Sequence[int], shape: Sequence[int], margin: int = 0) -> bool:
    """Whether the voxel ``p`` lies at least ``margin`` voxels inside the volume."""
    return all(margin <= p[i] <= shape[i] - 1 - margin for i in range(3))


# ----------------------------------------------------------------------------- painting
def plane_clip(s: Synapse, sign: int, margin: float, near: float = 36.0) -> Callable[[Grid], np.ndarray]:
    """A clip that keeps one side of synapse ``s``'s contact plane.

    The pre-synaptic neurite must not cross the contact plane into the post-synaptic one (and vice
    versa), but only near the synapse: far away the same neurite may wander anywhere.

    Args:
        s: the synapse (its centre ``c`` and normal ``n``, which points from post to pre).
        sign: +1 keeps the pre-synaptic side, -1 the post-synaptic side.
        margin: the kept side starts this many voxels from the plane.
        near: the clip applies only within this distance of the centre.

    Returns:
        ``f(grid) -> bool mask`` of the voxels that may be painted.
    """
    c, n = s["c"], s["n"]

    def f(g: Grid) -> np.ndarray:
        o = rel(g, c)
        d = dot(o, n)
        far = (o[0] ** 2 + o[1] ** 2 + o[2] ** 2) > near * near
        return (sign * d >= margin) | far

    return f


def paint_capsule(
    lab: np.ndarray, a: Sequence[float], b: Sequence[float], r: float, val: int,
    clip: Callable[[Grid], np.ndarray] | None = None,
) -> None:
    """Set the voxels within ``r`` of the segment ``a``-``b`` (and allowed by ``clip``) to ``val``."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    mid = 0.5 * (a + b)
    sl, g = box(mid, 0.5 * np.linalg.norm(b - a) + r + 1, lab.shape)
    if sl is None:
        return
    ab = b - a
    L2 = max(ab.dot(ab), 1e-9)
    o = rel(g, a)
    t = np.clip(dot(o, ab) / np.float32(L2), 0, 1)
    dz, dy, dx = o[0] - t * ab[0], o[1] - t * ab[1], o[2] - t * ab[2]
    m = dz * dz + dy * dy + dx * dx <= r * r
    if clip is not None:
        m &= clip(g)
    lab[sl][m] = val


def paint_polyline(
    lab: np.ndarray, pts: Sequence[np.ndarray], r: float, val: int, clip: Callable[[Grid], np.ndarray] | None = None
) -> None:
    """Paint a tube of radius ``r`` along the polyline ``pts`` (one capsule per segment)."""
    for a, b in itertools.pairwise(pts):
        paint_capsule(lab, a, b, r, val, clip)


def paint_ball(
    lab: np.ndarray, c: Sequence[float], r: float, val: int, clip: Callable[[Grid], np.ndarray] | None = None
) -> None:
    """Set the voxels within ``r`` of ``c`` (and allowed by ``clip``) to ``val``."""
    sl, g = box(c, r + 1, lab.shape)
    if sl is None:
        return
    o = rel(g, c)
    m = o[0] ** 2 + o[1] ** 2 + o[2] ** 2 <= r * r
    if clip is not None:
        m &= clip(g)
    lab[sl][m] = val


# ----------------------------------------------------------------------------- fields
def smooth_field(rng: np.random.Generator, shape: Sequence[int], factor: int, sigma: float) -> np.ndarray:
    """A smooth random field of unit standard deviation (before upsampling) over ``shape``.

    Drawn at ``1 / factor`` of the resolution, blurred by ``sigma`` there and upsampled linearly: cheap, and
    smooth at the scale of ``factor`` voxels.
    """
    lo = tuple(max(3, s // factor) for s in shape)
    f = ndi.gaussian_filter(rng.normal(size=lo).astype(np.float32), sigma)
    f /= f.std() + 1e-6
    f = ndi.zoom(f, [s / n for s, n in zip(shape, lo)], order=1)
    # zoom's rounding may miss the target shape by a voxel: crop / zero-pad to it
    out = np.zeros(shape, np.float32)
    sz = tuple(min(a, b) for a, b in zip(shape, f.shape))
    out[: sz[0], : sz[1], : sz[2]] = f[: sz[0], : sz[1], : sz[2]]
    return out


def background_cells(rng: np.random.Generator, shape: tuple[int, int, int], ids: Iterator[int]) -> np.ndarray:
    """The neuropil's segmentation: a generalised Voronoi of random-walk neurite centre lines, warped.

    Args:
        rng: the bbox's generator.
        shape: ``(Z, Y, X)``.
        ids: the source of fresh cell ids.

    Returns:
        ``[Z, Y, X]`` uint16 cell ids (no background: every voxel belongs to a cell).
    """
    seed = np.zeros(shape, np.uint16)
    vol = float(np.prod(shape))
    n_lines = max(8, int(vol / 100_000))
    n_blobs = max(3, int(vol / 700_000))
    pts_all, val_all = [], []
    for _ in range(n_lines):
        cid = next(ids)
        start = rng.uniform(0, 1, 3) * np.asarray(shape)
        d = rand_unit(rng)
        L = 1.3 * max(shape)
        # a line through the volume in both directions from a random start
        pts = random_walk(rng, start, d, 2.0, L, 0.06)[::-1] + random_walk(rng, start, -d, 2.0, L, 0.06)[1:]
        p = np.array(pts)
        # densify to <= 1 voxel spacing, so that the seed line has no gaps for other cells to leak through
        seg = np.linspace(0, 1, 3, endpoint=False)
        dense = (p[:-1, None, :] + seg[None, :, None] * (p[1:] - p[:-1])[:, None, :]).reshape(-1, 3)
        pts_all.append(dense)
        val_all.append(np.full(len(dense), cid))
    for _ in range(n_blobs):
        pts_all.append(rng.uniform(0, 1, (1, 3)) * np.asarray(shape))
        val_all.append(np.full(1, next(ids)))
    P = np.rint(np.concatenate(pts_all)).astype(int)
    V = np.concatenate(val_all)
    ok = np.all((P >= 0) & (P < np.asarray(shape)), axis=1)
    P, V = P[ok], V[ok]
    seed[P[:, 0], P[:, 1], P[:, 2]] = V
    # every voxel takes the id of its nearest seed voxel
    idx = ndi.distance_transform_edt(seed == 0, return_distances=False, return_indices=True)
    lab = seed[idx[0], idx[1], idx[2]]
    del idx
    # smooth warp so that boundaries are not perfectly planar
    amp = 2.5
    warped = []
    for ax in range(3):
        grid = np.arange(shape[ax], dtype=np.float32).reshape([-1 if i == ax else 1 for i in range(3)])
        coord = np.rint(grid + amp * smooth_field(rng, shape, 8, 1.0))
        warped.append(np.clip(coord, 0, shape[ax] - 1).astype(np.int32))
    zi, yi, xi = warped
    return lab[zi, yi, xi]


# ----------------------------------------------------------------------------- synapse model
def sample_synapse(rng: np.random.Generator, typ: str, shape: Sequence[int]) -> Synapse:
    """Draw one synapse's geometry and type attributes (nothing is painted yet).

    Args:
        rng: the bbox's generator.
        typ: one of ``TYPES``.
        shape: the volume's shape (the centre keeps ``BORDER`` voxels from its faces).

    Returns:
        A dict: centre ``c``, frame ``n`` (post -> pre), ``u``, ``v``; cleft radius ``rcl``, contact radius
        ``rc``; bouton ball ``Cp``, ``Rp``; the post-synaptic spine head (``Cq``, ``Rq``) or shaft (``P``,
        ``Rs``, ``w2``); ``pre_pt`` / ``post_pt`` (the sheet's side points); ``spheres`` (the bodies that
        other synapses must not touch); PSD, perforation, vesicle-cloud, mitochondrion and neurite
        parameters.
    """
    c = np.array([rng.uniform(BORDER, s - BORDER - 1) for s in shape])
    R = rand_rot(rng)
    n, u, v = R[:, 0], R[:, 1], R[:, 2]  # n points from post to pre
    rcl = rng.uniform(9.0, 12.0)  # cleft radius: diameter 18-24 vox = 252-336 nm
    rc = rcl + 1.0  # radius of the flat membrane contact
    Rp = rc + rng.uniform(2.5, 5.0)  # bouton ball
    hp = math.sqrt(Rp**2 - rc**2)  # the ball's centre above the plane, so that it cuts a disc of radius rc
    s = {"type": typ, "c": c, "n": n, "u": u, "v": v, "rcl": rcl, "rc": rc, "Rp": Rp, "hp": hp, "Cp": c + n * hp,
         "spine": bool(rng.random() < 0.5)}  # fmt: skip
    spheres = [(s["Cp"], Rp)]
    if s["spine"]:
        Rq = rc + rng.uniform(2.0, 4.0)
        hq = math.sqrt(Rq**2 - (rc + 1.5) ** 2)
        s.update(Rq=Rq, hq=hq, Cq=c - n * hq)
        spheres.append((s["Cq"], Rq))
        s["post_pt"] = c - n * 0.5 * (hq + Rq)
    else:
        Rs = rc + rng.uniform(1.0, 4.0)
        hs = math.sqrt(Rs**2 - rc**2)
        w2 = math.cos(a := rng.uniform(0, 2 * np.pi)) * u + math.sin(a) * v  # the shaft's axis, in the plane
        P = c - n * hs
        s.update(Rs=Rs, hs=hs, w2=w2, P=P)
        for k in (-16, -8, 0, 8, 16):
            spheres.append((P + k * w2, Rs))
        s["post_pt"] = c - n * 0.5 * (hs + Rs)
    s["pre_pt"] = c + n * 0.5 * (hp + Rp)
    s["spheres"] = spheres
    # active zone / PSD
    if typ == "thick_psd":
        s["psd_t"], s["psd_a"] = rng.uniform(4.5, 5.5), rng.uniform(0.95, 1.05)
    else:
        s["psd_t"], s["psd_a"] = rng.uniform(1.8, 2.4), rng.uniform(0.6, 0.7)
    holes = []
    if typ == "perforated":
        nh = int(rng.integers(1, 3))
        th = rng.uniform(0, 2 * np.pi)
        for k in range(nh):
            hr = rng.uniform(2.0, min(3.2, (rcl - 3.2) / 2))
            rho = rng.uniform(hr + 2.0, rcl - hr - 1.2)  # the hole stays inside the disc
            ang = th + k * (np.pi + rng.uniform(-0.6, 0.6))  # two holes on roughly opposite sides
            holes.append((rho * math.cos(ang), rho * math.sin(ang), hr))
    s["holes"] = holes
    # vesicle cloud (ellipsoid against the active zone, in the bouton)
    s["cloud_D"] = rng.uniform(8.0, 10.0)
    s["cloud_rl"] = rcl * rng.uniform(0.85, 1.0)
    s["ves_frac"] = rng.uniform(0.20, 0.27) * (0.4 if typ == "dense_core" else 1.0)
    s["n_dcv"] = int(rng.integers(3, 6)) if typ == "dense_core" else 0
    ang = rng.uniform(0, 2 * np.pi)
    e_u = math.cos(ang) * u + math.sin(ang) * v
    # the cloud sits a little off-centre on the active zone (all types); in mito_bouton it is
    # pushed away from the mitochondrion, so that the cloud volume stays comparable
    shift = rng.uniform(0.25, 0.35) if typ == "mito_bouton" else rng.uniform(0.0, 0.3)
    s["cloud_shift"] = -e_u * s["cloud_rl"] * shift
    if typ == "mito_bouton":
        bm = rng.uniform(4.3, 5.2)
        a = rng.uniform(7.0, 8.5)
        um = rng.uniform(0.6, 0.7) * rcl
        e_v = np.cross(n, e_u)
        # long axis parallel to the contact, just above the cloud's base, on the side away from the cloud
        s["mito"] = {"center": c + n * (2.3 + bm + 0.8) + e_u * um, "axes": np.stack([e_v, n, e_u], axis=1),
                     "semi": (a, bm, bm * rng.uniform(0.9, 1.1))}  # fmt: skip
    # neurite extensions
    s["ax_r"] = rng.uniform(2.2, 3.2)
    s["ax_dir"] = perp_unit(rng, n)
    if s["spine"]:
        n2 = n + 0.35 * rng.normal(size=3)
        n2 /= np.linalg.norm(n2)
        s["neck_r"] = rng.uniform(1.6, 2.2)
        s["neck_end"] = s["Cq"] - n2 * (s["Rq"] + rng.uniform(8, 14))
        s["shaft_r"] = rng.uniform(6.0, 10.0)
        s["shaft_c"] = s["neck_end"] - n2 * 0.8 * s["shaft_r"]
        s["shaft_dir"] = perp_unit(rng, n2)
    return s


def compatible(s: Synapse, others: Sequence[Synapse]) -> bool:
    """Whether ``s`` keeps ``MIN_SEP`` from every other centre and its bodies touch none of theirs."""
    for o in others:
        if np.max(np.abs(s["c"] - o["c"])) < MIN_SEP:
            return False
        for pa, ra in s["spheres"]:
            for pb, rb in o["spheres"]:
                if np.linalg.norm(pa - pb) < ra + rb + 1.0:
                    return False
    return True


def place_synapses(rng: np.random.Generator, shape: Sequence[int], types: Sequence[str]) -> list[Synapse]:
    """Sample one synapse per entry of ``types`` by rejection until each fits beside the earlier ones.

    Raises:
        RuntimeError: a synapse found no place in 5000 draws (the volume is too small for the count).
    """
    syns: list[Synapse] = []
    for typ in types:
        for _ in range(5000):
            s = sample_synapse(rng, typ, shape)
            if compatible(s, syns):
                break
        else:
            raise RuntimeError(f"could not place {len(types)} synapses in shape {shape}")
        syns.append(s)
    return syns


# ----------------------------------------------------------------------------- raw elements
def add_vesicle(D: np.ndarray, c: Sequence[float], R: float, dense_core: bool = False) -> None:
    """Add a vesicle of radius ``R`` at ``c`` to the darkness ``D``: a membrane ring (and a dark core)."""
    sl, g = box(c, R + 2, D.shape)
    if sl is None:
        return
    o = rel(g, c)
    r = np.sqrt(o[0] ** 2 + o[1] ** 2 + o[2] ** 2)
    ring = 0.95 * np.exp(-((r - (R - 0.4)) ** 2) / (2 * 0.42**2))
    if dense_core:
        core = sigmoid((0.62 * R - r) / 0.3)
        # a dense core with a light halo between it and the membrane
        val = ring * 0.8 + 0.95 * core - 0.06 * (r < R - 0.5) * (1 - core)
    else:
        val = ring + 0.3 * (r < R - 0.4)
    D[sl] += val.astype(np.float32)


def ellipsoid_s(
    g: Grid, center: Sequence[float], axes: np.ndarray, semi: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """The ellipsoid's normalised radius (< 1 inside) over the grid, and the coordinate along its long axis."""
    o = rel(g, center)
    q = [dot(o, axes[:, i]) / np.float32(semi[i]) for i in range(3)]
    return np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2), dot(o, axes[:, 0])


def add_mito(
    D: np.ndarray, lab: np.ndarray, lmask: np.ndarray, mval: int, center: Sequence[float], axes: np.ndarray,
    semi: Sequence[float], host: int, rng: np.random.Generator, min_vox: int = 60,
) -> int:
    """Render a mitochondrion clipped to its host cell (eroded by a voxel, so it never touches the membrane).

    Args:
        D: the darkness volume, added to.
        lab: the segmentation (read only).
        lmask: the semantic mask; the mitochondrion's voxels get ``mval`` (only where still 0).
        mval: the bbox's mito label value.
        center: ``(z, y, x)``.
        axes: 3x3, columns the ellipsoid's axes (the first the long one).
        semi: the semi-axes along them, voxels.
        host: the seg id of the cell that holds it.
        rng: the bbox's generator (cristae spacing and phase).
        min_vox: skip a mitochondrion with fewer voxels (mostly outside its host).

    Returns:
        Its voxel count; 0 when it was skipped.
    """
    sl, g = box(center, max(semi) + 2, D.shape)
    if sl is None:
        return 0
    s, _ = ellipsoid_s(g, center, axes, semi)
    hostm = ndi.binary_erosion(lab[sl] == host, iterations=1)
    m = (s < 1) & hostm & (lmask[sl] == 0)
    if m.sum() < min_vox:
        return 0
    b = float(min(semi[1:]))
    t = (1 - s) * b  # approx depth below the outer membrane
    memb = 0.7 * (np.exp(-((t - 0.4) ** 2) / 0.32) + np.exp(-((t - 1.2) ** 2) / 0.32))  # double membrane
    matrix = 0.55 * sigmoid((t - 1.2) / 0.3)
    lam = rng.uniform(3.0, 4.0)
    ph = rng.uniform(0, 2 * np.pi)
    o = rel(g, center)
    # cristae: light lamellae, tilted from the transverse plane, slightly wavy
    kdir = axes[:, 0] + 0.8 * (math.cos(ph) * axes[:, 1] + math.sin(ph) * axes[:, 2])
    kdir /= np.linalg.norm(kdir)
    wob = 0.6 * np.sin(dot(o, axes[:, 1]) * 0.8 + ph) + 0.4 * np.sin(dot(o, axes[:, 2]) * 0.9 - ph)
    phase = (dot(o, kdir) + wob) / lam
    dist = np.abs(phase - np.round(phase)) * lam
    cristae = 0.3 * np.exp(-(dist**2) / (2 * 0.45**2)) * (t > 1.5)
    val = (memb + matrix - cristae) * m
    D[sl] += val.astype(np.float32)
    lmask[sl][m] = mval
    return int(m.sum())


def render_synapse(
    s: Synapse, lab: np.ndarray, memb: np.ndarray, D: np.ndarray, lmask: np.ndarray,
    labels: tuple[int, int, int, int], rng: np.random.Generator, use_cleft2: bool,
) -> None:
    """Render one synapse: contact zone (cleft, PSD), vesicle cloud, vesicles, DCVs, bouton mitochondrion.

    Args:
        s: the synapse (``sample_synapse``); gains ``n_sv``, ``n_dcv_placed`` and ``cloud_vox``.
        lab: the segmentation (read only: the cloud and the mitochondrion stay in the bouton).
        memb: the membrane map; the generic membrane is removed at the contact (the cleft's own replaces it).
        D: the darkness volume, added to.
        lmask: the semantic mask: mito, vesicle-cloud and cleft labels are written into it.
        labels: the bbox's ``(mito, vesicle, cleft, cleft2)`` values.
        rng: the bbox's generator.
        use_cleft2: the bbox has a distinct cleft2 value; then half the clefts are split between the two.
    """
    mito_v, ves_v, cleft_v, cleft2_v = labels
    c, n, u, v = s["c"], s["n"], s["u"], s["v"]
    sl, g = box(c, 22, D.shape)
    o = rel(g, c)
    d = dot(o, n)  # signed distance from the contact plane (pre > 0)
    pu, pv = dot(o, u), dot(o, v)
    rr = np.sqrt(pu**2 + pv**2)  # distance from the synapse's axis
    rcl, rc = s["rcl"], s["rc"]
    # perforations: soft (for the image) and hard (for the cleft label)
    hole = np.zeros_like(rr)
    hole_hard = np.zeros(rr.shape, bool)
    for hu, hv, hr in s["holes"]:
        dh = np.sqrt((pu - hu) ** 2 + (pv - hv) ** 2)
        hole = np.maximum(hole, np.clip((hr - dh) / 1.0 + 0.5, 0, 1))
        hole_hard |= dh < hr
    w_contact = np.clip((rc - rr) / 1.0 + 0.5, 0, 1)
    w_gap = np.clip((rcl - rr) / 1.2 + 0.5, 0, 1) * (1 - hole)
    near = (np.abs(d) < 3.2).astype(np.float32) * w_contact
    memb[sl] *= 1 - near
    # two membranes that part around a light gap where the cleft is (closed again in the perforations)
    sep = 0.7 + 0.6 * w_gap
    sig2 = 2 * 0.45**2
    Am = s["memb_a"] * 1.2
    prof = Am * (np.exp(-((d - sep) ** 2) / sig2) + np.exp(-((d + sep) ** 2) / sig2))
    prof += -0.1 * w_gap * np.exp(-(d**2) / (2 * 0.4**2))
    # pre-synaptic dense projections (faint, all types)
    prof += 0.15 * w_gap * np.clip(1 - np.abs(d - sep - 0.9) / 0.6, 0, 1)
    # PSD on the post side
    t = s["psd_t"]
    w_psd = np.clip((rcl - 0.3 - rr) / 1.0 + 0.5, 0, 1) * (1 - hole)
    top, bot = -(sep + 0.3), -(sep + 0.3 + t)
    boxp = sigmoid((top - d) / 0.3) * sigmoid((d - bot) / 0.3)
    tex = ndi.gaussian_filter(rng.normal(size=d.shape).astype(np.float32), 0.8)
    tex /= tex.std() + 1e-6
    psd = s["psd_a"] * w_psd * boxp * (1 + 0.25 * tex)
    D[sl] += (prof * near + psd).astype(np.float32)

    # bouton mitochondrion (mito_bouton type)
    pre = lab[sl] == s["pre_id"]
    mito_m = np.zeros(d.shape, bool)
    if "mito" in s:
        mi = s["mito"]
        add_mito(D, lab, lmask, mito_v, mi["center"], mi["axes"], mi["semi"], s["pre_id"], rng, min_vox=1)
        ms, _ = ellipsoid_s(g, mi["center"], mi["axes"], mi["semi"])
        mito_m = ms < 1.0 + 1.0 / mi["semi"][1]  # the mitochondrion and a voxel around it

    # vesicle cloud label: a flattened ellipsoid on the active zone, inside the bouton, around the mitochondrion
    D0 = s["cloud_D"]
    rl = s["cloud_rl"]
    dc = 2.0 + D0 / 2
    sh = s["cloud_shift"]
    su, sv = float(sh.dot(u)), float(sh.dot(v))
    ell = ((d - dc) / (D0 / 2)) ** 2 + ((pu - su) / rl) ** 2 + ((pv - sv) / rl) ** 2 < 1
    cloud = ell & pre & (d > 2.0) & ~mito_m
    lmask[sl][cloud & (lmask[sl] == 0)] = ves_v

    # cleft label (a disc ~3 voxels thick)
    cl = (np.abs(d) <= 1.5) & (rr <= rcl) & ~hole_hard
    cl_view = lmask[sl]
    if use_cleft2 and rng.random() < 0.5:
        # the lab's masks sometimes give one cleft two values: split the disc in two halves
        psi = rng.uniform(0, 2 * np.pi)
        part = (pu * math.cos(psi) + pv * math.sin(psi)) > 0
        cl_view[cl & ~part] = cleft_v
        cl_view[cl & part] = cleft2_v
    else:
        cl_view[cl] = cleft_v

    # vesicles
    placed = []
    Cp, Rp = s["Cp"], s["Rp"]

    def ok_pos(p: np.ndarray, R: float, lim: float) -> bool:
        # above the cleft, inside the bouton ball, near the active zone, clear of the mitochondrion and of
        # the vesicles already placed
        q = p - c
        dd = q.dot(n)
        if dd < 2.3 + R or np.linalg.norm(p - Cp) > Rp - R - 1.3 or np.linalg.norm(q) > lim:
            return False
        if "mito" in s:
            mi = s["mito"]
            qq = (p - mi["center"]) @ mi["axes"]
            if np.sqrt(np.sum((qq / (np.asarray(mi["semi"]) + R + 0.8)) ** 2)) < 1:
                return False
        for pp, RR in placed:
            if np.linalg.norm(p - pp) < R + RR + 0.3:
                return False
        return True

    def sample_in_cloud(scale: float) -> np.ndarray:
        # uniform in the cloud's ellipsoid, scaled by ``scale``
        x = rng.normal(size=3)
        x *= rng.uniform() ** (1 / 3) / np.linalg.norm(x)
        return c + sh + n * (dc + x[0] * D0 / 2 * scale) + u * (x[1] * rl * scale) + v * (x[2] * rl * scale)

    n_dcv = 0
    for _ in range(400):
        if n_dcv >= s["n_dcv"]:
            break
        R = rng.uniform(2.9, 3.6)  # 81-100 nm dense-core vesicles
        p = sample_in_cloud(1.25)
        if ok_pos(p, R, 15.5 - R):
            placed.append((p, R))
            add_vesicle(D, p, R, dense_core=True)
            n_dcv += 1
    # the clear-vesicle count fills a share ves_frac of the cloud's volume with ~1.6-voxel vesicles
    n_target = int(round(s["ves_frac"] * cloud.sum() / (4 / 3 * np.pi * 1.6**3)))  # noqa: RUF046 (numpy < 2)
    n_sv = 0
    for _ in range(n_target * 80):
        if n_sv >= n_target:
            break
        R = rng.uniform(1.43, 1.79)  # 40-50 nm clear vesicles
        p = sample_in_cloud(1.0)
        if rng.random() > math.exp(-max(0.0, (p - c).dot(n) - 3.5) / 6.0):
            continue  # bias towards the active zone
        if ok_pos(p, R, 15.5 - R):
            placed.append((p, R))
            add_vesicle(D, p, R)
            n_sv += 1
    s["n_sv"], s["n_dcv_placed"], s["cloud_vox"] = n_sv, n_dcv, int(cloud.sum())


# ----------------------------------------------------------------------------- one bbox
def far_from_synapses(p: np.ndarray, syns: Sequence[Synapse], dmin: float) -> bool:
    """Whether ``p`` lies at least ``dmin`` voxels from every synapse centre."""
    return all(np.linalg.norm(p - s["c"]) >= dmin for s in syns)


def generate_bbox(
    bn: int, shape: tuple[int, int, int], nsyn: int, rng: np.random.Generator, out: str | Path
) -> tuple[list[dict], dict[str, dict]]:
    """Generate bbox ``bn`` and write its raw, seg and mask stacks and its sheet under ``out``.

    Args:
        bn: the bbox number (1-based; picks the label map).
        shape: ``(Z, Y, X)``.
        nsyn: synapses in the bbox; the types cycle through ``TYPES`` (equal counts when a multiple of 4).
        rng: the bbox's own generator (so that a bbox does not depend on the bboxes before it).
        out: the dataset root.

    Returns:
        ``(type_rows, truth)``: the rows of ``synapse_types.csv`` for this bbox, and per ``Var1`` the ground
        truth (``pre_side`` 1 or 2, ``type``, ``pre_id``, ``post_id``, ``n_sv``, ``cloud_vox``, ``n_dcv``,
        ``spine``, ``normal_zyx``).

    Raises:
        RuntimeError: the synapses do not fit in ``shape``.
    """
    out = Path(out)
    t0 = time.time()
    labels = labels_for(bn)
    mito_v, _, cleft_v, cleft2_v = labels
    Z = shape[0]
    ids = iter(rng.permutation(np.arange(1, 65000)).tolist())
    # staining / imaging parameters of this bbox
    st = {"bg": rng.uniform(140, 185), "contrast": rng.uniform(95, 150), "memb_a": rng.uniform(0.55, 0.8),
          "blur": rng.uniform(0.5, 0.85), "zblur": rng.uniform(1.0, 1.3), "gain": rng.uniform(0.8, 3.0),
          "gnoise": rng.uniform(2.0, 6.0), "tex": rng.uniform(0.03, 0.07), "grad": rng.uniform(0.02, 0.07),
          "slice_jit": rng.uniform(0.5, 3.0)}  # fmt: skip

    lab = background_cells(rng, shape, ids)

    types = [TYPES[i % 4] for i in range(nsyn)]
    rng.shuffle(types)
    syns = place_synapses(rng, shape, types)
    for s in syns:
        s["pre_id"], s["post_id"] = next(ids), next(ids)
        s["memb_a"] = st["memb_a"]

    # (a) neurite extensions, (b) synaptic cores: painted after all extensions, so that no other synapse's
    # neurite cuts through a bouton or spine (the cores are mutually disjoint by construction)
    for s in syns:
        pre_clip = plane_clip(s, +1, 1.5)
        post_clip = plane_clip(s, -1, 1.5)
        for sgn in (+1, -1):
            axon = random_walk(rng, s["Cp"], sgn * s["ax_dir"], 3.0, 110)
            paint_polyline(lab, axon, s["ax_r"], s["pre_id"], pre_clip)
        if s["spine"]:
            paint_capsule(lab, s["Cq"], s["neck_end"], s["neck_r"], s["post_id"], post_clip)
            for sgn in (+1, -1):
                shaft = random_walk(rng, s["shaft_c"], sgn * s["shaft_dir"], 4.0, 110)
                paint_polyline(lab, shaft, s["shaft_r"], s["post_id"], post_clip)
        else:
            for sgn in (+1, -1):
                st_pt = s["P"] + sgn * 16 * s["w2"]
                shaft = random_walk(rng, st_pt, sgn * s["w2"], max(3.0, s["Rs"] / 2), 100, 0.05)
                paint_polyline(lab, shaft, s["Rs"], s["post_id"], post_clip)
    for s in syns:
        paint_ball(lab, s["Cp"], s["Rp"], s["pre_id"], plane_clip(s, +1, 0.0, near=1e9))
        if s["spine"]:
            paint_ball(lab, s["Cq"], s["Rq"], s["post_id"], plane_clip(s, -1, 1e-3, near=1e9))
        else:
            a, b = s["P"] - 16 * s["w2"], s["P"] + 16 * s["w2"]
            paint_capsule(lab, a, b, s["Rs"], s["post_id"], plane_clip(s, -1, 1e-3, near=1e9))

    # membranes from the segmentation (2-voxel dark line at every shared boundary)
    memb = np.zeros(shape, np.float32)
    for ax in range(3):
        diff = np.diff(lab, axis=ax) != 0
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax] = slice(0, -1)
        b[ax] = slice(1, None)
        memb[tuple(a)] = np.maximum(memb[tuple(a)], diff)
        memb[tuple(b)] = np.maximum(memb[tuple(b)], diff)

    D = np.zeros(shape, np.float32)  # "darkness" (stain density)
    lmask = np.zeros(shape, np.uint8)
    use_cleft2 = cleft2_v != cleft_v
    for s in syns:
        render_synapse(s, lab, memb, D, lmask, labels, rng, use_cleft2)

    # extra mitochondria elsewhere (axonal ones only far from boutons; dendritic allowed), so that a mito label
    # near a synapse is not itself a type marker
    pre_ids = {s["pre_id"] for s in syns}
    n_mito_extra = 0
    n_mito_target = int(rng.integers(5, 10))
    for _ in range(200):
        if n_mito_extra >= n_mito_target:
            break
        p = np.array([rng.uniform(6, S - 7) for S in shape])
        if not far_from_synapses(p, syns, 22):
            continue
        host = lab[tuple(np.rint(p).astype(int))]
        if host in pre_ids:
            continue
        semi = (rng.uniform(8, 18), rng.uniform(4, 6.5), rng.uniform(4, 6.5))
        if add_mito(D, lab, lmask, mito_v, p, rand_rot(rng), semi, host, rng, min_vox=120):
            n_mito_extra += 1

    # stray vesicles / a few stray dense-core vesicles elsewhere (not labelled), so that vesicles or a DCV in
    # the raw do not by themselves mark a synapse or its type
    stray = []

    def try_vesicle(p: np.ndarray, R: float, host: int) -> bool:
        # the vesicle must fit inside one unlabelled cell and clear of the other stray vesicles
        q = np.rint(p).astype(int)
        if not inside_vol(q, shape, 4):
            return False
        for k in range(3):
            for sg in (-1, 1):
                r = q.copy()
                r[k] = int(round(p[k] + sg * (R + 1)))  # noqa: RUF046 (a numpy float: numpy < 2 rounds to float)
                if not inside_vol(r, shape) or lab[tuple(r)] != host or lmask[tuple(r)] != 0:
                    return False
        if lab[tuple(q)] != host or lmask[tuple(q)] != 0:
            return False
        for pp, RR in stray:
            if np.linalg.norm(p - pp) < R + RR + 0.3:
                return False
        stray.append((p, R))
        return True

    partner_ids = pre_ids | {s["post_id"] for s in syns}
    n_clusters = int(rng.integers(3, 7))
    for _ in range(n_clusters):
        for _ in range(50):
            p0 = np.array([rng.uniform(8, S - 9) for S in shape])
            host = lab[tuple(np.rint(p0).astype(int))]
            if far_from_synapses(p0, syns, 22) and host not in partner_ids:
                break
        k_target = int(rng.integers(6, 21))
        k = 0
        for _ in range(k_target * 30):
            if k >= k_target:
                break
            R = rng.uniform(1.43, 1.79)
            p = p0 + rng.normal(size=3) * 3.0
            if try_vesicle(p, R, host):
                add_vesicle(D, p, R)
                k += 1
    for _ in range(int(rng.integers(30, 60))):
        p = np.array([rng.uniform(5, S - 6) for S in shape])
        if far_from_synapses(p, syns, 18):
            R = rng.uniform(1.43, 1.79)
            if try_vesicle(p, R, lab[tuple(np.rint(p).astype(int))]):
                add_vesicle(D, p, R)
    n_stray_dcv = 0
    for _ in range(int(rng.integers(1, 4))):
        for _ in range(50):
            p = np.array([rng.uniform(6, S - 7) for S in shape])
            R = rng.uniform(2.9, 3.6)
            if far_from_synapses(p, syns, 20) and try_vesicle(p, R, lab[tuple(np.rint(p).astype(int))]):
                add_vesicle(D, p, R, dense_core=True)
                n_stray_dcv += 1
                break

    # cytoplasm: per-cell tone, fine texture, sparse dark particles; membranes
    tone = rng.normal(0, 0.05, size=int(lab.max()) + 1).astype(np.float32)
    D += tone[lab]
    tex = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), 1.0)
    D += st["tex"] * tex / (tex.std() + 1e-6)
    npart = int(0.003 * np.prod(shape))
    P = (rng.random((npart, 3)) * np.asarray(shape)).astype(int)
    D[P[:, 0], P[:, 1], P[:, 2]] += 0.35
    D += st["memb_a"] * memb
    del memb, tex

    # imaging: illumination, PSF (a little wider in z), shot + read noise, per-slice brightness
    img = st["bg"] * (1 + st["grad"] * smooth_field(rng, shape, 32, 1.0)) - st["contrast"] * D
    del D
    img = ndi.gaussian_filter(img, (st["blur"] * st["zblur"], st["blur"], st["blur"]))
    img = np.clip(img, 0, None)
    img = rng.poisson(img * st["gain"]).astype(np.float32) / st["gain"]
    img += rng.normal(0, st["gnoise"], size=shape).astype(np.float32)
    img += rng.normal(0, st["slice_jit"], size=(Z, 1, 1)).astype(np.float32)
    raw = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    del img

    # ---- write
    seg = lab.astype(np.uint16 if lab.max() < 65535 else np.uint32)
    for sub, arr in ((out / "raw" / f"bbox{bn}", raw), (out / "seg" / f"bbox{bn}", seg), (out / f"bbox_{bn}", lmask)):
        sub.mkdir(parents=True, exist_ok=True)
        for z in range(Z):
            tifffile.imwrite(sub / f"slice_{z + 1:03d}.tif", arr[z], photometric="minisblack")

    rows, trows, truth = [], [], {}
    num = 0
    for s in syns:
        num += int(rng.integers(1, 4))  # non-consecutive ids, as in real tables
        name = f"{'spine' if s['spine'] else 'non_spine'}_synapse_{num:03d}"
        pre_pt, post_pt = np.rint(s["pre_pt"]).astype(int), np.rint(s["post_pt"]).astype(int)
        pre_first = bool(rng.random() < 0.5)  # the pre-synaptic partner is side 1 or side 2 at random
        p1, p2 = (pre_pt, post_pt) if pre_first else (post_pt, pre_pt)
        cc = np.rint(s["c"]).astype(int)
        # (x, y, z) = (coord_1, coord_2, coord_3); volume index [z, y, x]
        rows.append({"Var1": name,
                     "central_coord_1": cc[2], "central_coord_2": cc[1], "central_coord_3": cc[0],
                     "side_1_coord_1": p1[2], "side_1_coord_2": p1[1], "side_1_coord_3": p1[0],
                     "side_2_coord_1": p2[2], "side_2_coord_2": p2[1], "side_2_coord_3": p2[0]})  # fmt: skip
        trows.append({"bbox_name": f"bbox{bn}", "Var1": name, "type": s["type"]})
        truth[name] = {"pre_side": 1 if pre_first else 2, "type": s["type"], "pre_id": int(s["pre_id"]),
                       "post_id": int(s["post_id"]), "n_sv": s["n_sv"], "cloud_vox": s["cloud_vox"],
                       "n_dcv": s["n_dcv_placed"], "spine": s["spine"], "normal_zyx": s["n"].tolist()}  # fmt: skip
    cols = ["Var1", "central_coord_1", "central_coord_2", "central_coord_3", "side_1_coord_1",
            "side_1_coord_2", "side_1_coord_3", "side_2_coord_1", "side_2_coord_2", "side_2_coord_3"]  # fmt: skip
    df = pd.DataFrame(rows, columns=cols)
    for col in cols[1:]:
        df[col] = df[col].astype(int)
    df.to_excel(out / f"bbox{bn}.xlsx", index=False, engine="openpyxl")

    nsv = {t: [truth[k]["n_sv"] for k in truth if truth[k]["type"] == t] for t in TYPES}
    ncl = {t: int(np.mean([truth[k]["cloud_vox"] for k in truth if truth[k]["type"] == t] or [0])) for t in TYPES}
    counts = ", ".join(f"{t} {types.count(t)}" for t in TYPES)
    sv_range = {t: (min(v), max(v)) for t, v in nsv.items() if v}
    print(f"bbox{bn}: {len(syns)} synapses ({counts}), spine {sum(s['spine'] for s in syns)}, "
          f"extra mito {n_mito_extra}, stray DCV {n_stray_dcv}, labels mito/ves/cleft/cleft2={labels}, "
          f"bg {st['bg']:.0f} contrast {st['contrast']:.0f} blur {st['blur']:.2f} gain {st['gain']:.2f}, "
          f"SV per type {sv_range}, mean cloud vox {ncl}, {time.time() - t0:.1f}s", flush=True)  # fmt: skip
    return trows, truth


# ----------------------------------------------------------------------------- verification
def read_stack(d: str | Path) -> np.ndarray:
    """Read a folder of ``*.tif`` slices in natural order into ``[Z, Y, X]``."""
    d = Path(d)
    files = sorted((f.name for f in d.iterdir() if f.name.endswith(".tif")), key=lambda f: int(re.sub(r"\D", "", f)))
    return np.stack([tifffile.imread(d / f) for f in files])


def verify(out: str | Path, nb: int, truth_all: dict[int, dict[str, dict]]) -> bool:
    """Read a written dataset back and check it against the ground truth (a report line per bbox).

    Checks, per synapse: its points lie inside the volume, the side points on two different non-zero
    segments, a cleft label within 3 voxels of the centre, DESIGN.md's vesicle rule (the vesicle-cloud
    component nearest the centre in a 41³ window; the side whose segment overlaps it more) picks the true
    pre-synaptic side, and ``synapse_types.csv`` holds its true type.

    Args:
        out: the dataset root.
        nb: the number of bboxes.
        truth_all: per bbox number, the ground truth of ``generate_bbox``.

    Returns:
        True when every check passed.
    """
    out = Path(out)
    ok_all = True
    types = pd.read_csv(out / "synapse_types.csv")
    for bn in range(1, nb + 1):
        _, ves_v, cleft_v, cleft2_v = labels_for(bn)
        raw = read_stack(out / "raw" / f"bbox{bn}")
        seg = read_stack(out / "seg" / f"bbox{bn}")
        msk = read_stack(out / f"bbox_{bn}")
        errs = []
        if not (raw.shape == seg.shape == msk.shape):
            errs.append(f"shape mismatch {raw.shape} {seg.shape} {msk.shape}")
        df = pd.read_excel(out / f"bbox{bn}.xlsx")
        Z, Y, X = seg.shape
        ves = msk == ves_v
        cleft = (msk == cleft_v) | (msk == cleft2_v)
        for _, r in df.iterrows():
            name = r["Var1"]
            pts = {}
            for key in ("central", "side_1", "side_2"):
                x, y, z = (int(r[f"{key}_coord_{i}"]) for i in (1, 2, 3))
                if not (1 <= x <= X - 2 and 1 <= y <= Y - 2 and 1 <= z <= Z - 2):
                    errs.append(f"{name} {key} out of volume")
                pts[key] = (z, y, x)
            s1, s2 = seg[pts["side_1"]], seg[pts["side_2"]]
            if s1 == 0 or s2 == 0 or s1 == s2:
                errs.append(f"{name} bad sides {s1} {s2}")
            z, y, x = pts["central"]
            if not cleft[z - 3 : z + 4, y - 3 : y + 4, x - 3 : x + 4].any():
                errs.append(f"{name} no cleft near centre")
            h = 20
            win = (slice(max(z - h, 0), z + h + 1), slice(max(y - h, 0), y + h + 1), slice(max(x - h, 0), x + h + 1))
            cc, ncc = ndi.label(ves[win])
            if ncc == 0:
                errs.append(f"{name} no vesicle cloud")
                continue
            zz, yy, xx = np.nonzero(cc)
            dist = (zz + win[0].start - z) ** 2 + (yy + win[1].start - y) ** 2 + (xx + win[2].start - x) ** 2
            i = np.argmin(dist)
            comp = cc == cc[zz[i], yy[i], xx[i]]
            o1 = int((comp & (seg[win] == s1)).sum())
            o2 = int((comp & (seg[win] == s2)).sum())
            pre_side = 1 if o1 > o2 else 2
            if pre_side != truth_all[bn][name]["pre_side"] or max(o1, o2) == 0:
                errs.append(f"{name} vesicle rule gives side {pre_side} (overlaps {o1}/{o2})")
            t = types[(types.bbox_name == f"bbox{bn}") & (types.Var1 == name)]["type"]
            if len(t) != 1 or t.iloc[0] != truth_all[bn][name]["type"]:
                errs.append(f"{name} type row")
        present = sorted(set(np.unique(msk).tolist()) - {0})
        result = "OK" if not errs else "FAIL: " + "; ".join(errs)
        print(f"verify bbox{bn}: {raw.shape[0]} slices {raw.shape[1:]}, {len(df)} rows, mask values {present}, "
              f"seg ids {len(np.unique(seg))} -> {result}")  # fmt: skip
        ok_all &= not errs
    counts = types.groupby("type").size().to_dict()
    print("types:", counts)
    return ok_all


# ----------------------------------------------------------------------------- the dataset
def _check_out(out: Path, overwrite: bool) -> list[Path]:
    """Refuse a non-empty ``out`` (a label_maps.json aside), unless ``overwrite`` and it holds only our files.

    Returns:
        The old entries that ``overwrite`` will replace (empty for a new or empty folder).

    Raises:
        FileExistsError: ``out`` is a file, or a non-empty folder without ``overwrite``, or holds entries this
            script does not write (never deleted, even with ``overwrite``).
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: --out exists and is not a folder")
    old = sorted(p for p in out.iterdir() if p.name not in _KEPT_ENTRIES) if out.is_dir() else []
    if not old:
        return []
    if not overwrite:
        raise FileExistsError(
            f"{out}: --out is not empty ({len(old)} entries, e.g. {old[0].name!r}); pass --overwrite to replace "
            "a dataset written by this script, or choose an empty folder"
        )
    foreign = [p.name for p in old if not _OWN_ENTRY.match(p.name)]
    if foreign:
        # a guard against --out pointing at the wrong folder: only our own layout is ever deleted
        raise FileExistsError(
            f"{out}: --overwrite replaces only raw/, seg/, bbox_N/, bboxN.xlsx and synapse_types.csv, but the "
            f"folder also holds {foreign[:5]}; remove them or choose another folder"
        )
    return old


def generate(
    out: str | Path, seed: int, bboxes: int = 4, synapses_per_bbox: int = 12,
    shape: Sequence[int] = (128, 192, 256), overwrite: bool = False, check: bool = True,
) -> dict[int, dict[str, dict]]:
    """Write a held-out dataset into ``out``.

    The bboxes are written into a sibling staging folder first and moved into ``out`` only when all of them
    are done, so a failure (or Ctrl-C) leaves ``out`` as it was and no half-written bbox behind.

    Args:
        out: the dataset root (created if missing).
        seed: the seed; bbox N uses the N-th child of ``SeedSequence(seed)``, so bbox N does not depend on
            ``bboxes`` or on the other bboxes.
        bboxes: the number of bboxes.
        synapses_per_bbox: synapses in each bbox.
        shape: ``(Z, Y, X)`` of each bbox.
        overwrite: replace the dataset in a non-empty ``out`` (its raw/, seg/, bbox_N/, bboxN.xlsx and
            synapse_types.csv; a label_maps.json stays; other entries make it refuse).
        check: read the files back and verify them (``verify``).

    Returns:
        Per bbox number, per ``Var1``, the ground truth (see ``generate_bbox``).

    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is False (or see ``_check_out``).
        RuntimeError: the synapses do not fit in ``shape``, or the verification failed.
    """
    out = Path(out)
    old = _check_out(out, overwrite)
    t0 = time.time()
    out.parent.mkdir(parents=True, exist_ok=True)
    # same file system as out, so that the final moves are renames
    stage = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        children = np.random.SeedSequence(seed).spawn(bboxes)
        trows, truth_all = [], {}
        for bn in range(1, bboxes + 1):
            rng = np.random.default_rng(children[bn - 1])
            tr, truth = generate_bbox(bn, tuple(shape), synapses_per_bbox, rng, stage)
            trows += tr
            truth_all[bn] = truth
        types = pd.DataFrame(trows, columns=["bbox_name", "Var1", "type"])
        types.to_csv(stage / "synapse_types.csv", index=False)
        # the old dataset goes only now that the new one is complete (stale bbox folders would otherwise stay)
        for p in old:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        out.mkdir(exist_ok=True)
        for p in sorted(stage.iterdir()):
            p.rename(out / p.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"generated {bboxes} bboxes, voxel {VOXEL_NM:.0f} nm, in {time.time() - t0:.1f}s", flush=True)
    if check:
        t1 = time.time()
        ok = verify(out, bboxes, truth_all)
        print(f"verification {'PASSED' if ok else 'FAILED'} ({time.time() - t1:.1f}s)")
        if not ok:
            raise RuntimeError(f"{out}: the written dataset failed its verification (see the lines above)")
    return truth_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument(
        "--bboxes", type=int, default=4,
        help="bbox count; the package knows label maps for bbox 1-7 only (beyond: a label_maps.json in --out)",
    )  # fmt: skip
    parser.add_argument("--synapses-per-bbox", type=int, default=12)
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 192, 256], metavar=("Z", "Y", "X"))
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the dataset in a non-empty --out (stale bboxes included)"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip reading the files back to check them")
    args = parser.parse_args(argv)
    try:
        generate(args.out, args.seed, args.bboxes, args.synapses_per_bbox, args.shape, args.overwrite,
                 check=not args.no_verify)  # fmt: skip
    except FileExistsError as err:
        parser.error(str(err))
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
