"""Reading the lab's EM data: TIFF stacks, NIfTI and Zarr volumes, synapse tables; bbox assembly; HDF5 cache;
synthetic data; checks."""

from .assembly import assemble_bbox
from .bbox import BBoxSource, BBoxVolume, find_bboxes, synapse_cube, zscore_volume
from .cache import load_bbox
from .io import DataFormatError, open_volume, read_nifti, read_synapse_sheet, read_tiff_stack, read_volume, read_zarr
from .label_maps import DEFAULT_LABEL_MAPS, LabelMap, label_map_for, resolve_label_maps

__all__ = [
    "BBoxSource",
    "BBoxVolume",
    "DataFormatError",
    "DEFAULT_LABEL_MAPS",
    "LabelMap",
    "LoadBBoxd",
    "assemble_bbox",
    "bbox_data_list",
    "find_bboxes",
    "label_map_for",
    "load_bbox",
    "open_volume",
    "read_nifti",
    "read_synapse_sheet",
    "read_tiff_stack",
    "read_volume",
    "read_zarr",
    "resolve_label_maps",
    "synapse_cube",
    "zscore_volume",
]


def __getattr__(name: str):
    # LoadBBoxd pulls in MONAI; import it on first use so `synth`/`check` start fast
    if name in ("LoadBBoxd", "bbox_data_list"):
        from . import bbox_loading

        return getattr(bbox_loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
