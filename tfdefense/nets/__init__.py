"""Plain Keras building blocks: encoders, decoders, classifiers. No losses."""

from tfdefense.nets.cdvae_nets import cdvae_decoder, cdvae_encoder, default_settings
from tfdefense.nets.resnet50 import resnet50
from tfdefense.nets.small_cnn import PENULTIMATE, small_cnn
from tfdefense.nets.wide_resnet import wide_resnet

__all__ = [
    "PENULTIMATE",
    "cdvae_decoder",
    "cdvae_encoder",
    "default_settings",
    "resnet50",
    "small_cnn",
    "wide_resnet",
]
