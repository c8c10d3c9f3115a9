"""The stronger 3-D views end to end: batched = per-sample, cutouts, mask-aware sampling with a context."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synclr_monai.data.assembly import assemble_bbox
from synclr_monai.data.bbox import find_bboxes
from synclr_monai.transforms import AugmentConfig, BatchedTwoViewAugment, RandTwoViewd, apply_view_params
from synclr_monai.transforms.config import INPUT_MODES
from synclr_monai.transforms.functional import retained_voxels
from synclr_monai.transforms.params import sample_two_view_params, sample_view_params
from synclr_monai.transforms.sampling import CleftComponentsd, MaskAwareCubeSamplerd

S = 12

#: every stronger view at once, with probabilities that leave some cubes without each step
ALL = AugmentConfig(
    rotate3d_prob=0.7, flip_prob=0.5, zoom_range=(0.85, 1.15), translate_fraction=0.05,
    noise_prob=0.6, noise_std=(0.05, 0.2), mult_noise_prob=0.5, mult_noise_std=(0.05, 0.2),
    gamma_prob=0.5, section_prob=0.6, section_std=0.1, blackout_rate=0.8, misalign_prob=0.5, misalign_max=2,
    cutout_prob=0.6, mask_morph_prob=0.4, mask_morph_radius=2, pre_dropout_prob=0.5,
    blur_prob=0.5, mask_dropout_prob=0.3,
)  # fmt: skip


def contexts(n: int, size: int, seed: int) -> torch.Tensor:
    """``[n, 4, C, C, C]``: random raw and blobby binary masks."""
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 4, size, size, size).astype(np.float32)
    x[:, 1:] = rng.random_sample((n, 3, size, size, size)) < 0.3
    return torch.from_numpy(x)


def _check_every_step_is_drawn(p) -> None:
    """The equality tests are meaningful: both some cubes with and some without each step."""
    off_diagonal = p.affine * (1 - np.eye(3))
    for name, on in {
        "rotation": np.any(off_diagonal != 0, axis=(1, 2)), "flip": np.any(np.diagonal(p.affine, axis1=1, axis2=2) < 0, axis=1),
        "gamma": p.gamma != 1, "noise": p.noise_std > 0, "mult noise": p.mult_noise_std > 0,
        "section": p.section_std > 0, "blackout": p.blackout > 0, "misalign": np.any(p.misalign, axis=1),
        "cutout": np.all(p.cutout_size > 0, axis=1), "morph": np.any(p.morph, axis=1), "blur": p.blur,
    }.items():  # fmt: skip
        assert 0 < on.sum() < len(on), name


@pytest.mark.parametrize("input_mode", INPUT_MODES)
@pytest.mark.parametrize("nearby", [False, True])
def test_batched_equals_per_sample_with_every_stronger_view(input_mode, nearby):
    c = ALL.context_size(S)
    b = 10
    cubes = contexts(b, c, seed=1)
    cubes2 = contexts(b, c, seed=2) if nearby else None
    params = sample_two_view_params(np.random.RandomState(3), b, S, ALL, input_mode)
    _check_every_step_is_drawn(params.view1)
    _check_every_step_is_drawn(params.view2)
    assert params.view2.pre_dropout.any() and params.view2.dropout.any()
    before = cubes.clone()
    v1, v2 = BatchedTwoViewAugment(ALL, input_mode=input_mode, cube_size=S)(cubes, params, cubes2)
    assert torch.equal(cubes, before)
    k = 3 if input_mode == "channels" else 1
    assert v1.shape == v2.shape == (b, k, S, S, S)
    second = cubes if cubes2 is None else cubes2
    for i in range(b):
        r1 = apply_view_params(cubes[i], params.view1.select(i), input_mode)
        r2 = apply_view_params(second[i], params.view2.select(i), input_mode)
        for got, ref in ((v1[i], r1), (v2[i], r2)):
            torch.testing.assert_close(got[0], ref[0], rtol=0, atol=1e-4)
            assert torch.equal(got[1:], ref[1:])  # masks: exactly
            assert set(torch.unique(got[1:]).tolist()) <= {0.0, 1.0}
    if nearby:  # the second view is made from the second cubes
        other = BatchedTwoViewAugment(ALL, input_mode=input_mode, cube_size=S)(cubes, params)[1]
        assert not torch.allclose(other, v2)


@pytest.mark.parametrize("input_mode", INPUT_MODES)
def test_rand_two_viewd_equals_the_batched_path(input_mode):
    c = ALL.context_size(S)
    t = RandTwoViewd(config=ALL, cube_size=S, input_mode=input_mode)
    assert t.context_size == c
    cubes, cubes2 = contexts(4, c, seed=4), contexts(4, c, seed=5)
    aug = BatchedTwoViewAugment(ALL, input_mode=input_mode, cube_size=S)
    for i in range(4):
        d = t.set_random_state(i)({"image": cubes[i], "image2": cubes2[i]})
        v1, v2 = aug(cubes[i : i + 1], t.params, cubes2[i : i + 1])
        torch.testing.assert_close(d["view1"], v1[0], rtol=0, atol=1e-4)
        torch.testing.assert_close(d["view2"], v2[0], rtol=0, atol=1e-4)
        # without "image2" both views come from "image"
        d1 = t.set_random_state(i)({"image": cubes[i]})
        torch.testing.assert_close(d1["view2"], aug(cubes[i : i + 1], t.params)[1][0], rtol=0, atol=1e-4)


def test_two_view_shapes_without_a_context_draw():
    # flips only: a cube drawn without any flip is still a view of edge S, not the context (regression)
    cfg = AugmentConfig(flip_prob=0.5)
    c = cfg.context_size(S)
    t = RandTwoViewd(config=cfg, cube_size=S)
    cube = contexts(1, c, seed=6)[0]
    identity = 0
    for seed in range(16):
        d = t.set_random_state(seed)({"image": cube})
        assert d["view1"].shape == d["view2"].shape == (3, S, S, S)
        identity += int(np.allclose(t.params.view1.affine[0], np.eye(3)))
    assert identity > 0


@pytest.mark.parametrize("size", [12, 13, 16, 24])
def test_cutouts_never_cover_the_centre_voxel(size):
    lab_off = {"rotate_prob": 0.0, "intensity_prob": 0.0, "blur_prob": 0.0, "crop_prob": 0.0, "mask_dropout_prob": 0.0}
    cfg = AugmentConfig(cutout_prob=1.0, cutout_size=(0.2, 0.5), **lab_off)
    p = sample_view_params(np.random.RandomState(size), 2000, size, cfg)
    start, edge = p.cutout_start, p.cutout_size
    c = size // 2
    assert np.all(edge >= 1) and np.all(start >= 0) and np.all(start + edge <= size)
    covers = np.all((start <= c) & (c < start + edge), axis=1)
    assert not covers.any()
    # the boxes are spread: some reach within one voxel of the centre along every axis, on both sides
    assert np.any(np.all(start + edge >= c - 1, axis=1) & np.all(start <= c + 1, axis=1))
    ones = torch.ones(3, size, size, size)
    for i in range(0, 2000, 250):
        view = apply_view_params(ones, p.select(i))
        assert torch.all(view[:, c, c, c] == 1) and (view == 0).any()


# --- mask-aware sampling with a context (3-D rotations) and nearby pairs, on the synthetic bboxes ---

CONTEXT_VIEWS = AugmentConfig(
    rotate3d_prob=1.0, flip_prob=0.5, zoom_range=(0.9, 1.1), translate_fraction=0.1, mask_dropout_prob=0.0
)


@pytest.fixture(scope="module")
def synthetic_item(synthetic_root):
    vol = assemble_bbox(find_bboxes(synthetic_root)[0])
    item = {"raw": vol.raw[None], "mask": vol.mask, "name": vol.name}
    return CleftComponentsd(min_size=50)(item)


@pytest.mark.parametrize("pair_mode", ["same_crop", "nearby"])
def test_mask_aware_context_views_share_the_component(synthetic_item, monkeypatch, pair_mode):
    import synclr_monai.transforms.sampling as sampling

    cuts: list[np.ndarray] = []
    real_cut = sampling.cut_cube

    def spy(raw, mask, start, size, **kw):
        cuts.append(np.asarray(start))
        return real_cut(raw, mask, start, size, **kw)

    monkeypatch.setattr(sampling, "cut_cube", spy)
    s, fraction = 16, 0.6
    views = RandTwoViewd(config=CONTEXT_VIEWS, cube_size=s, materialize=False)
    c = views.context_size
    sampler = MaskAwareCubeSamplerd(
        cube_size=s, view_transform=views, min_shared_fraction=fraction, max_retries=30, pair_mode=pair_mode
    ).set_random_state(0)
    comps = synthetic_item["cleft_components"]
    assert len(comps) >= 1
    moved = 0
    for _ in range(6):
        cuts.clear()
        d = sampler(synthetic_item)
        assert d["fallback"] == 0
        assert d["image"].shape == (4, c, c, c)
        start = cuts[0]
        np.testing.assert_array_equal(start, d["cube_start"])
        if pair_mode == "nearby":
            assert len(cuts) == 2 and d["image2"].shape == d["image"].shape
            start2 = cuts[1]
            moved += int(np.any(start2 != start))
        else:
            assert len(cuts) == 1 and "image2" not in d
            start2 = start
        params = views.params
        assert params.view1.resampled.all() and params.view2.resampled.all()
        # recount independently: some component keeps the fraction in both views
        m = (c - s) // 2
        shared = [
            min(
                retained_voxels(comps.cube_mask(k, start - m, c), params.view1),
                retained_voxels(comps.cube_mask(k, start2 - m, c), params.view2),
            )
            / comps.sizes[k]
            for k in range(len(comps))
        ]
        assert max(shared) >= fraction, shared
    if pair_mode == "nearby":
        assert moved > 0  # the second cube is placed independently


def test_mask_aware_context_views_materialised(synthetic_item):
    s = 16
    views = RandTwoViewd(config=CONTEXT_VIEWS, cube_size=s, input_mode="masked")
    sampler = MaskAwareCubeSamplerd(
        cube_size=s, view_transform=views, min_shared_fraction=0.6, max_retries=30, pair_mode="nearby"
    ).set_random_state(1)
    for _ in range(3):
        d = sampler(synthetic_item)
        assert d["view1"].shape == d["view2"].shape == (1, s, s, s)
        # the masked input keeps the synapse's EM: a component shared by both views leaves both non-empty
        assert (d["view1"] != 0).sum() > 0 and (d["view2"] != 0).sum() > 0
