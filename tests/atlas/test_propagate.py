"""Label propagation: one label per well-separated cluster labels them all; bad label files are named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synclr_monai.atlas.propagate import draw_labelled, knn_vote, label_spreading, main, propagation_curve


def clusters(n_per: int = 40, n_classes: int = 4, dim: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated clusters: orthogonal centres plus small noise."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:n_classes] * 5
    x = np.concatenate([c + 0.3 * rng.standard_normal((n_per, dim)) for c in centres]).astype(np.float32)
    y = np.repeat([f"class_{i}" for i in range(n_classes)], n_per)
    order = rng.permutation(len(y))
    return x[order], y[order]


def one_per_class(y: np.ndarray) -> np.ndarray:
    return np.array([np.flatnonzero(y == c)[0] for c in np.unique(y)])


@pytest.mark.parametrize("propagate", [label_spreading, knn_vote])
def test_one_label_per_cluster_labels_everything(propagate):
    x, y = clusters()
    rows = one_per_class(y)
    predicted, confidence = propagate(x, rows, y[rows], k=10)
    assert (predicted == y).all()
    assert confidence[rows].min() == 1.0
    assert ((confidence > 0) & (confidence <= 1)).all()


def test_confidence_is_lower_between_clusters():
    x, y = clusters()
    rows = one_per_class(y)
    midway = (x[y == "class_0"].mean(0) + x[y == "class_1"].mean(0)) / 2
    x2 = np.vstack([x, midway[None]])
    _, confidence = knn_vote(x2, rows, y[rows], k=4)
    assert confidence[-1] < np.median(confidence[:-1])


def test_draws_hold_every_class_and_the_fraction():
    _, y = clusters(n_per=100)
    rows = draw_labelled(y, 0.002, np.random.default_rng(1))
    assert len(rows) == 4 and set(y[rows]) == set(np.unique(y))
    assert len(draw_labelled(y, 0.2, np.random.default_rng(1))) == 80


def test_curve_on_separated_clusters_is_perfect_and_random_vectors_are_not():
    x, y = clusters()
    noise = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    curve = propagation_curve({"good": x, "noise": noise}, y, fractions=(0.01, 0.1), draws=2, progress=False)
    assert len(curve) == 2 * 2 * 2 * 2
    assert (curve[curve.embedding == "good"]["accuracy"] == 1.0).all()
    assert curve[curve.embedding == "noise"]["accuracy"].mean() < 0.6


def _labels_csv(path, ids: pd.DataFrame, labels) -> str:
    ids.assign(type=labels).to_csv(path, index=False)
    return str(path)


def test_cli_writes_labels_and_confidences(small_embeddings, tmp_path, capsys):
    x, y = clusters(n_per=10)
    ids = pd.DataFrame({"bbox_name": "bbox1", "Var1": [f"synapse_{i:03d}" for i in range(len(y))]})
    h5 = small_embeddings(ids, x)
    rows = one_per_class(y)
    few = _labels_csv(tmp_path / "few.csv", ids.iloc[rows], y[rows])
    assert main(["--embeddings", str(h5), "--labels", few, "--out", str(tmp_path)]) == 0
    out = pd.read_csv(tmp_path / "propagated_labels.csv")
    assert list(out.columns) == ["bbox_name", "Var1", "label", "confidence", "labelled", "method"]
    assert (out["label"].to_numpy() == y).all() and out["labelled"].sum() == 4
    assert "40" in capsys.readouterr().out


def test_empty_labels_file_is_named(small_embeddings, tmp_path, capsys):
    x, y = clusters(n_per=3)
    ids = pd.DataFrame({"bbox_name": "bbox1", "Var1": [f"s{i}" for i in range(len(y))]})
    h5 = small_embeddings(ids, x)
    empty = tmp_path / "empty.csv"
    empty.write_text("bbox_name,Var1,type\n")
    assert main(["--embeddings", str(h5), "--labels", str(empty)]) == 2
    assert f"labels file {empty} holds no labelled synapse" in capsys.readouterr().err
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    assert main(["--embeddings", str(h5), "--labels", str(blank)]) == 2
    assert str(blank) in capsys.readouterr().err


def test_labels_naming_unknown_synapses_are_named(small_embeddings, tmp_path, capsys):
    x, y = clusters(n_per=3)
    ids = pd.DataFrame({"bbox_name": "bbox1", "Var1": [f"s{i}" for i in range(len(y))]})
    h5 = small_embeddings(ids, x)
    bad = pd.DataFrame({"bbox_name": ["bbox1", "bbox7"], "Var1": ["s0", "ghost_synapse"], "type": ["a", "b"]})
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert main(["--embeddings", str(h5), "--labels", str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err
    assert "bbox7/ghost_synapse" in err and "bad.csv" in err and "not in the embeddings file" in err


def test_curve_cli_with_both_baselines(atlas_data, tmp_path, capsys):
    labels = atlas_data["dataset"] / "synapse_types.csv"
    args = ["--embeddings", str(atlas_data["embeddings"]), "--labels", str(labels), "--curve", "--out", str(tmp_path)]
    assert main([*args, "--fractions", "0.2", "0.5", "--draws", "2", "--pca-components", "4"]) == 0
    curve = pd.read_csv(tmp_path / "propagation_curve.csv")
    assert set(curve["embedding"]) == {"synclr", "random_init", "pca_raw"}
    assert len(curve) == 3 * 2 * 2 * 2
    assert curve["accuracy"].between(0, 1).all()
    assert (tmp_path / "propagation_curve.png").stat().st_size > 10000
    assert "chance (majority class)" in capsys.readouterr().out
