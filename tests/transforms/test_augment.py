"""The random array/dict transforms: invariants (binary masks, shapes) and seeding."""

from __future__ import annotations

import numpy as np
import torch

from synclr_monai.transforms import (
    AugmentConfig,
    BatchedTwoViewAugment,
    RandTwoViewd,
)


def is_binary(x) -> bool:
    a = np.asarray(x)
    return bool(np.all((a == 0) | (a == 1)))


def test_two_view_and_batched_masks_binary(cube_factory):
    cfg = AugmentConfig(mask_dropout_prob=0.5, crop_fraction=(0.5, 1.0))
    t = RandTwoViewd(config=cfg).set_random_state(0)
    for seed in range(6):
        d = t({"image": cube_factory(16, seed=seed)})
        assert is_binary(d["view1"][1:]) and is_binary(d["view2"][1:])
    cubes = torch.from_numpy(np.stack([cube_factory(16, seed=s) for s in range(6)]))
    v1, v2 = BatchedTwoViewAugment(cfg).set_random_state(0)(cubes)
    assert is_binary(v1[:, 1:]) and is_binary(v2[:, 1:])


def test_mask_dropout_zeroes_the_cleft_channel_only(cube):
    from synclr_monai.transforms import mask_dropout

    out = mask_dropout(torch.as_tensor(cube)).numpy()
    assert not out[2].any()
    np.testing.assert_array_equal(out[:2], cube[:2])


def test_mask_dropout_rate_of_the_views():
    # the second view loses its cleft mask with probability mask_dropout_prob
    from synclr_monai.transforms.params import sample_view_params

    params = sample_view_params(np.random.RandomState(0), 2000, 16, AugmentConfig(mask_dropout_prob=0.3), second_view=True)
    assert 0.26 < params.dropout.mean() < 0.34
    first = sample_view_params(np.random.RandomState(0), 200, 16, AugmentConfig(mask_dropout_prob=0.3))
    assert not first.dropout.any()  # the first view keeps its masks
