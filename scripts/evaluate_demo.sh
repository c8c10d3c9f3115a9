#!/usr/bin/env bash
# Embeddings of every synapse of the demo dataset with the exported encoder, then kNN / linear-probe
# accuracy against the synthetic types beside two baselines (random encoder, PCA of raw cubes), and plots.
set -euo pipefail
DEMO_DIR="${DEMO_DIR:-demo}"
ENCODER="${ENCODER:-bundle/models/model.pt}"
python -m monai.bundle run inference --config_file bundle/configs/inference.yaml \
    --dataset_dir "$DEMO_DIR/data" --output_dir "$DEMO_DIR/embeddings" --encoder_path "$ENCODER" \
    --cache_dir "$DEMO_DIR/train/cache" "$@"
python -m synclr_monai evaluate --embeddings "$DEMO_DIR/embeddings/embeddings.h5" \
    --labels "$DEMO_DIR/data/synapse_types.csv" --out "$DEMO_DIR/embeddings"
