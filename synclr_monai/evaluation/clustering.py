"""Unsupervised grouping of embeddings (for looking at what the encoder puts together)."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.preprocessing import normalize

__all__ = ["kmeans_clusters"]


def kmeans_clusters(
    vectors: np.ndarray, n_clusters: int, seed: int = 0, l2_normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """K-means clusters of embeddings.

    Args:
        vectors: ``[N, F]`` embeddings.
        n_clusters: number of clusters; capped at N.
        seed: k-means initialisation seed.
        l2_normalize: cluster unit-length vectors, i.e. by cosine similarity as the kNN metric does.

    Returns:
        ``(cluster_ids [N] int, distance_to_centre [N] float)``; the distance ranks each cluster's
        most typical members first.

    Raises:
        ValueError: if ``vectors`` is not 2-D or ``n_clusters`` < 1.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"vectors must be a non-empty [N, F] array, got shape {vectors.shape}")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    data = normalize(vectors) if l2_normalize else vectors
    kmeans = KMeans(n_clusters=min(n_clusters, len(data)), n_init=10, random_state=seed).fit(data)
    distance = np.linalg.norm(data - kmeans.cluster_centers_[kmeans.labels_], axis=1)
    return kmeans.labels_.astype(np.int64), distance
