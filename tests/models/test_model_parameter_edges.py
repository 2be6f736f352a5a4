"""The models' parameter bounds at their edges: the edge value itself is accepted where the
bound is closed (0 for a weight, 1.0 for eps, 1 step, 2 classes or codes), and refused where it
is open; just outside is refused with the message matched whole in
tests/models/test_model_messages_whole.py.
"""

import re

import keras
import numpy as np
import pytest
from hand_model_parts import cdvae_parts, classifier, grid_encoder, image_decoder
from hand_models import flat_model

from tfdefense.models import (
    CDVAE,
    DGMM,
    VQCDVAE,
    AdversarialCDVAE,
    ComboVAE,
    PGDAdversarialTraining,
    VectorQuantizer,
)


@pytest.mark.parametrize("name", ["beta", "gamma", "reconstruction_weight", "mixup_alpha"])
def test_cdvae_weights_may_be_zero(name):
    model = CDVAE(**cdvae_parts(), **{name: 0.0})
    value = getattr(model, name)
    assert float(value.numpy() if hasattr(value, "numpy") else value) == 0.0


@pytest.mark.parametrize("kwargs", [
    {"eps": 1.0}, {"attack_steps": 1}, {"margin": 0.0}, {"clean_weight": 0.0},
    {"attack_step_size": 1e-6}, {"kappa": 1e-6},
])
def test_adversarial_cdvae_accepts_each_closed_edge(kwargs):
    model = AdversarialCDVAE(**cdvae_parts(), generated_classifier=classifier(), **kwargs)
    (name, value), = kwargs.items()
    assert getattr(model, name) == value


@pytest.mark.parametrize("kwargs", [
    {"eps": 1.0}, {"attack_steps": 1}, {"clean_weight": 0.0}, {"attack_step_size": 1e-6},
])
def test_pgd_training_accepts_each_closed_edge(kwargs):
    model = PGDAdversarialTraining(classifier(), **kwargs)
    (name, value), = kwargs.items()
    assert getattr(model, name) == value


def test_pgd_training_accepts_two_classes_and_refuses_one():
    assert PGDAdversarialTraining(classifier(2)).num_classes == 2
    with pytest.raises(ValueError, match=re.escape("got output shape (None, 1)") + "$"):
        PGDAdversarialTraining(classifier(1))


def test_vector_quantizer_accepts_two_codes_of_one_dimension():
    layer = VectorQuantizer(num_codes=2, code_dim=1, ema=True, decay=0.5, epsilon=1e-12)
    layer.build((None, 1, 1, 1))
    assert tuple(layer.codebook.shape) == (2, 1)


@pytest.mark.parametrize("decay", [1e-6, 1.0 - 1e-6])
def test_vector_quantizer_decay_just_inside_the_open_unit_interval(decay):
    assert VectorQuantizer(4, 2, decay=decay).decay == decay


def test_vqcdvae_commitment_weight_may_be_zero():
    model = VQCDVAE(grid_encoder(2), image_decoder(2), classifier(), num_codes=2,
                    commitment_weight=0.0)
    assert model.commitment_weight == 0.0 and model.quantizer.num_codes == 2


def test_dgmm_edges_two_classes_and_zero_weights():
    model = DGMM(flat_model(1, np.zeros((4, 1)), [0.5]), num_classes=2, lambda_lkd=0.0,
                 margin=0.0)
    assert tuple(model.means.shape) == (2, 1)
    assert model.lambda_lkd == 0.0 and model.margin == 0.0


def test_combo_vae_beta_may_be_zero():
    encoder = flat_model(2, np.zeros((4, 2)), [0.0, 0.0])
    dgmm = DGMM(flat_model(1, np.zeros((4, 1)), [0.5]), num_classes=2)
    z_s, z_u = keras.Input((1,)), keras.Input((1,))
    decoder = keras.Model([z_s, z_u], keras.layers.Reshape((2, 2, 1))(
        keras.layers.Dense(4)(keras.layers.Concatenate()([z_s, z_u]))))
    assert ComboVAE(encoder, decoder, dgmm, beta=0.0).beta == 0.0
