"""The canonical pose of a synapse: its cube turned into the frame of its own cleft.

A synapse lies in the volume at any angle, and a short contrastive training spends most of itself learning
to ignore that angle (docs/results.md, "Canonical pose"). In the canonical pose (``pose: canonical``) every
cube is first turned into the frame its own masks define, the way a biologist lays a synapse out before
comparing it with another:

- z: the cleft's normal (the direction of least spread of the cleft voxels, PCA of their physical
  coordinates), pointing from the pre-synaptic side to the post-synaptic side (the pre-synaptic voxels
  near the cleft lie at -z; without any, the post-synaptic ones at +z);
- x: the cleft's long axis (the direction of most spread), orthogonal to z;
- y: completes a proper rotation (no mirror).

The long axis has no biological sign, and a round cleft has no long axis at all, so the turns about the
normal stay free: training draws a uniform one per view, inference averages over the four quarter turns
(:class:`~synclr_monai.networks.rotation_average.RotationAveragedEncoder` with 4 rotations).

The frame is a rotation in physical space (``voxel_size``), so it composes with the views' own maps
(:func:`~synclr_monai.transforms.params.view_matrices`). The cube in that pose is one resample of a context
around it (:class:`CanonicalPose`), like every view of the 3-D augmentation.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import cc3d
import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform

from .config import CLEFT_CHANNEL, POST_CHANNEL, PRE_CHANNEL

__all__ = [
    "POSES",
    "CanonicalPose",
    "CanonicalPosed",
    "canonical_frame",
    "check_pose",
    "pose_context_size",
    "synapse_frame",
    "turns_about_normal",
]

#: ``native``: the synapse as it lies in the volume; ``canonical``: turned into the frame of its own cleft.
POSES: tuple[str, ...] = ("native", "canonical")

#: Fewer cleft voxels than this define no plane: the frame is then the identity (the cube as cut).
MIN_CLEFT_VOXELS = 5

#: Pre- and post-synaptic voxels within this many (finest-voxel) units of the cleft's bounding box decide
#: the normal's sign: far enough to reach past a thick cleft into the two cells, near enough that a
#: neighbouring synapse's segments do not vote.
SIDE_MARGIN = 8.0


def check_pose(pose: Any) -> str:
    """The pose name, validated.

    Raises:
        ValueError: not one of :data:`POSES`.
    """
    if pose not in POSES:
        raise ValueError(f"pose must be one of {POSES}, got {pose!r}")
    return str(pose)


def pose_context_size(cube_size: int) -> int:
    """Edge of the context a canonical cube of edge S is turned from: every turned corner falls inside.

    ``ceil(S * sqrt(3)) + 2`` (one voxel of interpolation margin each side), with ``C - S`` even so the
    context's centre is the cube's.
    """
    edge = int(np.ceil(np.sqrt(3.0) * int(cube_size))) + 2
    return edge + (edge - int(cube_size)) % 2


def _unit_voxel(voxel_size: Sequence[float] | None) -> np.ndarray:
    voxel = np.ones(3) if voxel_size is None else np.asarray(voxel_size, dtype=np.float64).reshape(3)
    return voxel / voxel.min()


def synapse_frame(
    cleft: np.ndarray,
    pre: np.ndarray | None = None,
    post: np.ndarray | None = None,
    voxel_size: Sequence[float] | None = None,
) -> np.ndarray:
    """The canonical axes of one synapse from its cleft voxels and the cells' masks around them.

    Args:
        cleft: ``[Z, Y, X]`` bool, the synapse's cleft voxels (one component) in some box.
        pre: the pre-synaptic mask over the same box (None: none).
        post: the post-synaptic mask over the same box (None: none); used when ``pre`` has no voxel near
            the cleft.
        voxel_size: ``(z, y, x)`` physical voxel size (None: isotropic).

    Returns:
        ``[3, 3]`` float64 proper rotation whose rows are the new (z, y, x) axes in physical (z, y, x)
        coordinates: z the normal (pre -> post), x the long axis. The identity when the cleft has fewer than
        :data:`MIN_CLEFT_VOXELS` voxels.
    """
    unit = _unit_voxel(voxel_size)
    idx = np.argwhere(np.asarray(cleft) != 0)
    if len(idx) < MIN_CLEFT_VOXELS:
        return np.eye(3)
    pts = idx * unit
    mu = pts.mean(axis=0)
    # eigh sorts the eigenvalues ascending: least spread (the normal) first, most spread (long axis) last
    _, vec = np.linalg.eigh(np.cov((pts - mu).T))
    normal, long_axis = vec[:, 0], vec[:, 2]
    margin = np.ceil(SIDE_MARGIN / unit).astype(np.int64)
    lo, hi = np.maximum(idx.min(axis=0) - margin, 0), idx.max(axis=0) + margin + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    for side, sign in ((pre, 1.0), (post, -1.0)):
        if side is None:
            continue
        near = np.argwhere(np.asarray(side)[box] != 0)
        if len(near):
            towards = np.dot((near + lo) * unit - mu, normal).mean() * sign
            if towards > 0:  # the pre-synaptic cell must lie at -z (the post-synaptic one at +z)
                normal = -normal
            break
    x = long_axis - normal * np.dot(long_axis, normal)
    x /= np.linalg.norm(x)
    # rows (z, y, x) of a proper rotation: in (z, y, x) coordinates y = x cross z (z cross x would mirror)
    return np.stack([normal, np.cross(x, normal), x])


def canonical_frame(
    cube: NdarrayOrTensor, voxel_size: Sequence[float] | None = None, reach: int | None = None
) -> np.ndarray:
    """The canonical axes of the synapse at the centre of a cube (or context) of the package's layout.

    The synapse is the cleft component (26-connected) nearest to the cube's centre: a neighbouring synapse's
    cleft in the same cube does not tilt the frame.

    Args:
        cube: ``[3 or 4, Z, Y, X]`` raw, pre-synaptic mask, cleft mask[, post-synaptic mask].
        voxel_size: ``(z, y, x)`` physical voxel size (None: isotropic).
        reach: only the central box of half-edge ``reach`` voxels is looked at (None: the whole cube). A
            random cube's views take their frame from the masks near the view (a 142³ context of 80³ views
            costs ~3x more to label whole than cut to the view and a margin: ``benchmarks/pose_frames.py``).

    Returns:
        ``[3, 3]`` rows (see :func:`synapse_frame`); the identity without a cleft.

    Raises:
        ValueError: fewer than 3 channels or not 3-D.
    """
    c = cube.detach().cpu().numpy() if isinstance(cube, torch.Tensor) else np.asarray(cube)
    if c.ndim != 4 or c.shape[0] < 3:
        raise ValueError(f"canonical_frame: expected [3 or 4, Z, Y, X] (raw, pre, cleft[, post]), got {c.shape}")
    if reach is not None:
        # a box with the same centre: (n - 1) / 2 stays the centre when the same number is cut from both ends
        cut = [max((n - 1) // 2 - int(reach), 0) for n in c.shape[1:]]
        c = c[(slice(None), *(slice(a, n - a) for a, n in zip(cut, c.shape[1:])))]
    cleft = c[CLEFT_CHANNEL] > 0.5
    idx = np.argwhere(cleft)
    if len(idx) < MIN_CLEFT_VOXELS:
        return np.eye(3)
    labels = cc3d.connected_components(cleft, connectivity=26, binary_image=True)
    centre = (np.asarray(c.shape[1:]) - 1) / 2.0
    nearest = idx[np.argmin((((idx - centre) * _unit_voxel(voxel_size)) ** 2).sum(axis=1))]
    component = labels == labels[tuple(nearest)]
    post = c[POST_CHANNEL] > 0.5 if c.shape[0] > POST_CHANNEL else None
    return synapse_frame(component, c[PRE_CHANNEL] > 0.5, post, voxel_size)


def turns_about_normal(n: int, angle: np.ndarray | None = None) -> np.ndarray:
    """``[n, 3, 3]`` turns about the z axis (the normal of the canonical frame) in (z, y, x) coordinates.

    Args:
        n: how many.
        angle: ``[n]`` angles in radians (None: zero, the identity).
    """
    theta = np.zeros(n) if angle is None else np.asarray(angle, dtype=np.float64).reshape(n)
    cos, sin = np.cos(theta), np.sin(theta)
    out = np.zeros((n, 3, 3))
    out[:, 0, 0] = 1.0
    out[:, 1, 1], out[:, 1, 2], out[:, 2, 1], out[:, 2, 2] = cos, -sin, sin, cos
    return out


class CanonicalPose(Transform):
    """Turn the synapse at the centre of a context into its canonical pose: a ``[K, S, S, S]`` cube.

    One resample (:func:`~synclr_monai.transforms.geometry.affine_resample`: trilinear raw, nearest masks, so
    they stay binary) of the context, about its centre, by the frame of :func:`canonical_frame`. With
    anisotropic ``voxel_size`` the cube is a physical cube sampled at the finest voxel size, as the training
    views are.

    Args:
        cube_size: the output edge S.
        voxel_size: ``(z, y, x)`` physical voxel size (None: isotropic).

    Raises:
        ValueError: (at call time) a context smaller than :func:`pose_context_size` along an axis it must
            cover, or a malformed cube.
    """

    def __init__(self, cube_size: int, voxel_size: Sequence[float] | None = None) -> None:
        self.cube_size = int(cube_size)
        self.voxel_size = None if voxel_size is None else tuple(float(v) for v in voxel_size)

    def frame(self, context: NdarrayOrTensor) -> np.ndarray:
        """The frame the context is turned by (:func:`canonical_frame`)."""
        return canonical_frame(context, self.voxel_size)

    def __call__(self, context: NdarrayOrTensor, frame: np.ndarray | None = None) -> torch.Tensor:
        """The canonical cube of ``context`` (``[3 or 4, C, C, C]``); ``frame`` overrides the one it defines."""
        from .geometry import affine_resample
        from .params import view_matrices

        x = context if isinstance(context, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(context))
        # a turned physical cube of edge S (finest voxels) reaches sqrt(3) S / 2 from the centre: fewer voxels
        # along a coarser axis
        need = np.ceil(np.sqrt(3.0) * self.cube_size / _unit_voxel(self.voxel_size)) + 2
        if x.ndim != 4 or x.shape[0] < 3 or np.any(np.asarray(x.shape[1:]) < need):
            raise ValueError(
                f"CanonicalPose: a {self.cube_size}³ cube is turned from a [3 or 4, C, C, C] context of edge at "
                f"least {need.astype(int).tolist()} (z, y, x), got {tuple(x.shape)}"
            )
        rows = self.frame(x) if frame is None else np.asarray(frame, dtype=np.float64).reshape(3, 3)
        voxel = self.voxel_size or (1.0, 1.0, 1.0)
        # the resample maps output voxel o to context voxel A @ o: the frame's axes (rows) become columns
        matrix = view_matrices(rows.T[None], np.zeros((1, 3), bool), np.ones(1), voxel)[0]
        return affine_resample(x.float(), matrix, np.zeros(3), self.cube_size)


class CanonicalPosed(MapTransform):
    """Dictionary wrapper of :class:`CanonicalPose`: ``data[key]`` (a context) becomes its canonical cube.

    Args:
        keys: the context keys.
        cube_size: the output edge S.
        voxel_size: ``(z, y, x)`` physical voxel size (None: isotropic).
        frame_key: where to write each key's ``[3, 3]`` frame (``{key}_{frame_key}``), or None.
        allow_missing_keys: don't raise for a missing key.
    """

    def __init__(
        self,
        keys: KeysCollection,
        cube_size: int,
        voxel_size: Sequence[float] | None = None,
        frame_key: str | None = "pose_frame",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.pose = CanonicalPose(cube_size, voxel_size)
        self.frame_key = frame_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            frame = self.pose.frame(d[key])
            d[key] = self.pose(d[key], frame)
            if self.frame_key is not None:
                d[f"{key}_{self.frame_key}"] = frame
        return d
