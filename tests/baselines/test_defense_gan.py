"""Defense-GAN: batched projection, restarts, BPDA path, the Defense interface, validation,
saving and serving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdefense.defend
from tfdefense import data, export
from tfdefense.baselines import DefenseGAN, defense_gan_generator
from tfdefense.baselines.defense_gan import PAPER_ITERATIONS, PAPER_RESTARTS
from tfdefense.defend import REJECTED, Defense
from tfdefense.nets import small_cnn


def _dgan(**kwargs):
    keras.utils.set_random_seed(0)
    params = {"iterations": 15, "restarts": 3, "seed": 0, **kwargs}
    return DefenseGAN(defense_gan_generator(latent_dim=8, width=4),
                      small_cnn(width=4, dense_units=8), **params)


@pytest.fixture(scope="module")
def x():
    return data.load_arrays("mnist_5k", "test")[0][:12]


def test_paper_defaults():
    model = DefenseGAN(defense_gan_generator(latent_dim=8, width=4),
                       small_cnn(width=4, dense_units=8))
    assert (model.iterations, model.restarts) == (PAPER_ITERATIONS, PAPER_RESTARTS) == (200, 10)
    assert (model.learning_rate, model.momentum) == (10.0, 0.7)
    assert defense_gan_generator().input_shape == (None, 128)


def test_projection_reduces_the_error_from_the_starting_code(x):
    out = _dgan().project(x, batch_size=5, details=True, progress=False)
    assert out.images.shape == x.shape and out.latents.shape == (12, 8)
    assert out.restart_errors.shape == (12, 3)
    assert np.all(out.errors < out.initial_errors)
    # the kept restart is the best one, and its error is the image's real error
    np.testing.assert_allclose(out.errors, out.restart_errors.min(axis=1))
    np.testing.assert_allclose(out.errors, np.mean((out.images - x) ** 2, axis=(1, 2, 3)),
                               rtol=1e-5)


def _known_generator(latent_dim=8):
    """A fixed random generator with an identifiable latent: sigmoid(W z), W ~ N(0, 1)."""
    keras.utils.set_random_seed(1)
    z = keras.Input((latent_dim,))
    h = keras.layers.Dense(28 * 28, activation="sigmoid",
                           kernel_initializer=keras.initializers.RandomNormal(0.0, 1.0))(z)
    return keras.Model(z, keras.layers.Reshape((28, 28, 1))(h))


def test_projection_recovers_a_known_latent():
    # x = G(z_true) for a fixed generator: the official schedule (step 10 on the per-pixel
    # MSE, momentum 0.7) must find z_true itself, not just a look-alike image
    gen = _known_generator()
    z_true = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")
    x = gen(z_true).numpy()
    model = DefenseGAN(gen, small_cnn(width=4, dense_units=8), iterations=100, restarts=2, seed=0)
    out = model.project(x, details=True, progress=False)
    assert np.all(out.initial_errors > 1e-2)
    assert np.all(out.errors < 1e-6), out.errors
    np.testing.assert_allclose(out.latents, z_true, atol=1e-2)
    np.testing.assert_allclose(out.images, x, atol=1e-3)


def test_the_best_restart_is_kept_per_image():
    # half the restarts start from a code the step cannot fix within one iteration: the
    # projection must pick, image by image, whichever restart ended lowest
    gen = _known_generator()
    z_true = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    x = gen(z_true).numpy()
    model = DefenseGAN(gen, small_cnn(width=4, dense_units=8), iterations=2, restarts=5, seed=3)
    out = model.project(x, details=True, progress=False)
    best = out.restart_errors.argmin(axis=1)
    assert len(set(best.tolist())) > 1  # different images keep different restarts
    np.testing.assert_allclose(out.errors, out.restart_errors[np.arange(4), best])
    np.testing.assert_allclose(out.errors, np.mean((out.images - x) ** 2, axis=(1, 2, 3)),
                               rtol=1e-5)


def test_more_restarts_never_hurt(x):
    # restarts share their starting codes' stream, so R = 1's code is among R = 3's
    one = _dgan(restarts=1).project(x, details=True, progress=False)
    three = _dgan(restarts=3).project(x, details=True, progress=False)
    np.testing.assert_allclose(one.restart_errors[:, 0], three.restart_errors[:, 0], rtol=1e-5)
    assert np.all(three.errors <= one.errors + 1e-7)


def test_batched_restarts_equal_the_loop_over_restarts(x):
    model = _dgan()
    batched = model.project(x, batch_size=6, details=True, progress=False)
    looped = model.project(x, batch_size=6, batched=False, details=True, progress=False)
    np.testing.assert_allclose(batched.restart_errors, looped.restart_errors, rtol=1e-4,
                               atol=1e-7)
    np.testing.assert_allclose(batched.images, looped.images, atol=1e-4)


def test_projection_of_an_image_does_not_depend_on_its_batch(x):
    # every image starts from the same R codes, so batching and order change nothing
    model = _dgan()
    whole = model.project(x, batch_size=12, details=True, progress=False)
    split = model.project(x[::-1], batch_size=5, details=True, progress=False)
    np.testing.assert_allclose(split.restart_errors[::-1], whole.restart_errors, rtol=1e-4,
                               atol=1e-7)
    np.testing.assert_allclose(split.images[::-1], whole.images, atol=1e-5)


def test_seed_makes_projection_repeatable(x):
    a = _dgan(seed=3).project(x, progress=False)
    b = _dgan(seed=3).project(x, progress=False)
    c = _dgan(seed=4).project(x, progress=False)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_predict_classifies_the_projection_and_accepts_every_input(x):
    model = _dgan()
    labels, decisions = model.predict_with_decisions(x, batch_size=5)
    projected = model.project(x, progress=False)
    expected = np.argmax(model.classifier(projected).numpy(), axis=1)
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(decisions, np.zeros(len(x)))  # ACCEPTED: never rejects
    assert labels.dtype == np.int64 and not np.any(labels == REJECTED)


def test_defense_gan_is_a_defense_holding_its_models_not_a_keras_model():
    model = _dgan(iterations=1, restarts=1)
    assert isinstance(model, Defense) and not isinstance(model, keras.Model)
    assert not model.detects and not model.stochastic
    assert set(model.components()) == {"generator", "classifier"}
    with pytest.raises(ValueError, match="does not detect"):
        model.detection_margin(tf.zeros((1, 28, 28, 1)))


def test_seed_none_draws_fresh_starting_codes_per_call(x):
    model = _dgan(seed=None, iterations=3, restarts=2)
    assert model.stochastic  # an attacker needs EOT over the starting codes
    first = model.project(x[:4], details=True, progress=False)
    second = model.project(x[:4], details=True, progress=False)
    assert not np.allclose(first.restart_errors, second.restart_errors)
    assert not np.allclose(first.latents, second.latents)


def test_bpda_gradient_is_the_classifier_gradient_at_the_projection(x):
    model = _dgan()
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(model.logits(xt)[:, 3])
    grad = tape.gradient(loss, xt).numpy()
    projected = model.project_tensor(x)
    np.testing.assert_array_equal(
        projected.numpy(), model.project(x, batch_size=len(x), progress=False))
    with tf.GradientTape() as tape:
        tape.watch(projected)
        loss = tf.reduce_sum(model.classifier(projected)[:, 3])
    expected = tape.gradient(loss, projected).numpy()
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


def test_bpda_steps_raise_the_defended_loss_up_and_lower_it_down():
    # 3 BPDA-FGSM steps through the projection (Athalye et al. 2018) on images of a generator
    # whose range the projection recovers, against a linear classifier: stepping along the
    # BPDA gradient raises the loss of the defense's own labels, stepping against it lowers it
    # (an untrained generator and classifier, as in the other tests, leave the loss flat)
    gen = _known_generator()
    x = tf.constant(gen(np.random.default_rng(0).normal(size=(6, 8)).astype("float32")))
    clf = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(
        10, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.1, seed=0))])
    model = DefenseGAN(gen, clf, iterations=100, restarts=2, seed=0)
    y = tf.constant(model.predict(x.numpy()))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    before = float(loss_fn(y, model.logits(x)))
    after = {}
    for direction in (1.0, -1.0):
        adv = x
        for _ in range(3):
            with tf.GradientTape() as tape:
                tape.watch(adv)
                loss = loss_fn(y, model.logits(adv))
            adv = tf.clip_by_value(adv + direction * 0.05 * tf.sign(tape.gradient(loss, adv)),
                                   0.0, 1.0)
        after[direction] = float(loss_fn(y, model.logits(adv)))
    assert after[1.0] > before + 0.02 and after[-1.0] < before - 0.01, (before, after)


@pytest.mark.parametrize("name,value", [
    ("iterations", 0), ("iterations", -1), ("iterations", 2.0), ("iterations", "200"),
    ("restarts", 0), ("restarts", -3), ("restarts", None),
    ("learning_rate", 0.0), ("learning_rate", -1.0), ("learning_rate", float("inf")),
    ("momentum", 1.0), ("momentum", -0.1),
    ("batch_size", 0), ("seed", -1),
])
def test_bad_parameters(name, value):
    with pytest.raises(ValueError, match=name):
        _dgan(**{name: value})


BAD_IMAGES = {
    "rank": np.zeros((2, 28, 28), "float32"),
    "shape": np.zeros((2, 28, 28, 3), "float32"),
    "range": np.full((2, 28, 28, 1), 255.0, "float32"),
    "negative": np.full((2, 28, 28, 1), -0.5, "float32"),
    "nan": np.full((2, 28, 28, 1), np.nan, "float32"),
    "uint8": np.zeros((2, 28, 28, 1), "uint8"),
    "empty": np.zeros((0, 28, 28, 1), "float32"),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
@pytest.mark.parametrize("method", ["predict", "project"])
def test_bad_images(method, name):
    if method == "predict" and name == "empty":
        assert _dgan(iterations=1, restarts=1).predict(BAD_IMAGES[name]).shape == (0,)
        return  # Defense.predict answers an empty batch with no labels
    with pytest.raises(ValueError, match="x"):
        getattr(_dgan(iterations=1, restarts=1), method)(BAD_IMAGES[name])


def test_bad_batch_size_in_project(x):
    with pytest.raises(ValueError, match="batch_size"):
        _dgan().project(x, batch_size=-2)


def test_save_and_load_round_trip(x, tmp_path):
    model = _dgan(iterations=12, restarts=2, learning_rate=5.0, momentum=0.5, seed=7,
                  batch_size=5)
    path = model.save(str(tmp_path / "dgan"))
    loaded = tfdefense.defend.load(path)
    assert isinstance(loaded, DefenseGAN)
    assert loaded.get_config() == {"iterations": 12, "restarts": 2, "learning_rate": 5.0,
                                   "momentum": 0.5, "seed": 7, "batch_size": 5}
    np.testing.assert_array_equal(loaded.project(x, progress=False),
                                  model.project(x, progress=False))
    for got, want in zip(loaded.predict_with_decisions(x), model.predict_with_decisions(x),
                         strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded.logits(x[:3]).numpy(), model.logits(x[:3]).numpy())


def test_parts_round_trip_keeps_a_missing_seed():
    model = _dgan(iterations=3, restarts=4, seed=None)
    clone = DefenseGAN.from_parts(model.get_config(), model.components(), {})
    assert (clone.iterations, clone.restarts, clone.latent_dim, clone.seed) == (3, 4, 8, None)
    assert clone.stochastic


def test_exported_defend_signature_gives_the_defense_labels(x, tmp_path):
    model = _dgan(iterations=6, restarts=2)
    path = export.for_serving(model, str(tmp_path / "dgan"), 1)
    assert sorted(export.read_metadata(path)["signatures"]) == ["defend", "serving_default"]
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["defend"](images=tf.constant(x))
    labels, decisions = model.predict_with_decisions(x)
    np.testing.assert_array_equal(out["label"].numpy(), labels)
    np.testing.assert_array_equal(out["decision"].numpy(), decisions)
    logits = loaded.signatures["serving_default"](images=tf.constant(x))["logits"].numpy()
    np.testing.assert_allclose(logits, model.logits(x).numpy(), rtol=1e-4, atol=1e-5)
