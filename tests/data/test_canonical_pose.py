"""``benchmarks/canonical_pose.py``: the frame of a synapse from its masks, and the turn into it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synclr_monai.transforms.params import random_rotations

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pose():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # it imports representation.py's scoring beside it
    spec = importlib.util.spec_from_file_location("canonical_pose", ROOT / "benchmarks" / "canonical_pose.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synapse(size: int, normal: np.ndarray, long_axis: np.ndarray) -> np.ndarray:
    """``[3, C, C, C]``: a flat elliptic cleft disc through the centre (long along ``long_axis``), the
    pre-synaptic mask a slab on the side opposite ``normal``, raw = the distance along ``normal``."""
    c = (size - 1) / 2.0
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1) - c
    n = normal / np.linalg.norm(normal)
    a = long_axis - n * np.dot(long_axis, n)
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    h, u, v = grid @ n, grid @ a, grid @ b
    cube = np.zeros((3, size, size, size), np.float32)
    cube[0] = h
    cube[1] = (h < -1.5) & (h > -7) & (u**2 / 100 + v**2 / 36 < 1)
    cube[2] = (np.abs(h) <= 1.0) & (u**2 / 100 + v**2 / 36 < 1)
    return cube


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_frame_is_the_cleft_normal_from_pre_to_post_and_its_long_axis(pose, seed):
    rng = np.random.RandomState(seed)
    turn = random_rotations(rng, 1)[0]
    normal, long_axis = turn[0], turn[2]
    cube = synapse(33, normal, long_axis)
    frame = pose.canonical_rotation(cube)
    np.testing.assert_allclose(frame @ frame.T, np.eye(3), atol=1e-9)  # a rotation
    assert np.linalg.det(frame) == pytest.approx(1.0)
    assert np.dot(frame[0], normal) > 0.97  # z: the normal, pointing away from the pre-synaptic side
    assert abs(np.dot(frame[2], long_axis)) > 0.97  # x: the long axis (either sign)
    # turned, the cleft lies in the central z-plane, the pre-synaptic mask below it and the raw increases with z
    out = pose.turn(torch.from_numpy(cube)[None], frame[None], 21)[0]
    z = torch.arange(21, dtype=torch.float32).view(-1, 1, 1) - 10
    assert out[2].sum() > 0 and (z * out[2]).abs().sum() / out[2].sum() < 0.8
    assert out[1].sum() > 0 and (z * out[1]).sum() / out[1].sum() < -2
    assert set(torch.unique(out[1:]).tolist()) <= {0.0, 1.0}
    centre = out[0, :, 10, 10]
    assert torch.all(centre[1:] >= centre[:-1] - 1e-4) and centre[-1] - centre[0] > 15


def test_without_a_cleft_the_frame_is_the_identity(pose):
    cube = np.zeros((3, 9, 9, 9), np.float32)
    np.testing.assert_array_equal(pose.canonical_rotation(cube), np.eye(3))
