"""The smallest networks each model of ``tfdefense.models`` accepts, on 2x2x1 images: for the
tests of the models' argument checks, defaults and inference paths (importable from any test,
as ``hand_models``, whose ``SHAPE``, ``constant_dense`` and ``flat_model`` they build on)."""

from __future__ import annotations

import keras
import numpy as np
from hand_models import SHAPE, constant_dense, flat_model


def gaussian_encoder(latent: int = 1) -> keras.Model:
    """x -> [μ, log σ²], both Dense(latent) with zero kernels and biases."""
    x = keras.Input(SHAPE)
    flat = keras.layers.Flatten()(x)
    zeros = (np.zeros((4, latent)), np.zeros(latent))
    return keras.Model(x, [constant_dense(latent, *zeros)(flat), constant_dense(latent, *zeros)(flat)])


def image_decoder(latent: int = 1, out_shape: tuple[int, ...] = SHAPE, *extra) -> keras.Model:
    """z (latent,) -> Dense(prod(out_shape)) with zero weights -> ``extra`` -> reshape."""
    z = keras.Input((latent,))
    units = int(np.prod(out_shape))
    out = constant_dense(units, np.zeros((latent, units)), np.zeros(units))(z)
    for layer in extra:
        out = layer(out)
    return keras.Model(z, keras.layers.Reshape(out_shape)(out))


def classifier(classes: int = 2, shape: tuple[int, ...] = SHAPE, *extra) -> keras.Model:
    """Flatten -> Dense(classes) with zero weights -> ``extra`` layers."""
    size = int(np.prod(shape))
    return flat_model(classes, np.zeros((size, classes)), np.zeros(classes), *extra, shape=shape)


def cdvae_parts(latent: int = 1) -> dict[str, keras.Model]:
    """The encoder, decoder and classifier of a hand CD-VAE."""
    return {"encoder": gaussian_encoder(latent), "decoder": image_decoder(latent),
            "classifier": classifier()}


def grid_encoder(d: int = 2) -> keras.Model:
    """x -> z_e of shape (N, 1, 1, d): a 1x1 grid of one d-vector (a VQ-VAE encoder)."""
    x = keras.Input(SHAPE)
    dense = constant_dense(d, np.zeros((4, d)), np.zeros(d))(keras.layers.Flatten()(x))
    return keras.Model(x, keras.layers.Reshape((1, 1, d))(dense))


def pixel_cdvae(row, clf: keras.Model):
    """A CD-VAE with μ(x) = 1, log σ² = ln 0.25 (zero kernels) and the decoder g̃ = z·``row``,
    in pixel scale G = 0.25·g̃ + 0.5 (normalisation mean 0.5, std 0.25): at inference (z = μ =
    1) G = 0.25·row + 0.5; ``clf`` is its classifier."""
    import math

    from tfdefense.models import CDVAE

    x = keras.Input(SHAPE)
    flat = keras.layers.Flatten()(x)
    enc = keras.Model(x, [constant_dense(1, np.zeros((4, 1)), [1.0])(flat),
                          constant_dense(1, np.zeros((4, 1)), [math.log(0.25)])(flat)])
    z = keras.Input((1,))
    dec = keras.Model(z, keras.layers.Reshape(SHAPE)(constant_dense(4, [list(row)], np.zeros(4))(z)))
    return CDVAE(enc, dec, clf, beta=0.2, gamma=2.0, normalization_mean=(0.5,),
                 normalization_std=(0.25,))
