"""Using the representations: embeddings export, kNN / linear-probe evaluation, baselines, plots.

- :mod:`.embeddings`: cut synapse cubes, encode them, read/write ``embeddings.h5``; ``run_inference``
  is the bundle's inference entry point.
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
    iter_dataset_cubes,
    read_embeddings,
    run_inference,
    write_embeddings,
)
from synclr_monai.evaluation.labels import join_labels, read_labels
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
    "iter_dataset_cubes",
    "join_labels",
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
    "read_labels",
    "reduce_2d",
    "run_inference",
    "write_embeddings",
]
