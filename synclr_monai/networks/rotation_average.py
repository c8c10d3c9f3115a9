"""Pose-invariant embeddings: an encoder's features averaged over the 24 rotations of the cube.

A synapse has no preferred orientation in the volume, and contrastive training with random 3-D rotations
only makes the encoder approximately invariant to them. Averaging its features over the rotation group of
the cube (the 24 proper rotations that map the voxel grid onto itself) gives features that are exactly
invariant to those rotations and far less dependent on the pose of the cleft in the cube (see
``docs/results.md``: the linear probe rises by ~10-20 points at the demo budget).

Written here because MONAI's ``TestTimeAugmentation`` averages *random* invertible transforms of a
segmentation output in image space; this is a deterministic group average of feature vectors.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from synclr_monai.errors import ConfigError

__all__ = [
    "CUBE_ROTATION_COUNTS",
    "cube_rotations",
    "default_rotations",
    "normal_turns",
    "rotate_cube",
    "RotationAveragedEncoder",
]

#: the supported numbers of rotations: 1 (the cube as cut), 4 (the quarter turns about z: the cleft normal of
#: a cube in the canonical pose) or the whole rotation group of the cube (24)
CUBE_ROTATION_COUNTS: tuple[int, ...] = (1, 4, 24)


def default_rotations(pose: str) -> int:
    """The rotations inference averages over by default: the cube's 24 (native pose) or the 4 turns about the
    normal (canonical pose: the other rotations would undo the pose the encoder was trained in)."""
    return 4 if pose == "canonical" else 24


def normal_turns() -> list[tuple[tuple[int, int, int], tuple[bool, bool, bool]]]:
    """The quarter turns about the z axis as ``(perm, flips)`` for :func:`rotate_cube`, identity first.

    In the canonical pose (:mod:`~synclr_monai.transforms.pose`) z is the cleft normal and the in-plane axes
    have no sign: these four rotations keep the pose and cover the long axis's two signs.
    """
    return [((0, 1, 2), (False, False, False)), ((0, 2, 1), (False, True, False)),
            ((0, 1, 2), (False, True, True)), ((0, 2, 1), (False, False, True))]  # fmt: skip


def cube_rotations() -> list[tuple[tuple[int, int, int], tuple[bool, bool, bool]]]:
    """The 24 proper rotations of a cube as (axis permutation, axes flipped after it), identity first.

    An axis permutation followed by flips is a signed permutation matrix; it is a rotation (not a
    reflection) when its determinant, the permutation's sign times ``(-1) ** flips``, is +1.

    Returns:
        24 ``(perm, flips)`` pairs for :func:`rotate_cube`.
    """
    out = []
    for perm in itertools.permutations(range(3)):
        sign = round(float(np.linalg.det(np.eye(3)[list(perm)])))
        for flips in itertools.product((False, True), repeat=3):
            if sign * (-1) ** sum(flips) == 1:
                out.append((tuple(perm), tuple(flips)))
    return out


def rotate_cube(x: torch.Tensor, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> torch.Tensor:
    """Rotate a batch of cubes ``[B, C, S, S, S]`` by a signed axis permutation (an exact voxel permutation).

    Args:
        x: the cubes (the three spatial axes must have one length).
        perm: new order of the spatial axes.
        flips: per spatial axis (after the permutation), whether it is reversed.

    Returns:
        The rotated cubes (a view when nothing is flipped).
    """
    y = x.permute(0, 1, *(p + 2 for p in perm))
    dims = [i + 2 for i, f in enumerate(flips) if f]
    return y.flip(dims) if dims else y


class RotationAveragedEncoder(nn.Module):
    """``encoder(x)`` averaged over the rotations of the cube: ``mean_R encoder(R x)``.

    Args:
        encoder: maps ``[B, C, S, S, S]`` to ``[B, F]``.
        rotations: 1 (no averaging: the encoder itself), 4 (the quarter turns about z, :func:`normal_turns`)
            or 24 (the cube's rotation group).

    Raises:
        ConfigError: (a ``ValueError``) for another number of rotations: a bad ``rotations`` setting, reported
            as one line by the commands and the bundle.
        ValueError: (in ``forward``) for non-cubic inputs.
    """

    def __init__(self, encoder: nn.Module, rotations: int = 24) -> None:
        super().__init__()
        if int(rotations) not in CUBE_ROTATION_COUNTS:
            raise ConfigError(
                f"rotations must be one of {CUBE_ROTATION_COUNTS} (1: the cube as cut; 4: the turns about z, for "
                f"the canonical pose; 24: the cube's rotation group), got {rotations!r}"
            )
        self.encoder = encoder
        self.rotations = int(rotations)
        self._group = normal_turns() if self.rotations == 4 else cube_rotations()[: self.rotations]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rotations == 1:
            return self.encoder(x)
        if x.ndim != 5 or len(set(x.shape[2:])) != 1:
            raise ValueError(f"RotationAveragedEncoder: expected cubes [B, C, S, S, S], got {tuple(x.shape)}")
        # one forward pass per rotation (not one batch of 24x): memory stays that of the plain encoder
        total = None
        for perm, flips in self._group:
            f = self.encoder(rotate_cube(x, perm, flips).contiguous()).float()
            total = f if total is None else total + f
        return total / self.rotations
