"""AdversarialCDVAE(objective="official"): tools/adv_train_cifar.py's composition, by hand.

The hand case: G halves its input (G(x) = x/2, so D_G sees x′/2 and D sees R(x′) = x′/2)
and both classifiers are lookup tables keyed by the sample's index, coded in the image's
grey level, with one table in training mode and another in inference mode. The margin
set, the targets and every term can then be counted by hand.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense import data, nets
from tfdefense.models import CDVAE, AdversarialCDVAE
from tfdefense.models.adversarial import official_objective, official_selection

K = 10  # classes
SHAPE = (28, 28, 1)
UNIT = 0.05  # grey level of sample i's G(x′) and R(x′): (i + 1)·UNIT


def logits(*head):
    """A row of K logits: ``head`` then zeros."""
    return list(head) + [0.0] * (K - len(head))


def ce(row, target):
    """−log softmax(row)[target], computed here from the formula."""
    return -row[target] + math.log(sum(math.exp(v) for v in row))


class TableLogits(keras.layers.Layer):
    """Logits of sample i = round(mean(input) / UNIT) − 1 from ``train`` or ``infer``."""

    def __init__(self, train, infer, **kwargs):
        super().__init__(**kwargs)
        self.train_table = tf.constant(train, tf.float32)
        self.infer_table = tf.constant(infer, tf.float32)

    def call(self, inputs, training=None):
        idx = tf.cast(tf.round(tf.reduce_mean(inputs, axis=[1, 2, 3]) / UNIT), tf.int32) - 1
        idx = tf.clip_by_value(idx, 0, len(self.train_table) - 1)  # the clean x = 0 reads row 0
        return tf.gather(self.train_table if training else self.infer_table, idx)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], K)


def table_classifier(train, infer, name):
    inputs = keras.Input(SHAPE)
    return keras.Model(inputs, TableLogits(train, infer)(inputs), name=name)


class HalfG(AdversarialCDVAE):
    """G(x) = x / 2 (normalisation mean 0, std 1) and per-example KL = 10·mean(x)."""

    def generate_normalized(self, x, training=False, sample=None):
        return self.normalize(0.5 * x), 10.0 * tf.reduce_mean(x, axis=[1, 2, 3]), None


# D_G(G(x′)) in inference mode (the official selection pass), labels all 0, c = 2:
#   s0 [2, 0, ...]: margin 2, NOT < 2 (≤ would take it)   -> out, argmax 0
#   s1 [1, 0, ...]: margin 1 < 2                          -> in,  argmax 0 = y (Eq. 10's y′≠y: 1)
#   s2 [0, 3, ...]: margin −3                             -> in,  argmax 1
#   s3 [5, 0, ...]: margin 5                              -> out, argmax 0
DG_INFER = [logits(2.0), logits(1.0), logits(0.0, 3.0), logits(5.0)]
# D_G in training mode (the loss pass): margins 0, 4, −2, 0, so selecting on these logits with
# either < or ≤ takes {s0, s2, s3}, not {s1, s2}; s2's argmax here is 2, not 1
DG_TRAIN = [logits(), logits(4.0), logits(0.0, 0.0, 2.0), logits()]
# D(R(x′)) in training mode; its inference table is never read by the loss
D_TRAIN = [logits(1.0), logits(1.0), logits(0.0, 2.0), logits()]
D_INFER = [logits(9.0)] * 4
MARGIN, RE, BETA, GAMMA = 2.0, 1.0, 0.5, 0.1


def hand_model(objective="official", margin=MARGIN):
    enc_dec = CDVAE.for_dataset("mnist_5k", latent_dim=2, width=4,
                                classifier=nets.small_cnn(SHAPE, K, width=2, dense_units=4))
    return HalfG(enc_dec.encoder, enc_dec.decoder, table_classifier(D_TRAIN, D_INFER, "d"),
                 table_classifier(DG_TRAIN, DG_INFER, "d_g"), margin=margin, objective=objective,
                 reconstruction_target="clean", reconstruction_weight=RE, beta=BETA, gamma=GAMMA,
                 normalization_mean=(0.0,), normalization_std=(1.0,))


def hand_batch():
    x = np.zeros((4, *SHAPE), np.float32)  # the clean images
    x_adv = np.stack([np.full(SHAPE, 2 * UNIT * (i + 1), np.float32) for i in range(4)])
    return tf.constant(x), tf.constant(x_adv), tf.constant(np.zeros(4, np.int64))


def test_official_objective_composition_by_hand():
    model = hand_model()
    assert model.clean_weight == 0.0  # the official script has no clean term
    x, x_adv, y = hand_batch()
    clean, adv, total = model.joint_losses(x, x_adv, y, training=True)
    # margin set {s1, s2} (strict <, inference-mode logits); targets argmax over all classes
    assert adv["in_margin"].numpy().tolist() == [0.0, 1.0, 1.0, 0.0]
    assert adv["residual_target"].numpy().tolist() == [0, 0, 1, 0]
    # x′_i = 0.1·(i + 1), G(x′_i) = 0.05·(i + 1); rec_i = mean((G(x′) − x)²) towards the clean
    # x = 0: 0.0025·(i + 1)²; KL_i = 10·mean(x′_i) = i + 1
    rec = [(0.05 * (i + 1)) ** 2 for i in range(4)]
    kl = [1.0 * (i + 1) for i in range(4)]
    ce_r = [ce(D_TRAIN[i], t) for i, t in enumerate([0, 0, 1, 0])]
    ce_g = [ce(DG_TRAIN[i], 0) for i in range(4)]
    np.testing.assert_allclose(adv["reconstruction"].numpy(), rec, rtol=1e-5)
    np.testing.assert_allclose(adv["ce_residual"].numpy(), ce_r, rtol=1e-5)
    np.testing.assert_allclose(adv["ce_generated"].numpy(), ce_g, rtol=1e-5)
    # re·mean(rec) + γ·mean(CE_r) + γ·mean of CE_g over {s1, s2} + β·mean(KL):
    # 0.01875 + 0.1·(2·(−1 + ln(e + 9)) + (−2 + ln(e² + 9)) + ln 10)/4
    #         + 0.1·((−4 + ln(e⁴ + 9)) + ln(e² + 9))/2 + 0.5·2.5 ≈ 1.56675
    expected = (RE * np.mean(rec) + GAMMA * np.mean(ce_r) + GAMMA * (ce_g[1] + ce_g[2]) / 2
                + BETA * np.mean(kl))
    assert expected == pytest.approx(1.56675, abs=1e-5)
    assert float(tf.reduce_mean(total)) == pytest.approx(expected, rel=1e-6)
    assert float(tf.reduce_mean(adv["loss"])) == pytest.approx(expected, rel=1e-6)
    # the clean batch is reported, not trained on: inference mode (D's inference table)
    np.testing.assert_allclose(clean["logits"].numpy(), np.array(D_INFER), rtol=0)


def test_the_paper_objective_differs_on_the_same_case():
    """Eq. 8 (≤, loss-pass logits) and Eq. 10 (argmax_{y′≠y}) pick other samples and targets."""
    model = hand_model(objective="paper")
    assert model.clean_weight == 1.0
    x, x_adv, y = hand_batch()
    adv = model.adversarial_losses(x, x_adv, y, training=True)
    assert adv["in_margin"].numpy().tolist() == [1.0, 0.0, 1.0, 1.0]  # train margins 0, 4, −2, 0 ≤ 2
    wrong = [1, 1, 2, 1]  # argmax_{y′≠0} of DG_TRAIN (ties: the first)
    per = [(0.05 * (i + 1)) ** 2 + BETA * (i + 1)
           + GAMMA * (ce(DG_TRAIN[i], 0) + ce(D_TRAIN[i], wrong[i])) for i in range(4)]
    np.testing.assert_allclose(adv["loss"].numpy(), [per[0], 0.0, per[2], per[3]], rtol=1e-5)


def test_an_empty_margin_set_leaves_the_generated_term_out():
    """Official CE_g is a mean over nothing (NaN in PyTorch); here it contributes 0."""
    model = hand_model(margin=0.0)
    x, x_adv, _ = hand_batch()
    # labels 0, 0, 1, 0: every inference-mode margin (2, 1, 3, 5) is ≥ c = 0, so nothing is in
    adv = model.adversarial_losses(x, x_adv, tf.constant([0, 0, 1, 0], tf.int64), training=True)
    assert adv["in_margin"].numpy().sum() == 0
    expected = np.array([(0.05 * (i + 1)) ** 2 + BETA * (i + 1) + GAMMA * ce(D_TRAIN[i], t)
                         for i, t in enumerate([0, 0, 1, 0])])
    np.testing.assert_allclose(adv["loss"].numpy(), expected, rtol=1e-5)


def test_selection_and_objective_functions_by_hand():
    z = tf.constant([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    mask, target = official_selection(z, tf.constant([0, 0, 0], tf.int64), margin=2.0)
    assert mask.numpy().tolist() == [False, True, True]
    assert target.numpy().tolist() == [0, 0, 1]
    # rec 1, 2, 3; kl 0; CE_r 0; CE_g 4, 6, 8 with m = 0, 1, 1: mean(rec) + (6 + 8)/2 = 2 + 7
    per = official_objective(tf.constant([1.0, 2.0, 3.0]), tf.zeros(3), tf.constant([4.0, 6.0, 8.0]),
                             tf.zeros(3), mask, reconstruction_weight=1.0, beta=1.0, gamma=1.0)
    assert float(tf.reduce_mean(per)) == pytest.approx(9.0)
    # a replica holding 3 of a global batch of 6 with 4 samples in the margin: its CE_g share is
    # Σ m·CE_g / 4 = 3.5, which the train step's mean / replicas (3 / 6 per sample) gives back
    per = official_objective(tf.zeros(3), tf.zeros(3), tf.constant([4.0, 6.0, 8.0]), tf.zeros(3), mask,
                             reconstruction_weight=1.0, beta=1.0, gamma=1.0,
                             in_margin_count=tf.constant(4.0), batch_size=tf.constant(6.0))
    assert float(tf.reduce_mean(per)) / 2 == pytest.approx(3.5)


# ------------------------------------------------------------- the real model, trained
@pytest.fixture(scope="module")
def arrays():
    x, y = data.load_arrays("mnist_5k", "train")
    return x[:64], y[:64]


def tiny_official(**kwargs):
    kwargs = {"objective": "official", **kwargs}
    base = CDVAE.for_dataset("mnist_5k", latent_dim=8, width=8, seed=0,
                             classifier=nets.small_cnn(SHAPE, K, width=4, dense_units=8))
    return AdversarialCDVAE.from_cdvae(base, nets.small_cnn(SHAPE, K, width=4, dense_units=8),
                                       eps=0.3, attack_steps=2, **kwargs)


def test_official_fit_reports_the_paper_objectives_keys_and_round_trips(arrays):
    keras.utils.set_random_seed(0)
    model = tiny_official()
    # plain SGD: this checks the official train step's graph, not the update rule (the paper
    # AdamW's update of every variable is traced in test_adversarial's fit), and SGD's has no
    # slot per variable to trace: 4.5 s of CPU here against 6 s for AdamW
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    history = model.fit(*arrays, batch_size=32, epochs=1, verbose=0).history
    assert set(history) == {"loss", "reconstruction", "kl", "ce", "accuracy", "reconstruction_accuracy",
                            "adversarial_loss", "adversarial_reconstruction", "adversarial_kl",
                            "ce_generated", "ce_residual", "in_margin", "generated_accuracy",
                            "adversarial_accuracy"}
    assert all(np.isfinite(v).all() for v in history.values())
    # no clean term: the loss is the adversarial objective itself
    assert history["loss"][0] == pytest.approx(history["adversarial_loss"][0], rel=1e-5)
    config = model.get_config()
    assert (config["objective"], config["clean_weight"]) == ("official", 0.0)
    clone = AdversarialCDVAE.from_config(config)
    assert (clone.objective, clone.clean_weight, clone.margin) == ("official", 0.0, model.margin)


def test_official_objective_with_a_clean_weight_mixes_the_clean_loss(arrays):
    model = tiny_official(clean_weight=0.5)
    x, y = tf.constant(arrays[0][:8]), tf.constant(arrays[1][:8])
    clean, adv, total = model.joint_losses(x, x, y, training=False)
    np.testing.assert_allclose(total.numpy(), (0.5 * clean["loss"] + adv["loss"]).numpy(), rtol=1e-6)


def test_a_config_without_objective_loads_as_paper():
    config = tiny_official().get_config()
    del config["objective"]
    config["clean_weight"] = 1.0  # what a model saved before the parameter existed holds
    assert AdversarialCDVAE.from_config(config).objective == "paper"


def test_a_bad_objective_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="objective"):
        tiny_official(objective="both")
