"""AugmentConfig validation and the random parameters' distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from synclr_monai.transforms import AugmentConfig, TwoViewParams, ViewParams, sample_two_view_params, sample_view_params


@pytest.mark.parametrize(
    "kwargs",
    [
        {"blur_prob": 1.5},
        {"mask_dropout_prob": -0.1},
        {"rotate_max_k": 4},
        {"scale_std": -1.0},
        {"blur_sigma": (1.0, 0.1)},
        {"blur_sigma": (0.0, 1.0)},
        {"crop_fraction": (0.8, 1.2)},
        {"crop_fraction": 0.8},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="AugmentConfig"):
        AugmentConfig(**kwargs)


def test_config_from_mapping():
    cfg = AugmentConfig.from_any({"blur_prob": 0.2, "crop_fraction": [0.5, 0.75]})
    assert cfg.blur_prob == 0.2 and cfg.crop_fraction == (0.5, 0.75)
    assert cfg.crop_sizes(80) == (40, 60)
    assert AugmentConfig().crop_sizes(80) == (64, 80)  # the lab's 64-80
    with pytest.raises(ValueError, match="unknown keys"):
        AugmentConfig.from_any({"blur_p": 0.2})
    with pytest.raises(TypeError):
        AugmentConfig.from_any(3)


def test_lab_default_distributions():
    n, s = 4000, 80
    p = sample_two_view_params(np.random.RandomState(0), n, s)
    v1, v2 = p.view1, p.view2
    for v in (v1, v2):
        assert set(np.unique(v.rot_k)) == {0, 1, 2, 3}
        assert set(np.unique(v.rot_plane)) == {0, 1, 2}
        # k uniform in 0..3
        assert np.allclose(np.bincount(v.rot_k) / n, 0.25, atol=0.03)
        assert abs(v.scale.mean() - 1.0) < 0.01 and abs(v.scale.std() - 0.1) < 0.01
        assert abs(v.shift.mean()) < 0.01 and abs(v.shift.std() - 0.1) < 0.01
        assert abs(v.blur.mean() - 0.5) < 0.03
        assert v.sigma.min() >= 0.1 and v.sigma.max() <= 1.0
        assert np.all(v.sigma[:, 0] == v.sigma[:, 2])  # isotropic
    # stream B only on the second view
    assert np.all(v1.crop_size == s) and np.all(v1.crop_start == 0) and not v1.dropout.any()
    assert v2.crop_size.min() == 64 and v2.crop_size.max() == 80
    assert np.all(v2.crop_size[:, 0:1] == v2.crop_size)  # cubic crops
    assert np.all(v2.crop_start >= 0) and np.all(v2.crop_start + v2.crop_size <= s)
    assert abs(v2.dropout.mean() - 0.3) < 0.03
    # starts cover the whole valid range
    small = v2.crop_size[:, 0] == 64
    assert v2.crop_start[small, 0].min() == 0 and v2.crop_start[small, 0].max() == 16


def test_probabilities_zero_give_identity():
    cfg = AugmentConfig(rotate_prob=0, intensity_prob=0, blur_prob=0, crop_prob=0, mask_dropout_prob=0)
    v = sample_view_params(np.random.RandomState(1), 50, 16, cfg, second_view=True)
    assert not v.rot_k.any() and np.all(v.scale == 1) and np.all(v.shift == 0) and not v.blur.any()
    assert np.all(v.crop_size == 16) and not v.dropout.any()


def test_sampling_is_reproducible():
    a = sample_two_view_params(np.random.RandomState(5), 8, 32)
    b = sample_two_view_params(np.random.RandomState(5), 8, 32)
    c = sample_two_view_params(np.random.RandomState(6), 8, 32)
    for name, x in a.view2.to_dict().items():
        np.testing.assert_array_equal(x, b.view2.to_dict()[name])
    assert not np.array_equal(a.view2.scale, c.view2.scale)


def test_params_select_concat_and_collated_roundtrip():
    p = sample_two_view_params(np.random.RandomState(2), 5, 24)
    parts = [p.select(i) for i in range(5)]
    assert all(len(q) == 1 for q in parts)
    joined = TwoViewParams.concat(parts)
    np.testing.assert_array_equal(joined.view2.crop_start, p.view2.crop_start)
    # per-sample dicts without the batch axis, collated by a DataLoader, come back as the batch
    samples = [{v: {k: a[0] for k, a in d.items()} for v, d in q.to_dict().items()} for q in parts]
    batch = default_collate(samples)
    assert isinstance(batch["view1"]["sigma"], torch.Tensor) and batch["view1"]["sigma"].shape == (5, 3)
    back = TwoViewParams.from_dict(batch)
    for name, x in p.view2.to_dict().items():
        np.testing.assert_allclose(getattr(back.view2, name), x)


def test_params_validation():
    good = sample_view_params(np.random.RandomState(0), 2, 16, second_view=True).to_dict()
    with pytest.raises(ValueError, match="same length"):
        ViewParams(**{**good, "scale": np.ones(3)})
    with pytest.raises(ValueError, match="rot_plane"):
        ViewParams(**{**good, "rot_plane": np.array([0, 3])})
    with pytest.raises(KeyError):
        ViewParams.from_dict({"rot_k": [0]})
    with pytest.raises(ValueError, match="exceed"):
        ViewParams(**{**good, "crop_start": np.full((2, 3), 10), "crop_size": np.full((2, 3), 10)}).check_cube_size(16)
