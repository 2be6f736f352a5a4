"""tfdefense.interop.art: a Defense as an ART classifier, a Detector as an ART evasion detector.

Hand-checkable cases on a linear defense over 2x2 grey images (4 pixels, 3 classes,
logits z = W^T x, rejecting bright images, mean pixel > 0.75):

* predict's sign votes for accepted and rejected inputs, in both rejection modes;
* gradients in closed form: d z_k / dx = W[:, k]; the batch-mean cross-entropy's
  gradient is W (softmax(z) - onehot(y)) / N; both also equal to a GradientTape
  through ``defense.logits``;
* a stochastic defense is attacked through EOT: its per-draw noise shifts every logit
  of an image alike, so the mean softmax over draws is softmax(z) exactly;
* ART's FGSM and ART's PGD without random start give the images of our FGSM and BIM
  (deterministic, so equal to float precision), here and through a tiny grey-box CD-VAE.

The agreement of ART's PGD / AutoAttack with ``evaluate_robustness`` on trained
grey-box CD-VAE, MagNet and FM-Defense models is ``bench/art_agreement.py`` (minutes).
"""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("art", reason="adversarial-robustness-toolbox is not installed (the [art] extra)")

from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent  # noqa: E402
from art.defences.detector.evasion import EvasionDetector  # noqa: E402
from art.estimators.classification import TensorFlowV2Classifier  # noqa: E402

from tfdefense import models  # noqa: E402
from tfdefense.attacks import get_attack  # noqa: E402
from tfdefense.decisions import Decision  # noqa: E402
from tfdefense.defend import REJECTED, ClassifierDefense, Defense, GreyBoxDefense  # noqa: E402
from tfdefense.detect.base import Detector  # noqa: E402
from tfdefense.interop.art import (  # noqa: E402
    as_art_classifier,
    as_art_detector,
    decision_votes,
)
from tfdefense.nets import small_cnn  # noqa: E402

# pixel i -> class k weights; columns are the three classes
W = np.array([[1.0, -1.0, 0.5],
              [2.0, 0.0, -1.0],
              [-1.0, 1.0, 0.0],
              [0.5, 0.5, 2.0]], dtype=np.float32)
BRIGHT = 0.75


class LinearDefense(Defense):
    """z = W^T flatten(x); rejects when the mean pixel exceeds 0.75 (margin = mean - 0.75)."""

    input_shape = (2, 2, 1)
    detects = True

    def logits(self, x):
        return tf.reshape(tf.cast(x, tf.float32), (-1, 4)) @ W

    def detection_margin(self, x):
        return tf.reduce_mean(tf.reshape(tf.cast(x, tf.float32), (-1, 4)), axis=1) - BRIGHT

    def defend(self, x):
        labels = tf.argmax(self.logits(x), axis=-1, output_type=tf.int64)
        rejected = self.detection_margin(x) > 0
        decisions = tf.where(rejected, int(Decision.REJECTED), int(Decision.ACCEPTED))
        return tf.where(rejected, tf.constant(REJECTED, tf.int64), labels), decisions


class NoisyLinearDefense(LinearDefense):
    """LinearDefense plus one random shift per image and draw, the same on every logit."""

    stochastic = True

    def logits(self, x):
        z = super().logits(x)
        return z + tf.random.uniform((tf.shape(z)[0], 1), -3.0, 3.0)


def images(*pixels):
    return np.array(pixels, dtype=np.float32).reshape(-1, 2, 2, 1)


# three images: classes 1 and 0 accepted (mean 0.3 and 0.5), one rejected (mean 0.875)
X = images([0.0, 0.2, 1.0, 0.0], [1.0, 0.4, 0.2, 0.4], [1.0, 1.0, 0.5, 1.0])
Y = np.array([1, 0, 2])


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_the_hand_case_is_what_the_comments_say():
    # row 0: (0.4 - 1, 1, -0.2); row 1: (1 + 0.8 - 0.2 + 0.2, -1 + 0.2 + 0.2, 0.5 - 0.4 + 0.8);
    # row 2: (1 + 2 - 0.5 + 0.5, -1 + 0.5 + 0.5, 0.5 - 1 + 2)
    z = X.reshape(3, 4) @ W
    np.testing.assert_allclose(z, [[-0.6, 1.0, -0.2], [1.8, -0.6, 0.9], [3.0, 0.0, 1.5]], atol=1e-6)
    assert LinearDefense().predict(X).tolist() == [1, 0, REJECTED]


