"""synapse_cube (inference) cuts and normalises cubes exactly as training does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synclr_monai.data.assembly import assemble_bbox
from synclr_monai.data.bbox import BBoxVolume, find_bboxes, sheet_point, synapse_cube
from synclr_monai.transforms.artefacts import to_input_mode
from synclr_monai.transforms.sampling import RandCubeSamplerd


def toy_volume(seed: int = 0, shape=(24, 30, 36)) -> BBoxVolume:
    rng = np.random.RandomState(seed)
    raw = (rng.randn(*shape) + np.linspace(-2, 2, shape[0])[:, None, None]).astype(np.float16)
    mask = (rng.random_sample((3, *shape)) < 0.1).astype(np.uint8)
    return BBoxVolume("bbox9", raw, mask)


def row_at(z: int, y: int, x: int) -> dict:
    # sheets give (x, y, z) as coord_1..3
    return {"Var1": "s", "central_coord_1": x, "central_coord_2": y, "central_coord_3": z}


def _training_cube(vol: BBoxVolume, start, size: int) -> torch.Tensor:
    sampler = RandCubeSamplerd(cube_size=size)
    sampler.randomize = lambda shape: np.asarray(start, dtype=np.int64)  # the synapse's position
    d = sampler({"raw": vol.raw[None], "mask": vol.mask, "name": vol.name})
    return torch.as_tensor(d["image"])


def test_border_synapse_uses_in_volume_statistics_and_zero_padding():
    vol = toy_volume(1)
    size = 12
    z, y, x = 2, 15, 33  # 4 slices before z = 0, 3 columns past x = 35
    cube = synapse_cube(vol, row_at(z, y, x), size)
    assert cube.shape == (3, size, size, size) and cube.dtype == np.float32
    inside = (slice(4, 12), slice(0, 12), slice(0, 9))
    src = vol.raw[0:8, 9:21, 27:36].astype(np.float64)
    np.testing.assert_allclose(cube[0][inside], (src - src.mean()) / src.std(), atol=2e-5)
    pad = np.ones((size,) * 3, bool)
    pad[inside] = False
    assert np.all(cube[:, pad] == 0)
    np.testing.assert_array_equal(cube[1:][(slice(None), *inside)], vol.mask[:2, 0:8, 9:21, 27:36])


@pytest.mark.parametrize("size", [12, 13])
def test_training_cube_equals_synapse_cube_inside_the_volume(size):
    vol = toy_volume(2)
    centre = (11, 14, 17)
    start = [c - size // 2 for c in centre]
    train = _training_cube(vol, start, size)
    assert train.shape == (4, size, size, size)  # raw, pre, cleft, post
    got = synapse_cube(vol, row_at(*centre), size)
    assert torch.equal(train[:3], torch.from_numpy(got))
    for r in (0, 2):
        masked = synapse_cube(vol, row_at(*centre), size, input_mode="masked", az_radius=r)
        assert masked.shape == (1, size, size, size)
        assert torch.equal(to_input_mode(train[None], "masked", np.array([r]))[0], torch.from_numpy(masked))
    raw = synapse_cube(vol, row_at(*centre), size, input_mode="raw")
    assert torch.equal(train[:1], torch.from_numpy(raw))


def test_training_cube_equals_synapse_cube_on_synthetic_bboxes(synthetic_root):
    size = 16
    vol = assemble_bbox(find_bboxes(synthetic_root)[0])
    compared = 0
    for _, row in vol.synapses.iterrows():
        centre = sheet_point(row, "central")
        start = [c - size // 2 for c in centre]
        if any(s < 0 or s + size > d for s, d in zip(start, vol.shape)):
            continue  # a synapse fully inside the volume only
        train = _training_cube(vol, start, size)
        assert torch.equal(train[:3], torch.from_numpy(synapse_cube(vol, row, size)))
        masked = synapse_cube(vol, row, size, input_mode="masked", az_radius=2)
        assert torch.equal(to_input_mode(train[None], "masked", np.array([2]))[0], torch.from_numpy(masked))
        assert (masked != 0).any() and (masked == 0).any()
        compared += 1
    assert compared >= 1


def test_anisotropic_synapse_cube_keeps_shape_and_binary_masks():
    vol = toy_volume(3)
    cube = synapse_cube(vol, row_at(12, 15, 18), 12, voxel_size=(2.0, 1.0, 1.0))
    assert cube.shape == (3, 12, 12, 12)
    assert set(np.unique(cube[1:]).tolist()) <= {0.0, 1.0}
    iso = synapse_cube(vol, row_at(12, 15, 18), 12)
    assert not np.array_equal(cube, iso)
