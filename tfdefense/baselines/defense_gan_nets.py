"""Defense-GAN's MNIST generator and critic (WGAN-GP, DCGAN-like).

The architecture of Defense-GAN's official code (``models/dataset_models.py``,
itself Gulrajani et al. 2017's MNIST WGAN-GP), defaults from its
``experiments/cfgs/gans/default.yml``: latent 128, width (NET_DIM) 64, no
batch normalization.

* generator: Dense(4·4·4w) ReLU → reshape 4x4 → Deconv 5x5/2 (2w) ReLU → 8x8
  cropped to 7x7 → Deconv 5x5/2 (w) ReLU → 14x14 → Deconv 5x5/2 (C) sigmoid →
  28x28 in [0, 1];
* critic: Conv 5x5/2 (w) LeakyReLU(0.2) → Conv 5x5/2 (2w) LeakyReLU →
  Conv 5x5/2 (4w) LeakyReLU → 4x4 → Dense(1), no sigmoid (a Wasserstein critic).

Example:
    >>> from tfdefense.baselines import defense_gan_critic, defense_gan_generator
    >>> defense_gan_generator().output_shape, defense_gan_critic().output_shape
    ((None, 28, 28, 1), (None, 1))
"""

from __future__ import annotations

import keras
from keras import layers

from tfdefense.validation import check_positive_int

#: latent size of Defense-GAN's GANs (official code, default.yml LATENT_DIM)
PAPER_LATENT_DIM = 128
#: width of Defense-GAN's MNIST GAN (official code, default.yml NET_DIM)
PAPER_WIDTH = 64


def _check_shape(image_shape):
    if tuple(image_shape[:2]) != (28, 28):
        raise ValueError(f"image_shape: expected (28, 28, C) images, got {tuple(image_shape)}")
    return check_positive_int(image_shape[2], "image_shape channels")


def defense_gan_generator(latent_dim: int = PAPER_LATENT_DIM, width: int = PAPER_WIDTH,
                          image_shape: tuple[int, int, int] = (28, 28, 1),
                          name: str = "defense_gan_generator") -> keras.Model:
    """Latent codes (N, latent_dim) -> images (N, 28, 28, C) in [0, 1]."""
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    width = check_positive_int(width, "width")
    channels = _check_shape(image_shape)
    z = keras.Input((latent_dim,), name="latent")
    h = layers.Dense(4 * 4 * 4 * width, activation="relu")(z)
    h = layers.Reshape((4, 4, 4 * width))(h)
    h = layers.Conv2DTranspose(2 * width, 5, strides=2, padding="same", activation="relu")(h)
    h = layers.Cropping2D(((0, 1), (0, 1)))(h)
    h = layers.Conv2DTranspose(width, 5, strides=2, padding="same", activation="relu")(h)
    images = layers.Conv2DTranspose(channels, 5, strides=2, padding="same",
                                    activation="sigmoid")(h)
    return keras.Model(z, images, name=name)


def defense_gan_critic(width: int = PAPER_WIDTH, image_shape: tuple[int, int, int] = (28, 28, 1),
                       name: str = "defense_gan_critic") -> keras.Model:
    """Images (N, 28, 28, C) in [0, 1] -> Wasserstein critic scores (N, 1)."""
    width = check_positive_int(width, "width")
    _check_shape(image_shape)
    x = keras.Input(tuple(image_shape), name="images")
    h = x
    for filters in (width, 2 * width, 4 * width):
        h = layers.Conv2D(filters, 5, strides=2, padding="same")(h)
        h = layers.LeakyReLU(0.2)(h)
    h = layers.Flatten()(h)
    scores = layers.Dense(1)(h)
    return keras.Model(x, scores, name=name)
