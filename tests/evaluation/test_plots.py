"""2-D embedding map, cluster grid, k-means helper."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from synclr_monai.evaluation import plots
from synclr_monai.evaluation.clustering import kmeans_clusters
from synclr_monai.evaluation.plots import centre_slices, plot_cluster_examples, plot_embedding_2d, reduce_2d


def _assert_png(path, min_size=100):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size and im.size[1] >= min_size
        im.verify()


def test_reduce_2d_method_choice(monkeypatch):
    rng = np.random.default_rng(0)
    small, big = rng.normal(size=(10, 5)), rng.normal(size=(40, 5))
    coords, used = reduce_2d(small)
    assert used == "pca" and coords.shape == (10, 2)
    monkeypatch.setattr(plots, "_umap_available", lambda: False)
    coords, used = reduce_2d(big)
    assert used == "tsne" and coords.shape == (40, 2) and np.isfinite(coords).all()
    with pytest.raises(ValueError, match="unknown method"):
        reduce_2d(small, "mds")
    # PCA coordinates equal a plain SVD projection (up to sign)
    centred = small - small.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T
    np.testing.assert_allclose(np.abs(reduce_2d(small, "pca")[0]), np.abs(ref), atol=1e-8)


def test_plot_embedding_2d_writes_png(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(12, 4))
    path = plot_embedding_2d(vectors, ["a", "b", "c"] * 4, tmp_path / "sub" / "map.png")
    _assert_png(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["map.png"]
    with pytest.raises(ValueError, match="3 labels for 12 vectors"):
        plot_embedding_2d(vectors, ["a", "b", "c"], tmp_path / "x.png")


def test_centre_slices():
    cube = np.arange(3 * 5 * 4 * 4, dtype=np.float32).reshape(3, 5, 4, 4)
    np.testing.assert_array_equal(centre_slices(cube), cube[:, 2])
    np.testing.assert_array_equal(centre_slices(cube[:, 2]), cube[:, 2])
    with pytest.raises(ValueError):
        centre_slices(cube[0, 0])


def test_plot_cluster_examples_writes_png(tmp_path):
    rng = np.random.default_rng(2)
    cubes = rng.normal(size=(7, 3, 8, 8, 8)).astype(np.float32)
    cubes[:, 1:] = 0
    cubes[:, 2, 4, 3:5, 3:5] = 1  # a cleft on the centre slice
    path = plot_cluster_examples(
        cubes,
        [0, 1, 0, 2, 1, 0, 0],
        tmp_path / "grid.png",
        per_cluster=3,
        rank=np.arange(7)[::-1],
        captions=list("abcdefg"),
    )
    _assert_png(path)
    with pytest.raises(ValueError, match="2 cluster ids for 7 cubes"):
        plot_cluster_examples(cubes, [0, 1], tmp_path / "y.png")


def test_kmeans_recovers_separated_groups():
    rng = np.random.default_rng(3)
    dirs = np.eye(5)[:3]
    X = np.concatenate([d * rng.uniform(1, 5, size=(10, 1)) + rng.normal(scale=0.05, size=(10, 5)) for d in dirs])
    truth = np.repeat([0, 1, 2], 10)
    ids, dist = kmeans_clusters(X, 3)
    # different norms, same directions: cosine (normalised) clustering groups them by direction
    assert adjusted_rand_score(truth, ids) == 1.0
    assert dist.shape == (30,) and (dist >= 0).all()
    assert len(np.unique(kmeans_clusters(X[:2], 5)[0])) <= 2  # capped at N
