"""FM-Defense networks (FM-Defense Table I): combo-VAE encoder, DGMM, decoder, TC discriminator.

Plain functional Keras models, no losses (DESIGN: nets). Table I gives, for
MNIST/FMNIST,

* Encoder/DGMM: C.ReLU N32,K4,S2 – C.ReLU N32,K4,S2 – C.ReLU N64,K4,S2 –
  C.ReLU N64,K4,S2 – Dense 128 – Dense 2·m (encoder: mean and log-variance of
  the m codes z_s) or Dense K (DGMM: the class-unique features z_u);
* Decoder: Dense.ReLU 128 – Dense.ReLU 64·4·4 ("N64,K4") – C.LReLU N64,K4,S2 –
  C.LReLU N32,K4,S2 – C.LReLU N32,K4,S2 – C N1,K4,S2 (transposed convolutions);
* Face encoder/decoder (CelebA): C.LReLU N64,K7,S1 – C.LReLU N128,K3,S2 –
  C.LReLU N256,K3,S2 – residual blocks of 512 – DC.LReLU N256,K3,S2 –
  DC.LReLU N128,K3,S2 – DC.LReLU N3,K7,S1; the latent codes are the channels
  of a feature map.

Choices where Table I is silent (documented here and as parameters):

* padding "same"; the encoder's Dense 128 uses ReLU as in FactorVAE;
* the decoder's 4 stride-2 upsamplings start from ceil(H/16) × ceil(W/16)
  (2×2 for 28×28, the table's 4×4 being the 64×64 dSprites layout) and the
  output is centre-cropped to H×W; the last layer is a sigmoid because images
  live in [0, 1];
* the decoder takes two inputs ``[z_s, z_u]`` and concatenates them (the
  combo-VAE's class-shared and class-unique codes, §III-D);
* the TC discriminator is not in Table I: FactorVAE's MLP (6 × 1000,
  LeakyReLU 0.2), one logit ℓ = log D/(1 − D) out;
* face variant: the residual blocks' width (512) and count (6) are parameters,
  the encoder's mean and log-variance are two 1×1 convolutions giving
  ``latent_channels`` maps (the paper: 256 channels of 64×64, which Table I's
  strides 1, 2, 2 give for 256×256 faces); the strides are parameters, so
  64×64 faces keep a 64×64 latent map with ``strides=(1, 1, 1)`` (encoder) and
  ``(1, 1)`` (decoder).

Example:
    >>> from tfdefense.nets import fm_decoder, fm_dgmm_network, fm_encoder
    >>> fm_encoder((28, 28, 1), latent_dim=20).output_shape
    (None, 40)
    >>> fm_dgmm_network((28, 28, 1), feature_dim=10).output_shape
    (None, 10)
    >>> fm_decoder(20, 10, (28, 28, 1)).output_shape
    (None, 28, 28, 1)
    >>> from tfdefense.nets import fm_face_encoder
    >>> fm_face_encoder((64, 64, 3), 1, (4, 4, 4), 8, 1, strides=(1, 1, 1)).output_shape
    (None, 64, 64, 2)
"""

from __future__ import annotations

import math

import keras
from keras import layers

from tfdefense.validation import check_positive_int


def _check_shape(input_shape, name: str = "input_shape") -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"{name}: expected (H, W, C), got {shape}")
    for i, s in enumerate(shape):
        check_positive_int(s, f"{name}[{i}]")
    return shape


def _conv_trunk(inputs, filters=(32, 32, 64, 64), dense_units: int = 128):
    h = inputs
    for f in filters:
        h = layers.Conv2D(f, 4, strides=2, padding="same", activation="relu")(h)
    h = layers.Flatten()(h)
    return layers.Dense(dense_units, activation="relu")(h)


def fm_encoder(
    input_shape=(28, 28, 1),
    latent_dim: int = 20,
    filters=(32, 32, 64, 64),
    dense_units: int = 128,
    name: str = "fm_encoder",
) -> keras.Model:
    """E_s of Table I: x -> concat(mean, log-variance) of the m codes z_s, shape (N, 2m).

    Args:
        input_shape: (H, W, C) of images in [0, 1].
        latent_dim: m, the number of class-shared codes (20 MNIST, 10 FMNIST; §IV-A).
        filters: the four stride-2 convolutions (Table I: 32, 32, 64, 64).
        dense_units: the hidden Dense (Table I: 128).
        name: model name.
    """
    input_shape = _check_shape(input_shape)
    check_positive_int(latent_dim, "latent_dim")
    inputs = keras.Input(input_shape, name="images")
    h = _conv_trunk(inputs, filters, dense_units)
    out = layers.Dense(2 * latent_dim, name="mean_log_var")(h)
    return keras.Model(inputs, out, name=name)


