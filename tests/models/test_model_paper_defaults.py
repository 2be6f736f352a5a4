"""The defaults the models' docstrings take from the papers, the official code or the cited
baselines, pinned on the smallest hand networks: a model built without arguments trains with
these numbers, so a changed default would change every result silently.

CD-VAE (cd-vae.txt): β = 0.2 (§5), γ = 2 (Eq. 1's sweet spot); the adversarial training's
budget and attack are the official ``AttackV2`` / ``MarginLoss`` defaults (eps 8/255, 10 steps
of eps/√10, κ = 10, margin c = 8). VQ CD-VAE: k = 128 codes, commitment 0.5, β = 0.1 (the
authors' ImageNet answer), EMA decay 0.99 and ε 1e-5 (van den Oord et al.). PGD-AT (Madry et
al. 2018): no clean term, Adam with TF1's ε 1e-8. FM-Defense (fm-defense.txt §IV-A): γ = 40,
Eq 8's β = 1, λ_lkd = 0.1, and FactorVAE's discriminator optimiser.
"""

import math

import keras
import numpy as np
import pytest
from hand_model_parts import cdvae_parts, classifier, grid_encoder, image_decoder
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


def test_cdvae_defaults_are_the_papers():
    model = CDVAE(**cdvae_parts())
    assert model.beta == 0.2 and model.gamma == 2.0
    assert float(model.reconstruction_weight.numpy()) == 1.0  # official --re 1
    assert model.classifier_input == "residual"  # D sees R(x), the paper's
    assert model.mixup_alpha == 0.0  # no mixup unless asked
    assert model.normalization_mean == (0.0,) and model.normalization_std == (1.0,)
    assert model.seed is None


def test_cdvae_default_optimizer_is_the_official_adamw():
    model = CDVAE(**cdvae_parts())
    model.compile()
    opt = model.optimizer
    assert type(opt).__name__ == "AdamW"
    assert math.isclose(float(opt.learning_rate.numpy()), 1e-3, rel_tol=1e-6)
    assert (opt.beta_1, opt.beta_2, opt.epsilon, opt.weight_decay) == (0.9, 0.999, 1e-8, 1e-6)


def test_mnist_cdvae_normalises_with_the_mnist_statistics():
    model = CDVAE.for_dataset("mnist_5k", latent_dim=2, width=4, classifier=classifier(
        10, (28, 28, 1)))
    assert model.normalization_mean == (0.1307,) and model.normalization_std == (0.3081,)


def test_adversarial_cdvae_defaults_are_the_official_attack_and_margin():
    model = AdversarialCDVAE(**cdvae_parts(), generated_classifier=classifier())
    assert model.eps == 8 / 255 and model.attack_steps == 10
    assert model.attack_step_size is None
    assert math.isclose(model.step_size, 8 / 255 / math.sqrt(10), rel_tol=1e-12)
    assert model.kappa == 10.0 and model.margin == 8.0
    assert model.objective == "paper" and model.clean_weight == 1.0  # the paper's "mix"
    assert model.reconstruction_target == "adversarial"  # Eq. 9 reconstructs x′
    assert model.attack_only_correct is True  # official to_attack
    assert model.beta == 0.2 and model.gamma == 2.0


def test_the_official_objective_trains_on_adversarial_examples_only_by_default():
    model = AdversarialCDVAE(**cdvae_parts(), generated_classifier=classifier(),
                             objective="official")
    assert model.clean_weight == 0.0
    assert AdversarialCDVAE(**cdvae_parts(), generated_classifier=classifier(),
                            objective="official", clean_weight=0.5).clean_weight == 0.5


def test_a_step_size_given_overrides_eps_over_root_steps():
    model = AdversarialCDVAE(**cdvae_parts(), generated_classifier=classifier(), eps=0.5,
                             attack_steps=4)
    assert model.step_size == 0.25  # 0.5 / √4
    model.attack_step_size = 0.1
    assert model.step_size == 0.1


def test_pgd_training_defaults_are_madrys_with_the_cdvae_budget():
    model = PGDAdversarialTraining(classifier())
    assert model.eps == 8 / 255 and model.attack_steps == 10
    assert math.isclose(model.step_size, 8 / 255 / math.sqrt(10), rel_tol=1e-12)
    assert model.clean_weight == 0.0 and model.seed is None
    assert PGDAdversarialTraining(classifier(), eps=0.3, attack_steps=4).step_size == 0.15
    model.compile()
    opt = model.optimizer
    assert type(opt).__name__ == "Adam" and opt.epsilon == 1e-8
    assert math.isclose(float(opt.learning_rate.numpy()), 1e-3, rel_tol=1e-6)


def test_vq_defaults_are_the_authors():
    layer = VectorQuantizer()
    assert (layer.num_codes, layer.code_dim, layer.ema, layer.decay, layer.epsilon) == (
        128, 64, False, 0.99, 1e-5)
    model = VQCDVAE(grid_encoder(2), image_decoder(2), classifier())
    assert model.num_codes == 128 and tuple(model.quantizer.codebook.shape) == (128, 2)
    assert model.commitment_weight == 0.5 and model.beta == 0.1 and model.gamma == 2.0
    assert model.ema is False and model.quantizer.trainable_weights  # codes learn by gradient
    assert (model.ema_decay, model.ema_epsilon) == (0.99, 1e-5)
    assert (model.quantizer.decay, model.quantizer.epsilon) == (0.99, 1e-5)


def dgmm(**kwargs):
    return DGMM(flat_model(1, np.zeros((4, 1)), [0.5]), **kwargs)


def test_dgmm_defaults_are_fm_defenses():
    model = dgmm()
    assert model.num_classes == 10 and tuple(model.means.shape) == (10, 1)
    assert model.lambda_lkd == 0.1 and model.margin == 0.0  # §IV-A; Eq 10 as printed
    assert model.identity_covariance is False and model.log_scales.trainable


def combo(**kwargs):
    z_s, z_u = keras.Input((1,)), keras.Input((1,))
    decoder = keras.Model([z_s, z_u], keras.layers.Reshape(SHAPE)(
        keras.layers.Dense(4)(keras.layers.Concatenate()([z_s, z_u]))))
    discriminator = flat_model(1, np.zeros((1, 1)), [0.0], shape=(1,))
    return ComboVAE(flat_model(2, np.zeros((4, 2)), [0.0, 0.0]), decoder, dgmm(num_classes=2),
                    discriminator, **kwargs)


def test_combo_vae_defaults_are_eq8s():
    model = combo()
    assert model.gamma == 40.0 and model.beta == 1.0  # §IV-A's γ; Eq 8's unit KL weight
    assert model.reconstruction == "l2" and model.zu_mode == "features"
    assert model.dgmm.trainable is False  # stage 2: the DGMM is frozen


def test_combo_vae_default_optimizers_are_factorvaes():
    model = combo()
    model.compile()
    vae, disc = model.optimizer, model.discriminator_optimizer
    assert type(vae).__name__ == type(disc).__name__ == "Adam"
    assert math.isclose(float(vae.learning_rate.numpy()), 1e-4, rel_tol=1e-6)
    assert (vae.beta_1, vae.beta_2) == (0.9, 0.999)
    assert math.isclose(float(disc.learning_rate.numpy()), 1e-4, rel_tol=1e-6)
    assert (disc.beta_1, disc.beta_2) == (0.5, 0.9)


@pytest.mark.parametrize("zu_mode", ["features", "class_mean"])
def test_combo_vae_latent_is_half_the_encoders_outputs(zu_mode):
    model = combo(zu_mode=zu_mode)
    assert model.latent_dim == 1 and model.latent_shape == (1,)
