"""Using the representations: embeddings export, kNN / linear-probe evaluation, baselines, plots.

- :mod:`.embeddings`: encode cubes, read/write ``embeddings.h5`` (the inference workflow that writes it
  is :mod:`synclr_monai.inference`; the synapse cubes come from :mod:`synclr_monai.data.synapse_cubes`).
- :mod:`.metrics`: cross-validated kNN (cosine) and linear-probe accuracy.
- :mod:`.baselines`: random-weights encoder and raw-intensity PCA embeddings.
- :mod:`.clustering`, :mod:`.plots`: k-means groups, 2-D map and cluster example grid.
- :mod:`.cli`: ``python -m synclr_monai evaluate``.
"""

from synclr_monai.evaluation.baselines import (
    pca_embeddings,
    random_encoder,
    random_encoder_embeddings,
    raw_channel_matrix,
)
from synclr_monai.evaluation.clustering import kmeans_clusters
from synclr_monai.evaluation.embeddings import (
    EMBEDDINGS_FORMAT,
    compute_embeddings,
    read_embeddings,
    write_embeddings,
)
from synclr_monai.evaluation.metrics import (
    Score,
    chance_level,
    drop_rare_classes,
    knn_accuracy,
    linear_probe_accuracy,
    make_folds,
)
from synclr_monai.evaluation.plots import centre_slices, plot_cluster_examples, plot_embedding_2d, reduce_2d

__all__ = [
    "EMBEDDINGS_FORMAT",
    "Score",
    "centre_slices",
    "chance_level",
    "compute_embeddings",
    "drop_rare_classes",
    "kmeans_clusters",
    "knn_accuracy",
    "linear_probe_accuracy",
    "make_folds",
    "pca_embeddings",
    "plot_cluster_examples",
    "plot_embedding_2d",
    "random_encoder",
    "random_encoder_embeddings",
    "raw_channel_matrix",
    "read_embeddings",
    "reduce_2d",
    "write_embeddings",
]
