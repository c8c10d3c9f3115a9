"""Segmentation networks whose encoder is our pretrained backbone, for fine-tuning on the cleft.

- ``swin``: MONAI's :class:`~monai.networks.nets.SwinUNETR`, built with the Swin arguments of the
  pretrained :class:`~synclr_monai.networks.SwinEncoder` (``feature_size``, ``depths``, ``num_heads``, ...),
  so that its ``swinViT`` takes the export as is.
- ``resnet*``: :class:`ResNetUNet`, MONAI ``FlexibleUNet``'s decoder (``UNetDecoder``) and head
  (``SegmentationHead``) on our :class:`~synclr_monai.networks.ResNetFeatureEncoder`. ``FlexibleUNet`` itself
  cannot hold the pretrained encoder: its ResNet encoder fixes the shortcut per architecture to the
  MedicalNet values (``resnet18``/``resnet34``: shortcut "A", which has no downsampling convolutions;
  ``resnet10``/``resnet50``: downsampling without bias), whereas our backbone is MONAI's ``resnet18()``
  and friends (shortcut "B" with bias, and any ``shortcut_type``/``widen_factor``/... the user chose),
  so a strict load of the export would fail on the downsampling keys.

:func:`build_segmentation_net` reads the backbone arguments from the export's sidecar JSON
(:func:`segmentation_backbone`), builds the network and loads the encoder strictly, checking that every encoder tensor came from the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.nets import SwinUNETR
from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder
from monai.networks.nets.swin_unetr import SwinTransformer
from monai.utils import ensure_tuple_rep, look_up_option
from torch import nn

from synclr_monai.errors import MissingFileError
from synclr_monai.networks.export import (
    encoder_input_spec,
    encoder_keys,
    load_encoder,
    metadata_path,
    read_encoder_metadata,
)
from synclr_monai.networks.factory import BACKBONE_NAMES, build_backbone
from synclr_monai.networks.resnet_encoder import ResNetFeatureEncoder

__all__ = [
    "ResNetUNet",
    "build_segmentation_net",
    "check_segmentation_size",
    "load_pretrained_encoder",
    "segmentation_backbone",
    "segmentation_input_channels",
]

logger = logging.getLogger(__name__)

# Sidecar ``backbone_kwargs`` entries that the segmentation builder sets from its own arguments.
_SHAPE_KWARGS = ("in_channels", "spatial_dims")


class ResNetUNet(nn.Module):
    """U-Net on a MONAI ResNet encoder: our ResNet backbone with ``FlexibleUNet``'s decoder and head.

    The encoder is a :class:`~synclr_monai.networks.ResNetFeatureEncoder` (held as ``encoder``; the MONAI ResNet
    is ``encoder.resnet``), built exactly as in pre-training, so an exported encoder loads strictly. Its
    stem (stride 2) and four stages (strides 4 to 32) feed MONAI's ``UNetDecoder`` as the skip
    connections, as in ``FlexibleUNet``; the head maps the full-resolution decoder output to
    ``out_channels`` logits.

    The input's spatial size must be a multiple of 32 (the deepest stage is at 1/32).

    Args:
        arch: ``resnet10``, ``resnet18``, ``resnet34`` or ``resnet50``.
        in_channels: number of input channels.
        out_channels: number of output channels (classes, background included).
        spatial_dims: 2 or 3.
        decoder_channels: channels of the five decoder stages (``FlexibleUNet``'s default).
        norm: decoder normalisation (``FlexibleUNet``'s default).
        act: decoder activation.
        dropout: decoder dropout.
        upsample: ``"nontrainable"``, ``"deconv"`` or ``"pixelshuffle"``.
        backbone_kwargs: further :class:`ResNetFeatureEncoder` arguments (``conv1_t_stride``, ``shortcut_type``,
            ``widen_factor``, ...), as recorded in the export's sidecar.

    Raises:
        ValueError: for an unknown ``arch``, or a stem that does not halve the resolution twice
            (``conv1_t_stride`` other than 2, or ``no_max_pool=True``): the decoder's skip connections
            assume the stem at 1/2 and the first stage at 1/4.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        in_channels: int = 3,
        out_channels: int = 2,
        spatial_dims: int = 3,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        norm: str | tuple = ("batch", {"eps": 1e-3, "momentum": 0.1}),
        act: str | tuple = ("relu", {"inplace": True}),
        dropout: float = 0.0,
        upsample: str = "nontrainable",
        backbone_kwargs: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if len(decoder_channels) != 5:
            raise ValueError(f"decoder_channels needs 5 entries (one per encoder level), got {decoder_channels}.")
        self.encoder: ResNetFeatureEncoder = build_backbone(
            arch, in_channels=in_channels, spatial_dims=spatial_dims, **dict(backbone_kwargs or {})
        )
        resnet = self.encoder.resnet
        if ensure_tuple_rep(resnet.conv1.stride, spatial_dims) != (2,) * spatial_dims or resnet.no_max_pool:
            raise ValueError(
                "ResNetUNet needs the usual ResNet stem (conv1_t_stride=2 and the max pooling) so that each "
                f"encoder level halves the resolution; got conv1 stride {resnet.conv1.stride} and "
                f"no_max_pool={resnet.no_max_pool}."
            )
        self.spatial_dims = spatial_dims
        self.decoder = UNetDecoder(
            spatial_dims=spatial_dims,
            encoder_channels=(in_channels, *self.feature_channels()),
            decoder_channels=tuple(decoder_channels),
            act=act,
            norm=norm,
            dropout=dropout,
            bias=False,
            upsample=upsample,
            pre_conv="default",
            interp_mode="nearest",
            align_corners=None,
            is_pad=True,
        )
        self.segmentation_head = SegmentationHead(
            spatial_dims=spatial_dims, in_channels=decoder_channels[-1], out_channels=out_channels, kernel_size=3
        )

    def feature_channels(self) -> tuple[int, ...]:
        """Channels of the stem and of the four stages' outputs (they depend on ``widen_factor``, block type)."""
        resnet = self.encoder.resnet
        channels = [resnet.conv1.out_channels]
        for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
            # The last convolution of a stage's last block (its downsample conv, when registered last,
            # has the same output width) gives the stage's output channels.
            convs = [m for m in layer.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
            channels.append(convs[-1].out_channels)
        return tuple(int(c) for c in channels)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem and stage outputs, computed as in MONAI's ``ResNet.forward`` (and ``ResNetFeatures``).

        Args:
            x: ``[B, in_channels, *spatial]`` input.

        Returns:
            five feature maps, at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input size.
        """
        resnet = self.encoder.resnet
        x = resnet.act(resnet.bn1(resnet.conv1(x)))
        features = [x]
        x = resnet.maxpool(x)
        for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
            x = layer(x)
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch.

        Args:
            x: ``[B, in_channels, *spatial]``, spatial sizes multiples of 32.

        Returns:
            ``[B, out_channels, *spatial]`` logits.

        Raises:
            ValueError: when a spatial size is not a multiple of 32.
        """
        if any(s % 32 for s in x.shape[2:]):
            raise ValueError(f"ResNetUNet needs spatial sizes that are multiples of 32, got {tuple(x.shape[2:])}.")
        return self.segmentation_head(self.decoder(self.encode(x), 4))


def check_segmentation_size(backbone: str, size: int, patch_size: int = 2) -> None:
    """Check that cubes of edge ``size`` fit the segmentation network of ``backbone``.

    Args:
        backbone: a backbone name.
        size: the edge length of the training crops / sliding windows.
        patch_size: SwinUNETR's patch size (``swin`` only).

    Raises:
        ValueError: when ``size`` is not a multiple of the deepest level's stride (32 for the ResNet
            U-Net, ``patch_size ** 5`` for SwinUNETR), or, for SwinUNETR, gives a single-voxel bottleneck
            (its instance norm needs more than one voxel while training).
    """
    divisor = int(patch_size) ** 5 if backbone == "swin" else 32
    minimum = 2 * divisor if backbone == "swin" else divisor
    if size % divisor or size < minimum:
        raise ValueError(
            f"{backbone}: the crop size must be a multiple of {divisor} and at least {minimum}, got {size}."
        )


def load_pretrained_encoder(network: nn.Module, encoder_path: str | os.PathLike) -> list[str]:
    """Load an exported encoder strictly into a segmentation network and check that it filled the encoder.

    Args:
        network: a network holding exactly one MONAI ``ResNet`` or ``SwinTransformer``.
        encoder_path: an export of :func:`~synclr_monai.networks.save_encoder`.

    Returns:
        the loaded names (as in ``network.state_dict()``), sorted.

    Raises:
        EncoderMismatchError: when keys are missing, unexpected or of another shape (nothing is loaded).
        RuntimeError: when, despite the strict load, some encoder tensor was not loaded.
    """
    loaded = sorted(load_encoder(network, encoder_path, strict=True))
    kind = "swin" if any(isinstance(m, SwinTransformer) for m in network.modules()) else "resnet"
    expected = sorted(encoder_keys(network, kind))
    if loaded != expected:  # a guard on load_encoder's bookkeeping: fine-tuning must start from all of it
        missing = sorted(set(expected) - set(loaded))
        raise RuntimeError(f"{encoder_path}: {len(missing)} encoder tensors not loaded, e.g. {missing[:10]}")
    logger.info("loaded all %d encoder tensors of %s into %s", len(loaded), encoder_path, type(network).__name__)
    return loaded


def _recorded_in_channels(meta: Mapping[str, Any]) -> int | None:
    """The input channels a sidecar records (top level, or in ``backbone_kwargs`` for older exports)."""
    recorded = meta.get("in_channels", (meta.get("backbone_kwargs") or {}).get("in_channels"))
    return None if recorded is None else int(recorded)


def segmentation_input_channels(encoder_path: str | os.PathLike | None) -> int:
    """Input channels of a segmentation network started from an exported encoder (the one place that decides).

    The cleft is the target of fine-tuning, so it never is an input: an encoder pre-trained on the three
    channels (input mode ``channels``) gets raw, pre-synaptic mask and a zero cleft channel (3); one pre-trained
    on one channel (``masked`` or ``raw``) gets the raw EM alone (1: masking the EM by the synapse mask would
    hand the network its target). An export without an input mode: the channels its sidecar records; none, or
    no export: 3.

    Args:
        encoder_path: the exported encoder, or None (training from scratch).

    Returns:
        1 or 3 (or the recorded count).
    """
    if encoder_path is None:
        return 3
    meta = read_encoder_metadata(encoder_path) or {}
    if "input_mode" in meta:
        return 3 if meta["input_mode"] == "channels" else 1
    recorded = _recorded_in_channels(meta)
    return 3 if recorded is None else recorded


def segmentation_backbone(
    encoder_path: str | os.PathLike | None,
    backbone: str | None = None,
    backbone_kwargs: Mapping[str, Any] | None = None,
    in_channels: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """The backbone name and encoder arguments of a segmentation network for an exported encoder.

    With an export, its sidecar (``model.json``) is the truth
    (:func:`~synclr_monai.networks.export.encoder_input_spec`): the name and arguments are the sidecar's,
    and a ``backbone``, a ``backbone_kwargs`` entry or an ``in_channels`` that contradicts it is an error
    naming the sidecar (an encoder trained with another stem stride would load strictly and give other
    features). An export without a sidecar is a ``resnet18`` unless ``backbone`` says otherwise. Without
    an export (training from scratch) ``backbone`` (default ``resnet18``) and ``backbone_kwargs`` are
    taken as given. ``in_channels`` and ``spatial_dims`` are dropped from the arguments (the segmentation
    builder sets those).

    Args:
        encoder_path: the exported encoder, or None (training from scratch).
        backbone: backbone name, or None to take the export's.
        backbone_kwargs: encoder arguments; with an export they must agree with the sidecar's.
        in_channels: input channels of the segmentation network, checked against the export's (None: no check).

    Returns:
        ``(name, kwargs)``.

    Raises:
        FileNotFoundError: when ``encoder_path`` does not exist.
        ValueError: for an unknown backbone, a value that contradicts the sidecar, or an invalid sidecar.
    """
    if encoder_path is None:
        name = look_up_option(backbone or "resnet18", BACKBONE_NAMES)
        kwargs = dict(backbone_kwargs or {})
    else:
        if not os.path.isfile(encoder_path):
            raise MissingFileError(f"encoder file {encoder_path} does not exist")
        meta = read_encoder_metadata(encoder_path) or {}
        spec = encoder_input_spec(
            encoder_path,
            required=(),
            backbone=backbone or (None if meta.get("backbone") else "resnet18"),
            backbone_kwargs=backbone_kwargs,
        )
        name = look_up_option(spec["backbone"], BACKBONE_NAMES)
        kwargs = dict(spec["backbone_kwargs"])
        if spec["pose"] == "canonical":
            # the pose is the cleft's frame, and the cleft is what segmentation predicts: it cannot turn its own
            # input, so the segmentation sees volumes as they lie (the encoder's filters transfer, not its pose)
            logger.info(
                "%s was pre-trained on synapses in the canonical pose; segmentation inputs are used as they lie",
                encoder_path,
            )
        recorded = _recorded_in_channels(meta)
        if in_channels is not None and recorded is not None and recorded != in_channels:
            raise ValueError(
                f"{metadata_path(encoder_path)}: the encoder was trained on {recorded} input channels, "
                f"but in_channels={in_channels} was asked for"
            )
    for key in _SHAPE_KWARGS:
        kwargs.pop(key, None)
    return name, kwargs


def build_segmentation_net(
    backbone: str,
    encoder_path: str | os.PathLike | None = None,
    in_channels: int = 3,
    out_channels: int = 2,
    spatial_dims: int = 3,
    decoder_kwargs: Mapping[str, Any] | None = None,
    **backbone_kwargs: Any,
) -> nn.Module:
    """A MONAI segmentation network whose encoder is (or is shaped like) the pretrained backbone.

    The backbone arguments are those recorded in the export's sidecar JSON (``model.json``:
    ``backbone_kwargs``) when there is one; ``backbone_kwargs`` that contradict it are an error (see
    :func:`segmentation_backbone`). With ``encoder_path`` None (training from scratch) only
    ``backbone_kwargs`` count, so pass the same ones to compare fairly.

    The loaded names are recorded in the attribute ``loaded_encoder_keys`` (empty from scratch).

    Args:
        backbone: ``swin`` (SwinUNETR) or ``resnet10/18/34/50`` (:class:`ResNetUNet`).
        encoder_path: the exported encoder (``bundle/models/model.pt``), or None for random weights.
        in_channels: number of input channels (3: raw, pre-synaptic mask, cleft mask).
        out_channels: number of output channels (2: background, cleft).
        spatial_dims: 2 or 3.
        decoder_kwargs: decoder arguments: ``SwinUNETR``'s ``norm_name`` etc. for ``swin``;
            :class:`ResNetUNet`'s ``decoder_channels``, ``norm``, ``act``, ``dropout``, ``upsample`` for ResNets.
        backbone_kwargs: encoder arguments (``feature_size``, ``depths``, ``num_heads``, ... for ``swin``;
            ``conv1_t_stride``, ``shortcut_type``, ... for ResNets).

    Returns:
        the network, with ``loaded_encoder_keys: list[str]``.

    Raises:
        ValueError: for an unknown backbone, a backbone, backbone argument or number of input channels
            that contradicts the export's sidecar, or invalid arguments.
        FileNotFoundError: when ``encoder_path`` does not exist.
        EncoderMismatchError: when the export does not fit the network (e.g. other sizes).
    """
    backbone, kwargs = segmentation_backbone(encoder_path, backbone, backbone_kwargs, in_channels)
    decoder = dict(decoder_kwargs or {})

    network: nn.Module
    if backbone == "swin":
        network = SwinUNETR(
            in_channels=in_channels, out_channels=out_channels, spatial_dims=spatial_dims, **kwargs, **decoder
        )
    else:
        network = ResNetUNet(
            backbone,
            in_channels=in_channels,
            out_channels=out_channels,
            spatial_dims=spatial_dims,
            backbone_kwargs=kwargs,
            **decoder,
        )
    network.loaded_encoder_keys = (
        load_pretrained_encoder(network, encoder_path) if encoder_path is not None else []
    )
    return network
