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
from tfdefense.nets.fm_nets import (  # noqa: E402, I001  (FM-Defense Table I)
    fm_decoder, fm_dgmm_network, fm_encoder, fm_face_decoder, fm_face_encoder, tc_discriminator,
)

__all__ += ["fm_decoder", "fm_dgmm_network", "fm_encoder", "fm_face_decoder", "fm_face_encoder",
            "tc_discriminator"]
from tfdefense.nets.vq_nets import vq_decoder, vq_encoder  # noqa: E402, I001  (CD-VAE ImageNet VQ-VAE)

__all__ += ["vq_decoder", "vq_encoder"]
from tfdefense.nets.fused_batch_norm import FusedBatchNormalization  # noqa: E402, I001

__all__ += ["FusedBatchNormalization"]
