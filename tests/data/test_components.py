"""SlabComponents: connected components fed slab by slab equal cc3d's on the whole volume (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from synclr_monai.data.components import SlabComponents
from synclr_monai.transforms import find_cleft_components


def _volumes():
    rng = np.random.default_rng(0)
    yield "speckle", rng.random((23, 17, 19)) < 0.3  # many small pieces, many joins across every boundary
    yield "blobs", ndimage.gaussian_filter(rng.random((40, 24, 28)), 1.5) > 0.51  # large, winding components
    spiral = np.zeros((30, 12, 12), dtype=bool)  # one component that leaves and re-enters slabs diagonally
    for z in range(30):
        spiral[z, 2 + (z % 8), 2 + (z * 3 % 8)] = True
    yield "diagonal", spiral
    yield "empty", np.zeros((10, 5, 6), dtype=bool)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("slab", [1, 3, 8, 64])
@pytest.mark.parametrize("min_size", [0, 5])
def test_slab_components_equal_whole_volume_labelling(connectivity, slab, min_size):
    for name, volume in _volumes():
        expected = find_cleft_components(volume, min_size, connectivity)
        comps = SlabComponents(volume.shape, min_size, connectivity)
        for z in range(0, volume.shape[0], slab):
            comps.add(volume[z : z + slab])
        got = comps.result()
        assert len(got) == len(expected), name
        np.testing.assert_array_equal(got.starts, expected.starts, err_msg=name)
        np.testing.assert_array_equal(got.stops, expected.stops, err_msg=name)
        np.testing.assert_array_equal(got.sizes, expected.sizes, err_msg=name)
        for a, b in zip(got.masks, expected.masks):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_a_diagonal_chain_is_one_component_only_at_26_connectivity():
    chain = np.zeros((6, 8, 8), dtype=bool)
    for z in range(6):
        chain[z, z, z] = True  # touches its neighbours only through corners
    for connectivity, count in ((6, 0), (18, 0), (26, 1)):
        comps = SlabComponents(chain.shape, min_size=6, connectivity=connectivity)
        for z in range(6):
            comps.add(chain[z : z + 1])
        assert len(comps.result()) == count


def test_bad_slabs_and_an_unfinished_volume_are_refused():
    comps = SlabComponents((4, 5, 6))
    with pytest.raises(ValueError, match="does not fit"):
        comps.add(np.zeros((2, 5, 7)))
    comps.add(np.zeros((3, 5, 6)))
    with pytest.raises(ValueError, match="does not fit"):
        comps.add(np.zeros((2, 5, 6)))  # past the end
    with pytest.raises(ValueError, match="3 of 4 planes"):
        comps.result()
    with pytest.raises(ValueError, match="connectivity"):
        SlabComponents((4, 5, 6), connectivity=8)