def fm_dgmm_network(
    input_shape=(28, 28, 1),
    feature_dim: int = 10,
    filters=(32, 32, 64, 64),
    dense_units: int = 128,
    name: str = "fm_dgmm_network",
) -> keras.Model:
    """The DGMM's feature network of Table I: x -> z_u, shape (N, K).

    Args:
        input_shape: (H, W, C) of images in [0, 1].
        feature_dim: K, the class-unique features (the paper does not give K;
            10 by default, the size of Table I's last Dense per half).
        filters: the four stride-2 convolutions (Table I: 32, 32, 64, 64).
        dense_units: the hidden Dense (Table I: 128).
        name: model name.
    """
    input_shape = _check_shape(input_shape)
    check_positive_int(feature_dim, "feature_dim")
    inputs = keras.Input(input_shape, name="images")
    h = _conv_trunk(inputs, filters, dense_units)
    out = layers.Dense(feature_dim, name="z_u")(h)
    return keras.Model(inputs, out, name=name)


def fm_decoder(
    latent_dim: int = 20,
    feature_dim: int = 10,
    output_shape=(28, 28, 1),
    filters=(64, 32, 32),
    dense_units: int = 128,
    base_filters: int = 64,
    name: str = "fm_decoder",
) -> keras.Model:
    """Decoder of Table I: [z_s (N, m), z_u (N, K)] -> images (N, H, W, C) in [0, 1].

    Args:
        latent_dim: m, size of z_s.
        feature_dim: K, size of z_u (0 for a decoder on z_s alone; it still takes
            two inputs, the second of width 0).
        output_shape: (H, W, C) of the images.
        filters: the three hidden transposed convolutions (Table I: 64, 32, 32).
        dense_units: first Dense (Table I: 128).
        base_filters: channels of the reshaped Dense ("N64,K4": 64).
        name: model name.
    """
    output_shape = _check_shape(output_shape, "output_shape")
    check_positive_int(latent_dim, "latent_dim")
    check_positive_int(feature_dim, "feature_dim", minimum=0)
    n_up = len(filters) + 1
    h0 = math.ceil(output_shape[0] / 2**n_up)
    w0 = math.ceil(output_shape[1] / 2**n_up)
    z_s = keras.Input((latent_dim,), name="z_s")
    z_u = keras.Input((feature_dim,), name="z_u")
    h = layers.Concatenate()([z_s, z_u])
    h = layers.Dense(dense_units, activation="relu")(h)
    h = layers.Dense(h0 * w0 * base_filters, activation="relu")(h)
    h = layers.Reshape((h0, w0, base_filters))(h)
    for f in filters:
        h = layers.Conv2DTranspose(f, 4, strides=2, padding="same")(h)
        h = layers.LeakyReLU(0.2)(h)
    h = layers.Conv2DTranspose(output_shape[2], 4, strides=2, padding="same")(h)
    dh, dw = h0 * 2**n_up - output_shape[0], w0 * 2**n_up - output_shape[1]
    if dh or dw:
        h = layers.Cropping2D(((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)))(h)
    out = layers.Activation("sigmoid", name="images")(h)
    return keras.Model([z_s, z_u], out, name=name)


def tc_discriminator(
    latent_dim: int = 20,
    units: int = 1000,
    depth: int = 6,
    name: str = "tc_discriminator",
) -> keras.Model:
    """FactorVAE's total-correlation discriminator: z (N, m) -> logit ℓ = log D/(1−D), (N, 1).

    D(z) is the probability that z comes from q(z) rather than from the
    product of marginals q̄(z) (permute-dims); Eq 6–8 use log D/(1 − D) = ℓ.

    Args:
        latent_dim: m.
        units: hidden width (FactorVAE: 1000).
        depth: hidden layers (FactorVAE: 6).
        name: model name.
    """
    check_positive_int(latent_dim, "latent_dim")
    check_positive_int(units, "units")
    check_positive_int(depth, "depth")
    z = keras.Input((latent_dim,), name="z")
    h = z
    for _ in range(depth):
        h = layers.Dense(units)(h)
        h = layers.LeakyReLU(0.2)(h)
    out = layers.Dense(1, name="logit")(h)
    return keras.Model(z, out, name=name)


def _residual_block(h, filters: int):
    skip = h
    h = layers.Conv2D(filters, 3, padding="same")(h)
    h = layers.LeakyReLU(0.2)(h)
    h = layers.Conv2D(filters, 3, padding="same")(h)
    h = layers.Add()([h, skip])
    return layers.LeakyReLU(0.2)(h)


