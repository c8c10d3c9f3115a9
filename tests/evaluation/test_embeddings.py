"""Embeddings: batched encoding and the embeddings file format."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from synclr_monai.evaluation.embeddings import (
    EMBEDDINGS_FORMAT,
    compute_embeddings,
    read_embeddings,
    write_embeddings,
)


class MeanEncoder(nn.Module):
    """Features = per-channel means and a linear map of them (deterministic, BN to check eval mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.bn(self.linear(x.mean(dim=(2, 3, 4))))


def _cubes(n: int = 7, s: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, s, s, s)).astype(np.float32)


def test_compute_embeddings_matches_one_pass_and_restores_mode():
    torch.manual_seed(0)
    enc = MeanEncoder().train()
    cubes = _cubes()
    items = [(f"bbox{i % 2 + 1}", f"spine_synapse_{i:03d}", c) for i, c in enumerate(cubes)]
    ids, vecs = compute_embeddings(enc, items, batch_size=3, progress=False)  # 3 + 3 + 1: a ragged last batch
    enc.eval()
    with torch.no_grad():
        expected = enc(torch.from_numpy(cubes)).numpy()
    assert vecs.dtype == np.float32 and vecs.shape == (7, 4)
    np.testing.assert_allclose(vecs, expected, rtol=1e-5, atol=1e-6)
    assert ids["Var1"].tolist() == [f"spine_synapse_{i:03d}" for i in range(7)]
    assert ids["bbox_name"].tolist()[:2] == ["bbox1", "bbox2"]
    # all three batches ran in eval mode, and the module was returned to train mode
    assert enc.modes[:3] == [False, False, False]
    enc.train()
    ids, _ = compute_embeddings(enc, items, batch_size=3, progress=False)
    assert enc.training


def test_compute_embeddings_accepts_arrays_dicts_and_bound_methods():
    torch.manual_seed(0)
    enc = MeanEncoder().train()
    cubes = _cubes(5)
    ids_a, a = compute_embeddings(enc, cubes, batch_size=2, progress=False)
    assert ids_a["Var1"].tolist() == ["0", "1", "2", "3", "4"]
    dicts = [{"bbox_name": "bbox1", "Var1": str(i), "image": torch.from_numpy(c)} for i, c in enumerate(cubes)]
    _, b = compute_embeddings(enc.forward, dicts, batch_size=4, progress=False)  # bound method: module found
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert enc.training and enc.modes[-1] is False


def test_compute_embeddings_errors():
    with pytest.raises(ValueError, match="no cubes"):
        compute_embeddings(MeanEncoder(), [], progress=False)
    with pytest.raises(ValueError, match=r"\[B, F\]"):
        compute_embeddings(lambda x: x.mean(dim=(2, 3, 4))[0], _cubes(3), progress=False)
    with pytest.raises(ValueError, match="3-tuple|tuple"):
        compute_embeddings(MeanEncoder(), [("bbox1", _cubes(1)[0])], progress=False)


def test_write_read_round_trip(tmp_path):
    ids = pd.DataFrame({"bbox_name": ["bbox1", "bbox1", "bbox7"], "Var1": ["001", "spine_synapse_ü", "NA"]})
    vecs = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    attrs = {
        "dataset_dir": "/data",
        "cube_size": 80,
        "backbone": "resnet18",
        "backbone_kwargs": {"a": 1},
        "checkpoint": None,
    }
    h5_path, csv_path = write_embeddings(tmp_path / "out", ids, vecs, attrs)
    assert h5_path.name == "embeddings.h5" and csv_path.name == "embeddings.csv"
    assert sorted(p.name for p in h5_path.parent.iterdir()) == ["embeddings.csv", "embeddings.h5"]  # no temp files left

    r_ids, r_vecs, r_attrs = read_embeddings(h5_path)
    assert r_ids["bbox_name"].tolist() == ["bbox1", "bbox1", "bbox7"]
    assert r_ids["Var1"].tolist() == ["001", "spine_synapse_ü", "NA"]  # strings, not ints or NaN
    np.testing.assert_array_equal(r_vecs, vecs)
    assert r_attrs == attrs

    with h5py.File(h5_path) as f:
        assert f["embeddings"].dtype == np.float32 and f["embeddings"].shape == (3, 5)
        assert h5py.check_string_dtype(f["Var1"].dtype).encoding == "utf-8"
        assert f.attrs["format"] == EMBEDDINGS_FORMAT

    table = pd.read_csv(csv_path, dtype={"Var1": str}, keep_default_na=False)
    assert list(table.columns) == ["bbox_name", "Var1", "e0", "e1", "e2", "e3", "e4"]
    c_ids, c_vecs, _ = read_embeddings(csv_path)
    pd.testing.assert_frame_equal(c_ids, r_ids, check_dtype=False)
    np.testing.assert_array_equal(c_vecs, vecs)  # %.9g round-trips float32 exactly


def test_write_rejects_mismatch(tmp_path):
    ids = pd.DataFrame({"bbox_name": ["bbox1"], "Var1": ["a"]})
    with pytest.raises(ValueError, match="1 ids but 2 vectors"):
        write_embeddings(tmp_path, ids, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="reserved"):
        write_embeddings(tmp_path, ids, np.zeros((1, 3)), {"format": "x"})
    assert not any(tmp_path.iterdir())


def test_read_rejects_other_files(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.h5 is not an embeddings file"):
        read_embeddings(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["embeddings"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"other\.h5 is not an embeddings file.*format"):
        read_embeddings(other)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_embeddings(tmp_path / "missing.h5")
    bad_csv = tmp_path / "x.csv"
    bad_csv.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"x\.csv is not an embeddings file"):
        read_embeddings(bad_csv)
