"""RandTwoViewd: the per-sample two-view pairing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synclr_monai.transforms import AugmentConfig, RandTwoViewd, TwoViewParams, apply_view_params


def test_two_views_shapes_and_independence(cube):
    t = RandTwoViewd(config={"blur_prob": 1.0}).set_random_state(0)
    d = t({"image": cube, "other": 7})
    assert d["other"] == 7 and "image" in d
    for key in ("view1", "view2"):
        assert d[key].shape == cube.shape and d[key].dtype == torch.float32
    assert not torch.equal(d["view1"], d["view2"])
    # the views are the drawn parameters applied by the MONAI path
    torch.testing.assert_close(d["view1"], apply_view_params(cube, t.params.view1))
    torch.testing.assert_close(d["view2"], apply_view_params(cube, t.params.view2))
    # only the second view gets stream B
    assert np.all(t.params.view1.crop_size == 16) and not t.params.view1.dropout.any()


def test_two_views_reproducible_with_seed(cube):
    a = [RandTwoViewd().set_random_state(11)({"image": cube}) for _ in range(2)]
    torch.testing.assert_close(a[0]["view2"], a[1]["view2"], rtol=0, atol=0)
    c = RandTwoViewd().set_random_state(12)({"image": cube})
    assert not torch.equal(a[0]["view2"], c["view2"])


def test_two_views_draws_differ_across_calls(cube):
    t = RandTwoViewd().set_random_state(0)
    outs = [t({"image": cube})["view1"] for _ in range(5)]
    assert len({o.numpy().tobytes() for o in outs}) == 5


def test_delete_source_and_params_only(cube):
    d = RandTwoViewd(delete_source=True).set_random_state(0)({"image": cube})
    assert "image" not in d and "view1" in d
    t = RandTwoViewd(materialize=False).set_random_state(0)
    d = t({"image": cube})
    assert "view1" not in d and isinstance(d["image"], torch.Tensor)
    params = d["view_params"]
    assert set(params) == {"view1", "view2"} and np.ndim(params["view2"]["rot_k"]) == 0
    back = TwoViewParams.from_dict(params)
    np.testing.assert_array_equal(back.view2.crop_start, t.params.view2.crop_start)


def test_config_is_respected(cube):
    cfg = AugmentConfig(rotate_prob=0, intensity_prob=0, blur_prob=0, crop_prob=0, mask_dropout_prob=0)
    d = RandTwoViewd(config=cfg).set_random_state(0)({"image": cube})
    np.testing.assert_array_equal(d["view1"].numpy(), cube)
    np.testing.assert_array_equal(d["view2"].numpy(), cube)


def test_bad_input(cube):
    with pytest.raises(ValueError, match="exactly one key"):
        RandTwoViewd(["a", "b"])
    with pytest.raises(ValueError, match="3 channels"):
        RandTwoViewd().set_random_state(0)({"image": cube[:2]})
