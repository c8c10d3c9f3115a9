"""ContrastiveCubeDataset: caching, per-sample randomness, workers, DistributedSampler, mode switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader as MonaiDataLoader
from torch.utils.data import DataLoader, DistributedSampler

from synclr_monai.data.dataset import ContrastiveCubeDataset
from synclr_monai.transforms import BatchedTwoViewAugment, TwoViewParams, apply_view_params

CUBE = 16
# clefts far apart; most 16³ cubes of a 32x64x64 volume hold none of them
BLOBS = (((4, 8), (6, 14), (6, 14)), ((20, 25), (40, 50), (44, 52)))


def make_item(name: str = "bbox1", seed: int = 0, blobs=BLOBS, shape=(32, 64, 64)) -> dict:
    rng = np.random.RandomState(seed)
    mask = np.zeros((2, *shape), dtype=np.uint8)
    for (z0, z1), (y0, y1), (x0, x1) in blobs:
        mask[1, z0:z1, y0:y1, x0:x1] = 1
        mask[0, z0:z1, y0:y1, max(x0 - 3, 0) : x0] = 1
    return {"raw": rng.randn(1, *shape).astype(np.float16), "mask": mask, "name": name}


def make_dataset(**kw) -> ContrastiveCubeDataset:
    args = dict(cube_size=CUBE, cubes_per_bbox=6, seed=0, min_component_size=50)
    args.update(kw)
    data = args.pop("data", None) or [make_item("bbox1", 0), make_item("bbox2", 1)]
    return ContrastiveCubeDataset(data, **args)


def samples(ds, indices=None) -> list[dict]:
    return [ds[i] for i in (range(len(ds)) if indices is None else indices)]


def fingerprint(sample: dict) -> bytes:
    return sample["view1"].numpy().tobytes() + sample["view2"].numpy().tobytes()


def test_length_and_sample_layout():
    ds = make_dataset()
    assert ds.n_bboxes == 2 and len(ds) == 12
    s = ds[3]
    assert set(s) == {"view1", "view2", "fallback", "cube_start", "index", "synapse", "name"}
    for key in ("view1", "view2"):
        assert s[key].shape == (3, CUBE, CUBE, CUBE) and s[key].dtype == torch.float32
        assert torch.all((s[key][1:] == 0) | (s[key][1:] == 1))
    assert s["name"] == "bbox2" and s["index"] == 3 and s["fallback"] == 0  # index 3 -> bbox 3 % 2
    assert ds[-1]["index"] == 11
    with pytest.raises(IndexError):
        ds[12]


def test_same_seed_reproduces_other_seed_differs():
    a, b, c = make_dataset(seed=5), make_dataset(seed=5), make_dataset(seed=6)
    fa, fb, fc = ([fingerprint(s) for s in samples(d)] for d in (a, b, c))
    assert fa == fb
    assert all(x != y for x, y in zip(fa, fc))
    assert len(set(fa)) == len(fa)  # no two samples share an augmentation


def test_set_epoch_changes_samples_and_returns():
    ds = make_dataset()
    e0 = [fingerprint(s) for s in samples(ds)]
    ds.set_epoch(1)
    e1 = [fingerprint(s) for s in samples(ds)]
    assert all(x != y for x, y in zip(e0, e1))
    ds.set_epoch(0)
    assert [fingerprint(s) for s in samples(ds)] == e0
    with pytest.raises(ValueError):
        ds.set_epoch(-1)


@pytest.mark.parametrize("loader_cls", [DataLoader, MonaiDataLoader])
def test_workers_distinct_and_independent_of_worker_count(loader_cls):
    ds = make_dataset()
    serial = [fingerprint(s) for s in samples(ds)]
    # MONAI's DataLoader reseeds every worker's transforms (set_rnd): the per-sample streams must win
    loader = loader_cls(ds, batch_size=1, num_workers=2, shuffle=False, collate_fn=lambda b: b[0])
    parallel = [fingerprint(s) for s in loader]
    assert parallel == serial
    assert len(set(parallel)) == len(parallel)
    # indices 0 and 2 (same bbox) go to different workers and still differ
    assert parallel[0] != parallel[2]


def test_distributed_sampler_ranks_partition_and_reshuffle():
    ds = make_dataset()
    seen = {}
    for rank in (0, 1):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(0)
        seen[rank] = list(sampler)
        out = [ds[i] for i in seen[rank]]
        assert [s["index"] for s in out] == seen[rank]
    assert sorted(seen[0] + seen[1]) == list(range(len(ds)))
    # with the dataset's own epoch the same index gives new cubes
    first = fingerprint(ds[seen[1][0]])
    ds.set_epoch(1)
    assert fingerprint(ds[seen[1][0]]) != first


def test_sampling_switch_reaches_persistent_workers():
    # views=False: samples carry the cube, so the cleft content is directly visible
    ds = make_dataset(views=False, cubes_per_bbox=16, data=[make_item("bbox1", 0)])
    loader = DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True)

    def cleft_voxels():
        return torch.cat([b["image"][:, 2].flatten(1).sum(1) for b in loader])

    random_mode = cleft_voxels()
    assert (random_mode == 0).any()  # uniform cubes often miss the clefts
    ds.set_sampling_mode("mask_aware")
    assert ds.sampling_mode == "mask_aware"
    masked = cleft_voxels()
    assert (masked >= 0.5 * 256).all()  # every cube holds most of a cleft component
    with pytest.raises(ValueError):
        ds.set_sampling_mode("clefts")


def test_fallbacks_flagged_across_workers():
    ds = make_dataset(sampling="mask_aware", data=[make_item("bbox1", 0, blobs=())], cubes_per_bbox=8)
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    flags = torch.cat([b["fallback"] for b in loader])
    assert flags.tolist() == [1] * 8
    assert ds[0]["fallback"] == 1


def test_batched_path_uses_the_dataset_params():
    ds = make_dataset(views=False, sampling="mask_aware")
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 3, CUBE, CUBE, CUBE)
    v1, v2 = BatchedTwoViewAugment(chunk_size=4, crop_method="gather")(batch["image"], batch["view_params"])
    params = TwoViewParams.from_dict(batch["view_params"])
    for b in range(4):
        torch.testing.assert_close(
            v2[b], apply_view_params(batch["image"][b], params.view2.select(b)), rtol=0, atol=2e-5
        )


def test_uncached_bboxes_give_the_same_samples():
    cached = [fingerprint(s) for s in samples(make_dataset())]
    assert [fingerprint(s) for s in samples(make_dataset(cache_rate=0.0))] == cached


def test_load_transform_runs_once_per_bbox():
    calls = []

    def load(item):
        calls.append(item["bbox"])
        return {**make_item(item["bbox"], seed=len(calls)), **item}

    ds = make_dataset(data=[{"bbox": "bbox1"}, {"bbox": "bbox2"}], load_transform=load)
    samples(ds)
    samples(ds)
    assert sorted(calls) == ["bbox1", "bbox2"]


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="larger than the volume"):
        make_dataset(cube_size=40)
    with pytest.raises(ValueError, match="no bboxes"):
        ContrastiveCubeDataset([])
    with pytest.raises(ValueError, match="'raw' and 'mask'"):
        ContrastiveCubeDataset([{"image": 1}])
    bad = make_item()
    bad["mask"] = bad["mask"] * 3
    with pytest.raises(ValueError, match="binary"):
        make_dataset(data=[bad])
    with pytest.raises(ValueError, match="sampling"):
        make_dataset(sampling="clefts")
    with pytest.raises(ValueError, match="seed"):
        make_dataset(seed=-1)


def test_real_layout_through_load_bbox(synthetic_root):
    """Items ``{"bbox": BBoxSource}`` of a dataset root are loaded by LoadBBoxd (the default)."""
    from synclr_monai.data import bbox_data_list

    ds = ContrastiveCubeDataset(
        bbox_data_list(synthetic_root), cube_size=32, cubes_per_bbox=3, sampling="mask_aware", min_component_size=20
    )
    assert ds.n_bboxes == 2 and ds.cache[0]["raw"].dtype == np.float16
    assert all(len(ds.cache[i]["cleft_components"]) > 0 for i in range(2))
    out = samples(ds)
    assert {s["name"] for s in out} == {"bbox1", "bbox2"}
    assert all(s["fallback"] == 0 and s["view1"][2].sum() >= 20 * 0.5 for s in out)


def test_cubes_for_the_device_path_travel_in_float16_and_give_the_float32_views():
    half = make_dataset(views=False, sampling="mask_aware")
    full = make_dataset(views=False, sampling="mask_aware", cube_dtype="float32")
    for i in (0, 3):
        a, b = half[i], full[i]
        assert a["image"].dtype == torch.float16 and b["image"].dtype == torch.float32
        torch.testing.assert_close(a["image"][1:].float(), b["image"][1:], rtol=0, atol=0)  # masks exact
        torch.testing.assert_close(a["image"].float(), b["image"], rtol=2**-10, atol=1e-4)
    batch = next(iter(DataLoader(half, batch_size=2, num_workers=0)))
    aug = BatchedTwoViewAugment(chunk_size=2, crop_method="gather")
    views_half = aug(batch["image"], batch["view_params"])
    views_full = aug(batch["image"].float(), batch["view_params"])
    for h, f in zip(views_half, views_full):
        assert h.dtype == torch.float32
        torch.testing.assert_close(h, f, rtol=0, atol=0)
    with pytest.raises(ValueError, match="cube_dtype"):
        make_dataset(views=False, cube_dtype="int8")


def test_synapse_ids_name_the_cleft_component_each_cube_holds():
    from synclr_monai.data.dataset import SYNAPSE_ID_STRIDE
    from synclr_monai.transforms.sampling import find_cleft_components

    ds = make_dataset(cubes_per_bbox=12, sampling="mask_aware")
    comps = [find_cleft_components(item["mask"][1], 50) for item in (make_item("bbox1", 0), make_item("bbox2", 1))]
    ids = set()
    for s in samples(ds):
        bbox, component = divmod(s["synapse"], SYNAPSE_ID_STRIDE)
        assert bbox == s["index"] % 2 and 0 <= component < len(comps[bbox])
        # the component the id names lies in the cube (its whole 5-10 voxel box fits in a 16³ cube)
        lo, hi = comps[bbox].starts[component], comps[bbox].stops[component]
        start = np.asarray(s["cube_start"])
        assert np.all(start <= lo) and np.all(hi <= start + CUBE)
        ids.add(s["synapse"])
    assert len(ids) == 4  # two components in each of the two bboxes, all drawn
    # uniformly random cubes belong to no known synapse
    ds.set_sampling_mode("random")
    assert {s["synapse"] for s in samples(ds)} == {-1}
    # the ids travel through a DataLoader as one int64 tensor per batch
    batch = next(iter(DataLoader(make_dataset(sampling="mask_aware"), batch_size=4)))
    assert batch["synapse"].dtype == torch.int64 and batch["synapse"].shape == (4,)
