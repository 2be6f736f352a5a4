"""Encoder and decoder of CD-VAE's ImageNet generator (a VQ-VAE), resolution-generic.

The official ``CVAE_imagenet`` of kai-wen-yang/CD-VAE, rebuilt in Keras:

* encoder: conv 4x4 s2 C→d, BN, LeakyReLU; conv 4x4 s2 d→d, BN, LeakyReLU;
  residual block, BN, residual block, BN → z_e, an (H/4, W/4, d) grid of
  d-dimensional vectors that the codebook quantizes (``models.vq``);
* decoder: z (flattened grid) → residual block, BN, residual block;
  transposed conv 4x4 s2 d→d, BN, LeakyReLU; transposed conv 4x4 s2 d→C;
  tanh; a per-channel affine BatchNorm (the official ``L_bn``) that lets
  G(x) match the data's normalised scale.

A residual block is x + conv1x1(LeakyReLU(conv3x3(LeakyReLU(x)))) (official
``ResBlock`` without BN). Initialisation follows the official code: conv
kernels N(0, 0.02), biases 0, and the encoder's last BN scale 1/40, so z_e
starts at the codebook's N(0, 0.02) scale; BatchNorm keeps PyTorch's defaults
(eps 1e-5, momentum 0.1 = Keras 0.9), so the inference statistics catch up as
fast as the official model's.

The decoder takes the quantized grid *flattened*, (N, H/4·W/4·d): the latent
z of every CD-VAE in this library is a vector per image, which the
experiments (δ_z, Pearson r of z and z′) rely on. d = 64 (the CD-VAE
authors' setting for ImageNet). Any H, W divisible by 4 works: 224 (the
paper preset), 64 or 32 (CPU runs and tests); 299, the resolution the paper
names, is not divisible by 4 and is refused (the decoder's output would be
300x300 and R(x) = x − G(x) would not exist; see ``tfdefense.data_imagenet``).

Example:
    >>> from tfdefense.nets import vq_decoder, vq_encoder
    >>> vq_encoder((32, 32, 3), d=8).output_shape
    (None, 8, 8, 8)
    >>> vq_decoder((32, 32, 3), d=8).input_shape, vq_decoder((32, 32, 3), d=8).output_shape
    ((None, 512), (None, 32, 32, 3))
"""

from __future__ import annotations

import keras
from keras import layers

from tfdefense.nets.fused_batch_norm import batch_normalization

#: code dimension / channel width of the official ImageNet VQ-VAE (CD-VAE authors)
IMAGENET_D = 64
#: the encoder's last BatchNorm scale in the official code
_LAST_BN_SCALE = 1.0 / 40.0
#: BatchNorm of the official ``CVAE_imagenet`` (kai-wen-yang/CD-VAE @084c766 networks/vae.py:
#: ``nn.BatchNorm2d(d)`` and ``L_bn = nn.BatchNorm2d(num_channels)``, no arguments): PyTorch's
#: defaults eps 1e-5 and momentum 0.1, which weighs the batch (running = 0.9·running + 0.1·batch),
#: i.e. Keras momentum 0.9
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def _kernel_init():
    return keras.initializers.RandomNormal(0.0, 0.02)


def check_vq_shape(shape: tuple[int, ...], name: str = "input_shape") -> tuple[int, int, int]:
    """(H, W, C) with H and W positive multiples of 4, else ``ValueError`` saying what to do."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1 or shape[0] % 4 or shape[1] % 4:
        raise ValueError(
            f"{name}: the VQ-VAE halves the resolution twice, so it expects (H, W, C) with H and W "
            f"divisible by 4 (e.g. 224, 64, 32), got {shape}; resize or crop the images "
            "(299x299 would come back as 300x300)"
        )
    return shape


def _check_d(d: int) -> int:
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d: expected a positive int (code dimension), got {d!r}")
    return d


def _conv(filters, kernel, name, strides=1, transpose=False):
    cls = layers.Conv2DTranspose if transpose else layers.Conv2D
    return cls(filters, kernel, strides=strides, padding="same", kernel_initializer=_kernel_init(),
               name=name)


def _batch_norm(name: str, **kwargs) -> layers.BatchNormalization:
    return batch_normalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name, **kwargs)


def vq_residual_block(h, channels: int, name: str):
    """x + conv1x1(LeakyReLU(conv3x3(LeakyReLU(x)))) (official ``ResBlock``, bn=False)."""
    y = layers.LeakyReLU(negative_slope=0.01, name=f"{name}_act1")(h)
    y = _conv(channels, 3, f"{name}_conv3")(y)
    y = layers.LeakyReLU(negative_slope=0.01, name=f"{name}_act2")(y)
    y = _conv(channels, 1, f"{name}_conv1")(y)
    return layers.Add(name=f"{name}_add")([h, y])


def vq_encoder(input_shape: tuple[int, int, int] = (224, 224, 3), d: int = IMAGENET_D,
               name: str = "vq_encoder") -> keras.Model:
    """Normalised images (N, H, W, C) → z_e (N, H/4, W/4, d)."""
    input_shape = check_vq_shape(input_shape)
    d = _check_d(d)
    inputs = keras.Input(input_shape, name="images")
    h = _conv(d, 4, "conv1", strides=2)(inputs)
    h = _batch_norm("bn1")(h)
    h = layers.LeakyReLU(negative_slope=0.01, name="act1")(h)
    h = _conv(d, 4, "conv2", strides=2)(h)
    h = _batch_norm("bn2")(h)
    h = layers.LeakyReLU(negative_slope=0.01, name="act2")(h)
    h = vq_residual_block(h, d, "res1")
    h = _batch_norm("bn3")(h)
    h = vq_residual_block(h, d, "res2")
    z_e = _batch_norm("bn4", gamma_initializer=keras.initializers.Constant(_LAST_BN_SCALE))(h)
    return keras.Model(inputs, z_e, name=name)


def vq_decoder(output_shape: tuple[int, int, int] = (224, 224, 3), d: int = IMAGENET_D,
               name: str = "vq_decoder") -> keras.Model:
    """Flattened quantized grid (N, H/4·W/4·d) → G(x) (N, H, W, C), normalised scale."""
    output_shape = check_vq_shape(output_shape, "output_shape")
    d = _check_d(d)
    fh, fw, channels = output_shape[0] // 4, output_shape[1] // 4, output_shape[2]
    z = keras.Input((fh * fw * d,), name="z")
    h = layers.Reshape((fh, fw, d), name="grid")(z)
    h = vq_residual_block(h, d, "res1")
    h = _batch_norm("bn1")(h)
    h = vq_residual_block(h, d, "res2")
    h = _conv(d, 4, "deconv1", strides=2, transpose=True)(h)
    h = _batch_norm("bn2")(h)
    h = layers.LeakyReLU(negative_slope=0.01, name="act")(h)
    h = _conv(channels, 4, "deconv2", strides=2, transpose=True)(h)
    h = layers.Activation("tanh", name="tanh")(h)
    out = _batch_norm("l_bn")(h)
    return keras.Model(z, out, name=name)
