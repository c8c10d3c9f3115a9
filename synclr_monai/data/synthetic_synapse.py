"""Synapse types and the drawing of one synapse for the synthetic EM generator.

A synapse lives in a local frame ``(e1, e2, n)`` centred on its cleft centre ``c``: ``n`` is the
cleft normal (a random 3-D direction) and points into the pre-synaptic cell. The cleft is the sheet
around the surface ``w = -kappa * r^2 / 2`` (``r`` the distance from the normal axis), flat for
``kappa = 0`` and cup shaped (the post-synaptic spine head bulging into the bouton) for ``kappa > 0``.
``h`` below is the (approximate) signed distance from that surface, positive on the pre side.

Dimensions are given at the reference scale of 32 voxels (half a 64-voxel region) and scaled with the
room the layout leaves each synapse, so the same code draws 32^3 test volumes and 256^3 ones.

Difficulty (:func:`synapse_types`): the four classes of :data:`SYNAPSE_TYPES` differ in their
distinguishing parameters (vesicle radius and count, cleft extent and curvature, PSD thickness, cloud
spread, the probability of a mitochondrion against the cleft, the probability of a spine partner).
At difficulty ``D`` in [0, 1] every such parameter ``p`` of a class becomes
``mean + (1 - (1 - MIN_SEPARATION) * D) * (p - mean)``, ``mean`` being the average of ``p`` over the
four classes: ``D = 0`` gives the classes exactly, ``D = 1`` keeps only ``MIN_SEPARATION`` (a fifth)
of each class's distance from the mean, so the classes still differ, slightly, and overlap through
the within-class jitter, which is the same at every difficulty. The booleans of the base classes are
probabilities here (1.0 / 0.0 at ``D = 0``, drawn per synapse only when strictly between 0 and 1),
so a mitochondrion at the cleft or a spine partner becomes a tendency rather than a rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .synthetic_geometry import mito_structure, random_frame, smooth_noise, window_coords

__all__ = [
    "SynapseType",
    "SYNAPSE_TYPES",
    "TYPE_NAMES",
    "MIN_SEPARATION",
    "synapse_types",
    "Synapse",
    "sample_synapse",
    "build_cells",
    "draw_synapse",
]

REFERENCE_SCALE = 32.0

# uint8-like intensities before blur/noise/contrast (EM: membranes and dense material dark)
CLEFT_VALUE = 118.0
PRE_MEMBRANE_VALUE = 68.0
POST_MEMBRANE_VALUE = 60.0
PSD_VALUE = 42.0
VESICLE_RIM_VALUE = 72.0
VESICLE_LUMEN_VALUE = 172.0
MITO_MATRIX_VALUE = 108.0
MITO_MEMBRANE_VALUE = 58.0
CRISTAE_VALUE = 70.0


@dataclass(frozen=True)
class SynapseType:
    """Biology-like parameters of one synapse class (dimensions at the reference scale).

    Args:
        name: class name written to ``synapse_types.csv``.
        vesicle_radius: vesicle radius in voxels.
        vesicle_count: target number of vesicles in the cloud.
        cleft_extent: cleft disc radius as a fraction of the cells' contact radius.
        curvature: ``kappa * R`` of the cleft surface (0 flat, 1 = 45 degree slope at the rim).
        psd_thickness: post-synaptic density thickness in voxels.
        cloud_spread: lateral radius of the vesicle cloud as a fraction of the bouton radius.
        mito_near_cleft: probability that a mitochondrion sits against the cleft on the pre side
            (1.0 or 0.0 for the base classes).
        spine_probability: probability that the post-synaptic partner is a spine (head + neck)
            rather than a dendritic shaft (0.0 shaft, 1.0 spine, 0.5 either).
    """

    name: str
    vesicle_radius: float
    vesicle_count: float
    cleft_extent: float
    curvature: float
    psd_thickness: float
    cloud_spread: float
    mito_near_cleft: float
    spine_probability: float


SYNAPSE_TYPES: dict[str, SynapseType] = {
    t.name: t
    for t in (
        # many small vesicles packed against a small, flat cleft; thin PSD
        SynapseType("many_small_vesicles", 1.1, 80, 0.45, 0.0, 1.0, 0.6, 0.0, 0.0),
        # few large vesicles, a wide flat cleft (mushroom-spine or shaft)
        SynapseType("few_large_vesicles", 2.3, 14, 0.95, 0.0, 1.4, 0.75, 0.0, 0.5),
        # cup-shaped cleft over a spine head with a thick PSD, medium vesicles
        SynapseType("curved_spine", 1.6, 35, 0.9, 1.0, 3.0, 0.65, 0.0, 1.0),
        # a mitochondrion right behind the cleft on the pre side, medium vesicles around it
        SynapseType("mito_adjacent", 1.6, 30, 0.6, 0.15, 1.6, 0.7, 1.0, 0.0),
    )
}
TYPE_NAMES: tuple[str, ...] = tuple(SYNAPSE_TYPES)

# share of each class's distance from the class mean that is kept at difficulty 1
MIN_SEPARATION = 0.2
_GRADED_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SynapseType) if f.name != "name")


def synapse_types(difficulty: float = 0.0) -> dict[str, SynapseType]:
    """The synapse classes at a difficulty: parameters pulled toward the class mean (module docstring).

    Args:
        difficulty: in [0, 1]; 0 returns :data:`SYNAPSE_TYPES` unchanged, 1 the most similar classes.

    Returns:
        Class name -> :class:`SynapseType`, in the order of :data:`TYPE_NAMES`.

    Raises:
        ValueError: for a difficulty outside [0, 1].
    """
    d = float(difficulty)
    if not 0.0 <= d <= 1.0:  # also rejects NaN
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty!r}")
    if d == 0.0:
        return dict(SYNAPSE_TYPES)
    keep = 1.0 - (1.0 - MIN_SEPARATION) * d
    means = {f: float(np.mean([getattr(t, f) for t in SYNAPSE_TYPES.values()])) for f in _GRADED_FIELDS}
    return {
        name: replace(t, **{f: means[f] + keep * (float(getattr(t, f)) - means[f]) for f in _GRADED_FIELDS})
        for name, t in SYNAPSE_TYPES.items()
    }


@dataclass
class Synapse:
    """One sampled synapse: geometry, ids and what was drawn (filled in by the drawing steps)."""

    stype: SynapseType
    centre: np.ndarray  # (z, y, x) int, the cleft centre voxel
    frame: np.ndarray  # columns e1, e2, n (n into the pre cell)
    window: tuple[slice, slice, slice]
    scale: float
    pre_axes: np.ndarray
    pre_offset: float
    post_kind: str
    post_axes: np.ndarray
    post_offset: float
    neck_radius: float
    cleft_radius: float
    kappa: float
    cleft_half: float
    psd: float
    vesicle_radius: float
    vesicle_count: int
    pre_id: int = 0
    post_id: int = 0
    pre_mask: np.ndarray | None = field(default=None, repr=False)
    post_mask: np.ndarray | None = field(default=None, repr=False)
    pre_point: np.ndarray | None = None
    post_point: np.ndarray | None = None
    mito_near_cleft: bool = False
    n_vesicles: int = 0


def sample_synapse(
    stype: SynapseType,
    centre: np.ndarray,
    window: tuple[slice, slice, slice],
    scale: float,
    rng: np.random.Generator,
) -> Synapse:
    """Draw the random geometry of one synapse of a given type.

    Orientation is uniform over 3-D rotations and every size is jittered, so a class is only
    recognisable from its 3-D structure (vesicle size/number, cleft extent/curvature, PSD, mito).

    Args:
        stype: the synapse class.
        centre: integer ``(z, y, x)`` cleft centre.
        window: the volume slices the synapse may occupy (its layout region around ``centre``).
        scale: the layout scale in voxels (room on each side of ``centre``).
        rng: random generator.

    Returns:
        The sampled :class:`Synapse` (cells not built yet).
    """
    s = scale
    f = s / REFERENCE_SCALE
    detail = float(np.clip(f, 0.75, 1.5))  # fine structures shrink less than cells: voxels are finite
    frame = random_frame(rng)
    pre_axes = s * np.array([rng.uniform(0.5, 0.64), rng.uniform(0.5, 0.64), rng.uniform(0.4, 0.5)])
    # a random draw only for a probability strictly between 0 and 1 (the base classes draw as before)
    p_spine = stype.spine_probability
    post_kind = "spine" if p_spine >= 1 or (p_spine > 0 and rng.random() < p_spine) else "shaft"
    if post_kind == "spine":
        head = s * rng.uniform(0.38, 0.46)
        post_axes = np.array([head, head * rng.uniform(0.9, 1.1), head])
        post_offset = 0.65 * head
        neck_radius = max(1.5, 0.3 * head)
    else:  # a dendritic shaft: elongated along e1
        post_axes = s * np.array([rng.uniform(0.75, 0.9), rng.uniform(0.4, 0.5), rng.uniform(0.4, 0.5)])
        post_offset = 0.6 * post_axes[2]
        neck_radius = 0.0
    pre_offset = 0.55 * pre_axes[2]
    # radius of the disc where both cells' ellipsoids meet the contact plane
    contact = min(
        pre_axes[:2].min() * np.sqrt(1 - (pre_offset / pre_axes[2]) ** 2),
        post_axes[:2].min() * np.sqrt(1 - (post_offset / post_axes[2]) ** 2),
    )
    cleft_radius = max(2.0, stype.cleft_extent * contact * rng.uniform(0.88, 1.08))
    curvature = max(0.0, stype.curvature + rng.uniform(-0.1, 0.1)) if stype.curvature else rng.uniform(0.0, 0.05)
    count_factor = float(np.clip(f, 0.3, 2.5)) ** 2
    cleft_half = max(1.0, 0.04 * s) * rng.uniform(0.95, 1.1)
    psd = stype.psd_thickness * detail * rng.uniform(0.85, 1.15)
    vesicle_radius = max(1.0, stype.vesicle_radius * detail * rng.uniform(0.9, 1.1))
    vesicle_count = max(3, int(round(stype.vesicle_count * count_factor * rng.uniform(0.85, 1.15))))
    p_mito = stype.mito_near_cleft
    mito_near_cleft = bool(p_mito >= 1 or (p_mito > 0 and rng.random() < p_mito))
    return Synapse(
        stype=stype,
        centre=np.asarray(centre, int),
        frame=frame,
        window=window,
        scale=s,
        pre_axes=pre_axes,
        pre_offset=pre_offset,
        post_kind=post_kind,
        post_axes=post_axes,
        post_offset=post_offset,
        neck_radius=neck_radius,
        cleft_radius=cleft_radius,
        kappa=curvature / cleft_radius,
        cleft_half=cleft_half,
        psd=psd,
        vesicle_radius=vesicle_radius,
        vesicle_count=vesicle_count,
        mito_near_cleft=mito_near_cleft,
    )


def _local(syn: Synapse) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Local coordinates ``u, v, w``, the radial distance ``r`` and the signed cleft distance ``h``."""
    u, v, w = window_coords(syn.window, syn.centre, syn.frame)
    r2 = u * u + v * v
    k = np.float32(syn.kappa)
    # normalising by the gradient norm makes h a distance, so the cleft has the same thickness everywhere
    h = (w + k * r2 / 2) / np.sqrt(1 + k * k * r2)
    return u, v, w, np.sqrt(r2), h