def fm_face_encoder(
    input_shape=(64, 64, 3),
    latent_channels: int = 256,
    filters=(64, 128, 256),
    residual_filters: int = 512,
    residual_blocks: int = 3,
    strides=(1, 2, 2),
    name: str = "fm_face_encoder",
) -> keras.Model:
    """Face encoder of Table I: x -> concat(mean, log-variance) maps, (N, H/s, W/s, 2·channels).

    Each of the ``latent_channels`` channels is one latent factor (§III-A);
    a morph shifts all its elements by the same amount. s is the product of
    ``strides`` (Table I: 1·2·2 = 4, which maps the paper's faces to 64×64 maps;
    ``strides=(1, 1, 1)`` keeps a 64×64 image's resolution, a 64×64 latent map).

    Args:
        input_shape: (H, W, C), H and W divisible by s.
        latent_channels: number of latent channels (paper: 256, one used for detection).
        filters: C.LReLU K7, K3, K3 (Table I: 64, 128, 256).
        residual_filters: width of the residual blocks (Table I: 512).
        residual_blocks: how many residual blocks on the encoder side (Table I
            lists six between encoder and decoder; three each by default).
        strides: the strides of the three convolutions (Table I: 1, 2, 2).
        name: model name.
    """
    input_shape = _check_shape(input_shape)
    check_positive_int(latent_channels, "latent_channels")
    strides = tuple(strides)
    if len(strides) != 3:
        raise ValueError(f"strides: expected three strides, got {strides}")
    for i, s in enumerate(strides):
        check_positive_int(s, f"strides[{i}]")
    down = math.prod(strides)
    if input_shape[0] % down or input_shape[1] % down:
        raise ValueError(f"input_shape: H and W must be divisible by {down}, got {input_shape}")
    inputs = keras.Input(input_shape, name="images")
    h = inputs
    for f, k, s in zip(filters, (7, 3, 3), strides, strict=True):
        h = layers.Conv2D(f, k, strides=s, padding="same")(h)
        h = layers.LeakyReLU(0.2)(h)
    h = layers.Conv2D(residual_filters, 1)(h)
    for _ in range(residual_blocks):
        h = _residual_block(h, residual_filters)
    out = layers.Conv2D(2 * latent_channels, 1, name="mean_log_var")(h)
    return keras.Model(inputs, out, name=name)


def fm_face_decoder(
    latent_shape=(16, 16, 256),
    feature_dim: int = 10,
    output_channels: int = 3,
    filters=(256, 128),
    residual_filters: int = 512,
    residual_blocks: int = 3,
    strides=(2, 2),
    name: str = "fm_face_decoder",
) -> keras.Model:
    """Face decoder of Table I: [z_s maps, z_u (N, K)] -> images (N, s·h, s·w, C) in [0, 1].

    z_u is broadcast over the map and concatenated as extra channels; s is the
    product of ``strides`` (Table I: 2·2 = 4).

    Args:
        latent_shape: (h, w, channels) of z_s.
        feature_dim: K (0: no class-unique input).
        output_channels: image channels.
        filters: DC.LReLU K3 ×2 (Table I: 256, 128); then DC K7 S1 to C.
        residual_filters: width of the residual blocks (Table I: 512).
        residual_blocks: residual blocks on the decoder side.
        strides: the strides of the ``filters`` layers (Table I: 2, 2; (1, 1) for a
            latent map at the image's resolution).
        name: model name.
    """
    latent_shape = _check_shape(latent_shape, "latent_shape")
    check_positive_int(feature_dim, "feature_dim", minimum=0)
    strides = tuple(strides)
    if len(strides) != len(tuple(filters)):
        raise ValueError(f"strides: expected one per filter layer ({len(tuple(filters))}), "
                         f"got {strides}")
    for i, s in enumerate(strides):
        check_positive_int(s, f"strides[{i}]")
    z_s = keras.Input(latent_shape, name="z_s")
    z_u = keras.Input((feature_dim,), name="z_u")
    tiled = layers.Reshape((1, 1, feature_dim))(z_u)
    tiled = layers.UpSampling2D(latent_shape[:2])(tiled)
    h = layers.Concatenate()([z_s, tiled])
    h = layers.Conv2D(residual_filters, 1)(h)
    for _ in range(residual_blocks):
        h = _residual_block(h, residual_filters)
    for f, s in zip(filters, strides, strict=True):
        h = layers.Conv2DTranspose(f, 3, strides=s, padding="same")(h)
        h = layers.LeakyReLU(0.2)(h)
    h = layers.Conv2DTranspose(output_channels, 7, padding="same")(h)
    out = layers.Activation("sigmoid", name="images")(h)
    return keras.Model([z_s, z_u], out, name=name)
