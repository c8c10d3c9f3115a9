#!/usr/bin/env bash
# The demo: generate a synthetic dataset in the lab's layout, check it, pre-train a small encoder on the CPU,
# export it, then embed every synapse and evaluate the embeddings against the synthetic ground truth.
set -euo pipefail
DEMO_DIR="${DEMO_DIR:-demo}"
mkdir -p "$DEMO_DIR"
say() { printf '\n[demo] %s\n' "$*"; }

say "1/4 generating a synthetic dataset in $DEMO_DIR/data (4 bboxes of 128x192x256, 12 synapses each)"
# 128x192x256 leaves each synapse a 64-voxel region: the synapse types are drawn at their reference scale,
# vesicles 2-5 voxels across as in the lab's EM (smaller volumes shrink them under a voxel)
python -m synclr_monai synth --out "$DEMO_DIR/data" --bboxes 4 --shape 128 192 256 --synapses-per-bbox 12 --seed 0 --overwrite

say "2/4 checking it"
python -m synclr_monai check "$DEMO_DIR/data"

say "3/4 SimCLR pre-training on the CPU (bundle/configs/train.yaml + demo.yaml)"
rm -rf "$DEMO_DIR/train"   # a fresh run each time (training itself resumes from its checkpoints when restarted)
python -m monai.bundle run training \
    --config_file "['bundle/configs/train.yaml','bundle/configs/demo.yaml']" \
    --dataset_dir "$DEMO_DIR/data" --output_dir "$DEMO_DIR/train" "$@"

say "4/4 embeddings of every synapse and their evaluation"
bash scripts/evaluate_demo.sh

say "done. Where everything went:
  dataset:            $DEMO_DIR/data (synapse_types.csv holds the synthetic ground truth)
  checkpoints:        $DEMO_DIR/train/checkpoints
  W&B (offline) run:  $DEMO_DIR/train/wandb
  exported encoder:   bundle/models/model.pt (+ model.json)
  embeddings:         $DEMO_DIR/embeddings/embeddings.h5, embeddings.csv
  evaluation:         $DEMO_DIR/embeddings/evaluation.csv, embedding_2d.png, cluster_examples.png"
