"""Defense-GAN's generator and critic (WGAN-GP, DCGAN-like): MNIST 28×28 and CelebA 64×64.

The architecture of Defense-GAN's official code (``models/dataset_models.py``,
itself Gulrajani et al. 2017's MNIST WGAN-GP), defaults from its
``experiments/cfgs/gans/default.yml``: latent 128, width (NET_DIM) 64, no
batch normalization.

* generator: Dense(4·4·4w) ReLU → reshape 4x4 → Deconv 5x5/2 (2w) ReLU → 8x8
  cropped to 7x7 → Deconv 5x5/2 (w) ReLU → 14x14 → Deconv 5x5/2 (C) sigmoid →
  28x28 in [0, 1];
* critic: Conv 5x5/2 (w) LeakyReLU(0.2) → Conv 5x5/2 (2w) LeakyReLU →
  Conv 5x5/2 (4w) LeakyReLU → 4x4 → Dense(1), no sigmoid (a Wasserstein critic).

For 64×64 images (FM-Defense Table II's CelebA column; Defense-GAN's own CelebA
model is the DCGAN of the same code) one more stride-2 stage on each side:
Dense(4·4·8w) → Deconv 8w→4w, 2w, w (8, 16, 32) → Deconv C (64) sigmoid; critic
Conv w, 2w, 4w, 8w (32, 16, 8, 4) → Dense(1).

Example:
    >>> from tfdefense.baselines import defense_gan_critic, defense_gan_generator
    >>> defense_gan_generator().output_shape, defense_gan_critic().output_shape
    ((None, 28, 28, 1), (None, 1))
    >>> defense_gan_generator(16, 4, (64, 64, 3)).output_shape
    (None, 64, 64, 3)
"""

from __future__ import annotations

import keras
from keras import layers

from tfdefense.validation import check_positive_int

#: latent size of Defense-GAN's GANs (official code, default.yml LATENT_DIM)
PAPER_LATENT_DIM = 128
#: width of Defense-GAN's MNIST GAN (official code, default.yml NET_DIM)
PAPER_WIDTH = 64


#: image side -> the widths (in multiples of w) of the generator's layers after the Dense
_STAGES = {28: (4, 2, 1), 64: (8, 4, 2, 1)}


def _check_shape(shape, name: str) -> tuple[int, int, int]:
    shape = tuple(shape)
    if len(shape) != 3 or shape[0] != shape[1] or shape[0] not in _STAGES:
        raise ValueError(f"{name}: expected (28, 28, C) or (64, 64, C) images, got {shape}")
    return shape[0], shape[1], check_positive_int(shape[2], f"{name} channels")


def defense_gan_generator(latent_dim: int = PAPER_LATENT_DIM, width: int = PAPER_WIDTH,
                          output_shape: tuple[int, int, int] = (28, 28, 1),
                          name: str = "defense_gan_generator") -> keras.Model:
    """Latent codes (N, latent_dim) -> images (N, H, W, C) in [0, 1] of ``output_shape``
    (H, W, C), 28×28 or 64×64 (the name the library's decoders use)."""
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    width = check_positive_int(width, "width")
    side, _, channels = _check_shape(output_shape, "output_shape")
    stages = _STAGES[side]
    z = keras.Input((latent_dim,), name="latent")
    h = layers.Dense(4 * 4 * stages[0] * width, activation="relu")(z)
    h = layers.Reshape((4, 4, stages[0] * width))(h)
    for i, mult in enumerate(stages[1:]):
        h = layers.Conv2DTranspose(mult * width, 5, strides=2, padding="same",
                                   activation="relu")(h)
        if i == 0 and side == 28:  # 8x8 -> 7x7, so that 7 -> 14 -> 28
            h = layers.Cropping2D(((0, 1), (0, 1)))(h)
    images = layers.Conv2DTranspose(channels, 5, strides=2, padding="same",
                                    activation="sigmoid")(h)
    return keras.Model(z, images, name=name)


def defense_gan_critic(width: int = PAPER_WIDTH, input_shape: tuple[int, int, int] = (28, 28, 1),
                       name: str = "defense_gan_critic") -> keras.Model:
    """Images (N, H, W, C) in [0, 1] of ``input_shape`` (H, W, C), 28×28 or 64×64 ->
    Wasserstein critic scores (N, 1)."""
    width = check_positive_int(width, "width")
    input_shape = _check_shape(input_shape, "input_shape")
    x = keras.Input(input_shape, name="images")
    h = x
    for mult in reversed(_STAGES[input_shape[0]]):  # w, 2w, 4w (, 8w)
        h = layers.Conv2D(mult * width, 5, strides=2, padding="same")(h)
        h = layers.LeakyReLU(0.2)(h)
    h = layers.Flatten()(h)
    scores = layers.Dense(1)(h)
    return keras.Model(x, scores, name=name)
