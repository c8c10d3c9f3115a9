"""How well embeddings separate known synapse classes: cross-validated kNN and linear probe.

Both metrics use scikit-learn estimators inside the same stratified folds, so the learned encoder
and the baselines are scored "the same way". Folds adapt to small classes: the number of splits is
``min(cv, smallest class count)`` but at least 2.
"""

from __future__ import annotations

import logging
from typing import Literal, NamedTuple

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneOut, StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["Score", "make_folds", "chance_level", "drop_rare_classes", "knn_accuracy", "linear_probe_accuracy"]

logger = logging.getLogger(__name__)

CV = int | Literal["loo"]


class Score(NamedTuple):
    """Mean and standard deviation of the accuracy over the cross-validation folds."""

    mean: float
    std: float


def _check_xy(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"X must be [N, F], got shape {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"y must be [N] with N = {len(X)}, got shape {y.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"need at least two classes to measure accuracy, got {classes.tolist()}")
    rare = classes[counts < 2]
    if len(rare):
        # A singleton cannot be in a training and a test fold at once; callers drop it knowingly.
        raise ValueError(
            f"class(es) {rare.tolist()} have a single member: cross-validation needs two per class "
            "(drop them with drop_rare_classes)"
        )
    return X, y


def drop_rare_classes(X: np.ndarray, y: np.ndarray, min_count: int = 2) -> tuple[np.ndarray, np.ndarray, list]:
    """Remove the samples of classes with fewer than ``min_count`` members.

    Args:
        X: embeddings ``[N, F]``.
        y: class labels ``[N]``.
        min_count: the smallest class size kept.

    Returns:
        ``(X_kept, y_kept, dropped_classes)``.
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    dropped = classes[counts < min_count].tolist()
    keep = ~np.isin(y, dropped)
    return np.asarray(X)[keep], y[keep], dropped


def make_folds(y: np.ndarray, cv: CV = 5, seed: int = 0) -> StratifiedKFold | LeaveOneOut:
    """The cross-validation splitter for labels ``y``.

    Args:
        y: class labels ``[N]``.
        cv: number of folds, or ``"loo"`` for leave-one-out.
        seed: shuffling seed of the stratified folds.

    Returns:
        ``LeaveOneOut()`` or a shuffled ``StratifiedKFold`` with ``min(cv, smallest class count)``
        splits, at least 2, so that every class is in every training part.

    Raises:
        ValueError: if ``cv`` is neither ``"loo"`` nor an int >= 2.
    """
    if cv == "loo":
        return LeaveOneOut()
    if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or cv < 2:
        raise ValueError(f"cv must be an int >= 2 or 'loo', got {cv!r}")
    _, counts = np.unique(np.asarray(y), return_counts=True)
    n_splits = max(2, min(int(cv), int(counts.min())))
    if n_splits < cv:
        logger.debug("smallest class has %d members: using %d folds instead of %d", counts.min(), n_splits, cv)
    return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def chance_level(y: np.ndarray) -> float:
    """Accuracy of always predicting the majority class.

    Args:
        y: class labels ``[N]``.

    Returns:
        The majority class fraction.
    """
    _, counts = np.unique(np.asarray(y), return_counts=True)
    return float(counts.max() / counts.sum())


def _smallest_train_size(y: np.ndarray, folds: StratifiedKFold | LeaveOneOut) -> int:
    return min(len(train) for train, _ in folds.split(np.zeros(len(y)), y))


def _cross_val(estimator, X: np.ndarray, y: np.ndarray, folds) -> Score:
    scores = cross_val_score(estimator, X, y, cv=folds, scoring="accuracy", error_score="raise")
    return Score(float(np.mean(scores)), float(np.std(scores)))


def knn_accuracy(X: np.ndarray, y: np.ndarray, k: int = 5, metric: str = "cosine", cv: CV = 5, seed: int = 0) -> Score:
    """Cross-validated accuracy of a k-nearest-neighbour majority vote.

    Args:
        X: embeddings ``[N, F]``.
        y: class labels ``[N]`` (any hashable values).
        k: neighbours per vote; capped at the smallest training fold.
        metric: neighbour distance (``"cosine"``: 1 - cosine similarity; any scikit-learn metric).
        cv: number of stratified folds, or ``"loo"`` for leave-one-out.
        seed: fold shuffling seed.

    Returns:
        :class:`Score` (mean and std of the per-fold accuracy).

    Raises:
        ValueError: on malformed inputs, fewer than two classes, a class with a single member or
            ``k`` < 1.
    """
    X, y = _check_xy(X, y)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    folds = make_folds(y, cv, seed)
    n_train = _smallest_train_size(y, folds)
    if k > n_train:
        logger.warning("k=%d exceeds the smallest training fold (%d samples): using k=%d", k, n_train, n_train)
        k = n_train
    # Brute force: exact neighbours for cosine (tree indexes do not support it) and N is small.
    knn = KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute")
    return _cross_val(knn, X, y, folds)


def linear_probe_accuracy(
    X: np.ndarray, y: np.ndarray, cv: CV = 5, C: float = 1.0, max_iter: int = 5000, seed: int = 0
) -> Score:
    """Cross-validated accuracy of a logistic-regression probe on standardised embeddings.

    Args:
        X: embeddings ``[N, F]``.
        y: class labels ``[N]``.
        cv: number of stratified folds, or ``"loo"``.
        C: inverse L2 regularisation strength.
        max_iter: solver iterations.
        seed: fold shuffling seed.

    Returns:
        :class:`Score` (mean and std of the per-fold accuracy).

    Raises:
        ValueError: on malformed inputs, fewer than two classes or a class with a single member.
    """
    X, y = _check_xy(X, y)
    folds = make_folds(y, cv, seed)
    # The scaler sits inside the pipeline so that it is fitted on the training fold only.
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    return _cross_val(probe, X, y, folds)
