"""The Defense interface on the CD-VAE-side defenses: save/load, serving spec, input checks.

GreyBoxDefense, ClassifierDefense (plain and PGD-AT) and AdversarialCDVAEDefense on tiny
untrained (seeded) models: a saved defense reloads with the same weights, so the same
labels, decisions and logits; the serving spec names its signatures; ``predict`` refuses
bad images; ``Defense.defend``'s default is argmax of the logits, all accepted.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdefense.defend
from tfdefense import models, nets
from tfdefense.decisions import Decision
from tfdefense.defend import (
    AdversarialCDVAEDefense,
    ClassifierDefense,
    Defense,
    GreyBoxDefense,
)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(size=(7, 28, 28, 1)).astype("float32")


@pytest.fixture(scope="module")
def defenses():
    keras.utils.set_random_seed(0)
    cdvae = models.CDVAE.for_dataset("mnist_5k", latent_dim=4, width=4, gamma=2e-3, seed=0)
    clf = nets.small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    d_g = nets.small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    adversarial = models.AdversarialCDVAE.from_cdvae(cdvae, d_g, eps=0.3, attack_steps=1)
    pgd_at = models.PGDAdversarialTraining(nets.small_cnn((28, 28, 1), 10, width=4, dense_units=8),
                                           eps=0.3, attack_steps=1)
    pgd_at(np.zeros((1, 28, 28, 1), "float32"))
    return {
        "greybox": GreyBoxDefense(cdvae, clf, batch_size=3),
        "classifier": ClassifierDefense(clf, batch_size=4),
        "pgd_at": ClassifierDefense(pgd_at),
        "adversarial_cdvae": AdversarialCDVAEDefense(adversarial),
    }


NAMES = ["greybox", "classifier", "pgd_at", "adversarial_cdvae"]


@pytest.mark.parametrize("name", NAMES)
def test_saved_defense_loads_with_identical_predictions_and_logits(defenses, x, name, tmp_path):
    defense = defenses[name]
    path = defense.save(str(tmp_path / name))
    again = tfdefense.defend.load(path)
    assert type(again) is type(defense) and again.get_config() == defense.get_config()
    labels, decisions = defense.predict_with_decisions(x)
    labels2, decisions2 = again.predict_with_decisions(x)
    np.testing.assert_array_equal(labels2, labels)
    np.testing.assert_array_equal(decisions2, decisions)
    np.testing.assert_array_equal(again.logits(tf.constant(x)).numpy(),
                                  defense.logits(tf.constant(x)).numpy())


def test_predictions_are_the_pipelines_argmax_and_all_accepted(defenses, x):
    xt = tf.constant(x)
    grey = defenses["greybox"]
    g = np.clip(grey.cdvae.generate(xt).numpy(), 0, 1)
    expected = {
        "greybox": grey.classifier(g).numpy(),
        "classifier": defenses["classifier"].classifier(xt).numpy(),
        "pgd_at": defenses["pgd_at"].classifier(xt).numpy(),
        "adversarial_cdvae": defenses["adversarial_cdvae"].model.generated_classifier(
            defenses["adversarial_cdvae"].model.generate(xt)).numpy(),
    }
    for name, logits in expected.items():
        labels, decisions = defenses[name].predict_with_decisions(x)
        np.testing.assert_array_equal(labels, logits.argmax(1), err_msg=name)
        assert decisions.tolist() == [Decision.ACCEPTED] * len(x), name
        np.testing.assert_allclose(defenses[name].logits(xt).numpy(), logits, atol=1e-5,
                                   err_msg=name)


@pytest.mark.parametrize("name, signatures", [
    ("greybox", ["serving_default", "defend", "purify"]),
    ("classifier", ["serving_default", "defend"]),
    ("pgd_at", ["serving_default", "defend"]),
    ("adversarial_cdvae", ["serving_default", "defend"]),
])
def test_serving_spec_names_its_signatures(defenses, name, signatures):
    spec = defenses[name].serving_spec()
    assert [s.name for s in spec.signatures] == signatures
    assert spec.input_shape == (28, 28, 1)
    assert spec.metadata["model"] == type(defenses[name]).__name__


@pytest.mark.parametrize("name", ["greybox", "adversarial_cdvae"])
def test_purify_gives_a_float32_tensor_of_the_batch(defenses, x, name):
    purified = defenses[name].purify(tf.constant(x))
    assert isinstance(purified, tf.Tensor) and purified.dtype == tf.float32
    assert purified.shape == x.shape


def test_serving_spec_defend_signature_matches_predict(defenses, x):
    for name in NAMES:
        defend = next(s for s in defenses[name].serving_spec().signatures if s.name == "defend")
        out = tf.function(defend.fn)(tf.constant(x))
        np.testing.assert_array_equal(out["label"].numpy(), defenses[name].predict(x), err_msg=name)
        assert [s.decode() for s in out["decision_name"].numpy()] == ["accepted"] * len(x)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 32, 32, 3), "float32"), "shape"),
    (np.full((2, 28, 28, 1), np.nan, "float32"), "NaN"),
    (np.full((2, 28, 28, 1), 2.0, "float32"), r"\[0, 1\]"),
    (np.zeros((2, 28, 28, 1), "uint8"), "float"),
])
def test_predict_rejects_bad_images(defenses, name, bad, match):
    with pytest.raises(ValueError, match=match):
        defenses[name].predict(bad)


def test_sample_makes_the_cdvae_defenses_stochastic(defenses):
    grey, adversarial = defenses["greybox"], defenses["adversarial_cdvae"]
    assert not grey.stochastic and not adversarial.stochastic
    assert GreyBoxDefense(grey.cdvae, grey.classifier, sample=True).stochastic
    sampling = AdversarialCDVAEDefense(adversarial.model, sample=True)
    assert sampling.stochastic
    xt = tf.constant(np.full((2, 28, 28, 1), 0.5, "float32"))
    # two posterior draws differ, the posterior mean does not
    assert not np.array_equal(sampling.logits(xt).numpy(), sampling.logits(xt).numpy())
    np.testing.assert_array_equal(adversarial.logits(xt).numpy(), adversarial.logits(xt).numpy())


def test_bad_constructor_arguments_raise(defenses):
    with pytest.raises(ValueError, match="Keras model"):
        ClassifierDefense(lambda x: x)
    with pytest.raises(ValueError, match="fixed size"):
        ClassifierDefense(keras.Sequential([keras.Input((None, None, 1)),
                                            keras.layers.GlobalAveragePooling2D()]))
    with pytest.raises(ValueError, match="AdversarialCDVAE"):
        AdversarialCDVAEDefense(defenses["greybox"].cdvae)
    with pytest.raises(ValueError, match="sample"):
        AdversarialCDVAEDefense(defenses["adversarial_cdvae"].model, sample=1)


def test_greybox_with_a_plain_callable_classifier_predicts_but_does_not_save(defenses, x,
                                                                             tmp_path):
    net = defenses["greybox"].classifier
    defense = GreyBoxDefense(defenses["greybox"].cdvae, lambda im, training=False: net(im))
    np.testing.assert_array_equal(defense.predict(x), defenses["greybox"].predict(x))
    with pytest.raises(ValueError, match="plain callable"):
        defense.save(str(tmp_path / "callable"))


def test_load_of_a_folder_without_a_defense_raises(tmp_path):
    with pytest.raises(ValueError, match="defense.json"):
        tfdefense.defend.load(str(tmp_path))


class _Rows(Defense):
    """Stub: the logits of a (1, 1, 3) image are its three pixels."""

    input_shape = (1, 1, 3)

    def logits(self, x):
        return tf.reshape(x, [-1, 3])


def test_default_defend_is_argmax_of_logits_and_accepts_everything():
    x = np.array([[0.1, 0.9, 0.2], [0.7, 0.3, 0.5], [0.0, 0.2, 0.8]], "float32").reshape(3, 1, 1, 3)
    labels, decisions = _Rows().defend(tf.constant(x))
    assert labels.dtype == tf.int64 and decisions.dtype == tf.int32
    assert labels.numpy().tolist() == [1, 0, 2]
    assert decisions.numpy().tolist() == [0, 0, 0]
    labels, decisions = _Rows().predict_with_decisions(x, batch_size=2)
    assert labels.tolist() == [1, 0, 2] and decisions.tolist() == [0, 0, 0]
