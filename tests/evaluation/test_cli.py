"""``python -m synclr_monai evaluate`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synclr_monai.__main__ import main as dispatch
from synclr_monai.evaluation.baselines import pca_embeddings, random_encoder_embeddings, raw_channel_matrix
from synclr_monai.evaluation.cli import main
from synclr_monai.evaluation.embeddings import read_embeddings, write_embeddings
from synclr_monai.data.synapse_cubes import iter_dataset_cubes
from synclr_monai.data.synapse_labels import join_labels, read_labels
from synclr_monai.evaluation.metrics import knn_accuracy, linear_probe_accuracy


def _valid_png(path) -> bool:
    with Image.open(path) as im:
        im.verify()
        return im.format == "PNG"


@pytest.fixture
def toy(tmp_path):
    """Two noisy classes of 12 synapses each in 6-D, spread over two bboxes, plus a labels CSV."""
    rng = np.random.default_rng(0)
    n = 24
    y = np.repeat(["spine", "shaft"], n // 2)
    vectors = rng.normal(size=(n, 6)) + np.where(y == "spine", 1.0, -1.0)[:, None] * np.array([1, 0.5, 0, 0, 0, 0])
    ids = pd.DataFrame(
        {"bbox_name": [f"bbox{1 + i % 2}" for i in range(n)], "Var1": [f"syn_{i:03d}" for i in range(n)]}
    )
    h5, _ = write_embeddings(tmp_path / "run", ids, vectors, {"backbone": "resnet18"})
    labels = ids.assign(type=y).sample(frac=1.0, random_state=0)  # label file order does not matter
    labels_csv = tmp_path / "types.csv"
    labels.to_csv(labels_csv, index=False)
    return h5, labels_csv, ids, vectors.astype(np.float32), y


def test_evaluate_without_baselines(toy, tmp_path, capsys):
    h5, labels_csv, _, vectors, y = toy
    out = tmp_path / "eval"
    assert (
        main(["--embeddings", str(h5), "--labels", str(labels_csv), "--k", "3", "--out", str(out), "--no-baselines"])
        == 0
    )
    table = pd.read_csv(out / "evaluation.csv")
    assert table["method"].tolist() == ["synclr"]
    knn = knn_accuracy(vectors, y, k=3)
    lin = linear_probe_accuracy(vectors, y)
    assert table.loc[0, "knn_acc"] == pytest.approx(knn.mean) and table.loc[0, "knn_std"] == pytest.approx(knn.std)
    assert table.loc[0, "linear_acc"] == pytest.approx(lin.mean) and table.loc[0, "linear_std"] == pytest.approx(
        lin.std
    )
    assert table.loc[0, "chance"] == pytest.approx(0.5)
    assert 0.6 < knn.mean < 1.0  # a non-trivial toy case
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["results"][0]["knn_acc"] == pytest.approx(knn.mean)
    assert summary["class_counts"] == {"shaft": 12, "spine": 12} and summary["n_splits"] == 5
    assert _valid_png(out / "embedding_2d.png")
    assert not (out / "cluster_examples.png").exists()  # no dataset to cut example cubes from
    printed = capsys.readouterr().out
    assert "kNN acc (k=3)" in printed and f"{knn.mean:.3f} ± {knn.std:.3f}" in printed and "chance" in printed


def test_evaluate_default_out_is_beside_embeddings_and_dispatch_works(toy):
    h5, labels_csv, *_ = toy
    assert (
        dispatch(["evaluate", "--embeddings", str(h5), "--labels", str(labels_csv), "--no-baselines", "--cv", "loo"])
        == 0
    )
    summary = json.loads((h5.parent / "evaluation.json").read_text())
    assert summary["cv"] == "loo" and summary["n_samples"] == 24
    assert _valid_png(h5.parent / "embedding_2d.png")


def test_missing_labels_are_named(toy, tmp_path, capsys):
    h5, labels_csv, *_ = toy
    labels = pd.read_csv(labels_csv, dtype=str)
    keep = ~labels["Var1"].isin(["syn_003", "syn_010"])
    labels[keep].to_csv(tmp_path / "partial.csv", index=False)
    assert main(["--embeddings", str(h5), "--labels", str(tmp_path / "partial.csv"), "--no-baselines"]) == 2
    err = capsys.readouterr().err
    assert "2 embedded synapse(s) have no label" in err and "bbox2/syn_003" in err and "bbox1/syn_010" in err


def test_baselines_without_dataset_explain_the_flags(toy, capsys):
    h5, labels_csv, *_ = toy
    assert main(["--embeddings", str(h5), "--labels", str(labels_csv)]) == 2
    assert "--no-baselines" in capsys.readouterr().err


@pytest.mark.slow
def test_inference_and_evaluate_with_baselines_on_synthetic_data(tmp_path):
    synthetic = pytest.importorskip("synclr_monai.data.synthetic")
    networks = pytest.importorskip("synclr_monai.networks")
    from synclr_monai.inference import run_inference

    data = tmp_path / "data"
    synthetic.generate_dataset(data, n_bboxes=2, shape=(32, 64, 64), synapses_per_bbox=6, seed=0)
    model = tmp_path / "model.pt"
    networks.save_encoder(networks.build_backbone("resnet10"), model)
    # the sidecar (model.json) is the truth: a contradicting backbone names it and both values
    with pytest.raises(ValueError, match=r"model\.json: the encoder was trained with backbone='resnet10', but backbone='resnet18'"):
        run_inference(data, model, tmp_path / "out", backbone="resnet18", cube_size=16)
    h5 = run_inference(data, model, tmp_path / "out", backbone="resnet10", cube_size=16, batch_size=6, progress=False)
    ids, vectors, attrs = read_embeddings(h5)
    assert vectors.shape == (12, 512) and attrs["cube_size"] == 16 and attrs["backbone"] == "resnet10"
    assert set(ids["bbox_name"]) == {"bbox1", "bbox2"}

    out = tmp_path / "eval"
    args = ["--embeddings", str(h5), "--labels", str(data / "synapse_types.csv"), "--k", "3", "--out", str(out)]
    assert main(args + ["--pca-components", "5"]) == 0
    table = pd.read_csv(out / "evaluation.csv")
    assert table["method"].tolist() == ["synclr", "random_init", "pca_raw"]
    # the PCA baseline is computed "the same way": same synapses, same folds, same metrics
    y = join_labels(ids, read_labels(data / "synapse_types.csv"))
    cubes = {(b, v): c for b, v, c in iter_dataset_cubes(data, 16)}
    raw = raw_channel_matrix([cubes[(b, v)] for b, v in zip(ids["bbox_name"], ids["Var1"])])
    pca = pca_embeddings(raw, 5)
    row = table.set_index("method").loc["pca_raw"]
    assert row["knn_acc"] == pytest.approx(knn_accuracy(pca, y, k=3).mean)
    assert row["linear_acc"] == pytest.approx(linear_probe_accuracy(pca, y).mean)
    # the random baseline is embedded as the scored embeddings were: averaged over the 24 rotations
    assert attrs["rotations"] == 24
    ordered = [cubes[(b, v)] for b, v in zip(ids["bbox_name"], ids["Var1"])]
    _, rand = random_encoder_embeddings(ordered, "resnet10", attrs["backbone_kwargs"], seed=0, rotations=24)
    row = table.set_index("method").loc["random_init"]
    assert row["knn_acc"] == pytest.approx(knn_accuracy(rand, y, k=3).mean)
    assert row["linear_acc"] == pytest.approx(linear_probe_accuracy(rand, y).mean)
    assert _valid_png(out / "embedding_2d.png") and _valid_png(out / "cluster_examples.png")


def test_the_baselines_keep_the_native_protocol_beside_canonical_embeddings():
    from synclr_monai.evaluation.cli import _baseline_rotations

    assert _baseline_rotations({"pose": "canonical", "rotations": 4}) == 24  # the 4 normal turns mean nothing there
    assert _baseline_rotations({"pose": "native", "rotations": 1}) == 1
    assert _baseline_rotations({"rotations": 24}) == 24 and _baseline_rotations({}) == 1
