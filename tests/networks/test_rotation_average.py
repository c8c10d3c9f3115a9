"""The rotation-averaged encoder: the 24 rotations of the cube and exact invariance of its features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from synclr_monai.errors import ConfigError
from synclr_monai.networks import build_backbone
from synclr_monai.networks.rotation_average import RotationAveragedEncoder, cube_rotations, rotate_cube


def _matrix(perm, flips) -> np.ndarray:
    """The signed permutation matrix of (perm, flips), acting on (z, y, x) index offsets."""
    m = np.eye(3)[list(perm)]
    return np.diag([-1.0 if f else 1.0 for f in flips]) @ m


def test_cube_rotations_are_the_24_proper_rotations():
    rots = cube_rotations()
    mats = [_matrix(p, f) for p, f in rots]
    assert len(rots) == 24
    assert rots[0] == ((0, 1, 2), (False, False, False))  # identity first
    assert all(np.isclose(np.linalg.det(m), 1.0) for m in mats)
    # the independent reference: SciPy's octahedral group is the same set of matrices
    reference = {tuple(np.rint(m).astype(int).ravel()) for m in Rotation.create_group("O").as_matrix()}
    assert {tuple(np.rint(m).astype(int).ravel()) for m in mats} == reference


def test_rotate_cube_moves_voxels_as_its_matrix_says():
    s = 5
    x = torch.arange(s**3, dtype=torch.float32).reshape(1, 1, s, s, s)
    c = (s - 1) / 2
    for perm, flips in cube_rotations():
        y = rotate_cube(x, perm, flips)
        m = _matrix(perm, flips)
        for out_idx in [(0, 1, 2), (4, 0, 3), (2, 2, 2)]:
            # output voxel o reads input voxel R^-1 (o - c) + c
            src = np.rint(np.linalg.inv(m) @ (np.array(out_idx) - c) + c).astype(int)
            assert y[0, 0][out_idx].item() == x[0, 0][tuple(src)].item()


def test_rotation_averaged_features_are_invariant_to_cube_rotations():
    torch.manual_seed(0)
    encoder = build_backbone("resnet10", in_channels=1, widen_factor=0.25).eval()
    averaged = RotationAveragedEncoder(encoder, 24).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        ref = averaged(x)
        plain = encoder(x)
        for perm, flips in cube_rotations()[1:6]:
            rotated = rotate_cube(x, perm, flips).contiguous()
            torch.testing.assert_close(averaged(rotated), ref, rtol=1e-4, atol=1e-5)
        # the plain encoder is not invariant (else the test above proves nothing)
        perm, flips = cube_rotations()[5]
        assert not torch.allclose(encoder(rotate_cube(x, perm, flips).contiguous()), plain, rtol=1e-3, atol=1e-4)
    assert ref.shape == plain.shape


def test_one_rotation_is_the_encoder_itself_and_bad_counts_are_refused():
    encoder = build_backbone("resnet10", in_channels=1, widen_factor=0.25).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(RotationAveragedEncoder(encoder, 1)(x), encoder(x))
    with pytest.raises(ConfigError, match="rotations must be one of"):  # a UserError: one line, exit 2
        RotationAveragedEncoder(encoder, 12)
    with pytest.raises(ValueError, match="expected cubes"):
        RotationAveragedEncoder(encoder, 24)(torch.randn(1, 1, 16, 16, 8))


def test_four_rotations_are_the_quarter_turns_about_the_normal():
    from synclr_monai.networks.rotation_average import default_rotations, normal_turns

    x = torch.randn(2, 1, 8, 8, 8)
    turned = [rotate_cube(x, perm, flips) for perm, flips in normal_turns()]
    for k, t in enumerate(turned):  # z (the canonical pose's cleft normal) stays; (y, x) turn by k quarters
        torch.testing.assert_close(t, torch.rot90(x, k, dims=(3, 4)))
    encoder = build_backbone("resnet10", in_channels=1, widen_factor=0.25).eval()
    with torch.no_grad():
        averaged = RotationAveragedEncoder(encoder, 4)(x)
        torch.testing.assert_close(averaged, sum(encoder(t.contiguous()) for t in turned) / 4)
        torch.testing.assert_close(RotationAveragedEncoder(encoder, 4)(torch.rot90(x, 1, dims=(3, 4))), averaged)
    assert default_rotations("canonical") == 4 and default_rotations("native") == 24
