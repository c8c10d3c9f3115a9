"""The synapses of a dataset as encoder inputs: one cube centred on each synapse listed in the sheets.

Inference, the online kNN, the baselines and the atlas tools all cut synapse cubes the same way
(:func:`~synclr_monai.data.bbox.synapse_cube`: the training normalisation, the encoder's input mode),
loading one bbox at a time so that memory holds a single assembled bbox, or (``data_mode`` chunked) reading
each cube out of the bbox's HDF5 cache, so that memory holds a cube (:func:`open_lazy_bbox`):

- :func:`iter_dataset_cubes`: ``(bbox_name, Var1, cube)`` in dataset order (bbox, then sheet row);
- :class:`SynapseCubeDataset`: the same as a PyTorch dataset of ``{"image", "bbox_name", "Var1"}`` items,
  the dataset of the inference workflow (``inference.yaml``'s ``dataset``);
- :func:`labelled_cubes_from_dataset`: the cubes of the synapses a labels CSV names, with their labels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from synclr_monai.errors import MissingFileError

from .bbox import find_bboxes, synapse_cube
from .cache import load_bbox, open_cached_bbox
from .io import DataFormatError, read_synapse_sheet
from .label_maps import resolve_label_maps
from .lazy import H5Volume, choose_data_mode

__all__ = [
    "LazyBBox",
    "SynapseCubeDataset",
    "iter_dataset_cubes",
    "labelled_cubes_from_dataset",
    "open_lazy_bbox",
    "resolve_data_mode",
    "sheet_ids",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LazyBBox:
    """A bbox read out of core: what :func:`~synclr_monai.data.bbox.synapse_cube` needs, no voxel held.

    Args:
        name: ``bboxN``.
        shape: ``(Z, Y, X)``.
        raw: ``[1, Z, Y, X]`` :class:`~synclr_monai.data.lazy.H5Volume` on the cache's z-scored raw.
        mask: ``[3, Z, Y, X]`` :class:`~synclr_monai.data.lazy.H5Volume` on the cache's masks.
        synapses: the sheet rows (as :attr:`~synclr_monai.data.bbox.BBoxVolume.synapses`).
    """

    name: str
    shape: tuple[int, int, int]
    raw: H5Volume
    mask: H5Volume
    synapses: pd.DataFrame


def open_lazy_bbox(source, cache_dir: str | os.PathLike, label_maps: Mapping | None = None) -> LazyBBox:
    """A bbox's cache, built when absent or stale (that one bbox assembled in memory), opened out of core.

    Args:
        source: the :class:`~synclr_monai.data.bbox.BBoxSource`.
        cache_dir: folder of the ``bboxN.h5`` caches.
        label_maps: the resolved label-map table.

    Returns:
        The :class:`LazyBBox`.
    """
    c = open_cached_bbox(source, cache_dir, label_maps)
    raw, mask = c.volumes()
    return LazyBBox(name=c.name, shape=c.shape, raw=raw, mask=mask, synapses=c.synapses)


def resolve_data_mode(
    data_mode: str, sources: Sequence, cache_dir: str | os.PathLike | None, max_cache_gb: float = 8.0
) -> str:
    """``"memory"`` or ``"chunked"`` for cutting the cubes of ``sources`` (``auto``: by their assembled size).

    Only one bbox is assembled at a time in memory mode, so ``auto`` compares the largest bbox, not their sum,
    with ``max_cache_gb``; without a ``cache_dir`` there is nothing to read out of core and ``auto`` is memory.

    Raises:
        ValueError: an unknown mode, or ``chunked`` without a ``cache_dir``.
    """
    from .lazy import assembled_nbytes

    if data_mode == "chunked" and cache_dir is None:
        raise ValueError("data_mode: 'chunked' reads the cubes out of the bboxes' HDF5 caches: give a cache_dir")
    if data_mode != "auto":
        return choose_data_mode(data_mode, [])
    if cache_dir is None or not sources:
        return "memory"
    largest = max(sources, key=assembled_nbytes)
    return choose_data_mode("auto", [{"bbox": largest}], max_cache_gb)


def iter_dataset_cubes(
    dataset_dir: str | os.PathLike,
    cube_size: int,
    cache_dir: str | os.PathLike | None = None,
    label_maps: Mapping | None = None,
    ids: pd.DataFrame | None = None,
    input_mode: str = "channels",
    voxel_size: Sequence[float] | None = None,
    az_radius: int = 2,
    data_mode: str = "memory",
    max_cache_gb: float = 8.0,
    pose: str = "native",
) -> Iterator[tuple[str, str, np.ndarray]]:
    """The encoder inputs of the synapses of a dataset root, loading one bbox at a time.

    Args:
        dataset_dir: dataset root in the lab's layout.
        cube_size: edge length S of the cubes.
        cache_dir: HDF5 cache folder for the assembled bboxes (None: no cache).
        label_maps: label-map overrides (``{bbox_number: {mito, vesicle, cleft, cleft2}}``); None for
            the defaults.
        ids: when given (``bbox_name``, ``Var1``), only these synapses are cut (and only their bboxes
            loaded); every id must exist in the dataset.
        input_mode, voxel_size, az_radius, pose: see :func:`~synclr_monai.data.bbox.synapse_cube` (as in
            training: the encoder's sidecar records them).
        data_mode: ``"memory"`` (each bbox assembled whole, one at a time), ``"chunked"`` (each cube read out of
            the bbox's HDF5 cache; needs ``cache_dir``) or ``"auto"`` (chunked when the largest bbox's assembled
            size exceeds ``max_cache_gb`` and a ``cache_dir`` is given). Both give the same cubes.
        max_cache_gb: the memory budget of ``auto`` (GB).

    Yields:
        ``(bbox_name, Var1, cube)`` in dataset order (bbox, then sheet row).

    Raises:
        FileNotFoundError: if ``dataset_dir`` does not exist.
        ValueError: if the dataset has no bbox or no synapse, or ids in ``ids`` are not in the dataset
            (``DataFormatError``, a ``ValueError``, for unreadable files).
    """
    from .synapse_labels import format_ids

    root = Path(dataset_dir)
    if not root.is_dir():
        raise MissingFileError(f"dataset folder {root} does not exist")
    sources = find_bboxes(root)
    if not sources:
        raise ValueError(f"dataset folder {root} holds no bbox")
    # Overrides (possibly from JSON/YAML, with string keys) merged into the default table and the dataset's own.
    table = resolve_label_maps(label_maps, root)
    wanted: set[tuple[str, str]] | None = None
    if ids is not None:
        wanted = set(zip(ids["bbox_name"].astype(str), ids["Var1"].astype(str)))
        wanted_bboxes = {b for b, _ in wanted}
        sources = [s for s in sources if s.name in wanted_bboxes]
    mode = resolve_data_mode(data_mode, sources, cache_dir, max_cache_gb)
    found: set[tuple[str, str]] = set()
    for source in sources:
        logger.info("loading %s (%s)", source.name, mode)
        if mode == "chunked":
            volume = open_lazy_bbox(source, cache_dir, table)  # type: ignore[arg-type]
        else:
            volume = load_bbox(source, cache_dir=cache_dir, label_maps=table)
        if wanted is None and volume.synapses.empty:
            raise DataFormatError(
                f"{source.sheet}: {source.name}'s sheet lists no synapse (a header and no rows), so it has nothing to "
                "embed: add its synapses or remove the bbox from the dataset folder"
            )
        for _, row in volume.synapses.iterrows():
            key = (str(volume.name), str(row["Var1"]))
            if wanted is not None and key not in wanted:
                continue
            found.add(key)
            yield key[0], key[1], synapse_cube(volume, row, cube_size, input_mode, voxel_size, az_radius, pose)
        del volume  # let the bbox go before the next one is loaded
    if wanted is not None and wanted - found:
        lost = pd.DataFrame(sorted(wanted - found), columns=["bbox_name", "Var1"])
        raise ValueError(f"{len(lost)} synapse(s) are not in the sheets of {root}: {format_ids(lost)}")
    if not found:
        raise ValueError(f"no synapse is listed in the sheets of {root}")


def sheet_ids(dataset_dir: str | os.PathLike) -> pd.DataFrame:
    """``bbox_name``, ``Var1`` (str) of every synapse in the sheets, in dataset order (bbox number, then row)."""
    frames = [
        pd.DataFrame({"bbox_name": s.name, "Var1": read_synapse_sheet(s.sheet)["Var1"].astype(str)})
        for s in find_bboxes(dataset_dir)
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["bbox_name", "Var1"])


class SynapseCubeDataset(torch.utils.data.IterableDataset):
    """Every synapse of a dataset root as ``{"image": [C, S, S, S] float32, "bbox_name", "Var1"}``.

    An iterable dataset because the cubes are cut bbox by bbox (one assembled bbox in memory at a time,
    each loaded once); its length, the number of synapses, comes from the sheets, so a ``DataLoader`` over
    it has a length and MONAI's evaluators know their epoch length. Items come in dataset order (bbox,
    then sheet row), which is the order of the embeddings file. Iterate it in the main process
    (``num_workers=0``): the work is the bbox assembly, which a worker split by synapse would repeat.

    Under torch.distributed (``torchrun``) each process takes one contiguous block of the synapse list
    (``shard`` of ``num_shards``, by default its rank of the world), so it loads only the bboxes its block
    touches, and the blocks in rank order are the dataset order again (what
    :class:`~synclr_monai.inference.writer.EmbeddingsWriter` relies on when it merges them).

    Args:
        dataset_dir: dataset root in the lab's layout.
        cube_size: edge S of the cubes.
        cache_dir: HDF5 cache folder of the assembled bboxes (None: no cache).
        label_maps: label-map overrides.
        ids: only these synapses (``bbox_name``, ``Var1``); None: every synapse of the sheets.
        input_mode, voxel_size, az_radius, pose: the encoder's input (its sidecar), see
            :func:`~synclr_monai.data.bbox.synapse_cube`.
        shard, num_shards: this process's block of the synapse list (default: from torch.distributed).
        data_mode, max_cache_gb: ``memory``, ``chunked`` (cubes read out of the HDF5 caches, memory bounded by a
            cube) or ``auto``, resolved once here (see :func:`iter_dataset_cubes`).

    Raises:
        FileNotFoundError: the dataset folder does not exist.
        ValueError: the dataset holds no bbox or no synapse (``DataFormatError`` for unreadable files).
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        cube_size: int,
        cache_dir: str | os.PathLike | None = None,
        label_maps: Mapping | None = None,
        ids: pd.DataFrame | None = None,
        input_mode: str = "channels",
        voxel_size: Sequence[float] | None = None,
        az_radius: int = 2,
        shard: int | None = None,
        num_shards: int | None = None,
        data_mode: str = "memory",
        max_cache_gb: float = 8.0,
        pose: str = "native",
    ) -> None:
        super().__init__()
        from synclr_monai.transforms.pose import check_pose

        self.pose = check_pose(pose)
        root = Path(dataset_dir)
        if not root.is_dir():
            raise MissingFileError(f"dataset folder {root} does not exist")
        self.dataset_dir = root
        self.cube_size = int(cube_size)
        self.cache_dir = cache_dir
        self.label_maps = label_maps
        self.input_mode = input_mode
        self.voxel_size = voxel_size
        self.az_radius = int(az_radius)
        self.data_mode = resolve_data_mode(data_mode, find_bboxes(root), cache_dir, max_cache_gb)
        if num_shards is None and torch.distributed.is_available() and torch.distributed.is_initialized():
            num_shards, shard = torch.distributed.get_world_size(), torch.distributed.get_rank()
        self.num_shards, self.shard = int(num_shards or 1), int(shard or 0)
        if not 0 <= self.shard < self.num_shards:
            raise ValueError(f"shard must be in [0, {self.num_shards}), got {shard}")
        # the sheets are read once: the synapse list gives the length and, split over processes, each block
        listed = sheet_ids(root) if ids is None else ids
        if self.num_shards > 1:
            n = len(listed)
            if n < self.num_shards:
                raise ValueError(f"{root}: {n} synapse(s) cannot be split over {self.num_shards} processes")
            lo, hi = n * self.shard // self.num_shards, n * (self.shard + 1) // self.num_shards
            ids = listed = listed.iloc[lo:hi].reset_index(drop=True)
        self.ids = ids  # None: every synapse (iter_dataset_cubes then also refuses a bbox with an empty sheet)
        self._length = len(listed)
        if self._length == 0:
            raise ValueError(f"no synapse is listed in the sheets of {root}")

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            raise ValueError(
                "SynapseCubeDataset loads each bbox once, in one process: use a DataLoader with num_workers 0 or 1, "
                f"got {info.num_workers}"
            )
        cubes = iter_dataset_cubes(
            self.dataset_dir, self.cube_size, self.cache_dir, self.label_maps, ids=self.ids,
            input_mode=self.input_mode, voxel_size=self.voxel_size, az_radius=self.az_radius,
            data_mode=self.data_mode, pose=self.pose,
        )  # fmt: skip
        for name, var1, cube in cubes:
            yield {"image": torch.from_numpy(cube), "bbox_name": name, "Var1": var1}


