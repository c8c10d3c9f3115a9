"""Class labels of synapses: reading the labels table and joining it with embedding ids.

A labels table is a CSV with the columns ``bbox_name``, ``Var1`` and one label column (``type`` in
the synthetic generator's ``synapse_types.csv``). A synapse is identified by the pair
``(bbox_name, Var1)``; both are strings (``Var1`` such as ``spine_synapse_072``, never an int).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["ID_COLUMNS", "read_labels", "join_labels", "format_ids"]

ID_COLUMNS = ("bbox_name", "Var1")

# How many ids an error message lists before it just counts the rest.
_MAX_IDS_IN_MESSAGE = 20


def format_ids(ids: pd.DataFrame, limit: int = _MAX_IDS_IN_MESSAGE) -> str:
    """Render synapse ids as ``bbox1/spine_synapse_001, ...`` for messages.

    Args:
        ids: a frame with the columns ``bbox_name`` and ``Var1``.
        limit: list at most this many, then say how many more there are.

    Returns:
        A comma-separated string.
    """
    names = [f"{b}/{v}" for b, v in zip(ids["bbox_name"], ids["Var1"])]
    text = ", ".join(names[:limit])
    if len(names) > limit:
        text += f", ... ({len(names) - limit} more)"
    return text


def read_labels(path: str | os.PathLike, label_column: str | None = None) -> pd.DataFrame:
    """Read a labels CSV.

    Args:
        path: CSV with ``bbox_name``, ``Var1`` and a label column.
        label_column: the column holding the class; when None, ``type`` if present, else the only
            column besides the ids.

    Returns:
        A frame with the columns ``bbox_name``, ``Var1`` (str) and ``label`` (str), one row per synapse.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file, if a column is missing, the label column is ambiguous, a label
            is empty, or an id appears twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} does not exist")
    try:
        # Ids and labels stay strings: no int parsing of "001", no NaN for a synapse called "NA".
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"labels file {path} is not a readable CSV: {err}") from err
    missing = [c for c in ID_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"labels file {path} lacks the column(s) {missing}; found {list(table.columns)}")
    if label_column is None:
        others = [c for c in table.columns if c not in ID_COLUMNS]
        if "type" in others:
            label_column = "type"
        elif len(others) == 1:
            label_column = others[0]
        else:
            raise ValueError(
                f"labels file {path}: cannot tell which column is the label among {others}; "
                "pass the label column explicitly (--label-column)"
            )
    if label_column not in table.columns:
        raise ValueError(f"labels file {path} has no label column {label_column!r}; found {list(table.columns)}")
    out = pd.DataFrame(
        {
            "bbox_name": table["bbox_name"].astype(str).str.strip(),
            "Var1": table["Var1"].astype(str).str.strip(),
            "label": table[label_column].astype(str).str.strip(),
        }
    )
    empty = out[out["label"] == ""]
    if len(empty):
        raise ValueError(f"labels file {path}: empty label for {format_ids(empty)}")
    dup = out[out.duplicated(list(ID_COLUMNS), keep=False)].drop_duplicates(list(ID_COLUMNS))
    if len(dup):
        raise ValueError(f"labels file {path}: these ids appear more than once: {format_ids(dup)}")
    return out


def join_labels(ids: pd.DataFrame, labels: pd.DataFrame, source: str | os.PathLike = "labels") -> np.ndarray:
    """Look up the label of every embedded synapse, keeping the order of ``ids``.

    Args:
        ids: ``bbox_name``, ``Var1`` of the embeddings (one row per vector).
        labels: the output of :func:`read_labels`.
        source: the labels file, named in the error message.

    Returns:
        A string array ``[len(ids)]`` of labels aligned with ``ids``.

    Raises:
        ValueError: listing the ids that have no label in ``labels``.
    """
    key = ids[list(ID_COLUMNS)].astype(str).reset_index(drop=True)
    merged = key.merge(labels, on=list(ID_COLUMNS), how="left", validate="many_to_one")
    # A left merge on unique right keys keeps the left order and length; checked to be sure.
    assert len(merged) == len(key)
    missing = merged["label"].isna()
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} embedded synapse(s) have no label in {source}: {format_ids(key[missing.to_numpy()])}"
        )
    return merged["label"].astype(str).to_numpy()
