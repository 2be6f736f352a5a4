"""Hand cases of the models: the classifiers ``VQCDVAE.for_dataset`` builds (ResNet-50 by
default, WRN on request, both named "classifier"), PGD-AT's seed (it fixes the random start and
survives get_config), the FactorVAE discriminator's accuracy metric of the combo-VAE, and L-GM's
default λ_lkd = 0.1 (FM-Defense Eq 12, §IV-A).
"""

import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from hand_model_parts import classifier
from hand_models import SHAPE, constant_dense, flat_model

from tfdefense.models import DGMM, VQCDVAE, ComboVAE, PGDAdversarialTraining
from tfdefense.models.dgmm import lgm_loss

combo_vae_module = importlib.import_module("tfdefense.models.combo_vae")


# ------------------------------------------------------------------ VQCDVAE.for_dataset


def test_the_default_vq_classifier_is_a_resnet50_named_classifier():
    # ResNet-50's last stage has 2048 channels, which global pooling hands to the logits
    # layer (2048 x 10 on CIFAR-10); the Keras backbone inside is named "resnet50".
    model = VQCDVAE.for_dataset("cifar10", width=4)
    assert model.classifier.name == "classifier"
    assert model.classifier.get_layer("logits").kernel.shape == (2048, 10)
    assert any(layer.name == "resnet50" for layer in model.classifier.layers)


def test_the_wrn_vq_classifier_has_the_requested_depth_and_width():
    # WRN-10-2: one block per stage (depth 10 = 6·1 + 4), stage widths 16·2, 32·2, 64·2 =
    # 32, 64, 128; the logits layer is 128 x 10.
    model = VQCDVAE.for_dataset("cifar10", width=4, classifier="wrn", wrn_depth=10, wrn_width=2)
    clf = model.classifier
    assert clf.name == "classifier"
    assert [clf.get_layer(f"stage{s}_block1_conv1").filters for s in (1, 2, 3)] == [32, 64, 128]
    assert "stage1_block2_conv1" not in [layer.name for layer in clf.layers]
    assert clf.get_layer("logits").kernel.shape == (128, 10)


# ------------------------------------------------------------------ PGD-AT's seed


def pgd_model(seed):
    # zero-kernel classifier: the cross-entropy's gradient is 0, sign(0) = 0, so the one PGD
    # step does not move and x′ = x + δ0 with δ0 ~ U[−0.25, 0.25]: x′ shows the random start.
    return PGDAdversarialTraining(classifier(), eps=0.25, attack_steps=1, seed=seed)


X = np.full((4,) + SHAPE, 0.5, np.float32)
Y = np.array([0, 1, 0, 1])


def crafted(model):
    return model.craft(tf.constant(X), tf.constant(Y)).numpy()


def test_pgd_training_seed_fixes_the_random_start():
    first, again, other = crafted(pgd_model(0)), crafted(pgd_model(0)), crafted(pgd_model(1))
    assert np.all(np.abs(first - 0.5) <= 0.25 + 1e-6)
    assert np.any(first != 0.5)
    np.testing.assert_array_equal(first, again)
    assert np.any(first != other)


def test_pgd_training_seed_survives_get_config():
    model = pgd_model(7)
    config = model.get_config()
    assert config["seed"] == 7
    clone = PGDAdversarialTraining.from_config(config)
    assert clone.seed == 7
    np.testing.assert_array_equal(crafted(clone), crafted(pgd_model(7)))


# ------------------------------------------------------------------ ComboVAE discriminator


def swap_second_dimension(z, seed=None):
    """A known permute_dims: dimension 0 kept, dimension 1 reversed across the batch."""
    return tf.stack([z[:, 0], tf.reverse(z[:, 1], [0])], axis=1)


def combo_vae_with_discriminator():
    # encoder: μ = (x00, x01), log σ² = −60, so σ = e^−30 ≈ 1e−13 and z = μ;
    # discriminator logit D(z) = z1 − z0; the DGMM and decoder are zero maps (z_u = 0.5).
    pick = np.zeros((4, 4))
    pick[0, 0] = pick[1, 1] = 1.0
    encoder = flat_model(4, pick, [0.0, 0.0, -60.0, -60.0])
    dgmm = DGMM(flat_model(1, np.zeros((4, 1)), [0.5]), num_classes=2)
    z_s, z_u = keras.Input((2,)), keras.Input((1,))
    dense = constant_dense(4, np.zeros((3, 4)), np.zeros(4))
    decoder = keras.Model([z_s, z_u], keras.layers.Reshape(SHAPE)(
        dense(keras.layers.Concatenate()([z_s, z_u]))))
    z = keras.Input((2,))
    discriminator = keras.Model(z, constant_dense(1, [[-1.0], [1.0]], [0.0])(z))
    return ComboVAE(encoder, decoder, dgmm, discriminator, seed=0)


def test_discriminator_accuracy_is_the_mean_of_both_halves(monkeypatch):
    # z rows (u, v) = (0, .1), (.2, .3), (.4, .5), (.6, .7): lq = v − u = 0.1 > 0 for all;
    # permuted rows (u_i, v_{3−i}) = (0, .7), (.2, .5), (.4, .3), (.6, .1): lp = .7, .3, −.1, −.5,
    # so lp < 0 for the last two. Per example ½([lq > 0] + [lp < 0]) = .5, .5, 1, 1: mean 0.75.
    monkeypatch.setattr(combo_vae_module, "permute_dims", swap_second_dimension)
    vae = combo_vae_with_discriminator()
    vae.compile()
    x = np.zeros((4,) + SHAPE, np.float32)
    x[:, 0, 0, 0] = [0.0, 0.2, 0.4, 0.6]
    x[:, 0, 1, 0] = [0.1, 0.3, 0.5, 0.7]
    result = vae.evaluate(x, batch_size=4, verbose=0, return_dict=True)
    assert result["discriminator_accuracy"] == pytest.approx(0.75, abs=1e-6)


# ------------------------------------------------------------------ lgm_loss default


def test_lgm_loss_default_lambda_lkd_is_one_tenth():
    # K = 1, C = 2, μ = (0, 1), Σ = I, z = 0, label 0:
    # log N_0 = −½ log 2π, log N_1 = −½ − ½ log 2π;
    # L_cls = log(1 + e^−½) = 0.4740770 (Eq 10), L_lkd = ½ log 2π = 0.9189385 (Eq 11);
    # L_GM = L_cls + 0.1·L_lkd = 0.5659708 (Eq 12).
    out = lgm_loss(tf.constant([[0.0]]), tf.constant([0]), tf.constant([[0.0], [1.0]]),
                   tf.zeros((2, 1)))
    assert out["cls_loss"].numpy() == pytest.approx([0.4740770], abs=1e-6)
    assert out["lkd_loss"].numpy() == pytest.approx([0.9189385], abs=1e-6)
    assert out["loss"].numpy() == pytest.approx([0.5659708], abs=1e-6)
