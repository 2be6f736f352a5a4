"""The CD-VAE-side defenses on a hand-set CD-VAE (2x2x1 images): the purified G(x) each one
classifies, in inference mode, and the argument checks of GreyBoxDefense and
ClassifierDefense.

Images are flattened row-major as [x00, x01, x10, x11]. The decoder's last layer adds 1 in
training mode (a stand-in for batch statistics), so a purification run in training mode is
off by 0.25 (one unit on the normalised scale, std 0.25).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hand_models import SHAPE, ShiftedInTraining, constant_dense

from tfdefense.defend import AdversarialCDVAEDefense, ClassifierDefense, GreyBoxDefense
from tfdefense.models import CDVAE, AdversarialCDVAE


def classifier():
    """Logits [0, 20·(x11 − x00)]."""
    x = keras.Input(SHAPE)
    dense = constant_dense(2, [[0.0, -20.0], [0.0, 0.0], [0.0, 0.0], [0.0, 20.0]], [0.0, 0.0])
    return keras.Model(x, dense(keras.layers.Flatten()(x)))


def hand_cdvae():
    """μ(x) = 1, log σ² = ln 0.25 (kernels 0); decoder g̃ = z·[−1, 0, 0.5, 1] (+1 in training);
    pixel scale G = 0.25·g̃ + 0.5. At inference z = μ = 1: G = [0.25, 0.5, 0.625, 0.75]."""
    x = keras.Input(SHAPE)
    flat = keras.layers.Flatten()(x)
    enc = keras.Model(x, [constant_dense(1, np.zeros((4, 1)), [1.0])(flat),
                          constant_dense(1, np.zeros((4, 1)), [math.log(0.25)])(flat)])
    z = keras.Input((1,))
    g = ShiftedInTraining()(constant_dense(4, [[-1.0, 0.0, 0.5, 1.0]], np.zeros(4))(z))
    dec = keras.Model(z, keras.layers.Reshape(SHAPE)(g))
    return CDVAE(enc, dec, classifier(), beta=0.2, gamma=2.0, normalization_mean=(0.5,),
                 normalization_std=(0.25,))


G = [0.25, 0.5, 0.625, 0.75]
X = np.full((2, *SHAPE), 0.5, np.float32)


def test_adversarial_cdvae_defense_purifies_with_the_inference_mode_g():
    model = AdversarialCDVAE.from_cdvae(hand_cdvae(), classifier(), eps=0.1, attack_steps=1)
    defense = AdversarialCDVAEDefense(model)
    np.testing.assert_allclose(defense.purify(X).numpy().reshape(2, 4), [G, G], atol=1e-6)
    # D_G(G(x)) = [0, 20·(0.75 − 0.25)] = [0, 10]
    np.testing.assert_allclose(defense.logits(X).numpy(), [[0.0, 10.0]] * 2, atol=1e-5)
    assert defense.predict(X).tolist() == [1, 1]


def test_greybox_defense_classifies_the_inference_mode_g():
    defense = GreyBoxDefense(hand_cdvae(), classifier())
    np.testing.assert_allclose(defense.purify(X).numpy().reshape(2, 4), [G, G], atol=1e-6)
    np.testing.assert_allclose(defense.logits(X).numpy(), [[0.0, 10.0]] * 2, atol=1e-5)


class OnlyGenerate:
    def generate(self, x, training=False, sample=None):
        return x


class OnlyShape:
    input_shape_ = SHAPE


@pytest.mark.parametrize("cdvae", [OnlyGenerate(), OnlyShape()])
def test_greybox_needs_both_generate_and_an_input_shape(cdvae):
    with pytest.raises(ValueError, match="cdvae: expected a CD-VAE with generate"):
        GreyBoxDefense(cdvae, classifier())


@pytest.mark.parametrize("kwargs, match", [
    ({"clip": 1}, "clip"), ({"sample": "yes"}, "sample"), ({"batch_size": 0}, "batch_size"),
])
def test_greybox_flags_must_be_booleans_and_batch_size_positive(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GreyBoxDefense(hand_cdvae(), classifier(), **kwargs)
    with pytest.raises(ValueError, match="classifier: expected a callable"):
        GreyBoxDefense(hand_cdvae(), "not a model")


def test_classifier_defense_reads_the_per_image_shape():
    assert ClassifierDefense(classifier()).input_shape == SHAPE
    flat = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"images \(N, H, W, C\) of a fixed size"):
        ClassifierDefense(flat)
    with pytest.raises(ValueError, match="classifier: expected a Keras model"):
        ClassifierDefense(lambda x: x)


def test_classifier_defense_logits_are_the_inference_mode_classifier():
    # [0, 20·(x11 − x00)] at x00 = 0.2, x11 = 0.3: [0, 2]
    x = tf.constant([[0.2, 0.0, 0.0, 0.3]], shape=(1, *SHAPE))
    np.testing.assert_allclose(ClassifierDefense(classifier()).logits(x).numpy(), [[0.0, 2.0]],
                               atol=1e-5)