def test_decision_votes_by_hand():
    # +1 for the label, -1 elsewhere; a rejection votes for class 3 or abstains (zeros)
    assert decision_votes([2, -1], 3).tolist() == [[-1, -1, 1, -1], [-1, -1, -1, 1]]
    assert decision_votes([2, -1], 3, "abstain").tolist() == [[-1, -1, 1], [0, 0, 0]]
    with pytest.raises(ValueError, match="labels"):
        decision_votes([3], 3)
    with pytest.raises(ValueError, match="rejected"):
        decision_votes([0], 3, "drop")


def test_predict_gives_the_defense_decisions_in_both_modes():
    extra = as_art_classifier(LinearDefense())
    assert isinstance(extra, TensorFlowV2Classifier)
    assert extra.nb_classes == 3 and extra.input_shape == (2, 2, 1) and extra.clip_values.tolist() == [0, 1]
    np.testing.assert_array_equal(extra.predict(X), [[-1, 1, -1, -1], [1, -1, -1, -1],
                                                     [-1, -1, -1, 1]])
    abstain = as_art_classifier(LinearDefense(), rejected="abstain")
    np.testing.assert_array_equal(abstain.predict(X), [[-1, 1, -1], [1, -1, -1], [0, 0, 0]])
    assert extra.predict(X[:0]).shape == (0, 4)


def test_loss_gradient_is_the_closed_form_and_the_tape_through_logits():
    clf = as_art_classifier(LinearDefense())
    z = X.reshape(3, 4) @ W
    onehot = np.eye(3)[Y]
    expected = ((softmax(z) - onehot) @ W.T / 3).reshape(X.shape)  # batch-mean cross-entropy
    np.testing.assert_allclose(clf.loss_gradient(X, onehot), expected, atol=1e-6)
    np.testing.assert_allclose(clf.loss_gradient(X, Y), expected, atol=1e-6)  # class ids too
    xt = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(onehot, LinearDefense().logits(xt)))
    np.testing.assert_allclose(clf.loss_gradient(X, Y), tape.gradient(loss, xt).numpy(), atol=1e-6)
    # ART's TF2 attacks pass tensors and get tensors back
    assert isinstance(clf.loss_gradient(xt, tf.constant(onehot, tf.float32)), tf.Tensor)
    # per-example losses, as ART's APGD asks for them
    np.testing.assert_allclose(clf.compute_loss(X, Y), -np.log(softmax(z)[np.arange(3), Y]),
                               rtol=1e-5)


def test_the_extra_class_label_falls_back_to_the_surface_prediction():
    clf = as_art_classifier(LinearDefense())
    z = X.reshape(3, 4) @ W
    y_extra = np.eye(4)[[3, 3, 3]]  # ART's labels from predict: the rejection class
    expected = ((softmax(z) - np.eye(3)[z.argmax(1)]) @ W.T / 3).reshape(X.shape)
    np.testing.assert_allclose(clf.loss_gradient(X, y_extra), expected, atol=1e-6)


def test_class_gradient_is_the_weight_column():
    clf = as_art_classifier(LinearDefense())
    all_classes = clf.class_gradient(X)
    assert all_classes.shape == (3, 3, 2, 2, 1)
    for k in range(3):
        np.testing.assert_allclose(all_classes[:, k].reshape(3, 4), np.tile(W[:, k], (3, 1)))
    chosen = clf.class_gradient(X, label=[2, 0, 1])
    assert chosen.shape == (3, 1, 2, 2, 1)
    np.testing.assert_allclose(chosen[:, 0].reshape(3, 4), W[:, [2, 0, 1]].T)
    np.testing.assert_allclose(clf.class_gradient(X, label=1)[:, 0].reshape(3, 4),
                               np.tile(W[:, 1], (3, 1)))
    with pytest.raises(ValueError, match="label"):
        clf.class_gradient(X, label=3)


def test_a_stochastic_defense_is_attacked_through_eot():
    defense = NoisyLinearDefense()
    z = X.reshape(3, 4) @ W
    raw = defense.logits(tf.constant(X)).numpy()
    assert not np.allclose(raw, z, atol=1e-3)  # one draw is shifted ...
    clf = as_art_classifier(defense, eot_samples=4)
    # ... but each draw's softmax is softmax(z): the EOT surface is log softmax(z) exactly
    np.testing.assert_allclose(clf.model(X).numpy(), np.log(softmax(z)), atol=1e-5)
    expected = ((softmax(z) - np.eye(3)[Y]) @ W.T / 3).reshape(X.shape)
    np.testing.assert_allclose(clf.loss_gradient(X, Y), expected, atol=1e-5)


