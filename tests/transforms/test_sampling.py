"""Cube sampling: uniform positions, cleft components, mask-aware cubes whose views share a component."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from synclr_monai.transforms import (
    AugmentConfig,
    CleftComponentsd,
    MaskAwareCubeSamplerd,
    RandCubeSamplerd,
    RandTwoViewd,
    find_cleft_components,
)

# two clefts far apart (more than a 16³ cube), and one speck below the minimum size
BLOBS = (((4, 8), (6, 14), (6, 14)), ((20, 25), (40, 50), (44, 52)), ((28, 30), (2, 4), (60, 62)))


def test_random_cube_values_zscore_and_position(item_factory):
    item = item_factory(blobs=BLOBS)
    t = RandCubeSamplerd(cube_size=16).set_random_state(0)
    for _ in range(5):
        d = t(item)
        cube, (z, y, x) = d["image"], d["cube_start"]
        assert cube.shape == (3, 16, 16, 16) and cube.dtype == np.float32 and d["fallback"] == 0
        src = item["raw"][0, z : z + 16, y : y + 16, x : x + 16].astype(np.float64)
        np.testing.assert_allclose(cube[0], (src - src.mean()) / src.std(), atol=1e-4)
        np.testing.assert_array_equal(cube[1:], item["mask"][:, z : z + 16, y : y + 16, x : x + 16])
        assert abs(cube[0].mean()) < 1e-5 and abs(cube[0].std() - 1) < 1e-4
    assert d["raw"] is item["raw"]  # the bbox is never copied or modified


def test_random_cube_positions_are_uniform(item_factory):
    item = item_factory(shape=(20, 20, 20))
    t = RandCubeSamplerd(cube_size=16).set_random_state(0)
    starts = np.array([t(item)["cube_start"] for _ in range(500)])
    for ax in range(3):
        counts = np.bincount(starts[:, ax], minlength=5)
        assert len(counts) == 5 and counts.min() > 60  # all 5 valid positions, ~100 each


def test_cube_too_large(item_factory):
    with pytest.raises(ValueError, match="larger than the volume"):
        RandCubeSamplerd(cube_size=40)(item_factory(shape=(32, 64, 64)))
    with pytest.raises(ValueError, match="positive int"):
        RandCubeSamplerd(cube_size=0)


def test_malformed_items_are_rejected(item_factory):
    item = item_factory()
    with pytest.raises(ValueError, match="'mask' must be"):
        RandCubeSamplerd(cube_size=8)({**item, "mask": item["mask"][:1]})
    with pytest.raises(ValueError, match="'raw' must be"):
        RandCubeSamplerd(cube_size=8)({**item, "raw": item["raw"][0]})


@pytest.mark.parametrize("connectivity", [6, 26])
def test_components_match_scipy_reference(connectivity):
    rng = np.random.RandomState(0)
    cleft = ndimage.binary_opening(rng.random_sample((24, 32, 32)) < 0.35).astype(np.uint8)
    a = find_cleft_components(cleft, min_size=5, connectivity=connectivity)
    # reference: scipy.ndimage.label with the same connectivity, components of at least 5 voxels
    labels, n = ndimage.label(cleft, structure=ndimage.generate_binary_structure(3, {6: 1, 26: 3}[connectivity]))
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    boxes = ndimage.find_objects(labels)
    ref = [(lab, boxes[lab - 1]) for lab in range(1, n + 1) if counts[lab] >= 5]
    ref_starts = np.array([[s.start for s in box] for _, box in ref])
    assert len(a) == len(ref) > 3
    order_a, order_b = np.lexsort(a.starts.T[::-1]), np.lexsort(ref_starts.T[::-1])
    np.testing.assert_array_equal(a.starts[order_a], ref_starts[order_b])
    np.testing.assert_array_equal(a.sizes[order_a], [counts[ref[j][0]] for j in order_b])
    for i, j in zip(order_a, order_b):
        lab, box = ref[j]
        np.testing.assert_array_equal(a.masks[i], labels[box] == lab)
    assert a.sizes.min() >= 5


def test_components_connectivity_and_min_size():
    cleft = np.zeros((8, 8, 8), np.uint8)
    cleft[1, 1, 1] = cleft[2, 2, 2] = 1  # diagonal neighbours
    assert len(find_cleft_components(cleft, min_size=1, connectivity=26)) == 1
    assert len(find_cleft_components(cleft, min_size=1, connectivity=6)) == 2
    assert len(find_cleft_components(cleft, min_size=3)) == 0
    with pytest.raises(ValueError, match="connectivity"):
        find_cleft_components(cleft, connectivity=8)


def test_component_cube_mask_and_start(item_factory):
    item = CleftComponentsd(min_size=20)(item_factory(blobs=BLOBS))
    comps = item["cleft_components"]
    assert len(comps) == 2 and sorted(comps.sizes.tolist()) == [256, 400]  # the speck is ignored
    labels, _ = ndimage.label(item["mask"][1], structure=np.ones((3, 3, 3)))
    rng = np.random.RandomState(0)
    for k in range(len(comps)):
        lab = labels[tuple(comps.starts[k])]
        for _ in range(10):
            start = comps.random_cube_start(k, 16, rng)
            assert np.all(start >= 0) and np.all(start + 16 <= np.array(comps.shape))
            got = comps.cube_mask(k, start, 16)
            sl = tuple(slice(a, a + 16) for a in start)
            np.testing.assert_array_equal(got, labels[sl] == lab)
            assert got.sum() == comps.sizes[k]  # a component smaller than the cube lies wholly inside
    assert comps.nbytes < item["mask"].nbytes


def test_mask_aware_views_share_the_component(item_factory):
    item = CleftComponentsd(min_size=20)(item_factory(blobs=BLOBS))
    cfg = AugmentConfig(mask_dropout_prob=0.0, crop_fraction=(0.5, 0.7))
    views = RandTwoViewd(config=cfg)
    sampler = MaskAwareCubeSamplerd(cube_size=16, view_transform=views, min_shared_fraction=0.6, max_retries=20)
    sampler.set_random_state(0)
    sizes = sorted(item["cleft_components"].sizes)
    for _ in range(15):
        d = sampler(item)
        assert d["fallback"] == 0
        # the blobs are further apart than a cube, so the cube's cleft voxels are one component
        n_cube = int(d["image"][2].sum())
        assert n_cube in sizes
        # nearest-neighbour upsampling repeats voxels but never loses one: each view shows at least
        # the required fraction of the component
        for key in ("view1", "view2"):
            assert int(d[key][2].sum()) >= 0.6 * n_cube


def test_mask_aware_without_views_checks_the_cube(item_factory):
    item = CleftComponentsd(min_size=20)(item_factory(blobs=BLOBS))
    sampler = MaskAwareCubeSamplerd(cube_size=16, min_shared_fraction=1.0).set_random_state(0)
    comps = item["cleft_components"]
    for _ in range(5):
        d = sampler(item)
        assert d["fallback"] == 0 and int(d["image"][2].sum()) in (256, 400)
        assert "view1" not in d
        # the component named is the one in the cube (the blobs are further apart than a cube)
        assert int(d["image"][2].sum()) == comps.sizes[d["component"]]


def test_mask_aware_falls_back_and_flags(item_factory):
    # one cleft larger than the cube: no cube can hold 90% of it
    big = item_factory(blobs=(((2, 30), (5, 40), (5, 40)),))
    big = CleftComponentsd()(big)
    sampler = MaskAwareCubeSamplerd(cube_size=16, min_shared_fraction=0.9, max_retries=3).set_random_state(0)
    d = sampler(big)
    assert d["fallback"] == 1 and d["component"] == 0  # the best attempt's component
    assert d["image"][2].all()  # the best attempt still lies inside the cleft
    # no components at all: a random cube, flagged
    empty = CleftComponentsd()(item_factory())
    d = sampler(empty)
    assert d["fallback"] == 1 and d["image"].shape == (3, 16, 16, 16) and d["component"] == -1


def test_mask_aware_errors(item_factory):
    item = item_factory(blobs=BLOBS)
    with pytest.raises(KeyError, match="CleftComponentsd"):
        MaskAwareCubeSamplerd(cube_size=16)(item)
    with pytest.raises(ValueError, match="min_shared_fraction"):
        MaskAwareCubeSamplerd(min_shared_fraction=1.5)
    with pytest.raises(ValueError, match="reads"):
        MaskAwareCubeSamplerd(view_transform=RandTwoViewd("cube"))
    with pytest.raises(ValueError, match="larger than the volume"):
        MaskAwareCubeSamplerd(cube_size=48)(CleftComponentsd()(item))


def test_mask_aware_reproducible(item_factory):
    item = CleftComponentsd(min_size=20)(item_factory(blobs=BLOBS))

    def run(seed):
        s = MaskAwareCubeSamplerd(cube_size=16, view_transform=RandTwoViewd()).set_random_state(seed)
        return [s(item)["view2"].numpy() for _ in range(3)]

    a, b, c = run(1), run(1), run(2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
