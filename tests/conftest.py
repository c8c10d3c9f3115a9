"""Shared fixtures: a small synthetic dataset in the lab's exact on-disk layout."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# tests never reach the network and run on few cores
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

SMALL_SHAPE = (40, 96, 96)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A read-only 2-bbox synthetic dataset (do not modify: copy it with ``dataset_copy``)."""
    from synclr_monai.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(root, n_bboxes=2, shape=SMALL_SHAPE, synapses_per_bbox=3, seed=7)
    return root


@pytest.fixture()
def dataset_copy(synthetic_root, tmp_path) -> Path:
    """A private, writable copy of the synthetic dataset, for tests that break or change files."""
    dst = tmp_path / "data"
    shutil.copytree(synthetic_root, dst)
    return dst
