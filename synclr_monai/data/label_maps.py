"""Label values of the semantic "additional masks", per bbox.

The lab's masks use different integer values per bbox for mitochondria, vesicle clouds and the
synaptic cleft (which may carry two values). The default table is the lab's; other datasets pass
their own mapping (e.g. from the bundle config) as ``{bbox_number: {"mito": .., "vesicle": ..,
"cleft": .., "cleft2": ..}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from ..errors import DataError

__all__ = ["LabelMap", "LabelMapError", "DEFAULT_LABEL_MAPS", "resolve_label_maps", "label_map_for"]


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


def resolve_label_maps(overrides: Mapping | None = None) -> dict[int, LabelMap]:
    """Merge user overrides into the default table.

    Args:
        overrides: ``{bbox_number: LabelMap | {"mito", "vesicle", "cleft", "cleft2"}}``; keys may be
            ints or strings such as ``"8"`` or ``"bbox8"`` (YAML/JSON configs). ``cleft2`` defaults to
            ``cleft``.

    Returns:
        A new ``{bbox_number: LabelMap}`` table.

    Raises:
        ValueError: if an entry misses a class or has a non-integer value.
    """
    table = dict(DEFAULT_LABEL_MAPS)
    for key, value in (overrides or {}).items():
        number = int(str(key).lower().removeprefix("bbox").removeprefix("_"))
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


def label_map_for(bbox_number: int, label_maps: Mapping[int, LabelMap] | None = None) -> LabelMap:
    """The label map of one bbox.

    Args:
        bbox_number: the N of ``bboxN``.
        label_maps: a table from :func:`resolve_label_maps`; the default table when None.

    Raises:
        LabelMapError: (a ``KeyError``) if the table has no entry for ``bbox_number`` (the message says how to add one).
    """
    table = DEFAULT_LABEL_MAPS if label_maps is None else label_maps
    if bbox_number not in table:
        raise LabelMapError(
            f"no label map for bbox{bbox_number}: add it to the 'label_maps' config entry as "
            f"{{{bbox_number}: {{mito: .., vesicle: .., cleft: .., cleft2: ..}}}}"
        )
    return table[bbox_number]