def test_art_fgsm_and_pgd_without_random_start_give_our_images():
    defense = LinearDefense()
    clf = as_art_classifier(defense)
    x, y = X[:2], Y[:2]
    ours = get_attack("fgsm", eps=0.1).generate(x, y, model=defense.logits)
    theirs = FastGradientMethod(clf, eps=0.1).generate(x, y=y)
    np.testing.assert_allclose(theirs, ours, atol=1e-6)
    ours = get_attack("bim", eps=0.3, steps=4, step_size=0.1).generate(x, y, model=defense.logits)
    theirs = ProjectedGradientDescent(clf, eps=0.3, eps_step=0.1, max_iter=4, num_random_init=0,
                                      verbose=False).generate(x, y=y)
    np.testing.assert_allclose(theirs, ours, atol=1e-6)
    assert np.abs(theirs - x).max() > 0.2  # the attack moved, so the comparison says something


def test_art_pgd_gives_our_images_through_a_grey_box_cd_vae():
    # an untrained (seeded) tiny CD-VAE: the path x -> G(x) -> classifier, gradients through G
    cdvae = models.CDVAE.for_dataset("mnist_5k", latent_dim=4, width=4, gamma=2e-3, seed=0)
    defense = GreyBoxDefense(cdvae, small_cnn((28, 28, 1), 10, width=4, dense_units=8))
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    y = defense.predict(x)
    ours = get_attack("bim", eps=0.1, steps=3, step_size=0.04).generate(x, y, model=defense.logits)
    theirs = ProjectedGradientDescent(as_art_classifier(defense), eps=0.1, eps_step=0.04, max_iter=3,
                                      num_random_init=0, verbose=False).generate(x, y=y)
    np.testing.assert_allclose(theirs, ours, atol=1e-6)
    assert np.abs(theirs - x).max() > 0.09


def test_detector_adapter_on_a_detector_and_on_a_detecting_defense():
    class Bright(Detector):
        def detect(self, x):
            score = np.asarray(x).reshape(len(x), -1).mean(1)
            return {"score": score}, score > BRIGHT

        def fit(self, x, y=None):
            self.fitted_on = (len(x), y)
            return self

    adapter = as_art_detector(Bright())
    assert isinstance(adapter, EvasionDetector)
    report, flagged = adapter.detect(X)
    assert flagged.dtype == bool and flagged.tolist() == [False, False, True]
    np.testing.assert_allclose(report["score"], [0.3, 0.5, 0.875])
    adapter.fit(X, np.array([0, 0, 1]))
    assert adapter.detector.fitted_on[0] == 3 and adapter.detector.fitted_on[1].tolist() == [0, 0, 1]

    report, flagged = as_art_detector(LinearDefense()).detect(X, batch_size=2)
    np.testing.assert_allclose(report["score"], [0.3 - BRIGHT, 0.5 - BRIGHT, 0.875 - BRIGHT], atol=1e-6)
    assert flagged.tolist() == [False, False, True]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="rejected"):
        as_art_classifier(LinearDefense(), rejected="drop")
    with pytest.raises(ValueError, match="defense"):
        as_art_classifier(lambda x: x)
    with pytest.raises(ValueError, match="eot_samples"):
        as_art_classifier(NoisyLinearDefense(), eot_samples=0)
    open_shape = LinearDefense()
    open_shape.input_shape = None
    with pytest.raises(ValueError, match="input_shape"):
        as_art_classifier(open_shape)
    assert as_art_classifier(open_shape, input_shape=(2, 2, 1)).input_shape == (2, 2, 1)
    clf = as_art_classifier(LinearDefense())
    with pytest.raises(ValueError, match="shape"):
        clf.predict(np.zeros((1, 3, 3, 1), "float32"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clf.loss_gradient(np.full((1, 2, 2, 1), 2.0, "float32"), [0])
    with pytest.raises(NotImplementedError, match="train"):
        clf.fit(X, Y)
    plain = ClassifierDefense(small_cnn((28, 28, 1), 10, width=4, dense_units=8))
    with pytest.raises(ValueError, match="does not detect"):
        as_art_detector(plain)
    with pytest.raises(ValueError, match="Detector"):
        as_art_detector(object())


def test_import_tfdefense_does_not_import_art():
    code = "import sys, tfdefense, tfdefense.interop; print('art' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
