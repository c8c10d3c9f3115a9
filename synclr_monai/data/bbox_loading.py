"""MONAI transform that loads an assembled bbox: the deterministic, cacheable part of the data pipeline."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

from monai.config import KeysCollection
from monai.transforms import MapTransform

from .bbox import VESICLE_SEARCH_RADIUS, BBoxSource, find_bboxes
from .cache import load_bbox, open_cached_bbox
from .label_maps import resolve_label_maps

__all__ = ["LoadBBoxd", "bbox_data_list"]


class LoadBBoxd(MapTransform):
    """Load (through the HDF5 cache) the bbox named by ``data[key]``.

    The item ``{"bbox": BBoxSource}`` gains ``"raw"`` (``[1, Z, Y, X]`` float16/32, z-scored),
    ``"mask"`` (``[3, Z, Y, X]`` uint8: pre-synaptic, cleft, post-synaptic), ``"name"`` (``bboxN``) and ``"synapses"``
    (the sheet as a DataFrame).

    With ``data_mode="chunked"`` the cache is built when needed but not read: ``"raw"`` and ``"mask"`` are
    :class:`~synclr_monai.data.lazy.H5Volume` handles on its datasets (same shapes and dtypes), read cube by
    cube in the process that samples (see :mod:`synclr_monai.data.lazy`).

    Args:
        keys: the key holding the :class:`BBoxSource` (one key).
        cache_dir: folder of HDF5 caches; None disables caching.
        label_maps: label-map overrides ``{bbox_number: {mito, vesicle, cleft, cleft2}}`` merged into
            the default table and the dataset root's ``label_maps.json``.
        raw_dtype: ``"float16"`` (default, half the memory) or ``"float32"``.
        vesicle_search_radius: half-size of the window searched for each synapse's vesicle cloud.
        require_labels: refuse a bbox whose masks do not fit its label map (no cleft voxel, or no synapse with
            a pre-synaptic segment); False trains on it anyway (see :func:`~synclr_monai.data.cache.load_bbox`).
        data_mode: ``"memory"`` (the assembled arrays) or ``"chunked"`` (out-of-core handles; needs
            ``cache_dir``). Resolve ``"auto"`` first with :func:`~synclr_monai.data.lazy.choose_data_mode`.

    Raises:
        ValueError: an unknown ``data_mode``, or ``"chunked"`` without a ``cache_dir``.
    """

    def __init__(
        self,
        keys: KeysCollection = "bbox",
        cache_dir: str | Path | None = None,
        label_maps: Mapping | None = None,
        raw_dtype: str = "float16",
        vesicle_search_radius: int = VESICLE_SEARCH_RADIUS,
        require_labels: bool = True,
        data_mode: str = "memory",
    ) -> None:
        super().__init__(keys)
        if data_mode not in ("memory", "chunked"):
            hint = " (resolve 'auto' with synclr_monai.data.lazy.choose_data_mode)" if data_mode == "auto" else ""
            raise ValueError(f"LoadBBoxd: data_mode must be 'memory' or 'chunked', got {data_mode!r}{hint}")
        if data_mode == "chunked" and cache_dir is None:
            raise ValueError(
                "LoadBBoxd: data_mode 'chunked' reads the bboxes out of their HDF5 caches: give a cache_dir"
            )
        self.data_mode = data_mode
        self.cache_dir = cache_dir
        resolve_label_maps(label_maps)  # a malformed override fails here; the tables are made per dataset root
        self._overrides = label_maps
        self._tables: dict[Path, dict] = {}
        self.raw_dtype = raw_dtype
        self.vesicle_search_radius = vesicle_search_radius
        self.require_labels = require_labels

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            source = d[key]
            if not isinstance(source, BBoxSource):
                raise TypeError(f"LoadBBoxd: item[{key!r}] must be a BBoxSource, got {type(source).__name__}")
            if source.root not in self._tables:  # the config's overrides over the dataset's label_maps.json
                self._tables[source.root] = resolve_label_maps(self._overrides, source.root)
            args = (
                source, self.cache_dir, self._tables[source.root], self.raw_dtype, self.vesicle_search_radius,
                self.require_labels,
            )  # fmt: skip
            if self.data_mode == "chunked":
                c = open_cached_bbox(*args)
                d["raw"], d["mask"] = c.volumes()
                d["name"] = c.name
                d["synapses"] = c.synapses
                continue
            vol = load_bbox(*args)
            d["raw"] = vol.raw[None]
            d["mask"] = vol.mask
            d["name"] = vol.name
            d["synapses"] = vol.synapses
        return d


def bbox_data_list(dataset_dir: str | Path, bboxes: list[int] | None = None) -> list[dict]:
    """The data list ``[{"bbox": BBoxSource}, ...]`` of a dataset root (for CacheDataset + LoadBBoxd)."""
    return [{"bbox": s} for s in find_bboxes(dataset_dir, numbers=bboxes)]
