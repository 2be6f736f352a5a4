"""AdversarialCDVAE (Eq. 7–10) and PGDAdversarialTraining: losses by hand, attacks, params, saving."""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense import data, nets
from tfdefense.attacks import losses as attack_losses
from tfdefense.models import CDVAE, AdversarialCDVAE, PGDAdversarialTraining, vae_losses
from tfdefense.models.adversarial import (
    disentangling_loss,
    margin_to_wrong_class,
    most_likely_wrong_class,
)

EPS = 0.3


def tiny_cdvae(width=8, seed=0):
    clf = nets.small_cnn((28, 28, 1), 10, width=4, dense_units=8, name="classifier")
    return CDVAE.for_dataset("mnist_5k", latent_dim=8, width=width, classifier=clf, seed=seed)


def tiny_d_g(classes=10, shape=(28, 28, 1)):
    return nets.small_cnn(shape, classes, width=4, dense_units=8, name="d_g")


def tiny_model(**kwargs):
    kwargs = {"eps": EPS, "attack_steps": 2, **kwargs}
    return AdversarialCDVAE.from_cdvae(tiny_cdvae(), tiny_d_g(), **kwargs)


@pytest.fixture(scope="module")
def arrays():
    x, y = data.load_arrays("mnist_5k", "train")
    return x[:96], y[:96]


@pytest.fixture(scope="module")
def trained(arrays):
    """Trained once: 2 epochs of 3 batches of 32 (tiny nets, 2 attack steps)."""
    keras.utils.set_random_seed(0)
    model = tiny_model(seed=0)
    model.compile()
    history = model.fit(*arrays, batch_size=32, epochs=2, verbose=0)
    return model, history.history