def _keep_component(mask: np.ndarray, seed: tuple[int, int, int]) -> np.ndarray:
    """The connected component of ``mask`` containing ``seed`` (drops islands made by the noise)."""
    lab, n = ndimage.label(mask)
    keep = lab[seed]
    if keep == 0 and n:  # seed missed the mask (should not happen): keep the largest component
        keep = int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    return lab == keep


def build_cells(syn: Synapse, rng: np.random.Generator) -> None:
    """Shape the pre- and post-synaptic cells (perturbed ellipsoids split by the cleft surface).

    Fills ``syn.pre_mask`` / ``syn.post_mask`` (bool, window shaped). Both contain the voxels next to
    the cleft centre by construction (a core that the noise cannot carve away), and each is reduced
    to its connected component there.

    Args:
        syn: a synapse from :func:`sample_synapse` (modified in place).
        rng: random generator (the surface perturbation and the spine neck's tilt).
    """
    u, v, w, _, h = _local(syn)
    shape = u.shape
    amp = np.float32(0.22)
    noise_scale = max(3.0, 0.3 * syn.scale)
    f_pre = (u / syn.pre_axes[0]) ** 2 + (v / syn.pre_axes[1]) ** 2 + ((w - syn.pre_offset) / syn.pre_axes[2]) ** 2
    pre = ((f_pre < 1 + amp * smooth_noise(shape, noise_scale, rng)) | (f_pre < 0.5)) & (h > 0)
    f_post = (u / syn.post_axes[0]) ** 2 + (v / syn.post_axes[1]) ** 2 + ((w + syn.post_offset) / syn.post_axes[2]) ** 2
    post = (f_post < 1 + amp * smooth_noise(shape, noise_scale, rng)) | (f_post < 0.5)
    if syn.post_kind == "spine":
        # spine neck: a tube leaving the head away from the cleft, slightly tilted
        tilt = rng.uniform(-0.3, 0.3, size=2)
        a = -(w + syn.post_offset)
        radial = np.sqrt((u - tilt[0] * a) ** 2 + (v - tilt[1] * a) ** 2)
        post |= (a > 0) & (a < 2.5 * syn.post_axes[2]) & (radial < syn.neck_radius)
    post &= h <= 0
    seed = tuple(int(c - s.start) for c, s in zip(syn.centre, syn.window))
    syn.post_mask = _keep_component(post, seed)
    pre_seed = tuple(int(round(c - s.start + syn.frame[i, 2])) for i, (c, s) in enumerate(zip(syn.centre, syn.window)))
    syn.pre_mask = _keep_component(pre, pre_seed)