def labelled_cubes_from_dataset(
    dataset_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    cube_size: int,
    cache_dir: str | os.PathLike | None = None,
    label_maps: Mapping | None = None,
    label_column: str | None = None,
    input_mode: str = "channels",
    voxel_size: Sequence[float] | None = None,
    az_radius: int = 2,
    pose: str = "native",
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the cube of every labelled synapse of a dataset.

    Args:
        dataset_dir: dataset root in the lab's layout.
        labels_csv: CSV with ``bbox_name``, ``Var1`` and a label column (e.g. ``synapse_types.csv``).
        cube_size: edge length S of the cubes.
        cache_dir: HDF5 bbox cache folder.
        label_maps: label-map overrides.
        label_column: the label column (default: ``type`` or the only other column).
        input_mode, voxel_size, az_radius, pose: the encoder's input, as in training
            (:func:`~synclr_monai.data.bbox.synapse_cube`).

    Returns:
        ``(cubes float32 [N, 3 or 1, S, S, S], labels [N] str)`` in dataset order.

    Raises:
        FileNotFoundError: if the dataset folder or the labels file does not exist.
        ValueError: if the labels file is malformed or names synapses the dataset does not have.
    """
    from .synapse_labels import read_labels

    table = read_labels(labels_csv, label_column)
    lookup = {(b, v): lab for b, v, lab in zip(table["bbox_name"], table["Var1"], table["label"])}
    cubes, labels = [], []
    cubes_of = iter_dataset_cubes(
        dataset_dir, cube_size, cache_dir, label_maps, ids=table, input_mode=input_mode, voxel_size=voxel_size,
        az_radius=az_radius, pose=pose,
    )  # fmt: skip
    for name, var1, cube in cubes_of:
        cubes.append(np.asarray(cube, dtype=np.float32))
        labels.append(lookup[(name, var1)])
    return np.stack(cubes), np.asarray(labels, dtype=str)
