"""synth --stream: bboxes generated and written slab by slab (bounded memory), same layout and label semantics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from synclr_monai.data.io import open_volume
from synclr_monai.data.label_maps import label_map_for
from synclr_monai.data.synthetic import generate_dataset
from synclr_monai.data.synthetic_imaging import Staining
from synclr_monai.data.synthetic_stream import _Imager, plan_slabs
from synclr_monai.data.synthetic_stream_fields import SlabField, SlabNeuropil

SHAPE = (80, 72, 72)
KW = {"n_bboxes": 2, "shape": SHAPE, "synapses_per_bbox": 4, "seed": 3, "volume_format": "zarr", "table_format": "csv"}


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream") / "data"
    types = generate_dataset(root, stream=True, **KW)
    return root, types


def _read(root, n):
    return (
        np.asarray(open_volume(root / "raw" / f"bbox{n}.zarr")[:]),
        np.asarray(open_volume(root / "seg" / f"bbox{n}.zarr", "label")[:]),
        np.asarray(open_volume(root / f"bbox_{n}.zarr", "label")[:]),
    )


def test_layout_labels_and_sheets(streamed):
    root, types = streamed
    assert len(types) == 8 and set(types.columns) == {"bbox_name", "Var1", "type"}
    for n in (1, 2):
        raw, seg, mask = _read(root, n)
        assert raw.shape == seg.shape == mask.shape == SHAPE
        assert raw.dtype == np.uint8 and seg.dtype == np.uint16 and mask.dtype == np.uint8
        lm = label_map_for(n)
        assert set(np.unique(mask)) <= {0, lm.mito, lm.vesicle, lm.cleft, lm.cleft2}
        assert {lm.mito, lm.vesicle}.issubset(np.unique(mask))
        assert 60 < raw.mean() < 200 and raw.std() > 10
        sheet = pd.read_csv(root / f"bbox{n}.csv")
        for _, r in sheet.iterrows():
            c = tuple(r[f"central_coord_{i}"] for i in (3, 2, 1))
            s1 = tuple(r[f"side_1_coord_{i}"] for i in (3, 2, 1))
            s2 = tuple(r[f"side_2_coord_{i}"] for i in (3, 2, 1))
            assert mask[c] in lm.cleft_values
            # the two partners: distinct synapse cells (ids 1..2K), touching the cleft
            assert seg[s1] != seg[s2] and 1 <= seg[s1] <= 8 and 1 <= seg[s2] <= 8
            cleft = np.isin(mask, lm.cleft_values)
            near = ndimage.binary_dilation(cleft, iterations=2)
            assert (near & (seg == seg[s1])).any() and (near & (seg == seg[s2])).any()


def test_passes_check(streamed):
    from synclr_monai.__main__ import main

    assert main(["check", str(streamed[0])]) == 0


def test_same_seed_same_volumes(streamed, tmp_path):
    generate_dataset(tmp_path / "again", stream=True, **{**KW, "n_bboxes": 1})
    for a, b in zip(_read(streamed[0], 1), _read(tmp_path / "again", 1)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"volume_format": "tiff"}, "zarr"), ({"voxel_size": (40, 8, 8)}, "isotropic"), ({"defects": 0.5}, "defects")],
)
def test_refused_options(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_dataset(tmp_path / "x", stream=True, **{**KW, **kwargs})


def test_slabs_never_cut_a_window():
    windows = [(0, 30), (25, 60), (70, 100), (100, 130), (131, 200)]
    slabs = plan_slabs(200, windows, 40)
    assert slabs[0][0] == 0 and slabs[-1][1] == 200
    assert all(a[1] == b[0] for a, b in zip(slabs, slabs[1:]))
    for start, stop in windows:
        assert sum(z0 <= start and stop <= z1 for z0, z1 in slabs) == 1


def test_slab_field_joins_and_is_normalised():
    field = SlabField((40, 30, 20), 6.0, np.random.default_rng(0))
    whole = field.slab(0, 40)
    np.testing.assert_allclose(np.concatenate([field.slab(0, 13), field.slab(13, 40)]), whole, atol=1e-5)
    assert abs(whole.mean()) < 1e-4 and whole.std() == pytest.approx(1.0, abs=1e-4)


def test_slab_neuropil_matches_the_exact_nearest_seeds():
    npl = SlabNeuropil((24, 40, 36), 12.0, np.random.default_rng(1))
    labels = np.concatenate([npl.slab(0, 10), npl.slab(10, 24)])
    seeds, wall = npl._exact(npl._points(0, 24).reshape(-1, 3))
    exact = (seeds + 1).astype(np.int32)
    exact[wall < npl.gap] = 0
    assert (labels != exact.reshape(labels.shape)).mean() < 1e-3  # float32 rounding on the gap's edge only


def test_streamed_blur_equals_the_whole_volume_blur():
    rng = np.random.default_rng(0)
    shape = (50, 20, 24)
    tissue = rng.uniform(50, 200, shape).astype(np.float32)
    staining = Staining(brightness=5.0, contrast=1.1, gamma=0.9, noise_std=0.0, blur_sigma=1.1, illumination=3.0)
    out: list[np.ndarray] = []
    imager = _Imager(shape, staining, SlabField(shape, 16.0, rng), rng, out.append)
    imager.grain_gain = np.float32(0.0)  # no random grain: the result is deterministic
    for z0, z1 in [(0, 7), (7, 30), (30, 33), (33, 50)]:
        imager.push(z0, tissue[z0:z1])
    got = np.concatenate(out)
    field = imager.illumination.slab(0, shape[0])
    expect = staining.tone(ndimage.gaussian_filter(tissue + np.float32(3.0) * field, 1.1))
    np.testing.assert_array_equal(got, np.clip(np.rint(expect), 0, 255).astype(np.uint8))


def test_cli_stream(tmp_path):
    from synclr_monai.__main__ import main

    out = tmp_path / "d"
    args = ["synth", "--out", str(out), "--format", "zarr", "--table", "csv", "--stream", "--bboxes", "1"]
    assert main([*args, "--shape", "40", "48", "48", "--synapses-per-bbox", "2"]) == 0
    assert (out / "raw" / "bbox1.zarr").is_dir() and (out / "bbox1.csv").is_file()
    assert main(["synth", "--out", str(tmp_path / "t"), "--stream", "--shape", "40", "48", "48"]) == 2
