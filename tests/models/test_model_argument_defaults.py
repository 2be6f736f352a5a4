"""The models' argument defaults and bounds that the paper fixes: CD-VAE's default CIFAR
classifier is a WRN of width 10 (WRN-28-10, CD-VAE §4), and FM-Defense's γ (Eq 8's weight of
L_TC) may be any non-negative number, 0 and fractions included.
"""

import re

import keras
import numpy as np
import pytest
from hand_models import SHAPE, constant_dense, flat_model

from tfdefense.models import CDVAE, DGMM, ComboVAE


def test_the_default_cifar_classifier_is_a_width_10_wide_resnet():
    # WRN-k: stage widths 16k, 32k, 64k; with k = 10 the last stage has 640 channels, which
    # global pooling hands to the logits layer (640 x 10). Depth 10 (one block per stage)
    # keeps it small; the width is the default's.
    model = CDVAE.for_dataset("cifar10", latent_dim=8, width=4, wrn_depth=10, seed=0)
    assert model.classifier.get_layer("logits").kernel.shape == (640, 10)
    assert model.classifier.name == "classifier"


def hand_combo_vae(**kwargs):
    """The smallest ComboVAE: z_s = (x00, x01)-free zeros, z_u from a zero-kernel DGMM."""
    dgmm = DGMM(flat_model(1, np.zeros((4, 1)), [0.5]), num_classes=2)
    z_s, z_u = keras.Input((1,)), keras.Input((1,))
    dec = keras.Model([z_s, z_u], keras.layers.Reshape(SHAPE)(
        constant_dense(4, np.zeros((2, 4)), np.zeros(4))(keras.layers.Concatenate()([z_s, z_u]))))
    return ComboVAE(flat_model(2, np.zeros((4, 2)), [0.0, 0.0]), dec, dgmm, None, **kwargs)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 40.0])
def test_gamma_accepts_zero_and_fractions(gamma):
    assert hand_combo_vae(gamma=gamma).gamma == gamma


def test_a_negative_gamma_is_refused_with_its_whole_message():
    with pytest.raises(ValueError, match="^" + re.escape(
            "gamma: expected a value in [0.0, inf], got -1.0") + "$"):
        hand_combo_vae(gamma=-1.0)
