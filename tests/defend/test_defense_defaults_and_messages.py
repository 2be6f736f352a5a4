"""Defense defaults and messages on hand-set 2x2x1 models: GreyBoxDefense clips G(x) by
default, FMDefense averages 8 EOT morphs by default and purifies in inference mode,
ClassifierDefense names a classifier without an input shape, and a Defense without
``logits`` names itself.

Images are flattened row-major as [x00, x01, x10, x11].
"""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from hand_model_parts import classifier as zero_classifier
from hand_model_parts import pixel_cdvae
from hand_models import SHAPE, ShiftedInTraining, flat_model, hand_combo_vae

from tfdefense.defend import ClassifierDefense, FMDefense, GreyBoxDefense
from tfdefense.defend.base import Defense
from tfdefense.detect import MorphEngine, ResistanceDetector


# ------------------------------------------------------------------ GreyBoxDefense
def wide_cdvae():
    """G = 0.25·(−4, 0, 0.5, 4) + 0.5 = [−0.5, 0.5, 0.625, 1.5], which leaves [0, 1] on both
    sides (``pixel_cdvae``)."""
    return pixel_cdvae([-4.0, 0.0, 0.5, 4.0], zero_classifier())


def test_greybox_defense_clips_g_of_x_by_default():
    x = np.full((1, *SHAPE), 0.5, np.float32)
    cdvae = wide_cdvae()
    unclipped = GreyBoxDefense(cdvae, zero_classifier(), clip=False).purify(x).numpy()
    np.testing.assert_allclose(unclipped.reshape(4), [-0.5, 0.5, 0.625, 1.5], atol=1e-6)
    defense = GreyBoxDefense(cdvae, zero_classifier())
    assert defense.clip is True and defense.get_config()["clip"] is True
    # clipped to [0, 1]: −0.5 -> 0, 1.5 -> 1
    np.testing.assert_allclose(defense.purify(x).numpy().reshape(4), [0.0, 0.5, 0.625, 1.0],
                               atol=1e-6)


# ------------------------------------------------------------------ FMDefense
def shifted_combo_vae():
    """``hand_combo_vae`` whose decoder adds 1 to every pixel in training mode: (z_s0, z_s1, 0,
    0) at inference."""
    return hand_combo_vae(ShiftedInTraining())


class CodeZeroMorphs(MorphEngine):
    """A MorphEngine whose EOT morph is always μ(x) with code 0 set to 0."""

    def sample_morph_latents(self, mean, n_samples, seed):
        return tf.repeat((mean * tf.constant([0.0, 1.0]))[:, None], n_samples, axis=1)


def hand_fm_defense(**kwargs):
    """Classifier logits [0.5·x10, x00 + x01 − 1]; θ_r = 0.6, θ_d = 0.2 (no fitting of them)."""
    clf = flat_model(2, [[0.0, 1.0], [0.0, 1.0], [0.5, 0.0], [0.0, 0.0]], [0.0, -1.0])
    engine = CodeZeroMorphs(shifted_combo_vae(), clf, n_morphs=4).set_ranges([0.0, 0.0],
                                                                              [1.0, 1.0])
    detector = ResistanceDetector(engine, unified_threshold=0.6, theta_d=0.2)
    return FMDefense(detector.fit_resistance(np.ones((4, 2))), **kwargs)


A = np.array([0.8, 0.6, 0.2, 0.0], np.float32).reshape(1, *SHAPE)


def test_fm_purify_reconstructs_in_inference_mode():
    # D([μ(A), z_u]) = (0.8, 0.6, 0, 0); in training mode it would be (1.8, 1.6, 1, 1)
    np.testing.assert_allclose(hand_fm_defense().purify(A).numpy().reshape(4),
                               [0.8, 0.6, 0.0, 0.0], atol=1e-6)


def test_fm_eot_logits_average_eight_morphs_by_default():
    # the default eot_morphs is 8 (an engineering choice: the paper gives no EOT count; the
    # FM experiments' "fm_eot_morphs" setting is 8 as well). For A:
    #   C(A) = [0.1, 0.4], C(purify(A)) = C(0.8, 0.6, 0, 0) = [0, 0.4],
    #   C(morph) = C(0, 0.6, 0, 0) = [0, −0.4]
    #   p(class 1) = σ(0.3), σ(0.4), σ(−0.4) = 0.574443, 0.598688, 0.401312
    #   8 morphs, k + 2 = 10 outputs: (0.574443 + 0.598688 + 8·0.401312) / 10 = 0.438363
    #   (9 morphs would give (1.173131 + 9·0.401312) / 11 = 0.434995)
    defense = hand_fm_defense()
    assert defense.eot_morphs == 8 and defense.get_config()["eot_morphs"] == 8
    sig = [1 / (1 + math.exp(-v)) for v in (0.3, 0.4, -0.4)]
    p1 = (sig[0] + sig[1] + 8 * sig[2]) / 10
    assert p1 == pytest.approx(0.438363, abs=1e-6)
    logits = defense.logits(tf.constant(A)).numpy()
    np.testing.assert_allclose(logits[0], np.log([1 - p1, p1]), atol=1e-5)


# ------------------------------------------------------------------ messages
def test_a_classifier_without_an_input_shape_is_named_whole():
    unbuilt = keras.Sequential([keras.layers.Dense(2)], name="unbuilt")
    message = ("classifier: 'unbuilt' has no input shape; give it an Input or call it on "
               "a batch")
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        ClassifierDefense(unbuilt)


class WithoutLogits(Defense):
    """A Defense that gives no logits."""


def test_a_defense_without_logits_names_its_class_and_method():
    with pytest.raises(NotImplementedError, match=r"^WithoutLogits\.logits$"):
        WithoutLogits().logits(tf.zeros((1, *SHAPE)))


class ZeroLogits(Defense):
    """A Defense that sets no ``input_shape``: two classes, logits (0, 1) for every image."""

    def logits(self, x):
        return tf.tile(tf.constant([[0.0, 1.0]]), [tf.shape(x)[0], 1])


@pytest.mark.parametrize("shape", [(2, 2, 1), (5, 3, 3)])
def test_a_defense_without_an_input_shape_takes_images_of_any_shape(shape):
    assert ZeroLogits.input_shape is None
    images = np.full((3, *shape), 0.5, np.float32)
    assert ZeroLogits().predict(images).tolist() == [1, 1, 1]
