#!/usr/bin/env bash
# Manual check of the oldest MONAI the package declares (pyproject.toml: monai>=FLOOR): install that MONAI
# in a fresh virtual environment beside the package's other dependencies, and run the tests that touch
# MONAI's engines, handlers and bundle scripts. Run it when raising or lowering the floor, or when MONAI
# changes SupervisedTrainer / monai.bundle. Usage:
#   scripts/check_monai_floor.sh                 # MONAI 1.6.0 (the declared floor)
#   MONAI=1.5.2 scripts/check_monai_floor.sh     # try another version (1.5.2 and older fail: see docs)
# TORCH pins torch (default 2.13.0; an unpinned torch may pull a multi-GB CUDA build), VENV the folder.
set -euo pipefail
MONAI="${MONAI:-1.6.0}"
TORCH="${TORCH:-2.13.0}"
VENV="${VENV:-/tmp/venv-monai-$MONAI}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"

python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "torch==$TORCH" "monai==$MONAI"
# the other dependencies as pyproject.toml lists them, without letting them move torch or MONAI
deps=$("$VENV/bin/python" - "$REPO/pyproject.toml" <<'PY'
import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print(" ".join(d for d in deps if not d.startswith(("torch", "monai"))))
PY
)
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q $deps "pytest>=7.4" "torch==$TORCH" "monai==$MONAI"
"$VENV/bin/pip" install -q --no-deps -e "$REPO"
"$VENV/bin/python" -c "import monai, torch; print('MONAI', monai.__version__, 'torch', torch.__version__)"
cd "$REPO"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$VENV/bin/python" -m pytest -q \
    tests/engines/test_trainer.py tests/handlers/test_checkpoint.py tests/handlers/test_sampling_switch.py \
    tests/bundle/test_bundle_training.py tests/bundle/test_torchscript_export.py -k "not ddp"
