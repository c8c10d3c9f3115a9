"""The random array/dict transforms: invariants (binary masks, shapes) and seeding."""

from __future__ import annotations

import numpy as np
import torch

from synclr_monai.transforms import (
    AugmentConfig,
    BatchedTwoViewAugment,
    RandMaskDropout,
    RandMaskDropoutd,
    RandTwoViewd,
)


def is_binary(x) -> bool:
    a = np.asarray(x)
    return bool(np.all((a == 0) | (a == 1)))


def test_mask_dropout_masks_stay_binary_and_shape_kept(cube_factory):
    t = RandMaskDropout(prob=0.5).set_random_state(0)
    for seed in range(8):
        cube = cube_factory(16, seed=seed)
        out = t(cube)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        assert out.shape == cube.shape
        assert is_binary(out[1:])


def test_mask_dropout_dict_masks_binary_and_seeded(cube):
    a = RandMaskDropoutd("image", prob=0.5).set_random_state(3)
    b = RandMaskDropoutd("image", prob=0.5).set_random_state(3)
    outs_a = [a({"image": cube})["image"] for _ in range(4)]
    outs_b = [b({"image": cube})["image"] for _ in range(4)]
    for x, y in zip(outs_a, outs_b):
        assert is_binary(x[1:])
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_two_view_and_batched_masks_binary(cube_factory):
    cfg = AugmentConfig(mask_dropout_prob=0.5, crop_fraction=(0.5, 1.0))
    t = RandTwoViewd(config=cfg).set_random_state(0)
    for seed in range(6):
        d = t({"image": cube_factory(16, seed=seed)})
        assert is_binary(d["view1"][1:]) and is_binary(d["view2"][1:])
    cubes = torch.from_numpy(np.stack([cube_factory(16, seed=s) for s in range(6)]))
    v1, v2 = BatchedTwoViewAugment(cfg).set_random_state(0)(cubes)
    assert is_binary(v1[:, 1:]) and is_binary(v2[:, 1:])


def test_mask_dropout_probabilities(cube):
    always = RandMaskDropout(prob=1.0)(cube).numpy()
    assert not always[2].any()
    np.testing.assert_array_equal(always[:2], cube[:2])
    np.testing.assert_array_equal(RandMaskDropout(prob=0.0)(cube).numpy(), cube)
    t = RandMaskDropout(prob=0.3).set_random_state(0)
    rate = np.mean([not t(cube)[2].any() for _ in range(400)])
    assert 0.22 < rate < 0.38
