"""Outlier scores: planted off-cluster synapses score above the median and are found (AUC)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from synclr_monai.atlas.outliers import defect_auc, main, outlier_scores


def planted(n_per: int = 30, n_bad: int = 6, dim: int = 10, seed: int = 0):
    """Four tight clusters plus ``n_bad`` synapses pushed off their cluster (a broken mask's embedding)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.eye(dim)[c] * 4 + 0.3 * rng.standard_normal((n_per, dim)) for c in range(4)])
    bad = rng.choice(len(x), n_bad, replace=False)
    x[bad] += 3.0 * rng.standard_normal((n_bad, dim))
    defect = np.full(len(x), "none", dtype=object)
    defect[bad] = ["missing_cleft", "merged_pre", "shifted_mask", "truncated", "missing_cleft", "merged_pre"][:n_bad]
    return x.astype(np.float32), defect.astype(str), bad


def test_planted_defects_score_above_the_median():
    x, _, bad = planted()
    scores = outlier_scores(x, k=5)
    assert (scores[bad] > np.median(scores)).all()
    assert scores.min() >= 0 and scores.max() <= 2


def test_auc_overall_and_per_kind():
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8])
    auc = defect_auc(scores, np.array(["none", "none", "none", "truncated", "merged_pre"]))
    assert auc == {"all": 1.0, "merged_pre": 1.0, "truncated": 1.0}
    assert defect_auc(-scores, np.array(["none", "none", "none", "truncated", "merged_pre"]))["all"] == 0.0
    with pytest.raises(ValueError, match="defective and intact"):
        defect_auc(scores, np.array(["none"] * 5))


def test_cli_scores_and_auc_from_the_ground_truth(small_embeddings, tmp_path, capsys):
    x, defect, bad = planted()
    ids = pd.DataFrame({"bbox_name": "bbox1", "Var1": [f"syn_{i:03d}" for i in range(len(x))]})
    h5 = small_embeddings(ids, x)
    truth = tmp_path / "truth.csv"
    ids.assign(type="t", defect=defect).to_csv(truth, index=False)
    rc = main(["--embeddings", str(h5), "--truth", str(truth), "--no-gallery", "--top", "6", "--out", str(tmp_path)])
    assert rc == 0
    table = pd.read_csv(tmp_path / "outliers.csv")
    assert set(table["rank"].head(6)) == set(range(1, 7))
    assert set(table.head(6)["Var1"]) == {f"syn_{i:03d}" for i in bad}
    summary = json.loads((tmp_path / "outliers.json").read_text())
    assert summary["roc_auc"]["all"] == 1.0 and summary["n_defects"] == 6
    assert "ROC AUC for the 6 known defects" in capsys.readouterr().out


def test_gallery_of_the_top_synapses(atlas_data, tmp_path):
    rc = main(["--embeddings", str(atlas_data["embeddings"]), "--top", "3", "--out", str(tmp_path)])
    assert rc == 0
    assert (tmp_path / "outliers.png").stat().st_size > 5000
    table = pd.read_csv(tmp_path / "outliers.csv", dtype={"Var1": str})
    assert len(table) == atlas_data["n"] and "defect" not in table  # no defect column in this dataset


def test_truth_without_rows_for_some_synapses_is_named(small_embeddings, tmp_path, capsys):
    x, defect, _ = planted()
    ids = pd.DataFrame({"bbox_name": "bbox1", "Var1": [f"syn_{i:03d}" for i in range(len(x))]})
    h5 = small_embeddings(ids, x)
    ids.iloc[1:].assign(defect=defect[1:]).to_csv(tmp_path / "truth.csv", index=False)
    assert main(["--embeddings", str(h5), "--truth", str(tmp_path / "truth.csv"), "--no-gallery"]) == 2
    assert "has no row for bbox1/syn_000" in capsys.readouterr().err
