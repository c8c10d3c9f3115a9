"""ContrastiveCubeDataset with the stronger views: contexts, nearby pairs, input modes; workers' views = device views."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from synclr_monai.data.bbox_loading import bbox_data_list
from synclr_monai.data.dataset import ContrastiveCubeDataset
from synclr_monai.transforms import BatchedTwoViewAugment

CUBE = 16
AUGMENT = {
    "rotate3d_prob": 1.0, "flip_prob": 0.5, "zoom_range": (0.9, 1.1), "translate_fraction": 0.05,
    "noise_prob": 0.5, "gamma_prob": 0.5, "section_prob": 0.5, "blackout_rate": 0.5, "misalign_prob": 0.5,
    "cutout_prob": 0.5, "mask_morph_prob": 0.3, "pre_dropout_prob": 0.3,
}  # fmt: skip


def make(synthetic_root, views: bool, input_mode: str, pair_mode: str, **kw) -> ContrastiveCubeDataset:
    return ContrastiveCubeDataset(
        bbox_data_list(synthetic_root), cube_size=CUBE, cubes_per_bbox=2, sampling="mask_aware", views=views,
        augment=AUGMENT, min_component_size=50, input_mode=input_mode, pair_mode=pair_mode, seed=3, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("input_mode, pair_mode", [("masked", "nearby"), ("channels", "same_crop"), ("raw", "nearby")])
def test_worker_views_equal_device_views(synthetic_root, input_mode, pair_mode):
    # float32 cubes: the two paths compute the same views (float16 transport is checked separately below)
    here = make(synthetic_root, True, input_mode, pair_mode)
    there = make(synthetic_root, False, input_mode, pair_mode, cube_dtype="float32")
    context = here.view_transform.context_size
    k = 3 if input_mode == "channels" else 1
    raw = [there[i] for i in range(len(there))]
    for s in raw:
        assert s["image"].shape == (4, context, context, context)
        assert ("image2" in s) == (pair_mode == "nearby")
    batch = default_collate(raw)
    aug = BatchedTwoViewAugment(AUGMENT, input_mode=input_mode, cube_size=CUBE)
    v1, v2 = aug(batch["image"], batch["view_params"], batch.get("image2"))
    for i in range(len(here)):
        s = here[i]
        assert s["view1"].shape == s["view2"].shape == (k, CUBE, CUBE, CUBE)
        assert s["fallback"] == raw[i]["fallback"]
        torch.testing.assert_close(s["view1"], v1[i], rtol=0, atol=1e-4)
        torch.testing.assert_close(s["view2"], v2[i], rtol=0, atol=1e-4)
    # the default float16 transport: the same views within float16's rounding of z-scored EM (~5e-4 relative)
    half = default_collate([make(synthetic_root, False, input_mode, pair_mode)[i] for i in range(len(there))])
    assert half["image"].dtype == torch.float16
    h1, h2 = aug(half["image"], half["view_params"], half.get("image2"))
    torch.testing.assert_close(h1, v1, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(h2, v2, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("sampling", ["mask_aware", "random"])
def test_canonical_pose_worker_views_equal_device_views(synthetic_root, sampling):
    """The canonical pose on real generated bboxes: frames found in the workers (from the component, or from the
    random cube's masks) travel in the parameters, so the device applies the very views the workers would make."""
    kw = {"pose": "canonical"}
    here = make(synthetic_root, True, "channels", "same_crop", **kw)
    there = make(synthetic_root, False, "channels", "same_crop", cube_dtype="float32", **kw)
    native = make(synthetic_root, True, "channels", "same_crop")
    for ds in (here, there, native):
        ds.set_sampling_mode(sampling)
    assert here.view_transform.context_size >= 1.73 * CUBE
    raw = [there[i] for i in range(len(there))]
    batch = default_collate(raw)
    v1, v2 = BatchedTwoViewAugment(AUGMENT, input_mode="channels", cube_size=CUBE, pose="canonical")(
        batch["image"], batch["view_params"]
    )
    differs = False
    for i in range(len(here)):
        s = here[i]
        torch.testing.assert_close(s["view1"], v1[i], rtol=0, atol=1e-4)
        torch.testing.assert_close(s["view2"], v2[i], rtol=0, atol=1e-4)
        differs |= not torch.allclose(s["view1"], native[i]["view1"])
    assert differs  # the pose changes the views (same seeds, native pose)
