"""SimCLR networks: backbones on MONAI encoders, the projection head, the model, encoder export."""

from synclr_monai.networks.export import EncoderMismatchError, load_encoder, read_encoder_metadata, save_encoder
from synclr_monai.networks.factory import BACKBONE_NAMES, build_backbone
from synclr_monai.networks.projection import ProjectionHead
from synclr_monai.networks.resnet_encoder import RESNET_ARCHS, ResNetFeatureEncoder
from synclr_monai.networks.simclr import SimCLR, build_simclr
from synclr_monai.networks.swin_encoder import SwinEncoder

__all__ = [
    "BACKBONE_NAMES",
    "EncoderMismatchError",
    "ProjectionHead",
    "RESNET_ARCHS",
    "ResNetFeatureEncoder",
    "SimCLR",
    "SwinEncoder",
    "build_backbone",
    "build_simclr",
    "load_encoder",
    "read_encoder_metadata",
    "save_encoder",
]
