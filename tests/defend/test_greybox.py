"""GreyBoxDefense: classify G(x); a differentiable pipeline for white-box attacks."""

import numpy as np
import pytest
import tensorflow as tf

from tfdefense import models, nets
from tfdefense.attacks import eot, get_attack
from tfdefense.defend import REJECTED, GreyBoxDefense


@pytest.fixture(scope="module")
def parts():
    cdvae = models.CDVAE.for_dataset("mnist_5k", latent_dim=8, width=8, gamma=2e-3, seed=0)
    clf = nets.small_cnn(width=4, dense_units=8)
    x = np.random.default_rng(0).uniform(size=(6, 28, 28, 1)).astype("float32")
    return cdvae, clf, x


def test_predict_is_classifier_on_generated(parts):
    cdvae, clf, x = parts
    defense = GreyBoxDefense(cdvae, clf)
    g = np.clip(cdvae.generate(tf.constant(x)).numpy(), 0, 1)
    expected = np.argmax(clf(g).numpy(), 1)
    labels = defense.predict(x)
    assert labels.dtype == np.int64 and labels.tolist() == expected.tolist()
    assert REJECTED not in labels


def test_purify_clips_only_when_asked(parts):
    cdvae, clf, x = parts
    clipped = GreyBoxDefense(cdvae, clf).purify(x).numpy()
    raw = GreyBoxDefense(cdvae, clf, clip=False).purify(x).numpy()
    assert clipped.min() >= 0 and clipped.max() <= 1
    np.testing.assert_allclose(raw, cdvae.generate(tf.constant(x)).numpy(), atol=1e-6)


def test_logits_are_differentiable_through_g(parts):
    cdvae, clf, x = parts
    defense = GreyBoxDefense(cdvae, clf, clip=False)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(defense.logits(xt))
    grad = tape.gradient(loss, xt)
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0


def test_white_box_attack_runs_through_the_defense(parts):
    cdvae, clf, x = parts
    defense = GreyBoxDefense(cdvae, clf)
    x_adv = get_attack("pgd_linf", model=defense.logits, eps=0.3, steps=2).generate(x)
    assert x_adv.shape == x.shape and np.abs(x_adv - x).max() <= 0.3 + 1e-6


def test_sampling_defense_with_eot(parts):
    cdvae, clf, x = parts
    defense = GreyBoxDefense(cdvae, clf, sample=True)
    logits = eot(defense.logits, n=3)(tf.constant(x))
    assert logits.shape == (6, 10)


def test_accuracy(parts):
    cdvae, clf, x = parts
    defense = GreyBoxDefense(cdvae, clf)
    assert defense.accuracy(x, defense.predict(x)) == 1.0
    with pytest.raises(ValueError, match="labels"):
        defense.accuracy(x, np.zeros(3))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"cdvae": object()}, "cdvae"),
        ({"classifier": 3}, "classifier"),
        ({"clip": "yes"}, "clip"),
        ({"sample": 1}, "sample"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_params(parts, kwargs, match):
    cdvae, clf, _ = parts
    args = {"cdvae": cdvae, "classifier": clf, **kwargs}
    with pytest.raises(ValueError, match=match):
        GreyBoxDefense(**args)


def test_bad_images(parts):
    cdvae, clf, _ = parts
    defense = GreyBoxDefense(cdvae, clf)
    with pytest.raises(ValueError, match="shape"):
        defense.predict(np.zeros((2, 32, 32, 3), "float32"))
    with pytest.raises(ValueError):
        defense.predict(np.full((2, 28, 28, 1), 2.0, "float32"))
