"""Validation of an assembled bbox item before cubes are cut from it (a deterministic MONAI transform)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import MapTransform

from .functional import is_lazy
from .sampling import check_bbox_arrays

__all__ = ["CheckBBoxd"]


class CheckBBoxd(MapTransform):
    """Check an assembled bbox item (deterministic; runs once per bbox when cached).

    Args:
        keys: the raw and mask keys, in that order.
        cube_size: the cube edge that must fit in the volume, or None.

    Out-of-core volumes (``data_mode: chunked``, :func:`~synclr_monai.transforms.functional.is_lazy`) get
    the shape and dtype checks only: the binary check would read the whole mask, and the cache's masks were
    written binary by the assembly (and are checksummed).

    Raises:
        ValueError: (at call time) wrong shapes or dtypes, a non-binary mask, or a cube larger than
            the volume; the message names the bbox.
    """

    def __init__(self, keys: Sequence[str] = ("raw", "mask"), cube_size: int | None = None) -> None:
        super().__init__(keys)
        if len(self.keys) != 2:
            raise ValueError(f"CheckBBoxd: expected the raw and mask keys, got {self.keys}")
        self.cube_size = cube_size

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        name = str(d.get("name", "bbox"))
        for key in self.keys:
            if key not in d:
                raise ValueError(
                    f"{name}: the item has no {key!r}; pass a load_transform (e.g. LoadBBoxd) or loaded items"
                )
        raw, mask = d[self.keys[0]], d[self.keys[1]]
        check_bbox_arrays(raw, mask, self.cube_size, name)
        if is_lazy(raw) or is_lazy(mask):
            if not np.issubdtype(raw.dtype, np.floating):
                raise ValueError(f"{name}: 'raw' must be a float array (z-scored), got {raw.dtype}")
            if mask.dtype != np.uint8:
                raise ValueError(f"{name}: an out-of-core 'mask' must be uint8, got {mask.dtype}")
            return d
        if not np.issubdtype(np.asarray(raw[:0]).dtype, np.floating):
            raise ValueError(f"{name}: 'raw' must be a float array (z-scored), got {raw.dtype}")
        if np.asarray(mask[:0]).dtype == np.bool_:
            d[self.keys[1]] = mask = np.asarray(mask, dtype=np.uint8)
        mmin, mmax = np.min(mask), np.max(mask)
        if mmin < 0 or mmax > 1:
            raise ValueError(f"{name}: 'mask' must be binary {{0, 1}}, found values in [{mmin}, {mmax}]")
        return d
