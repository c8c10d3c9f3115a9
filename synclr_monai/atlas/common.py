"""What every atlas command shares: the embeddings as an atlas, synapse ids, the dataset's cubes.

An :class:`Atlas` is an embeddings file (``embeddings.h5`` from inference) read once: the ids
(``bbox_name``, ``Var1``), the unit-length vectors (cosine similarity is then a dot product) and the
provenance attributes, with the dataset it was computed from. Nothing here retrains or re-embeds.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synclr_monai.evaluation.embeddings import read_embeddings
from synclr_monai.data.synapse_labels import format_ids

__all__ = [
    "AtlasInputError",
    "Atlas",
    "load_atlas",
    "synapse_id",
    "parse_synapse_id",
    "read_query_ids",
    "dataset_ids",
    "load_cubes",
    "add_common_arguments",
    "out_dir",
]

logger = logging.getLogger("synclr_monai.atlas")

# "bbox1:Var1", "bbox1/Var1" or "bbox1_Var1" (the full id of DESIGN.md)
_ID_PATTERN = re.compile(r"^\s*(bbox\d+)\s*[:/_]\s*(\S.*?)\s*$")


class AtlasInputError(ValueError):
    """Bad input of an atlas command (an unknown id, an empty labels file, a foreign embeddings file...).

    The message names the file or id and what is wrong; the commands exit with code 2.
    """


def synapse_id(bbox_name: str, var1: str) -> str:
    """A synapse's full id, ``bboxN_<Var1>`` (DESIGN.md)."""
    return f"{bbox_name}_{var1}"


def parse_synapse_id(text: str) -> tuple[str, str]:
    """Split ``bbox1:Var1``, ``bbox1/Var1`` or ``bbox1_Var1`` into ``(bbox_name, Var1)``.

    Raises:
        AtlasInputError: when ``text`` does not start with a bbox name followed by ``:``, ``/`` or ``_``.
    """
    match = _ID_PATTERN.match(str(text))
    if not match:
        raise AtlasInputError(
            f"synapse id {text!r} is not of the form bboxN:Var1 or bboxN_Var1 (e.g. bbox1:non_spine_synapse_001)"
        )
    return match.group(1), match.group(2)


@dataclass
class Atlas:
    """Embeddings of a dataset's synapses, ready for similarity search.

    Attributes:
        path: the embeddings file.
        ids: ``bbox_name``, ``Var1`` (str), one row per synapse.
        vectors: float32 ``[N, F]``, L2-normalised (zero vectors stay zero).
        attrs: the file's provenance attributes (``dataset_dir``, ``cube_size``, ``backbone``...).
        dataset_dir: the dataset root the synapses come from, when known and present.
    """

    path: Path
    ids: pd.DataFrame
    vectors: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    dataset_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def names(self) -> list[str]:
        """Full ids ``bboxN_<Var1>`` in row order."""
        return [synapse_id(b, v) for b, v in zip(self.ids["bbox_name"], self.ids["Var1"])]

    def index(self, ids: pd.DataFrame | Sequence[tuple[str, str]], source: str = "the query") -> np.ndarray:
        """Row numbers of synapses given as ``(bbox_name, Var1)`` pairs or a frame with those columns.

        Raises:
            AtlasInputError: listing the ids that are not in the embeddings file (with close matches).
        """
        pairs = (
            list(zip(ids["bbox_name"].astype(str), ids["Var1"].astype(str)))
            if isinstance(ids, pd.DataFrame)
            else [(str(b), str(v)) for b, v in ids]
        )
        position = {(b, v): i for i, (b, v) in enumerate(zip(self.ids["bbox_name"], self.ids["Var1"]))}
        unknown = [p for p in pairs if p not in position]
        if unknown:
            hint = ""
            close = difflib.get_close_matches(synapse_id(*unknown[0]), self.names, n=3)
            if close:
                hint = f" (did you mean {', '.join(close)}?)"
            lost = pd.DataFrame(unknown, columns=["bbox_name", "Var1"])
            raise AtlasInputError(
                f"{len(unknown)} synapse(s) of {source} are not in the embeddings file {self.path}: "
                f"{format_ids(lost)}{hint}"
            )
        return np.array([position[p] for p in pairs], dtype=np.int64)

    def cube_size(self, override: int | None = None) -> int | None:
        """The cube edge the embeddings were computed with (``override`` wins)."""
        if override:
            return int(override)
        return int(self.attrs["cube_size"]) if self.attrs.get("cube_size") else None


def dataset_ids(dataset_dir: str | os.PathLike) -> pd.DataFrame:
    """``bbox_name``, ``Var1`` of every synapse listed in a dataset's sheets (no volume is read)."""
    from synclr_monai.data.bbox import find_bboxes
    from synclr_monai.data.io import read_synapse_sheet

    rows = []
    for source in find_bboxes(Path(dataset_dir)):
        rows += [(source.name, str(v)) for v in read_synapse_sheet(source.sheet)["Var1"]]
    return pd.DataFrame(rows, columns=["bbox_name", "Var1"])


