#!/usr/bin/env bash
# synclr-monai launcher.
#   ./run_bundle.sh demo            set up, generate a synthetic dataset, train a small model on the CPU, export the encoder,
#                                   embed every synapse and evaluate the embeddings
#   ./run_bundle.sh evaluate        (after demo) embeddings + kNN / linear-probe table + plots, again
#   ./run_bundle.sh test            set up and run the test suite
#   ./run_bundle.sh setup           only create/refresh the virtual environment (.venv)
#   ./run_bundle.sh train ARGS...   python -m monai.bundle run training --config_file bundle/configs/train.yaml ARGS...
#   ./run_bundle.sh infer ARGS...   python -m monai.bundle run inference --config_file bundle/configs/inference.yaml ARGS...
#
# Environment: SYNCLR_VENV (default .venv), TORCH_SPEC (torch requirement to install when torch is
# missing), TORCH_INDEX_URL (a wheel index for torch, e.g. PyTorch's CPU-only index on a machine
# without a GPU, so that pip does not pull the multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
VENV="${SYNCLR_VENV:-.venv}"

log() { printf '[synclr-monai] %s\n' "$*" >&2; }

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtual environment $VENV"
        python3 -m venv "$VENV"
    fi
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
    python - <<'PY' || { echo "[synclr-monai] Python >= 3.10 is required" >&2; exit 1; }
import sys; sys.exit(sys.version_info < (3, 10))
PY
    if ! python -c "import torch" 2>/dev/null; then
        local spec="${TORCH_SPEC:-}"
        if [ -z "$spec" ]; then
            if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
                spec="torch>=2.4"          # a GPU: the default (CUDA) build
            else
                spec="torch==2.13.0"       # no GPU: the CPU build (found locally, or via TORCH_INDEX_URL)
            fi
        fi
        log "installing $spec"
        pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$spec"
    fi
    log "installing synclr-monai and its dependencies"
    pip install -q -e ".[dev]"
    python -c "import torch, monai; print(f'[synclr-monai] torch {torch.__version__} (cuda: {torch.cuda.is_available()}), monai {monai.__version__}')" >&2
}

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
    setup)
        setup
        ;;
    test)
        setup
        python -m pytest -q "$@"
        ;;
    demo)
        setup
        exec bash scripts/demo.sh "$@"
        ;;
    evaluate)
        setup
        exec bash scripts/evaluate_demo.sh "$@"
        ;;
    train)
        setup
        exec python -m monai.bundle run training --config_file bundle/configs/train.yaml "$@"
        ;;
    infer)
        setup
        exec python -m monai.bundle run inference --config_file bundle/configs/inference.yaml "$@"
        ;;
    help|-h|--help)
        sed -n '2,14p' "$0"
        ;;
    *)
        echo "unknown command: $cmd" >&2
        sed -n '2,14p' "$0" >&2
        exit 2
        ;;
esac
