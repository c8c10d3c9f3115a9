"""The stronger views' voxel-wise steps: which channels each touches, binary masks, MONAI equivalence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import AdjustContrast
from scipy import ndimage

from synclr_monai.transforms.artefacts import (
    batched_mask_morphology_,
    batched_raw_gamma_,
    cutout_,
    mask_morphology,
    raw_gamma,
    raw_noise_,
    section_artefacts,
    section_artefacts_,
    to_input_mode,
)
from synclr_monai.transforms.functional import apply_view_params
from synclr_monai.transforms.params import ViewParams

S = 16


def cube4(seed: int = 0, size: int = S, p_mask: float = 0.3) -> torch.Tensor:
    """``[4, S, S, S]``: random raw, then pre, cleft and post masks (blobs, so that morphology changes them)."""
    rng = np.random.RandomState(seed)
    x = np.empty((4, size, size, size), dtype=np.float32)
    x[0] = rng.randn(size, size, size)
    noise = ndimage.gaussian_filter(rng.randn(3, size, size, size), sigma=(0, 1.5, 1.5, 1.5))
    x[1:] = noise > np.quantile(noise, 1 - p_mask)
    return torch.from_numpy(x)


def identity_params(size: int = S, **fields) -> ViewParams:
    """One cube's identity view with the given stronger-view fields set."""
    return ViewParams(
        [0], [0], [1.0], [0.0], [False], [[1.0, 1.0, 1.0]], [[0, 0, 0]], [[size] * 3], [False],
        **{k: np.asarray([v]) for k, v in fields.items()},
    )  # fmt: skip


def _binary(x: torch.Tensor) -> bool:
    return set(torch.unique(x).tolist()) <= {0.0, 1.0}


RAW_ONLY = {
    "section jitter": {"section_std": 0.3, "section_seed": 5},
    "blackout": {"blackout": 3, "section_seed": 6},
    "noise": {"noise_std": 0.5, "noise_seed": 7},
    "multiplicative noise": {"mult_noise_std": 0.3, "noise_seed": 8},
    "gamma": {"gamma": 1.6},
}


@pytest.mark.parametrize("name", list(RAW_ONLY))
def test_intensity_artefacts_touch_the_raw_channel_only(name):
    cube = cube4(1)
    out = apply_view_params(cube, identity_params(**RAW_ONLY[name]))
    assert out.shape == cube.shape
    assert torch.equal(out[1:], cube[1:])  # the three masks: untouched
    assert not torch.allclose(out[0], cube[0])  # the raw: changed
    assert torch.isfinite(out[0]).all()


def test_section_artefacts_act_per_section():
    cube = cube4(2)
    x = cube.clone()[None]
    section_artefacts_(x, np.array([0.2]), np.array([2]), np.zeros((1, 2), np.int64), np.array([11]))
    raw, ref = x[0, 0].double(), cube[0].double()
    black = [z for z in range(S) if torch.all(raw[z] == raw.min())]
    assert len(black) == 2
    for z in set(range(S)) - set(black):
        # one affine map a + b * I per section
        b, a = np.polyfit(ref[z].flatten().numpy(), raw[z].flatten().numpy(), 1)
        torch.testing.assert_close(raw[z], a + b * ref[z], rtol=0, atol=1e-5)
    assert torch.equal(x[0, 1:], cube[1:])


@pytest.mark.parametrize("dy,dx", [(2, -1), (-3, 4), (0, 2), (20, -17)])
def test_misalignment_moves_every_channel_alike(dy, dx):
    cube = cube4(3)
    x = cube.clone()[None]
    section_artefacts_(x, np.zeros(1), np.zeros(1, np.int64), np.array([[dy, dx]]), np.array([3]))
    out = x[0]
    assert _binary(out[1:])
    moved = [z for z in range(S) if not torch.equal(out[:, z], cube[:, z])]
    assert moved and moved == list(range(moved[0], S))  # the sections above one z
    first = moved[0]
    ys = (torch.arange(S) - dy).clamp(0, S - 1)  # edges replicate, also for shifts past the edge
    xs = (torch.arange(S) - dx).clamp(0, S - 1)
    ref = cube[:, first:][:, :, ys][:, :, :, xs]
    assert torch.equal(out[:, first:], ref)  # raw and masks shifted by the same (dy, dx)
    assert not torch.equal(out[1:, first:], cube[1:, first:])  # the masks did move


def test_out_of_place_section_artefacts_equal_in_place_and_copy_only_what_changes():
    x = torch.stack([cube4(10), cube4(11), cube4(12)])
    before = x.clone()
    std, black, seed = np.array([0.0, 0.2, 0.0]), np.array([0, 2, 0]), np.array([1, 2, 3])
    shift = np.array([[0, 0], [0, 0], [1, -2]])
    ref = section_artefacts_(x.clone(), std, black, shift, seed)
    raw, masks = section_artefacts(x, std, black, shift, seed)
    assert torch.equal(x, before)  # the input is left as it was
    assert raw.shape == (3, 1, S, S, S) and masks.shape == (3, 3, S, S, S)
    assert torch.equal(torch.cat([raw, masks], 1), ref)
    assert not torch.equal(ref[2, 1:], before[2, 1:])  # the misaligned cube's masks did move
    # without a misalignment the masks are the input's own (no copy); without any artefact, the raw too
    raw, masks = section_artefacts(x, std, black, np.zeros((3, 2), np.int64), seed)
    assert masks.data_ptr() == x[:, 1:].data_ptr() and raw.data_ptr() != x.data_ptr()
    assert torch.equal(torch.cat([raw, masks], 1), section_artefacts_(x.clone(), std, black, np.zeros((3, 2)), seed))
    raw, masks = section_artefacts(x, np.zeros(3), np.zeros(3, np.int64), np.zeros((3, 2), np.int64), seed)
    assert raw.data_ptr() == x.data_ptr() and torch.equal(raw, x[:, :1])