def load_atlas(
    embeddings: str | os.PathLike, dataset_dir: str | os.PathLike | None = None, require_dataset: bool = False
) -> Atlas:
    """Read an embeddings file and check it against its dataset.

    Args:
        embeddings: ``embeddings.h5`` (or its CSV twin).
        dataset_dir: the dataset root; default: the one recorded in the file (used when it exists).
        require_dataset: fail when no dataset folder is known or present.

    Returns:
        The :class:`Atlas`.

    Raises:
        FileNotFoundError: if the embeddings file or a given dataset folder does not exist.
        AtlasInputError: if the file is not an embeddings file, holds an id twice, or names synapses
            that the dataset's sheets do not list (an embeddings file of another dataset).
    """
    path = Path(embeddings)
    try:
        ids, vectors, attrs = read_embeddings(path)
    except ValueError as err:
        raise AtlasInputError(str(err)) from err
    if len(ids) == 0:
        raise AtlasInputError(f"embeddings file {path} holds no synapse")
    dup = ids[ids.duplicated(keep=False)].drop_duplicates()
    if len(dup):
        raise AtlasInputError(f"embeddings file {path}: these ids appear more than once: {format_ids(dup)}")
    if not np.isfinite(vectors).all():
        bad = ids[~np.isfinite(vectors).all(axis=1)]
        raise AtlasInputError(f"embeddings file {path}: non-finite vectors for {format_ids(bad)}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    if dataset_dir is not None:
        root: Path | None = Path(dataset_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder {root} does not exist")
    else:
        recorded = attrs.get("dataset_dir")
        root = Path(recorded) if recorded and Path(recorded).is_dir() else None
        if recorded and root is None:
            logger.warning("the dataset %s recorded in %s is not here (pass --dataset-dir)", recorded, path)
    if root is None and require_dataset:
        raise AtlasInputError(
            f"{path} does not name an existing dataset folder (dataset_dir={attrs.get('dataset_dir')!r}); "
            "pass --dataset-dir"
        )
    if root is not None:
        known = set(zip(*(dataset_ids(root)[c] for c in ("bbox_name", "Var1"))))
        foreign = ids[[(b, v) not in known for b, v in zip(ids["bbox_name"], ids["Var1"])]]
        if len(foreign):
            raise AtlasInputError(
                f"embeddings file {path} does not belong to the dataset {root}: {len(foreign)} of its "
                f"{len(ids)} synapses are not in the dataset's sheets: {format_ids(foreign)}"
            )
    return Atlas(path=path, ids=ids, vectors=unit, attrs=attrs, dataset_dir=root)


def read_query_ids(queries: Iterable[str]) -> pd.DataFrame:
    """Synapse ids from the command line: ids (``bbox1:Var1``, ``bbox1_Var1``) or CSV files of ids.

    A CSV holds either ``bbox_name`` and ``Var1`` columns, or one ``id`` column of full ids.

    Returns:
        A frame ``bbox_name``, ``Var1`` in the order given (duplicates removed).

    Raises:
        AtlasInputError: for a malformed id, an unreadable or empty CSV, or one without id columns.
    """
    rows: list[tuple[str, str]] = []
    for query in queries:
        if str(query).lower().endswith(".csv"):
            path = Path(query)
            if not path.is_file():
                raise AtlasInputError(f"query file {path} does not exist")
            try:
                table = pd.read_csv(path, dtype=str, keep_default_na=False)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
                raise AtlasInputError(f"query file {path} is not a readable CSV: {err}") from err
            if {"bbox_name", "Var1"} <= set(table.columns):
                rows += list(zip(table["bbox_name"].str.strip(), table["Var1"].str.strip()))
            elif "id" in table.columns:
                rows += [parse_synapse_id(t) for t in table["id"]]
            else:
                raise AtlasInputError(
                    f"query file {path} needs the columns bbox_name, Var1 (or id); found {list(table.columns)}"
                )
            if table.empty:
                raise AtlasInputError(f"query file {path} lists no synapse")
        else:
            rows.append(parse_synapse_id(query))
    if not rows:
        raise AtlasInputError("no query synapse given")
    return pd.DataFrame(list(dict.fromkeys(rows)), columns=["bbox_name", "Var1"])


def load_cubes(
    atlas: Atlas,
    rows: Sequence[int] | np.ndarray,
    cube_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[np.ndarray]:
    """The synapse-centred cubes ``[3, S, S, S]`` of some atlas rows, in the order of ``rows``.

    Only the bboxes holding those synapses are loaded, one at a time.

    Raises:
        AtlasInputError: when the atlas has no dataset folder or no cube size.
    """
    from synclr_monai.data.synapse_cubes import iter_dataset_cubes

    size = atlas.cube_size(cube_size)
    if atlas.dataset_dir is None or size is None:
        raise AtlasInputError(
            f"cutting the synapses' cubes needs the dataset folder and the cube size, which {atlas.path} does not "
            f"give (dataset_dir={atlas.dataset_dir}, cube_size={size}); pass --dataset-dir and --cube-size"
        )
    rows = [int(r) for r in rows]
    wanted = atlas.ids.iloc[sorted(set(rows))]
    got = {
        (b, v): cube
        for b, v, cube in iter_dataset_cubes(
            atlas.dataset_dir, size, cache_dir=cache_dir, label_maps=atlas.attrs.get("label_maps"), ids=wanted
        )
    }
    return [got[(atlas.ids["bbox_name"].iloc[r], atlas.ids["Var1"].iloc[r])] for r in rows]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--embeddings``, ``--dataset-dir``, ``--cube-size``, ``--cache-dir``, ``--out``."""
    parser.add_argument("--embeddings", required=True, type=Path, help="embeddings.h5 (or .csv) from inference")
    parser.add_argument(
        "--dataset-dir", type=Path, default=None, help="dataset root (default: the one recorded in the embeddings)"
    )
    parser.add_argument("--cube-size", type=int, default=None, help="cube edge (default: from the embeddings file)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="HDF5 bbox cache folder")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: beside the embeddings file)")


def out_dir(args: argparse.Namespace) -> Path:
    """The output folder: ``--out`` or the embeddings file's folder."""
    path = args.out or Path(args.embeddings).parent
    path.mkdir(parents=True, exist_ok=True)
    return path

