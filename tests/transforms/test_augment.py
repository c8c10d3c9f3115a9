"""The random array/dict transforms: invariants (binary masks, raw-only, permutations, shapes) and seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synclr_monai.transforms import (
    ROTATION_PLANES,
    AugmentConfig,
    BatchedTwoViewAugment,
    RandCropResize,
    RandCropResized,
    RandMaskDropout,
    RandMaskDropoutd,
    RandPlaneRotate90,
    RandPlaneRotate90d,
    RandRawGaussianSmooth,
    RandRawGaussianSmoothd,
    RandRawIntensityJitter,
    RandRawIntensityJitterd,
    RandTwoViewd,
)


def is_binary(x) -> bool:
    a = np.asarray(x)
    return bool(np.all((a == 0) | (a == 1)))


ARRAY_TRANSFORMS = {
    "rotate": lambda: RandPlaneRotate90(prob=1.0),
    "jitter": lambda: RandRawIntensityJitter(prob=1.0, scale_std=0.5, shift_std=0.5),
    "blur": lambda: RandRawGaussianSmooth(prob=1.0),
    "crop_resize": lambda: RandCropResize(prob=1.0, fraction=(0.5, 0.9)),
    "dropout": lambda: RandMaskDropout(prob=0.5),
}
DICT_TRANSFORMS = {
    "rotate": lambda: RandPlaneRotate90d("image"),
    "jitter": lambda: RandRawIntensityJitterd("image"),
    "blur": lambda: RandRawGaussianSmoothd("image", prob=1.0),
    "crop_resize": lambda: RandCropResized("image", fraction=(0.5, 0.9)),
    "dropout": lambda: RandMaskDropoutd("image", prob=0.5),
}


@pytest.mark.parametrize("name", ARRAY_TRANSFORMS)
def test_masks_stay_binary_and_shape_kept(cube_factory, name):
    t = ARRAY_TRANSFORMS[name]().set_random_state(0)
    for seed in range(8):
        cube = cube_factory(16, seed=seed)
        out = t(cube)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        assert out.shape == cube.shape
        assert is_binary(out[1:]), name


@pytest.mark.parametrize("name", DICT_TRANSFORMS)
def test_dict_transforms_masks_binary_and_seeded(cube, name):
    a = DICT_TRANSFORMS[name]().set_random_state(3)
    b = DICT_TRANSFORMS[name]().set_random_state(3)
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


@pytest.mark.parametrize(
    "t",
    [RandRawIntensityJitter(prob=1.0, scale_std=0.5, shift_std=0.5), RandRawGaussianSmooth(prob=1.0, sigma=(0.5, 1.0))],
)
def test_raw_only_transforms_leave_masks_untouched(cube, t):
    t.set_random_state(1)
    out = t(cube).numpy()
    np.testing.assert_array_equal(out[1:], cube[1:])
    assert not np.allclose(out[0], cube[0])


@pytest.mark.parametrize(
    "t", [RandRawIntensityJitterd("image", scale_std=0.5), RandRawGaussianSmoothd("image", prob=1.0)]
)
def test_raw_only_dict_transforms_leave_masks_untouched(cube, t):
    out = t.set_random_state(1)({"image": cube})["image"].numpy()
    np.testing.assert_array_equal(out[1:], cube[1:])
    assert not np.allclose(out[0], cube[0])


def test_rotation_is_an_exact_permutation(cube):
    t = RandPlaneRotate90().set_random_state(0)
    candidates = [np.rot90(cube, k, axes=(a + 1, b + 1)) for k in range(4) for a, b in ROTATION_PLANES]
    seen = set()
    for _ in range(40):
        out = t(cube).numpy()
        matches = [i for i, c in enumerate(candidates) if np.array_equal(out, c)]
        assert matches, "output is not a 90-degree rotation of the input"
        seen.add((t.k, t.plane) if t.k else 0)
        for c in range(3):
            np.testing.assert_array_equal(np.sort(out[c], axis=None), np.sort(cube[c], axis=None))
    assert len(seen) >= 8  # k = 0 and most (k, plane) pairs drawn


def test_rotation_dict_same_for_all_keys(cube):
    d = RandPlaneRotate90d(["a", "b"]).set_random_state(4)({"a": cube, "b": cube.copy()})
    torch.testing.assert_close(d["a"], d["b"], rtol=0, atol=0)


def test_rotation_rejects_bad_k():
    with pytest.raises(ValueError, match="max_k"):
        RandPlaneRotate90(max_k=5)


def test_crop_resize_full_fraction_is_identity(cube):
    out = RandCropResize(fraction=(1.0, 1.0)).set_random_state(0)(cube)
    np.testing.assert_array_equal(out.numpy(), cube)


def test_crop_resize_draws_within_range(cube):
    t = RandCropResize(fraction=(0.5, 0.75)).set_random_state(0)
    for _ in range(20):
        t.randomize((16, 16, 16))
        assert 8 <= t.size[0] <= 12 and len(set(t.size)) == 1
        assert all(0 <= a <= 16 - n for a, n in zip(t.start, t.size))
    with pytest.raises(ValueError, match="fraction"):
        RandCropResize(fraction=(0.0, 0.5))


def test_crop_resized_mask_keys_use_nearest(cube):
    comp = (cube[2:3] > 0).astype(np.float32)
    t = RandCropResized(["image", "comp"], fraction=(0.5, 0.6), mask_keys="comp").set_random_state(2)
    d = t({"image": cube, "comp": comp})
    assert d["comp"].shape == comp.shape and is_binary(d["comp"])
    # the mask key follows exactly the image's cleft channel (same crop, same nearest resize)
    torch.testing.assert_close(d["comp"][0], d["image"][2], rtol=0, atol=0)
    with pytest.raises(ValueError, match="different spatial shapes"):
        t({"image": cube, "comp": comp[:, :8]})


def test_mask_dropout_probabilities(cube):
    always = RandMaskDropout(prob=1.0)(cube).numpy()
    assert not always[2].any()
    np.testing.assert_array_equal(always[:2], cube[:2])
    np.testing.assert_array_equal(RandMaskDropout(prob=0.0)(cube).numpy(), cube)
    t = RandMaskDropout(prob=0.3).set_random_state(0)
    rate = np.mean([not t(cube)[2].any() for _ in range(400)])
    assert 0.22 < rate < 0.38


def test_zero_probability_is_identity(cube):
    for t in (
        RandPlaneRotate90(prob=0.0),
        RandRawIntensityJitter(prob=0.0),
        RandRawGaussianSmooth(prob=0.0),
        RandCropResize(prob=0.0),
    ):
        np.testing.assert_array_equal(t(cube).numpy(), cube)
