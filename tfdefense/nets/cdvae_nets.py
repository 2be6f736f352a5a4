"""Encoder and decoder of the CD-VAE generator G, as the official code builds them.

The CIFAR VAE of kai-wen-yang/CD-VAE (``CVAE_cifar``), rebuilt in Keras:

* encoder: conv 4x4 s2 C→d/2, BN, ReLU; conv 4x4 s2 d/2→d, BN, ReLU;
  residual block; BN; residual block; flatten; dense μ and dense log σ² heads;
* decoder: dense back to (H/4, W/4, d); residual block, BN, residual block, BN;
  transposed conv 4x4 s2 d→d/2, BN, LeakyReLU; transposed conv 4x4 s2 d/2→C;
  tanh; a per-channel affine BatchNorm (the official ``xi_bn``), which lets
  G(x) leave tanh's range and match the data's normalised scale.

A residual block is x + conv1x1(LeakyReLU(BN(conv3x3(LeakyReLU(x))))).
Every BatchNorm has the official ``nn.BatchNorm2d`` defaults (``BN_EPSILON``,
``BN_MOMENTUM``), also in the 28x28 variant, which follows the same architecture.
CIFAR (32x32x3): d = 32, latent 8·8·32 = 2048 (the official setting). The
28x28x1 variant of the same family has a 7x7x32 feature map; its default
latent is 64 dimensions, a tighter bottleneck for the simpler data (our
choice; the paper has no MNIST model).

Example:
    >>> from tfdefense.nets import cdvae_encoder, cdvae_decoder
    >>> enc = cdvae_encoder((28, 28, 1), latent_dim=16)
    >>> dec = cdvae_decoder((28, 28, 1), latent_dim=16)
    >>> [t.shape for t in enc.outputs], dec.output_shape
    ([(None, 16), (None, 16)], (None, 28, 28, 1))
"""

from __future__ import annotations

import keras
from keras import layers

from tfdefense.nets.fused_batch_norm import batch_normalization

#: (feature width d, latent size) per input shape, from the official code (CIFAR)
#: and our choice (28x28)
CIFAR_SETTINGS = {"d": 32, "latent_dim": 2048}
MNIST_SETTINGS = {"d": 32, "latent_dim": 64}

#: BatchNorm of the official ``CVAE_cifar`` (kai-wen-yang/CD-VAE @0c92c65 networks/vae.py:118
#: ``ResBlock(bn=True)``, :163-185 encoder/decoder/``xi_bn``; networks/adv_vae.py's copy too):
#: ``nn.BatchNorm2d(c)``, so PyTorch's defaults eps 1e-5 and momentum 0.1. PyTorch's
#: momentum weighs the batch (running = 0.9·running + 0.1·batch), Keras's the old value, so 0.1
#: there is 0.9 here. (Keras's defaults, 1e-3 and 0.99, were this module's before.)
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def batch_norm(name: str) -> layers.BatchNormalization:
    """A BatchNormalization with the official CD-VAE settings (``BN_EPSILON``, ``BN_MOMENTUM``);
    TensorFlow's fused kernel in a model built under bfloat16 (``fused_batch_norm``), Keras's
    own layer otherwise."""
    return batch_normalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def default_settings(input_shape: tuple[int, int, int]) -> dict[str, int]:
    """``d`` and ``latent_dim`` for an input shape: official for 32x32, ours for 28x28."""
    if tuple(input_shape[:2]) == (28, 28):
        return dict(MNIST_SETTINGS)
    return dict(CIFAR_SETTINGS)


def _check_shape(input_shape: tuple[int, int, int]) -> None:
    if len(input_shape) != 3 or input_shape[0] % 4 or input_shape[1] % 4:
        raise ValueError(
            f"input_shape: expected (H, W, C) with H and W divisible by 4, got {tuple(input_shape)}"
        )


def residual_block(h, channels: int, name: str):
    """x + conv1x1(LeakyReLU(BN(conv3x3(LeakyReLU(x))))) (official ``ResBlock(bn=True)``)."""
    y = layers.LeakyReLU(negative_slope=0.01, name=f"{name}_act1")(h)
    y = layers.Conv2D(channels, 3, padding="same", name=f"{name}_conv3")(y)
    y = batch_norm(f"{name}_bn")(y)
    y = layers.LeakyReLU(negative_slope=0.01, name=f"{name}_act2")(y)
    y = layers.Conv2D(channels, 1, name=f"{name}_conv1")(y)
    return layers.Add(name=f"{name}_add")([h, y])


def cdvae_encoder(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    d: int | None = None,
    latent_dim: int | None = None,
    name: str = "encoder",
) -> keras.Model:
    """The CD-VAE encoder: images (normalised) → (μ, log σ²), each (N, latent_dim)."""
    _check_shape(input_shape)
    settings = default_settings(input_shape)
    d = d or settings["d"]
    latent_dim = latent_dim or settings["latent_dim"]
    inputs = keras.Input(input_shape, name="images")
    h = layers.Conv2D(d // 2, 4, strides=2, padding="same", use_bias=False, name="conv1")(inputs)
    h = batch_norm("bn1")(h)
    h = layers.ReLU(name="relu1")(h)
    h = layers.Conv2D(d, 4, strides=2, padding="same", use_bias=False, name="conv2")(h)
    h = batch_norm("bn2")(h)
    h = layers.ReLU(name="relu2")(h)
    h = residual_block(h, d, "res1")
    h = batch_norm("bn3")(h)
    h = residual_block(h, d, "res2")
    h = layers.Flatten(name="flatten")(h)
    mu = layers.Dense(latent_dim, name="mu")(h)
    log_var = layers.Dense(latent_dim, name="log_var")(h)
    return keras.Model(inputs, [mu, log_var], name=name)


def cdvae_decoder(
    output_shape: tuple[int, int, int] = (32, 32, 3),
    d: int | None = None,
    latent_dim: int | None = None,
    name: str = "decoder",
) -> keras.Model:
    """The CD-VAE decoder: z (N, latent_dim) → G(x) in the normalised image scale."""
    _check_shape(output_shape)
    settings = default_settings(output_shape)
    d = d or settings["d"]
    latent_dim = latent_dim or settings["latent_dim"]
    fh, fw, channels = output_shape[0] // 4, output_shape[1] // 4, output_shape[2]
    z = keras.Input((latent_dim,), name="z")
    h = layers.Dense(fh * fw * d, name="project")(z)
    h = layers.Reshape((fh, fw, d), name="reshape")(h)
    h = residual_block(h, d, "res1")
    h = batch_norm("bn1")(h)
    h = residual_block(h, d, "res2")
    h = batch_norm("bn2")(h)
    h = layers.Conv2DTranspose(d // 2, 4, strides=2, padding="same", use_bias=False,
                               name="deconv1")(h)
    h = batch_norm("bn3")(h)
    h = layers.LeakyReLU(negative_slope=0.01, name="act")(h)
    h = layers.Conv2DTranspose(channels, 4, strides=2, padding="same", use_bias=False,
                               name="deconv2")(h)
    h = layers.Activation("tanh", name="tanh")(h)
    out = batch_norm("xi_bn")(h)
    return keras.Model(z, out, name=name)