def _edt(mask: np.ndarray) -> np.ndarray:
    """``ndimage.distance_transform_edt(mask)``, computed on the bounding box of ``mask`` grown by one voxel.

    Equal to the whole-array transform: the grown box's shell holds no foreground (or is the array's edge, where
    the transform sees no background either), and the nearest background voxel of a point inside the box, if
    outside it, can be replaced by its projection onto the shell, which is no farther.
    """
    out = np.zeros(mask.shape, np.float64)
    others = [tuple(a for a in range(mask.ndim) if a != axis) for axis in range(mask.ndim)]
    nz = [np.flatnonzero(np.any(mask, axis=axes)) for axes in others]
    if any(len(n) == 0 for n in nz):
        return out
    box = tuple(slice(max(0, int(n[0]) - 1), min(size, int(n[-1]) + 2)) for n, size in zip(nz, mask.shape))
    out[box] = ndimage.distance_transform_edt(mask[box])
    return out


def _interior_point(
    mask: np.ndarray, start: np.ndarray, direction: np.ndarray, max_dist: float, edt: np.ndarray | None = None
) -> np.ndarray:
    """A voxel deep inside ``mask`` near the ray ``start + d * direction`` (window coordinates).

    ``edt``: ``mask``'s distance transform when already computed.
    """
    if edt is None:
        edt = _edt(mask)
    ds = np.arange(1.0, max(2.0, max_dist), 0.5)
    pts = np.rint(start[None, :] + ds[:, None] * direction[None, :]).astype(int)
    ok = np.all((pts >= 0) & (pts < np.asarray(mask.shape)), axis=1)
    pts = pts[ok]
    if len(pts):
        depth = edt[pts[:, 0], pts[:, 1], pts[:, 2]]
        if depth.max() > 0:
            return pts[int(np.argmax(depth))]
    return np.asarray(np.unravel_index(int(np.argmax(edt)), mask.shape))


