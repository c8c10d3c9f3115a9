"""Label values of the semantic "additional masks", per bbox.

The lab's masks use different integer values per bbox for mitochondria, vesicle clouds and the
synaptic cleft (which may carry two values). The default table is the lab's (bbox1..bbox7). A dataset root
may carry its own table in ``label_maps.json`` (:data:`DATASET_LABEL_MAPS_FILE`, e.g. written by ``synth`` for
bboxes past 7), and a config may override both (``label_maps`` in the bundle configs, ``--label-maps`` of
``check``), each as ``{bbox_number: {"mito": .., "vesicle": .., "cleft": .., "cleft2": ..}}``. Precedence:
config, then the dataset's file, then the default table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import DataError

__all__ = [
    "LabelMap",
    "LabelMapError",
    "DEFAULT_LABEL_MAPS",
    "DATASET_LABEL_MAPS_FILE",
    "dataset_label_maps",
    "resolve_label_maps",
    "label_map_for",
]

#: A dataset root's own label maps (JSON, ``{"bbox8": {"mito": .., "vesicle": .., "cleft": .., "cleft2": ..}}``).
DATASET_LABEL_MAPS_FILE = "label_maps.json"


class LabelMapError(DataError, KeyError):
    """No label map for a bbox (a ``KeyError`` too, as before); the message says how to add one."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class LabelMap:
    """Integer values of the semantic classes in one bbox's additional masks.

    Args:
        mito: value of mitochondria.
        vesicle: value of vesicle clouds.
        cleft: value of the synaptic cleft.
        cleft2: second value the cleft may carry (equal to ``cleft`` when there is only one).
    """

    mito: int
    vesicle: int
    cleft: int
    cleft2: int

    @property
    def cleft_values(self) -> tuple[int, ...]:
        """The distinct values that mark the cleft."""
        return tuple(sorted({self.cleft, self.cleft2}))

    def as_dict(self) -> dict[str, int]:
        """Plain-dict form (for configs, cache fingerprints and logs)."""
        return asdict(self)


DEFAULT_LABEL_MAPS: dict[int, LabelMap] = {
    1: LabelMap(mito=5, vesicle=6, cleft=7, cleft2=7),
    2: LabelMap(mito=1, vesicle=3, cleft=2, cleft2=4),
    3: LabelMap(mito=6, vesicle=7, cleft=9, cleft2=8),
    4: LabelMap(mito=3, vesicle=2, cleft=1, cleft2=4),
    5: LabelMap(mito=1, vesicle=3, cleft=2, cleft2=4),
    6: LabelMap(mito=5, vesicle=6, cleft=7, cleft2=7),
    7: LabelMap(mito=1, vesicle=2, cleft=4, cleft2=3),
}


def _parse(entries: Mapping) -> dict[int, LabelMap]:
    table = {}
    for key, value in entries.items():
        try:
            number = int(str(key).lower().removeprefix("bbox").removeprefix("_"))
        except ValueError as err:
            raise ValueError(f"label map key {key!r} is not a bbox number (e.g. 8 or 'bbox8')") from err
        if isinstance(value, LabelMap):
            table[number] = value
            continue
        try:
            entry = dict(value)
            entry.setdefault("cleft2", entry.get("cleft"))
            table[number] = LabelMap(**{k: int(entry[k]) for k in ("mito", "vesicle", "cleft", "cleft2")})
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"label map for bbox {key!r} must give integer 'mito', 'vesicle', 'cleft' (and optionally "
                f"'cleft2'), got {value!r}"
            ) from err
    return table


def dataset_label_maps(root: str | Path) -> dict[int, LabelMap]:
    """The label maps a dataset root carries in its :data:`DATASET_LABEL_MAPS_FILE` (empty when it has none).

    Raises:
        DataError: an unreadable file or a bad entry, naming the file.
    """
    path = Path(root) / DATASET_LABEL_MAPS_FILE
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, Mapping):
            kind = type(entries).__name__
            raise ValueError(f"expected an object {{bbox: {{mito, vesicle, cleft, cleft2}}}}, got {kind}")
        return _parse(entries)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: bad label maps ({err})") from err


def resolve_label_maps(overrides: Mapping | None = None, root: str | Path | None = None) -> dict[int, LabelMap]:
    """The label-map table: the default one, updated by a dataset root's file, then by the config's overrides.

    Args:
        overrides: ``{bbox_number: LabelMap | {"mito", "vesicle", "cleft", "cleft2"}}``; keys may be
            ints or strings such as ``"8"`` or ``"bbox8"`` (YAML/JSON configs). ``cleft2`` defaults to
            ``cleft``.
        root: a dataset root whose :data:`DATASET_LABEL_MAPS_FILE` is read (None: none).

    Returns:
        A new ``{bbox_number: LabelMap}`` table.

    Raises:
        ValueError: if an override misses a class or has a non-integer value.
        DataError: a bad :data:`DATASET_LABEL_MAPS_FILE`, naming it.
    """
    table = dict(DEFAULT_LABEL_MAPS)
    if root is not None:
        table.update(dataset_label_maps(root))
    table.update(_parse(overrides or {}))
    return table


def label_map_for(
    bbox_number: int, label_maps: Mapping[int, LabelMap] | None = None, root: str | Path | None = None
) -> LabelMap:
    """The label map of one bbox.

    Args:
        bbox_number: the N of ``bboxN``.
        label_maps: a table from :func:`resolve_label_maps`; when None, the default table updated by ``root``'s
            :data:`DATASET_LABEL_MAPS_FILE`.
        root: the bbox's dataset root (used only when ``label_maps`` is None).

    Raises:
        LabelMapError: (a ``KeyError``) if the table has no entry for ``bbox_number`` (the message says how to add one).
    """
    if label_maps is not None:
        table = label_maps
    else:
        table = resolve_label_maps(None, root) if root is not None else DEFAULT_LABEL_MAPS
    if bbox_number not in table:
        raise LabelMapError(
            f"no label map for bbox{bbox_number}: add it to the 'label_maps' config entry as "
            f"{{{bbox_number}: {{mito: .., vesicle: .., cleft: .., cleft2: ..}}}}, or to the dataset's "
            f"{DATASET_LABEL_MAPS_FILE}"
        )
    return table[bbox_number]
