"""Small cubes and bbox items for the transform tests, as fixtures (tests run with --import-mode=importlib)."""

from __future__ import annotations

import numpy as np
import pytest


def make_cube(size: int = 16, seed: int = 0, p_mask: float = 0.3) -> np.ndarray:
    """A float32 ``[3, S, S, S]`` cube: random raw, random binary pre and cleft masks."""
    rng = np.random.RandomState(seed)
    cube = np.empty((3, size, size, size), dtype=np.float32)
    cube[0] = rng.randn(size, size, size)
    cube[1:] = rng.random_sample((2, size, size, size)) < p_mask
    return cube


def make_item(shape=(32, 64, 64), blobs=(), seed: int = 0, name: str = "bbox1") -> dict:
    """A loaded bbox item: float16 raw ``[1, Z, Y, X]``, uint8 masks ``[2, Z, Y, X]`` with cleft boxes ``blobs``.

    Args:
        shape: ``(Z, Y, X)``.
        blobs: ``((z0, z1), (y0, y1), (x0, x1))`` boxes set to 1 in the cleft channel.
        seed: raw noise seed.
        name: the bbox name.
    """
    rng = np.random.RandomState(seed)
    raw = rng.randn(1, *shape).astype(np.float16)
    mask = np.zeros((2, *shape), dtype=np.uint8)
    for (z0, z1), (y0, y1), (x0, x1) in blobs:
        mask[1, z0:z1, y0:y1, x0:x1] = 1
        mask[0, z0:z1, y0:y1, max(x0 - 3, 0) : x0] = 1  # a pre-synaptic slab beside each cleft
    return {"raw": raw, "mask": mask, "name": name}


@pytest.fixture()
def cube() -> np.ndarray:
    """A 16³ cube."""
    return make_cube(16, seed=1)


@pytest.fixture()
def cube_factory():
    """``make_cube(size=16, seed=0, p_mask=0.3)``."""
    return make_cube


@pytest.fixture()
def item_factory():
    """``make_item(shape=(32, 64, 64), blobs=(), seed=0, name="bbox1")``."""
    return make_item
