#!/usr/bin/env bash
# The demo: generate a synthetic dataset in the lab's layout, check it, train briefly on the CPU.
set -euo pipefail
DEMO_DIR="${DEMO_DIR:-demo}"
mkdir -p "$DEMO_DIR"
echo "[demo] generating a synthetic dataset in $DEMO_DIR/data"
python -m synclr_monai synth --out "$DEMO_DIR/data" --bboxes 3 --shape 64 128 128 --synapses-per-bbox 8 --seed 0
echo "[demo] checking it"
python -m synclr_monai check "$DEMO_DIR/data"
