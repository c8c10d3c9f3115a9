"""The canonical pose: a synapse's frame from its masks, the turn into it, and views drawn in it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synclr_monai.transforms.batched import BatchedTwoViewAugment
from synclr_monai.transforms.config import AugmentConfig
from synclr_monai.transforms.params import random_rotations, sample_two_view_params
from synclr_monai.transforms.pose import (
    CanonicalPose,
    CanonicalPosed,
    canonical_frame,
    check_pose,
    pose_context_size,
    synapse_frame,
    turns_about_normal,
)
from synclr_monai.transforms.sampling import CleftComponentsd, MaskAwareCubeSamplerd, find_cleft_components
from synclr_monai.transforms.views import RandTwoViewd


def synapse(shape, normal, long_axis, centre=None, voxel=(1.0, 1.0, 1.0), side="pre", half_width=1.0) -> np.ndarray:
    """``[4, Z, Y, X]`` raw, pre, cleft, post: a flat elliptic cleft disc (long along ``long_axis``) through
    ``centre``, the pre-synaptic slab on the side opposite ``normal`` and the post-synaptic one on its side;
    raw = the physical distance along ``normal``. Coordinates are physical (``voxel`` per axis)."""
    shape = np.asarray(shape)
    centre = (shape - 1) / 2.0 if centre is None else np.asarray(centre, dtype=float)
    grid = (np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1) - centre) * voxel
    n = normal / np.linalg.norm(normal)
    a = long_axis - n * np.dot(long_axis, n)
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    h, u, v = grid @ n, grid @ a, grid @ b
    disc = u**2 / 100 + v**2 / 36 < 1
    cube = np.zeros((4, *shape), np.float32)
    cube[0] = h
    cube[1] = (h < -half_width - 0.5) & (h > -7 - half_width) & disc & (side in ("pre", "both"))
    cube[2] = (np.abs(h) <= half_width) & disc
    cube[3] = (h > half_width + 0.5) & (h < 7 + half_width) & disc & (side in ("post", "both"))
    return cube


def turn(seed: int) -> np.ndarray:
    return random_rotations(np.random.RandomState(seed), 1)[0]


def check_frame(frame: np.ndarray, normal: np.ndarray, long_axis: np.ndarray) -> None:
    np.testing.assert_allclose(frame @ frame.T, np.eye(3), atol=1e-9)  # a rotation ...
    assert np.linalg.det(frame) == pytest.approx(1.0)  # ... not a mirror
    assert np.dot(frame[0], normal) > 0.97  # z: the normal, from the pre-synaptic side to the post-synaptic
    assert abs(np.dot(frame[2], long_axis)) > 0.97  # x: the long axis (either sign)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("side", ["pre", "post", "both"])
def test_the_frame_is_the_cleft_normal_from_pre_to_post_and_its_long_axis(seed, side):
    rot = turn(seed)
    cube = synapse((33, 33, 33), rot[0], rot[2], side=side)
    check_frame(canonical_frame(cube), rot[0], rot[2])
    check_frame(canonical_frame(torch.from_numpy(cube[:3] if side != "post" else cube)), rot[0], rot[2])


def test_the_frame_is_physical_with_anisotropic_voxels():
    rot = turn(5)
    voxel = (3.0, 1.0, 1.0)  # thick sections: the disc spans 3x fewer voxels along z
    # a cleft at least a section thick (thinner, it is a staircase of single sections whatever its tilt)
    cube = synapse((15, 41, 41), rot[0], rot[2], voxel=voxel, half_width=2.0)
    check_frame(canonical_frame(cube, voxel), rot[0], rot[2])
    # the same voxels read as isotropic give another, wrong, plane
    assert np.dot(canonical_frame(cube)[0], rot[0]) < 0.97


def test_the_frame_is_that_of_the_synapse_nearest_the_centre():
    near, far = turn(0), turn(1)
    cube = synapse((41, 41, 41), near[0], near[2], centre=(22, 20, 18))
    other = synapse((41, 41, 41), far[0], far[2], centre=(20, 20, 36))
    other[2, :, :, :28] = 0  # the neighbour's cleft stays a separate component, away from the centre
    cube[2] = np.maximum(cube[2], other[2])
    check_frame(canonical_frame(cube), near[0], near[2])
    # looking only near the centre (a view's reach) finds the same synapse, cut to the box around the centre
    check_frame(canonical_frame(cube, reach=14), near[0], near[2])


def test_without_a_cleft_the_frame_is_the_identity():
    np.testing.assert_array_equal(canonical_frame(np.zeros((3, 9, 9, 9), np.float32)), np.eye(3))
    np.testing.assert_array_equal(synapse_frame(np.zeros((5, 5, 5), bool)), np.eye(3))
    with pytest.raises(ValueError, match="raw, pre, cleft"):
        canonical_frame(np.zeros((2, 9, 9, 9)))
    with pytest.raises(ValueError, match="pose must be one of"):
        check_pose("upright")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_canonical_cube_lies_flat_with_the_pre_synaptic_side_below(seed):
    rot = turn(seed)
    s = 21
    c = pose_context_size(s)
    assert c >= np.sqrt(3) * s and (c - s) % 2 == 0
    out = CanonicalPose(s)(synapse((c, c, c), rot[0], rot[2])[:3])
    z = torch.arange(s, dtype=torch.float32).view(-1, 1, 1) - (s - 1) / 2
    assert out[2].sum() > 0 and (z * out[2]).abs().sum() / out[2].sum() < 0.8  # the cleft in the central plane
    assert out[1].sum() > 0 and (z * out[1]).sum() / out[1].sum() < -2  # the pre-synaptic cell below it
    assert set(torch.unique(out[1:]).tolist()) <= {0.0, 1.0}  # masks resampled nearest: still binary
    column = out[0, :, s // 2, s // 2]  # raw = distance along the normal: rises with z, one voxel a voxel
    np.testing.assert_allclose(column.numpy(), z.flatten().numpy(), atol=1e-3)
    with pytest.raises(ValueError, match="context of edge at least"):
        CanonicalPose(s)(torch.zeros(3, s, s, s))
    d = CanonicalPosed("image", s)({"image": synapse((c, c, c), rot[0], rot[2])[:3]})
    assert torch.equal(d["image"], out) and d["image_pose_frame"].shape == (3, 3)


def test_turns_about_the_normal_keep_the_normal():
    r = turns_about_normal(3, np.array([0.0, np.pi / 2, 1.0]))
    np.testing.assert_allclose(r[:, :, 0], np.tile([1.0, 0.0, 0.0], (3, 1)))
    np.testing.assert_allclose(r[1], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(turns_about_normal(2), np.stack([np.eye(3)] * 2))


def test_views_in_the_canonical_pose_keep_the_normal_along_z():
    cfg = AugmentConfig(rotate3d_prob=1.0, flip_prob=0.5, zoom_range=(0.9, 1.1), translate_fraction=0.05)
    frames = random_rotations(np.random.RandomState(3), 64)
    p = sample_two_view_params(np.random.RandomState(0), 64, 16, cfg, frames=frames)
    for view in (p.view1, p.view2):
        assert view.resampled.all() and (view.rot_k == 0).all() and (view.crop_size == 16).all()
        zoom = 1.0 / np.linalg.norm(view.affine[:, :, 0], axis=1)
        # the output z axis maps to the synapse's normal, unflipped; the in-plane axes turn freely
        np.testing.assert_allclose(view.affine[:, :, 0] * zoom[:, None], frames[:, 0], atol=1e-9)
        in_plane = np.einsum("nij,nj->ni", np.transpose(view.affine, (0, 2, 1)), frames[:, 2])
        assert np.ptp(np.arctan2(in_plane[:, 1], in_plane[:, 2])) > 3.0
    # the native pose draws uniform 3-D rotations: the output z axis goes anywhere
    native = sample_two_view_params(np.random.RandomState(0), 64, 16, cfg).view1
    assert np.abs(np.einsum("ni,ni->n", native.affine[:, :, 0], frames[:, 0])).min() < 0.5
    with pytest.raises(ValueError, match="frames must be"):
        sample_two_view_params(np.random.RandomState(0), 2, 16, cfg, frames=frames)
    assert cfg.context_size(16, "canonical") == cfg.context_size(16)
    lab = AugmentConfig()  # the lab's views (no context) still get one in the canonical pose
    assert lab.context_size(16) == 16 and lab.context_size(16, "canonical") >= np.sqrt(3) * 16


def bbox_item(normal, long_axis, shape=(48, 64, 64), centre=(24, 30, 34)):
    """A loaded bbox item with one tilted synapse: masks (pre, cleft, post), raw its distance along the normal."""
    s = synapse(shape, normal, long_axis, centre=centre, side="both")
    return {"raw": s[:1].astype(np.float16), "mask": s[1:].astype(np.uint8), "name": "bbox1"}


@pytest.mark.parametrize("seed", [0, 1])
def test_mask_aware_views_in_the_canonical_pose_lie_flat(seed):
    rot = turn(seed)
    item = CleftComponentsd("mask", min_size=20)(bbox_item(rot[0], rot[2]))
    comps = item["cleft_components"]
    assert len(comps) == 1
    check_frame(comps.frame(0, item["mask"]), rot[0], rot[2])
    cfg = AugmentConfig(rotate3d_prob=1.0, flip_prob=0.5, intensity_prob=0.0, blur_prob=0.0, mask_dropout_prob=0.0)
    views = RandTwoViewd("image", cfg, cube_size=16, input_mode="channels", pose="canonical")
    sampler = MaskAwareCubeSamplerd(cube_size=16, view_transform=views, min_shared_fraction=0.3)
    sampler.set_random_state(seed)
    z = torch.arange(16, dtype=torch.float32).view(-1, 1, 1) - 7.5
    for _ in range(4):
        d = sampler(item)
        assert d["image"].shape[-1] == views.context_size >= np.sqrt(3) * 16
        for v in (d["view1"], d["view2"]):
            cleft, pre = v[2], v[1]
            mean_z = (z * cleft).sum() / cleft.sum()
            spread = ((z - mean_z).abs() * cleft).sum() / cleft.sum()
            assert spread < 1.0  # flat in z: the normal is z, whatever the in-plane turn or the shift
            assert (z * pre).sum() / pre.sum() < mean_z - 2  # the pre-synaptic side below
    # the frame the sampler uses (its component) is the frame inference finds around the synapse's centre
    c = pose_context_size(16)
    lo = np.array([24, 30, 34]) - c // 2
    context = np.zeros((4, c, c, c), np.float32)
    src = tuple(slice(max(a, 0), a + c) for a in lo)
    dst = tuple(slice(max(-a, 0), max(-a, 0) + min(a + c, n) - max(a, 0)) for a, n in zip(lo, (48, 64, 64)))
    context[(slice(1, None), *dst)] = item["mask"][(slice(None), *src)]
    np.testing.assert_allclose(canonical_frame(context), comps.frame(0, item["mask"]), atol=1e-9)


def test_the_batched_path_equals_the_per_sample_path_in_the_canonical_pose():
    rot = turn(4)
    item = CleftComponentsd("mask", min_size=20)(bbox_item(rot[0], rot[2]))
    cfg = AugmentConfig(rotate3d_prob=1.0, flip_prob=0.5, noise_prob=0.5, cutout_prob=0.5)
    kw = {"cube_size": 16, "input_mode": "masked", "pose": "canonical"}
    per_sample = MaskAwareCubeSamplerd(cube_size=16, view_transform=RandTwoViewd("image", cfg, **kw))
    deferred = MaskAwareCubeSamplerd(cube_size=16, view_transform=RandTwoViewd("image", cfg, materialize=False, **kw))
    batched = BatchedTwoViewAugment(cfg, **kw)
    for seed in range(3):
        a = per_sample.set_random_state(seed)(item)
        b = deferred.set_random_state(seed)(item)
        params = {v: {k: torch.as_tensor(x)[None] for k, x in p.items()} for v, p in b["view_params"].items()}
        v1, v2 = batched(torch.as_tensor(b["image"])[None], params)
        torch.testing.assert_close(v1[0], a["view1"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(v2[0], a["view2"], atol=1e-4, rtol=1e-4)
    # parameters drawn on the batched path itself find the frames in the cubes' masks
    context = torch.as_tensor(b["image"])[None].repeat(2, 1, 1, 1, 1)
    frames = batched.frames(context)
    np.testing.assert_allclose(frames[0], canonical_frame(b["image"]))
    v1, _ = batched.set_random_state(0)(context)
    assert v1.shape == (2, 1, 16, 16, 16)
    assert BatchedTwoViewAugment(cfg, cube_size=16).frames(context) is None


def test_components_are_found_once_per_bbox_and_their_frames_cached():
    rot = turn(2)
    item = bbox_item(rot[0], rot[2])
    comps = find_cleft_components(item["mask"][1], min_size=20)
    first = comps.frame(0, item["mask"])
    item["mask"][0] = 0  # a cached frame does not read the masks again
    assert comps.frame(0, item["mask"]) is first
    assert comps.frame(0, item["mask"], (2.0, 1.0, 1.0)) is not first  # another voxel size, another frame


def test_a_bbox_without_components_takes_the_frame_from_the_cube():
    rot = turn(6)
    item = CleftComponentsd("mask", min_size=10**6)(bbox_item(rot[0], rot[2], shape=(40, 40, 40), centre=(20, 20, 20)))
    assert len(item["cleft_components"]) == 0  # every cleft under min_size: the sampler falls back
    cfg = AugmentConfig(rotate3d_prob=1.0)
    views = RandTwoViewd("image", cfg, cube_size=16, materialize=False, pose="canonical")
    for pair_mode in ("same_crop", "nearby"):
        d = MaskAwareCubeSamplerd(cube_size=16, view_transform=views, pair_mode=pair_mode).set_random_state(1)(item)
        assert d["fallback"] == 1
        frame = views.frame(d["image"])
        assert not np.allclose(frame, np.eye(3))  # the cube holds the cleft: a real frame
        for v in ("view1", "view2"):
            normal_image = np.asarray(d["view_params"][v]["affine"])[:, 0]
            np.testing.assert_allclose(normal_image / np.linalg.norm(normal_image), frame[0], atol=1e-9)
