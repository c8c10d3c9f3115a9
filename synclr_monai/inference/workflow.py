"""The inference workflow: every synapse of a dataset through an exported encoder into ``embeddings.h5``.

The bundle's ``inference.yaml`` wires these objects (ids as in the model zoo: ``dataset``, ``dataloader``,
``network_def``, ``network``, ``inferer``, ``handlers``, ``evaluator``); :func:`run_inference` builds the
same workflow for Python callers:

- dataset: :class:`~synclr_monai.data.synapse_cubes.SynapseCubeDataset` (one cube per synapse listed in the
  sheets, cut and normalised as in training, in the input mode of the encoder's sidecar);
- network: the exported encoder (:func:`loaded_encoder` into the sidecar's architecture), its
  features averaged over the cube's 24 rotations
  (:class:`~synclr_monai.networks.rotation_average.RotationAveragedEncoder`);
- evaluator: MONAI's ``SupervisedEvaluator`` with a ``SimpleInferer``;
- handlers: Ignite's ``ProgressBar`` and the :class:`~synclr_monai.inference.writer.EmbeddingsWriter`.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synclr_monai.errors import MissingFileError

__all__ = ["embeddings_attrs", "loaded_encoder", "run_inference"]

logger = logging.getLogger(__name__)


def loaded_encoder(network: nn.Module, path: str | os.PathLike) -> nn.Module:
    """``network`` with the exported encoder's weights loaded (strictly), for configs that wire objects.

    Args:
        network: the encoder architecture (the bundle's ``network_def``).
        path: the exported encoder (``model.pt``).

    Returns:
        ``network``, loaded.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        EncoderMismatchError: when the file does not fit the network (the message lists the differences).
    """
    from synclr_monai.networks.export import load_encoder

    if not Path(path).is_file():
        raise MissingFileError(f"encoder file {path} does not exist")
    load_encoder(network, path)
    return network


def embeddings_attrs(
    dataset_dir: str | os.PathLike,
    encoder_path: str | os.PathLike,
    spec: Mapping[str, Any],
    rotations: int,
    label_maps: Mapping | None = None,
) -> dict[str, Any]:
    """The provenance attributes of ``embeddings.h5``: data, encoder, input and when."""
    return {
        "dataset_dir": str(Path(dataset_dir).resolve()),
        "cube_size": int(spec["cube_size"]),
        "backbone": spec["backbone"],
        "backbone_kwargs": dict(spec["backbone_kwargs"]),
        "input_mode": spec["input_mode"],
        "pose": spec.get("pose", "native"),
        "rotations": int(rotations),
        "checkpoint": str(Path(encoder_path).resolve()),
        "label_maps": _jsonable_label_maps(label_maps),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def run_inference(
    dataset_dir: str | os.PathLike,
    encoder_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    backbone: str | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
    cube_size: int | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    label_maps: Mapping | None = None,
    amp: bool = False,
    progress: bool = True,
    input_mode: str | None = None,
    rotations: int | None = None,
    pose: str | None = None,
) -> Path | None:
    """Embed every synapse listed in the sheets of a dataset with an exported encoder (the bundle's workflow).

    The encoder's sidecar (``model.json``) is the truth for the architecture and the input
    (:func:`~synclr_monai.networks.export.encoder_input_spec`): arguments left None are taken from it, and
    one that contradicts it is an error.

    Args:
        dataset_dir: dataset root in the lab's layout.
        encoder_path: the exported encoder (``bundle/models/model.pt``, a plain backbone state dict).
        output_dir: where ``embeddings.h5`` and ``embeddings.csv`` go.
        backbone: backbone name (None: the sidecar's).
        backbone_kwargs: extra ``build_backbone`` arguments (None: the sidecar's).
        cube_size: edge length of the cubes (None: the sidecar's).
        batch_size: cubes per forward pass.
        device: e.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        cache_dir: HDF5 cache folder for assembled bboxes.
        label_maps: label-map overrides for other datasets.
        amp: mixed-precision forward pass.
        progress: show a progress bar.
        input_mode: ``channels``, ``masked`` or ``raw`` (None: the sidecar's).
        rotations: 24 averages each synapse's features over the 24 rotations of its cube (pose-invariant;
            24x the compute), 4 over the quarter turns about z (the cleft normal of a canonical-pose cube),
            1 encodes the cube as cut; None: 24 in the native pose, 4 in the canonical pose
            (:func:`~synclr_monai.networks.rotation_average.default_rotations`). Recorded in the file's attributes.
        pose: ``native`` or ``canonical`` (None: the sidecar's; see :func:`~synclr_monai.data.bbox.synapse_cube`).

    Returns:
        The path of ``embeddings.h5`` (None on the ranks other than 0 when torch.distributed is initialised:
        each rank embeds a block of the synapses and rank 0 writes the merged file).

    Raises:
        FileNotFoundError: if the dataset folder or the encoder file does not exist.
        ValueError: if the dataset holds no synapse, or an argument contradicts the encoder's sidecar.
    """
    from ignite.handlers import ProgressBar
    from monai.engines import SupervisedEvaluator
    from monai.inferers import SimpleInferer

    from synclr_monai.data.synapse_cubes import SynapseCubeDataset
    from synclr_monai.inference.writer import EmbeddingsWriter
    from synclr_monai.networks.export import encoder_input_spec, exportable_encoder
    from synclr_monai.networks.rotation_average import RotationAveragedEncoder, default_rotations

    if not Path(encoder_path).is_file():
        raise MissingFileError(f"encoder file {encoder_path} does not exist")
    spec = encoder_input_spec(
        encoder_path, backbone=backbone, backbone_kwargs=backbone_kwargs, cube_size=cube_size, input_mode=input_mode,
        pose=pose,
    )
    rotations = default_rotations(spec["pose"]) if rotations is None else int(rotations)
    dataset = SynapseCubeDataset(
        dataset_dir, spec["cube_size"], cache_dir=cache_dir, label_maps=label_maps, input_mode=spec["input_mode"],
        voxel_size=spec["voxel_size"], az_radius=spec["az_radius"], pose=spec["pose"],
    )  # fmt: skip
    encoder = exportable_encoder(spec["backbone"], spec["in_channels"], spec["backbone_kwargs"])
    network = RotationAveragedEncoder(loaded_encoder(encoder, encoder_path), rotations).to(device)
    logger.info(
        "embedding %d synapses of %s with %s (%s, cube %d, input %s, %s pose, %d rotation(s) averaged)",
        len(dataset), dataset_dir, encoder_path, spec["backbone"], spec["cube_size"], spec["input_mode"], spec["pose"],
        rotations,
    )  # fmt: skip
    writer = EmbeddingsWriter(output_dir, embeddings_attrs(dataset_dir, encoder_path, spec, rotations, label_maps))
    handlers: list[Any] = [writer]
    if progress:
        handlers.insert(0, ProgressBar(desc="embedding"))
    evaluator = SupervisedEvaluator(
        device=torch.device(device),
        val_data_loader=torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=0),
        network=network,
        inferer=SimpleInferer(),
        amp=amp,
        val_handlers=handlers,
        decollate=False,
    )
    evaluator.run()
    return writer.path  # written at COMPLETED (by rank 0 under torch.distributed; None on the other ranks)


def _jsonable_label_maps(label_maps: Mapping | None) -> dict | None:
    """Label-map overrides as plain JSON (LabelMap objects become dicts)."""
    if label_maps is None:
        return None
    return {str(k): (v.as_dict() if hasattr(v, "as_dict") else dict(v)) for k, v in label_maps.items()}
