"""kNN and linear-probe accuracy against hand-computed answers and plain reference loops."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn.model_selection import LeaveOneOut, StratifiedKFold

from synclr_monai.evaluation.metrics import (
    Score,
    chance_level,
    drop_rare_classes,
    knn_accuracy,
    linear_probe_accuracy,
    make_folds,
)


def _reference_knn(X, y, k, folds):
    """Cosine kNN majority vote written out with numpy loops (no scikit-learn estimator)."""
    accs = []
    for train, test in folds.split(np.zeros(len(y)), y):
        correct = 0
        for i in test:
            sims = []
            for j in train:
                sims.append(X[i] @ X[j] / (np.linalg.norm(X[i]) * np.linalg.norm(X[j])))
            nearest = np.argsort(-np.array(sims), kind="stable")[:k]
            votes = Counter(y[train[n]] for n in nearest)
            top = max(votes.values())
            # ties go to the smallest label, as scikit-learn's majority vote does
            correct += min(label for label, v in votes.items() if v == top) == y[i]
        accs.append(correct / len(test))
    return np.mean(accs), np.std(accs)


def _points(degrees, radii):
    a = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.column_stack([np.cos(a), np.sin(a)]) * np.asarray(radii, dtype=float)[:, None]


def test_knn_hand_computed_leave_one_out_uses_cosine():
    # Angles 0, 12, 20 (class a) and 26, 90, 100 (class b). Leave-one-out 1-NN by angle:
    # 0->12 ok, 12->20 ok, 20->26 wrong, 26->20 wrong, 90->100 ok, 100->90 ok: 4/6.
    # The point at 26 degrees is far away (radius 10): by Euclidean distance 20->12 would be right.
    X = _points([0, 12, 20, 26, 90, 100], [1, 1, 1, 10, 1, 1])
    y = np.array(["a", "a", "a", "b", "b", "b"])
    score = knn_accuracy(X, y, k=1, cv="loo")
    assert isinstance(score, Score)
    assert score.mean == pytest.approx(4 / 6)
    assert score.std == pytest.approx(np.sqrt(4 / 6 * 2 / 6))  # std of six 0/1 outcomes
    assert knn_accuracy(X, y, k=1, cv="loo", metric="euclidean").mean == pytest.approx(5 / 6)


def test_knn_matches_reference_loop():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6)) + np.repeat(rng.normal(scale=0.8, size=(3, 6)), [14, 14, 12], axis=0)
    y = np.repeat(np.array([0, 1, 2]), [14, 14, 12])
    for cv in (4, "loo"):
        ref = _reference_knn(X, y, 5, make_folds(y, cv, seed=0))
        got = knn_accuracy(X, y, k=5, cv=cv, seed=0)
        assert got.mean == pytest.approx(ref[0])
        assert got.std == pytest.approx(ref[1])
        assert 0.3 < got.mean < 1.0  # overlapping clusters: a non-trivial case


def test_well_separated_clusters_score_one():
    rng = np.random.default_rng(1)
    centres = np.eye(8)[:3] * 10
    X = np.concatenate([c + rng.normal(scale=0.3, size=(15, 8)) for c in centres])
    y = np.repeat(["x", "y", "z"], 15)
    assert knn_accuracy(X, y, k=5) == Score(1.0, 0.0)
    assert linear_probe_accuracy(X, y) == Score(1.0, 0.0)
    # labels unrelated to the clusters: near chance, far from 1
    shuffled = np.random.default_rng(2).permutation(y)
    assert knn_accuracy(X, shuffled, k=5).mean < 0.7


def test_linear_probe_matches_reference_loop():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 4))
    y = (X[:, 0] + 0.8 * rng.normal(size=30) > 0).astype(int)
    accs = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        scaler = StandardScaler().fit(X[train])
        clf = LogisticRegression(C=0.5, max_iter=5000).fit(scaler.transform(X[train]), y[train])
        accs.append(np.mean(clf.predict(scaler.transform(X[test])) == y[test]))
    got = linear_probe_accuracy(X, y, cv=5, C=0.5)
    assert got.mean == pytest.approx(np.mean(accs))
    assert got.std == pytest.approx(np.std(accs))


def test_make_folds_adapts_to_small_classes():
    y = np.array(["a"] * 10 + ["b"] * 3)
    folds = make_folds(y, 5)
    assert isinstance(folds, StratifiedKFold) and folds.get_n_splits() == 3
    assert make_folds(np.array([0, 0, 1, 1]), 5).get_n_splits() == 2
    assert isinstance(make_folds(y, "loo"), LeaveOneOut)
    with pytest.raises(ValueError, match="cv must be"):
        make_folds(y, 1)


def test_chance_and_rare_classes():
    y = np.array(["a", "a", "a", "b", "c", "c"])
    assert chance_level(y) == pytest.approx(0.5)
    X = np.arange(12.0).reshape(6, 2)
    with pytest.raises(ValueError, match=r"\['b'\] have a single member"):
        knn_accuracy(X, y)
    X2, y2, dropped = drop_rare_classes(X, y)
    assert dropped == ["b"] and y2.tolist() == ["a", "a", "a", "c", "c"]
    np.testing.assert_array_equal(X2, X[[0, 1, 2, 4, 5]])
    with pytest.raises(ValueError, match="two classes"):
        linear_probe_accuracy(X[:3], y[:3])


def test_k_is_capped_by_training_fold():
    X = _points([0, 5, 10, 90, 95, 100], [1] * 6)
    y = np.array([0, 0, 0, 1, 1, 1])
    # 3 folds -> 4 training points; k=50 becomes k=4: 2 votes each, tie -> the smaller label wins,
    # so every point of class 1 is misclassified and every point of class 0 is right.
    assert knn_accuracy(X, y, k=50, cv=3).mean == pytest.approx(0.5)