# ------------------------------------------------------------------ loss maths
def test_margin_and_wrong_class_by_hand():
    logits = tf.constant([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    y = tf.constant([0, 2], tf.int64)
    np.testing.assert_allclose(margin_to_wrong_class(logits, y).numpy(), [1.0, -2.0])
    assert most_likely_wrong_class(logits, y).numpy().tolist() == [1, 1]


def test_eq10_loss_matches_hand_computation():
    generated = tf.constant([[2.0, 1.0, 0.0]])
    residual = tf.constant([[0.5, -1.0, 0.0]])
    terms = disentangling_loss(generated, residual, tf.constant([0], tf.int64))
    ce_g = -2.0 + math.log(math.e**2 + math.e + 1)  # −log softmax(D_G)[y = 0]
    ce_r = 1.0 + math.log(math.exp(0.5) + math.exp(-1.0) + 1)  # −log softmax(D)[wrong = 1]
    np.testing.assert_allclose(terms["ce_generated"].numpy(), [ce_g], rtol=1e-6)
    np.testing.assert_allclose(terms["ce_residual"].numpy(), [ce_r], rtol=1e-6)
    np.testing.assert_allclose(terms["total"].numpy(), [ce_g + ce_r], rtol=1e-6)


@pytest.mark.parametrize("target", ["adversarial", "clean"])
def test_adversarial_losses_match_eq8_to_10_by_hand(arrays, target):
    model = tiny_model(reconstruction_target=target, margin=1e6, beta=0.2, gamma=2.0)
    x = tf.constant(arrays[0][:8])
    y = tf.constant(arrays[1][:8])
    x_adv = model.craft(x, y, seed=tf.constant([1, 2]))
    terms = model.adversarial_losses(x, x_adv, y, training=False)
    q = model.posterior(x_adv)
    g_n = model.decoder(q.mean())
    g = model.denormalize(g_n)
    logits_g = model.generated_classifier(g)
    logits_r = model.classifier(x_adv - g)
    wrong = most_likely_wrong_class(logits_g, y)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits
    rec = tf.reduce_mean(tf.square(model.normalize(x_adv if target == "adversarial" else x) - g_n),
                         axis=[1, 2, 3])
    kl = vae_losses.kl_to_standard_normal(q)
    expected = rec + 0.2 * kl + 2.0 * (ce(labels=y, logits=logits_g) + ce(labels=wrong,
                                                                          logits=logits_r))
    np.testing.assert_allclose(terms["unmasked_loss"].numpy(), expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(terms["in_margin"].numpy(), np.ones(8))  # c = 1e6: all inside
    np.testing.assert_allclose(terms["loss"].numpy(), expected.numpy(), rtol=1e-5)


def test_only_samples_within_the_margin_contribute(arrays):
    model = tiny_model()
    x = tf.constant(arrays[0][:16])
    y = tf.constant(arrays[1][:16])
    margins = margin_to_wrong_class(model.defended_logits(x), y).numpy()
    model.margin = float(np.median(margins)) if np.median(margins) >= 0 else 0.0
    inside = margins <= model.margin
    assert 0 < inside.sum() < 16, margins

    def loss_and_grads(xs, ys):
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(model.adversarial_losses(xs, xs, ys, training=False)["loss"])
        return total, tape.gradient(total, model.trainable_variables)

    full, g_full = loss_and_grads(x, y)
    sub, g_sub = loss_and_grads(tf.boolean_mask(x, inside), tf.boolean_mask(y, inside))
    np.testing.assert_allclose(full.numpy(), sub.numpy(), rtol=1e-5)
    for a, b in zip(g_full, g_sub, strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            np.testing.assert_allclose(tf.convert_to_tensor(a).numpy(),
                                       tf.convert_to_tensor(b).numpy(), rtol=1e-4, atol=1e-6)
    outside = model.adversarial_losses(tf.boolean_mask(x, ~inside), tf.boolean_mask(x, ~inside),
                                       tf.boolean_mask(y, ~inside), training=False)
    assert float(tf.reduce_max(tf.abs(outside["loss"]))) == 0.0


# --------------------------------------------------------------------- attack
def test_crafted_examples_stay_within_eps_and_raise_the_margin_loss(arrays):
    model = tiny_model(attack_only_correct=False, attack_steps=5)
    x = tf.constant(arrays[0][:32])
    y = tf.constant(arrays[1][:32])
    x_adv = model.craft(x, y, seed=tf.constant([3, 4]))
    assert float(tf.reduce_max(tf.abs(x_adv - x))) <= EPS + 1e-6
    assert 0.0 <= float(tf.reduce_min(x_adv)) and float(tf.reduce_max(x_adv)) <= 1.0
    before = attack_losses.margin(model.defended_logits(x), y, kappa=10.0)
    after = attack_losses.margin(model.defended_logits(x_adv), y, kappa=10.0)
    assert float(tf.reduce_mean(after)) > float(tf.reduce_mean(before))


def test_only_correctly_classified_samples_are_attacked(arrays):
    model = tiny_model()
    x = tf.constant(arrays[0][:32])
    y = tf.constant(arrays[1][:32])
    wrong = np.argmax(model.defended_logits(x).numpy(), 1) != arrays[1][:32]
    assert wrong.any()
    x_adv = model.craft(x, y, seed=tf.constant([5, 6])).numpy()
    np.testing.assert_array_equal(x_adv[wrong], arrays[0][:32][wrong])


# ------------------------------------------------------------------- training
def test_fit_reports_every_term_and_the_in_margin_fraction(trained):
    _, history = trained
    expected = {"loss", "reconstruction", "kl", "ce", "accuracy", "reconstruction_accuracy",
                "adversarial_loss", "adversarial_reconstruction", "adversarial_kl",
                "ce_generated", "ce_residual", "in_margin", "generated_accuracy",
                "adversarial_accuracy"}
    assert set(history) == expected
    for key, values in history.items():
        assert all(np.isfinite(values)), key
    assert all(0.0 <= v <= 1.0 for v in history["in_margin"])


def test_evaluate_reports_the_same_keys_as_fit(trained, arrays):
    model, history = trained
    metrics = model.evaluate(*arrays, batch_size=48, return_dict=True, verbose=0)
    assert set(metrics) == set(history)


def test_fit_with_a_callback_and_a_dataset(trained, arrays):
    # the module's trained model goes on training from a tf.data pipeline for one epoch, and
    # the callback sees that epoch's logs. Fit on the numpy arrays fed batches of a static 32
    # (96 = 3 × 32); drop_remainder gives the pipeline that same element spec, so the traced
    # train step is reused rather than traced again for a (None, ...) batch
    model, _ = trained
    seen = []
    cb = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(logs["in_margin"]))
    steps = int(model.optimizer.iterations)
    ds = tf.data.Dataset.from_tensor_slices(arrays).take(64).batch(32, drop_remainder=True)
    model.fit(ds, epochs=1, verbose=0, callbacks=[cb])
    assert len(seen) == 1 and 0.0 <= seen[0] <= 1.0
    assert int(model.optimizer.iterations) == steps + 2


def _settings(model):
    """get_config without the nested networks (their layer configs carry auto-generated names)."""
    nets_ = ("encoder", "decoder", "classifier", "generated_classifier")
    return {k: v for k, v in model.get_config().items() if k not in nets_}


def test_keras_round_trip(trained, arrays, tmp_path):
    model, _ = trained
    path = os.path.join(tmp_path, "adv.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, AdversarialCDVAE)
    assert _settings(loaded) == _settings(model)
    x = arrays[0][:8]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
    np.testing.assert_allclose(loaded.residual_logits(x).numpy(), model.residual_logits(x).numpy(),
                               atol=1e-5)
    # optimizer state restored: the step count and every slot variable
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) > 0
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_from_cdvae_copies_the_pretrained_weights():
    base = tiny_cdvae()
    model = AdversarialCDVAE.from_cdvae(base, tiny_d_g(), eps=EPS)
    for name in ("encoder", "decoder", "classifier"):
        for a, b in zip(getattr(model, name).weights, getattr(base, name).weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert getattr(model, name) is not getattr(base, name)
    assert model.gamma == base.gamma and model.beta == base.beta


# ------------------------------------------------------------ bad parameters
@pytest.mark.parametrize("name, value", [
    ("margin", -1.0), ("eps", 0.0), ("eps", 1.5), ("attack_steps", 0), ("attack_steps", 2.5),
    ("attack_step_size", -0.1), ("kappa", 0.0), ("clean_weight", -1.0),
    ("reconstruction_target", "both"), ("attack_only_correct", "yes"),
])
def test_bad_hyperparameters_raise_value_error_naming_them(name, value):
    with pytest.raises(ValueError, match=name):
        tiny_model(**{name: value})


def test_generated_classifier_with_wrong_classes_raises():
    with pytest.raises(ValueError, match="generated_classifier"):
        AdversarialCDVAE.from_cdvae(tiny_cdvae(), tiny_d_g(classes=5))


def test_generated_classifier_with_wrong_input_shape_raises():
    with pytest.raises(ValueError, match="generated_classifier"):
        AdversarialCDVAE.from_cdvae(tiny_cdvae(), tiny_d_g(shape=(32, 32, 3)))


def test_starting_weights_of_another_architecture_raise():
    model = tiny_model()
    with pytest.raises(ValueError, match="another architecture"):
        model.load_cdvae_weights(tiny_cdvae(width=16))
    with pytest.raises(ValueError, match="cdvae"):
        AdversarialCDVAE.from_cdvae(tiny_d_g(), tiny_d_g())


# ------------------------------------------------------------------- PGD-AT
@pytest.fixture(scope="module")
def pgd_at(arrays):
    keras.utils.set_random_seed(0)
    model = PGDAdversarialTraining(tiny_d_g(), eps=EPS, attack_steps=2, seed=0)
    model.compile()
    history = model.fit(*arrays, batch_size=32, epochs=1, verbose=0)
    return model, history.history


def test_pgd_training_fits_and_evaluates_with_the_same_keys(pgd_at, arrays):
    model, history = pgd_at
    assert set(history) == {"loss", "accuracy", "adversarial_accuracy"}
    assert set(model.evaluate(*arrays, return_dict=True, verbose=0)) == set(history)


def test_pgd_training_crafts_within_eps_and_raises_the_cross_entropy(pgd_at, arrays):
    model, _ = pgd_at
    x, y = tf.constant(arrays[0][:32]), tf.constant(arrays[1][:32])
    x_adv = model.craft(x, y, seed=tf.constant([7, 8]))
    assert float(tf.reduce_max(tf.abs(x_adv - x))) <= EPS + 1e-6
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits
    assert float(tf.reduce_mean(ce(labels=y, logits=model(x_adv)))) > float(
        tf.reduce_mean(ce(labels=y, logits=model(x))))


def test_pgd_training_keras_round_trip(pgd_at, arrays, tmp_path):
    model, _ = pgd_at
    path = os.path.join(tmp_path, "pgd.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert _settings(loaded) == _settings(model)
    np.testing.assert_allclose(loaded.predict(arrays[0][:8], verbose=0),
                               model.predict(arrays[0][:8], verbose=0), atol=1e-5)


@pytest.mark.parametrize("name, value", [
    ("eps", 0.0), ("eps", 2.0), ("attack_steps", 0), ("attack_step_size", 0.0),
    ("clean_weight", -0.5),
])
def test_pgd_training_bad_hyperparameters(name, value):
    with pytest.raises(ValueError, match=name):
        PGDAdversarialTraining(tiny_d_g(), **{name: value})


def test_pgd_training_rejects_bad_images(pgd_at):
    model, _ = pgd_at
    with pytest.raises(ValueError, match="x"):
        model.fit(np.full((4, 28, 28, 1), 255.0, "float32"), np.zeros(4, "int64"), verbose=0)


def test_from_cdvae_copies_every_setting_of_the_cdvae():
    base = tiny_cdvae(seed=7)
    changed = {"beta": 0.3, "gamma": 5.0, "reconstruction_weight": 2.5, "mixup_alpha": 0.5,
               "normalization_mean": (0.1,), "normalization_std": (0.3,), "seed": 7}
    base = CDVAE.from_config({**base.get_config(), **changed})
    model = AdversarialCDVAE.from_cdvae(base, tiny_d_g(), eps=EPS)
    config = model.get_config()
    for key, value in changed.items():
        got = tuple(config[key]) if isinstance(value, tuple) else config[key]
        assert got == value, key
    assert model.from_cdvae(base, tiny_d_g(), seed=3).get_config()["seed"] == 3  # kwargs win
