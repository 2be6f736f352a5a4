"""Every argument check of tfdefense.models, matched whole (``^…$``) as the user reads it, on
the smallest hand networks (2x2x1 images): the message names the argument, the bound or the
choices, and what came. A bound's message prints its interval, so the whole message also pins
the bound and whether it is open or closed; the edge value itself is accepted (below).
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from hand_model_parts import cdvae_parts, classifier, gaussian_encoder, grid_encoder, image_decoder
from hand_models import SHAPE, flat_model

from tfdefense.models import (
    CDVAE,
    DGMM,
    VQCDVAE,
    AdversarialCDVAE,
    ComboVAE,
    PGDAdversarialTraining,
    VectorQuantizer,
)
from tfdefense.models.combo_vae import reconstruction_loss


def whole(message):
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


# ------------------------------------------------------------------ CDVAE
def cdvae(**kwargs):
    return CDVAE(**cdvae_parts(), **kwargs)


@pytest.mark.parametrize("name", ["beta", "gamma", "reconstruction_weight", "mixup_alpha"])
def test_cdvae_weights_are_non_negative(name):
    with whole(f"{name}: expected a value in [0.0, inf], got -1.0"):
        cdvae(**{name: -1.0})


@pytest.mark.parametrize("kwargs, message", [
    ({"classifier_input": "x"},
     "classifier_input: expected one of ('residual', 'input', 'generated'), got 'x'"),
    ({"normalization_mean": (0.1, 0.2)}, "normalization_mean: expected 1 or 1 values, got 2"),
    ({"normalization_std": (0.5, 0.5)}, "normalization_std: expected 1 or 1 values, got 2"),
    ({"normalization_std": (0.0,)}, "normalization_std: expected positive values, got (0.0,)"),
])
def test_cdvae_settings_messages(kwargs, message):
    with whole(message):
        cdvae(**kwargs)


def test_cdvae_decoder_must_give_the_encoders_image_shape():
    with whole("decoder: expected output shape (2, 2, 1) (the encoder's input), got (4, 1, 1)"):
        CDVAE(gaussian_encoder(), image_decoder(1, (4, 1, 1)), classifier())


def test_cdvae_for_dataset_names_its_classifier_choices():
    with whole("classifier: expected 'auto', 'small_cnn', 'wrn' or a keras.Model, got 'vgg'"):
        CDVAE.for_dataset("mnist_5k", latent_dim=2, width=4, classifier="vgg")


# ------------------------------------------------------------------ AdversarialCDVAE
def adversarial(d_g=None, **kwargs):
    return AdversarialCDVAE(**cdvae_parts(), generated_classifier=d_g or classifier(), **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": 0.0}, "eps: expected a value in (0.0, 1.0], got 0.0"),
    ({"eps": 1.5}, "eps: expected a value in (0.0, 1.0], got 1.5"),
    ({"attack_steps": 0}, "attack_steps: expected an integer >= 1, got 0"),
    ({"attack_steps": 2.5}, "attack_steps: expected an integer >= 1, got 2.5"),
    ({"attack_step_size": 0.0}, "attack_step_size: expected a value in (0.0, inf], got 0.0"),
    ({"kappa": 0.0}, "kappa: expected a value in (0.0, inf], got 0.0"),
    ({"margin": -1.0}, "margin: expected a value in [0.0, inf], got -1.0"),
    ({"clean_weight": -1.0}, "clean_weight: expected a value in [0.0, inf], got -1.0"),
    ({"objective": "both"}, "objective: expected one of ('paper', 'official'), got 'both'"),
    ({"reconstruction_target": "both"},
     "reconstruction_target: expected one of ('adversarial', 'clean'), got 'both'"),
    ({"attack_only_correct": "yes"}, "attack_only_correct: expected True or False, got 'yes'"),
])
def test_adversarial_cdvae_hyperparameter_messages(kwargs, message):
    with whole(message):
        adversarial(**kwargs)


def test_adversarial_cdvae_generated_classifier_messages():
    with whole("generated_classifier: expected a keras.Model, got 'd_g'"):
        AdversarialCDVAE(**cdvae_parts(), generated_classifier="d_g")
    with whole("generated_classifier: expected input shape (2, 2, 1) (G(x)'s), got (3, 3, 1)"):
        adversarial(classifier(2, (3, 3, 1)))
    with whole("generated_classifier: expected output shape (2,) (D's number of classes), "
               "got (3,)"):
        adversarial(classifier(3))


def test_adversarial_cdvae_starts_only_from_a_cdvae_of_its_architecture():
    with whole("cdvae: expected a tfdefense.models.CDVAE, got Functional"):
        AdversarialCDVAE.from_cdvae(classifier(), classifier())
    model = adversarial()
    with whole("cdvae: expected a tfdefense.models.CDVAE, got Functional"):
        model.load_cdvae_weights(classifier())
    # the other CD-VAE's latent is 2 wide: its encoder's two Dense layers have kernels (4, 2)
    # and biases (2,), this model's (4, 1) and (1,)
    other = CDVAE(**cdvae_parts(latent=2))
    with whole("cdvae: starting weights of another architecture: its encoder has weight shapes "
               "[(4, 2), (2,), (4, 2), (2,)] (4 tensors), this model's encoder expects "
               "[(4, 1), (1,), (4, 1), (1,)] (4 tensors)"):
        model.load_cdvae_weights(other)


# ------------------------------------------------------------------ PGDAdversarialTraining
@pytest.mark.parametrize("kwargs, message", [
    ({"eps": 0.0}, "eps: expected a value in (0.0, 1.0], got 0.0"),
    ({"eps": 2.0}, "eps: expected a value in (0.0, 1.0], got 2.0"),
    ({"attack_steps": 0}, "attack_steps: expected an integer >= 1, got 0"),
    ({"attack_step_size": 0.0}, "attack_step_size: expected a value in (0.0, inf], got 0.0"),
    ({"clean_weight": -0.5}, "clean_weight: expected a value in [0.0, inf], got -0.5"),
])
def test_pgd_training_hyperparameter_messages(kwargs, message):
    with whole(message):
        PGDAdversarialTraining(classifier(), **kwargs)


def test_pgd_training_classifier_messages():
    with whole("classifier: expected a keras.Model, got 'clf'"):
        PGDAdversarialTraining("clf")
    with whole("classifier: expected logits (N, num_classes >= 2), got output shape (None, 1)"):
        PGDAdversarialTraining(classifier(1))
    with whole("classifier: expected logits (N, num_classes >= 2), got output shape "
               "(None, 2, 2, 1)"):
        PGDAdversarialTraining(keras.Sequential([keras.Input(SHAPE), keras.layers.Identity()]))


# ------------------------------------------------------------------ VectorQuantizer, VQCDVAE
@pytest.mark.parametrize("kwargs, message", [
    ({"num_codes": 1}, "num_codes: expected an int >= 2, got 1"),
    ({"num_codes": True}, "num_codes: expected an int >= 2, got True"),
    ({"num_codes": 4.0}, "num_codes: expected an int >= 2, got 4.0"),
    ({"code_dim": 0}, "code_dim: expected an int >= 1, got 0"),
    ({"ema": "yes"}, "ema: expected a bool, got 'yes'"),
    ({"decay": 0.0}, "decay: expected a float in (0, 1), got 0.0"),
    ({"decay": 1.0}, "decay: expected a float in (0, 1), got 1.0"),
    ({"epsilon": 0.0}, "epsilon: expected a positive float, got 0.0"),
])
def test_vector_quantizer_parameter_messages(kwargs, message):
    with whole(message):
        VectorQuantizer(**{"num_codes": 4, "code_dim": 2, **kwargs})


def test_vector_quantizer_refuses_z_e_of_another_code_dimension():
    with whole("z_e: expected 2 channels (code_dim), got 3"):
        VectorQuantizer(4, 2).build((None, 1, 1, 3))


def vq(encoder=None, decoder=None, **kwargs):
    return VQCDVAE(encoder or grid_encoder(2), decoder or image_decoder(2), classifier(),
                   num_codes=4, **kwargs)


def test_vqcdvae_decoder_must_take_the_flattened_grid():
    # the grid is 1x1 of d = 2: the decoder must take (N, 2)
    with whole("decoder: expected input (N, 2) = the encoder's flattened grid (1, 1, 2) "
               "(same d and resolution), got (None, 3)"):
        vq(decoder=image_decoder(3))


def test_vqcdvae_encoder_must_give_a_grid():
    with whole("encoder: expected one output z_e of shape (N, h, w, d), got (None, 2)"):
        vq(encoder=flat_model(2, np.zeros((4, 2)), np.zeros(2)))


def test_vqcdvae_commitment_weight_is_non_negative():
    with whole("commitment_weight: expected a value in [0.0, inf], got -1.0"):
        vq(commitment_weight=-1.0)


def test_vqcdvae_for_dataset_messages():
    with whole("latent_dim and width: the VQ-VAE's code dimension is its channel width d, so "
               "they must agree, got 4 and 8"):
        VQCDVAE.for_dataset("mnist_5k", latent_dim=4, width=8)
    with whole("classifier: expected 'auto', 'resnet50', 'small_cnn', 'wrn' or a keras.Model, "
               "got 'vgg'"):
        VQCDVAE.for_dataset("mnist_5k", width=4, classifier="vgg")


# ------------------------------------------------------------------ DGMM
def dgmm(network=None, **kwargs):
    return DGMM(network or flat_model(1, np.zeros((4, 1)), [0.5]), **{"num_classes": 2, **kwargs})


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 1}, "num_classes: expected an integer >= 2, got 1"),
    ({"lambda_lkd": -0.1}, "lambda_lkd: expected a value in [0.0, inf], got -0.1"),
    ({"margin": -1.0}, "margin: expected a value in [0.0, inf], got -1.0"),
    ({"identity_covariance": "yes"}, "identity_covariance: expected a bool, got 'yes'"),
])
def test_dgmm_parameter_messages(kwargs, message):
    with whole(message):
        dgmm(**kwargs)


def test_dgmm_network_messages():
    with whole("network: expected a keras.Model, got str"):
        DGMM("net")
    with whole("network: expected output (N, K), got (None, 1, 1, 1)"):
        dgmm(keras.Sequential([keras.Input((1, 1, 1)), keras.layers.Identity()]))


def test_dgmm_predict_labels_names_x():
    with whole("x: expected images of shape (N, 2, 2, 1), got (1, 3, 3, 1)"):
        dgmm().predict_labels(np.zeros((1, 3, 3, 1), np.float32))


# ------------------------------------------------------------------ ComboVAE
def combo_parts(latent=1):
    """encoder x -> (μ, log σ²) of width ``latent`` each, decoder [z_s, z_u (1)] -> image."""
    z_s, z_u = keras.Input((latent,)), keras.Input((1,))
    flat = keras.layers.Dense(4, kernel_initializer="zeros")(keras.layers.Concatenate()([z_s, z_u]))
    dec = keras.Model([z_s, z_u], keras.layers.Reshape(SHAPE)(flat))
    return flat_model(2 * latent, np.zeros((4, 2 * latent)), np.zeros(2 * latent)), dec, dgmm()


def combo(**kwargs):
    enc, dec, dg = combo_parts()
    parts = {"encoder": enc, "decoder": dec, "dgmm": dg, **kwargs}
    return ComboVAE(**parts)


@pytest.mark.parametrize("kwargs, message", [
    ({"encoder": "e"}, "encoder: expected a keras.Model, got str"),
    ({"decoder": "d"}, "decoder: expected a keras.Model, got str"),
    ({"dgmm": "g"}, "dgmm: expected a tfdefense DGMM, got str"),
    ({"discriminator": "t"}, "discriminator: expected a keras.Model or None, got str"),
    ({"beta": -1.0}, "beta: expected a value in [0.0, inf], got -1.0"),
    ({"reconstruction": "l1"}, "reconstruction: expected one of ('l2', 'bernoulli'), got 'l1'"),
    ({"zu_mode": "x"}, "zu_mode: expected one of ('features', 'class_mean'), got 'x'"),
])
def test_combo_vae_parameter_messages(kwargs, message):
    with whole(message):
        combo(**kwargs)


def test_combo_vae_encoder_needs_an_even_number_of_outputs():
    # 3 outputs cannot split into a mean and a log-variance of equal width
    with whole("encoder: expected an even number of outputs on the last axis (mean and "
               "log-variance), got (None, 3)"):
        combo(encoder=flat_model(3, np.zeros((4, 3)), np.zeros(3)))


def test_combo_vae_networks_must_fit_together():
    other_images = dgmm(flat_model(1, np.zeros((9, 1)), [0.5], shape=(3, 3, 1)))
    with whole("dgmm: expects images (3, 3, 1), the encoder (2, 2, 1)"):
        combo(dgmm=other_images)
    with whole("decoder: expected two inputs [z_s, z_u], got (None, 1)"):
        combo(decoder=image_decoder(1))
    _, wide_zu_decoder, _ = combo_parts()
    wide = dgmm(flat_model(2, np.zeros((4, 2)), [0.5, 0.5]))
    with whole("decoder: expects z_u of width 1, the DGMM gives 2"):
        combo(decoder=wide_zu_decoder, dgmm=wide)


def test_reconstruction_loss_names_its_kinds():
    x = tf.zeros((1, *SHAPE))
    with whole("reconstruction: expected one of ('l2', 'bernoulli'), got 'l1'"):
        reconstruction_loss(x, x, "l1")


def test_combo_vae_image_checks_name_x_and_the_first_batch():
    model = combo()
    model.compile()
    wrong = np.zeros((1, 3, 3, 1), np.float32)
    with whole("x: expected images of shape (N, 2, 2, 1), got (1, 3, 3, 1)"):
        model.fit(wrong, epochs=1, verbose=0)
    with whole("x (first batch): expected images of shape (N, 2, 2, 1), got (1, 3, 3, 1)"):
        model.fit(tf.data.Dataset.from_tensor_slices(wrong).batch(1), epochs=1, verbose=0)
    with whole("x: expected images of shape (N, 2, 2, 1), got (1, 3, 3, 1)"):
        model.reconstruct(wrong)
    with whole("images: expected shape (N, (2, 2, 1)), got (None, 3, 3, 1)"):
        model.evaluate(wrong, verbose=0)


def test_combo_vae_with_a_discriminator_refuses_to_train_uncompiled_discriminator():
    disc = flat_model(1, np.zeros((1, 1)), [0.0], shape=(1,))
    model = combo(discriminator=disc)
    model.compile()
    model.discriminator_optimizer = None  # as a model compiled by keras.Model.compile alone
    with whole("compile() the ComboVAE before fit: the discriminator needs its optimizer"):
        model.fit(np.zeros((2, *SHAPE), np.float32), epochs=1, verbose=0)
