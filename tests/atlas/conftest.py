"""An embeddings file of the synthetic dataset with a synapse duplicated under another id.

The duplicate is a second sheet row at the same coordinates, so the real pipeline (cube cutting and a
random encoder) gives it exactly the same embedding as the original: a known answer for the search.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

CUBE = 16
ORIGINAL = ("bbox1", None)  # the first synapse of bbox1's sheet (its Var1 is read from the sheet)
DUPLICATE_VAR1 = "copy_of_first_synapse"


@pytest.fixture(scope="session")
def atlas_data(synthetic_root, tmp_path_factory) -> dict:
    """``{"dataset": root, "embeddings": h5 path, "original": (bbox, Var1), "duplicate": (bbox, Var1)}``."""
    from synclr_monai.evaluation.baselines import random_encoder_embeddings
    from synclr_monai.evaluation.embeddings import write_embeddings
    from synclr_monai.data.synapse_cubes import iter_dataset_cubes

    base = tmp_path_factory.mktemp("atlas")
    root = base / "data"
    shutil.copytree(synthetic_root, root)
    sheet = pd.read_excel(root / "bbox1.xlsx", dtype={"Var1": str})
    original = str(sheet["Var1"].iloc[0])
    copy = sheet.iloc[[0]].copy()
    copy["Var1"] = DUPLICATE_VAR1
    pd.concat([sheet, copy], ignore_index=True).to_excel(root / "bbox1.xlsx", index=False)
    types = pd.read_csv(root / "synapse_types.csv", dtype=str)
    first = types[(types.bbox_name == "bbox1") & (types.Var1 == original)].copy()
    first["Var1"] = DUPLICATE_VAR1
    pd.concat([types, first], ignore_index=True).to_csv(root / "synapse_types.csv", index=False)

    ids, vectors = random_encoder_embeddings(iter_dataset_cubes(root, CUBE), "resnet10", seed=0, batch_size=8)
    attrs = {"dataset_dir": str(root), "cube_size": CUBE, "backbone": "resnet10", "backbone_kwargs": {}}
    h5, _ = write_embeddings(base / "emb", ids, vectors, attrs)
    return {
        "dataset": root,
        "embeddings": h5,
        "original": ("bbox1", original),
        "duplicate": ("bbox1", DUPLICATE_VAR1),
        "n": len(ids),
    }


@pytest.fixture()
def small_embeddings(tmp_path) -> callable:
    """Write an embeddings file of given ids and vectors (no dataset) and return its path."""
    from synclr_monai.evaluation.embeddings import write_embeddings

    def make(ids: pd.DataFrame, vectors, name: str = "emb", **attrs) -> Path:
        h5, _ = write_embeddings(tmp_path / name, ids, vectors, attrs)
        return h5

    return make
