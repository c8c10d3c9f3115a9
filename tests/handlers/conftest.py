"""Make ``toy_training`` from ``tests/engines`` importable (the suite runs with ``--import-mode=importlib``)."""

import sys
from pathlib import Path

_ENGINES = str(Path(__file__).resolve().parents[1] / "engines")
if _ENGINES not in sys.path:
    sys.path.insert(0, _ENGINES)