def _place_vesicles(
    syn: Synapse, h: np.ndarray, pre_edt: np.ndarray, blocked_edt: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Vesicle centres (window coordinates) and radii in the cloud next to the cleft.

    Candidates are drawn densest near the cleft and accepted when they keep clear of the cell
    membrane, of mitochondria and of the vesicles already placed (sequential hard-core sampling).
    """
    lo = np.asarray([s.start for s in syn.window], float)
    e1, e2, n = syn.frame[:, 0], syn.frame[:, 1], syn.frame[:, 2]
    spread = syn.stype.cloud_spread * syn.pre_axes[:2].min()
    h0 = syn.cleft_half + 1.2 + syn.vesicle_radius
    depth = max(1.0, 0.95 * syn.pre_axes[2])
    m = syn.vesicle_count * 25
    rad = spread * np.sqrt(rng.random(m))
    ang = rng.uniform(0, 2 * np.pi, m)
    uu, vv = rad * np.cos(ang), rad * np.sin(ang)
    hh = h0 + depth * rng.beta(1.0, 1.8, m)
    ww = hh - syn.kappa * rad**2 / 2  # offset from the curved cleft surface
    pts = syn.centre[None, :] - lo[None, :] + uu[:, None] * e1 + vv[:, None] * e2 + ww[:, None] * n
    radii = syn.vesicle_radius * rng.uniform(0.85, 1.15, m)
    shape = np.asarray(h.shape)
    centres: list[np.ndarray] = []
    kept: list[float] = []
    for p, r in zip(pts, radii):
        q = np.rint(p).astype(int)
        if np.any(q < 0) or np.any(q >= shape):
            continue
        if pre_edt[tuple(q)] < r + 1.0 or blocked_edt[tuple(q)] < r + 1.0:
            continue
        if centres and np.min(np.linalg.norm(np.asarray(centres) - p, axis=1) - np.asarray(kept)) < r + 0.6:
            continue
        centres.append(p)
        kept.append(float(r))
        if len(centres) >= syn.vesicle_count:
            break
    if not centres:
        # tiny cells: put one vesicle at the deepest free spot of the bouton near the cleft
        room = np.where((h > syn.cleft_half + 1) & (blocked_edt > 2), pre_edt, 0)
        q = np.asarray(np.unravel_index(int(np.argmax(room)), h.shape), float)
        centres, kept = [q], [float(max(1.0, min(syn.vesicle_radius, room.max() - 1.0)))]
    return np.asarray(centres), np.asarray(kept)


def draw_synapse(syn: Synapse, raw: np.ndarray, labels: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Draw the synapse's ultrastructure into the volume (in place) and pick its side points.

    Draws, inside ``syn.window``: mitochondria (near the cleft when ``syn.mito_near_cleft``,
    elsewhere sometimes), the vesicle cloud, the cleft with its flanking membranes and the PSD.

    Args:
        syn: a synapse after :func:`build_cells`, its cells already written to the segmentation.
        raw: float32 intensity volume, membranes of the cells already drawn.
        labels: bool volumes ``"mito"``, ``"vesicle"``, ``"cleft"``, ``"cleft2_half"`` (the half
            of the cleft that carries the second cleft value), updated in place.
        rng: random generator.
    """
    win = syn.window
    u, v, w, r, h = _local(syn)
    raw_w = raw[win]
    pre, post = syn.pre_mask, syn.post_mask
    pre_edt = _edt(pre)
    post_edt: list[np.ndarray] = []  # computed when first needed

    def edt_of(cell: np.ndarray) -> np.ndarray:
        if cell is pre:
            return pre_edt
        if not post_edt:
            post_edt.append(_edt(post))
        return post_edt[0]

    n = syn.frame[:, 2]
    lo = np.asarray([s.start for s in win], float)
    c_local = syn.centre - lo

    # mitochondria
    mito = np.zeros(pre.shape, bool)
    mito_radius = float(np.clip(0.13 * syn.scale, 2.2, 5.0))
    placements: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (centre, axis, cell)
    tangent_angle = rng.uniform(0, 2 * np.pi)
    tangent = np.cos(tangent_angle) * syn.frame[:, 0] + np.sin(tangent_angle) * syn.frame[:, 1]
    if syn.mito_near_cleft:
        lateral = rng.uniform(-0.3, 0.3) * syn.cleft_radius * syn.frame[:, 1]
        centre = syn.centre + n * (syn.cleft_half + 1.3 + mito_radius) + lateral
        placements.append((centre, tangent, pre))
    else:
        if syn.post_kind == "shaft" and rng.random() < 0.5:
            centre = syn.centre - n * (syn.post_offset + rng.uniform(0.0, 0.3) * syn.post_axes[2])
            placements.append((centre, syn.frame[:, 0], post))
        if syn.scale >= 24 and rng.random() < 0.25:  # far from the cleft, behind the vesicles
            centre = syn.centre + n * (syn.pre_offset + 0.6 * syn.pre_axes[2])
            placements.append((centre, tangent, pre))
    for centre, axis, cell in placements:
        radius = mito_radius * rng.uniform(0.9, 1.1)
        body, membrane, cristae = mito_structure(win, centre, axis, radius * rng.uniform(1.4, 2.2), radius, rng)
        inside = edt_of(cell) > 1.5  # keep the cell membrane intact
        body &= inside
        if body.sum() < 10:
            continue
        mito |= body
        raw_w[body] = MITO_MATRIX_VALUE
        raw_w[body & cristae] = CRISTAE_VALUE
        raw_w[body & (membrane | ~ndimage.binary_erosion(body))] = MITO_MEMBRANE_VALUE
    labels["mito"][win] |= mito

    # vesicle cloud
    blocked_edt = ndimage.distance_transform_edt(~mito) if mito.any() else np.full(pre.shape, np.inf)
    centres, radii = _place_vesicles(syn, h, pre_edt, blocked_edt, rng)
    syn.n_vesicles = len(centres)
    reach = float(radii.max()) + 3.0
    idx = np.nonzero(pre)
    dist, which = cKDTree(centres).query(np.stack(idx, axis=1).astype(float), distance_upper_bound=reach)
    near = np.isfinite(dist)
    rr = np.where(near, radii[np.minimum(which, len(radii) - 1)], 0.0)
    rim = near & (np.abs(dist - rr) <= 0.6)
    lumen = near & (dist < rr - 0.6)
    raw_w[tuple(a[lumen] for a in idx)] = VESICLE_LUMEN_VALUE
    raw_w[tuple(a[rim] for a in idx)] = VESICLE_RIM_VALUE
    # the annotated cloud is the blob covering the vesicles, not each vesicle
    cloud_pad = 2.0 + 0.5 * syn.vesicle_radius
    cloud = np.zeros(pre.shape, bool)
    cloud[tuple(a[near & (dist <= rr + cloud_pad)] for a in idx)] = True
    cloud = ndimage.binary_closing(cloud, iterations=2) & (pre_edt > 1.0) & ~mito
    labels["vesicle"][win] |= cloud

    # cleft, flanking membranes and PSD; an irregular rim so the cleft outline is not a perfect disc
    rim_noise = smooth_noise(h.shape, max(3.0, 0.5 * syn.cleft_radius), rng)
    disc = r <= syn.cleft_radius * (1 + 0.12 * rim_noise)
    t = syn.cleft_half
    cleft = disc & (np.abs(h) <= t) & (pre | post)
    raw_w[disc & pre & (h > t) & (h <= t + 1.3)] = PRE_MEMBRANE_VALUE
    raw_w[disc & post & (h < -t) & (h >= -t - 1.3)] = POST_MEMBRANE_VALUE
    psd = disc & (r <= 0.95 * syn.cleft_radius) & post & (h < -t - 0.8) & (h >= -t - 1.3 - syn.psd)
    raw_w[psd] = PSD_VALUE
    raw_w[cleft] = CLEFT_VALUE
    labels["cleft"][win] |= cleft
    labels["cleft2_half"][win] |= cleft & (u > 0)

    # a point inside each partner, deep in the cell along the normal
    syn.pre_point = _interior_point(pre, c_local, n, 2.0 * syn.pre_axes[2], pre_edt) + lo.astype(int)
    syn.post_point = _interior_point(post, c_local, -n, 2.0 * syn.post_axes[2], edt_of(post)) + lo.astype(int)