def test_cutout_zeroes_every_channel_in_the_box_only():
    cube = cube4(4)
    start, size = np.array([[2, 5, 1]]), np.array([[4, 3, 6]])
    out = apply_view_params(cube, identity_params(cutout_start=start[0], cutout_size=size[0]))
    box = (slice(None), slice(2, 6), slice(5, 8), slice(1, 7))
    assert torch.all(out[box] == 0)
    outside = torch.ones(S, S, S, dtype=torch.bool)
    outside[box[1:]] = False
    assert torch.equal(out[:, outside], cube[:, outside])
    assert _binary(out[1:])
    x = cube.clone()[None]
    assert torch.equal(cutout_(x, start, np.zeros((1, 3), np.int64))[0], cube)  # size 0: none


@pytest.mark.parametrize("morph", [(1, 0, 0), (0, -1, 0), (2, -1, 1), (0, 0, -2)])
def test_mask_morphology_touches_the_masks_only_and_equals_scipy(morph):
    cube = cube4(5)
    out = apply_view_params(cube, identity_params(morph=morph))
    assert torch.equal(out[0], cube[0]) and _binary(out[1:])
    for ch, r in zip((1, 2, 3), morph):
        m = cube[ch].numpy().astype(bool)
        if r == 0:
            assert torch.equal(out[ch], cube[ch])
            continue
        st = np.ones((2 * abs(r) + 1,) * 3, dtype=bool)
        # MONAI's morphology: zeros past the border for a dilation, ones for an erosion
        ref = ndimage.binary_dilation(m, st) if r > 0 else ndimage.binary_erosion(m, st, border_value=1)
        np.testing.assert_array_equal(out[ch].numpy().astype(bool), ref)
        assert (out[ch].sum() > cube[ch].sum()) if r > 0 else (out[ch].sum() < cube[ch].sum())


def test_batched_morphology_and_gamma_equal_monai():
    cubes = torch.stack([cube4(s) for s in range(4)])
    morph = np.array([[1, 0, -1], [0, 0, 0], [-2, 2, 0], [0, 1, 1]])
    got = batched_mask_morphology_(cubes.clone(), morph)
    for b in range(4):
        assert torch.equal(got[b], mask_morphology(cubes[b], morph[b]))
    gamma = np.array([0.8, 1.0, 1.25, 2.0])
    got = batched_raw_gamma_(cubes.clone(), gamma)
    for b in range(4):
        ref = raw_gamma(cubes[b], gamma[b])
        torch.testing.assert_close(got[b], ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(ref[0], torch.as_tensor(AdjustContrast(gamma=float(gamma[b]))(cubes[b, 0])))
        assert torch.equal(got[b, 1:], cubes[b, 1:])


def test_pre_dropout_zeroes_the_pre_synaptic_mask_only():
    cube = cube4(6)
    out = apply_view_params(cube, identity_params(pre_dropout=True))
    assert torch.all(out[1] == 0) and cube[1].sum() > 0
    assert torch.equal(out[[0, 2, 3]], cube[[0, 2, 3]])


def test_noise_is_reproducible_from_its_seed():
    cube = cube4(7)[None]
    a = raw_noise_(cube.clone(), np.array([0.3]), np.array([0.2]), np.array([42]))
    b = raw_noise_(cube.clone(), np.array([0.3]), np.array([0.2]), np.array([42]))
    c = raw_noise_(cube.clone(), np.array([0.3]), np.array([0.2]), np.array([43]))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, 1:], cube[:, 1:])


@pytest.mark.parametrize("radius", [0, 1, 3])
def test_masked_input_is_the_raw_inside_the_dilated_synapse_only(radius):
    cube = cube4(8, p_mask=0.05)
    out = to_input_mode(cube[None], "masked", np.array([radius]))[0]
    assert out.shape == (1, S, S, S)
    synapse = cube[1:].amax(0).numpy().astype(bool)  # pre | cleft | post
    zone = ndimage.binary_dilation(synapse, np.ones((2 * radius + 1,) * 3, bool)) if radius else synapse
    assert 0 < zone.sum() < zone.size
    assert torch.all(out[0][torch.from_numpy(~zone)] == 0)
    assert torch.equal(out[0][torch.from_numpy(zone)], cube[0][torch.from_numpy(zone)])
    # through the per-sample path, with the radius drawn into the parameters
    view = apply_view_params(cube, identity_params(az_radius=radius), input_mode="masked")
    assert torch.equal(view, out)


def test_input_modes_channels_and_raw():
    cube = cube4(9)
    assert torch.equal(to_input_mode(cube[None], "channels")[0], cube[:3])
    assert torch.equal(to_input_mode(cube[None], "raw")[0], cube[:1])
    with pytest.raises(ValueError, match="input_mode"):
        to_input_mode(cube[None], "rgb")
