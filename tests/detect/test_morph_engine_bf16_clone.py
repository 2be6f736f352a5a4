"""The bfloat16 morph engine runs its own mixed_bfloat16 copies of the decoder and the
classifier: the user's models keep their float32 policy and their outputs, the copies hold the
same float32 weights (BatchNorm statistics, nested models and custom layers included), and
the engine's logits and resistances are those of the previous implementation, which switched
the user's own layers to mixed_bfloat16 while tracing (``compute_precision`` below, the
reference).

The case: an untrained Table I combo-VAE (m = 6) and a classifier with BatchNorm, a nested
functional block and a registered custom layer, every weight drawn at random (BatchNorm's
moving statistics too, so a copy that dropped them would show), on uniform-noise images.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.detect.morphs import MorphEngine, mixed_bfloat16_clone
from tfdefense.models import DGMM, ComboVAE


@keras.saving.register_keras_serializable(package="test_bf16_clone")
class Scale(keras.layers.Layer):
    """x · s, one trainable scale per channel (a custom layer with a weight)."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


def _classifier() -> keras.Model:
    inner_in = keras.Input((14, 14, 4))
    inner = keras.Model(inner_in, keras.layers.BatchNormalization()(
        keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inner_in)), name="inner")
    x = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
    h = keras.layers.BatchNormalization()(h)
    h = Scale()(keras.layers.ReLU()(h))
    h = keras.layers.Flatten()(inner(h))
    return keras.Model(x, keras.layers.Dense(10)(keras.layers.Dense(16, activation="relu")(h)),
                       name="classifier")


def _randomize(model: keras.Model, rng: np.random.Generator) -> None:
    for v in model.weights:
        shape = tuple(v.shape)
        if "gamma" in v.path or "moving_variance" in v.path or "scale" in v.path:
            v.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif v.ndim == 1:
            v.assign(rng.normal(0, 0.3, shape).astype("float32"))
        else:
            v.assign((3.0 * np.asarray(v) + rng.normal(0, 0.05, shape)).astype("float32"))


@pytest.fixture(scope="module")
def case():
    keras.utils.set_random_seed(0)
    dgmm = DGMM.for_dataset("mnist_5k", feature_dim=10, seed=0)
    vae = ComboVAE.for_dataset("mnist_5k", dgmm, latent_dim=6, discriminator_units=8,
                               discriminator_depth=1, seed=0)
    clf = _classifier()
    rng = np.random.default_rng(0)
    for m in (vae, clf):
        _randomize(m, rng)
    x = rng.random((6, 28, 28, 1), dtype="float32")
    x_val = rng.random((24, 28, 28, 1), dtype="float32")
    z_s = tf.constant(rng.normal(size=(5, 6)).astype("float32"))
    z_u = tf.constant(rng.normal(size=(5, 10)).astype("float32"))
    return vae, clf, x, x_val, z_s, z_u


def _engine(vae, clf, x_val, compute_dtype, cls=MorphEngine):
    return cls(vae, clf, codes=[0, 1, 2], n_morphs=12, samples_per_iteration=4,
               max_iterations=20, chunk_size=16, seed=3, compute_dtype=compute_dtype).fit(x_val)


def _leaf_layers(model) -> list:
    out = []
    for layer in getattr(model, "layers", []):
        out.extend(_leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return out


@contextlib.contextmanager
def compute_precision(models, compute_dtype: str):
    """The previous implementation (removed from the library): every float32 layer of the
    ``models`` computes under ``mixed_bfloat16`` inside the block (read while tracing)."""
    layers = [layer for m in models for layer in _leaf_layers(m)
              if getattr(layer, "dtype_policy", None) is not None
              and layer.dtype_policy.name == "float32"]
    previous = [layer.dtype_policy for layer in layers]
    try:
        for layer in layers:
            layer.dtype_policy = "mixed_bfloat16"
        yield
    finally:
        for layer, policy in zip(layers, previous, strict=True):
            layer.dtype_policy = policy


class SwitchingEngine(MorphEngine):
    """The previous bfloat16 implementation: the user's own layers switched to mixed_bfloat16
    while the graph is traced."""

    def _decode_and_classify(self, z_s, z_u):
        with compute_precision([self.combo_vae.decoder, self.classifier], self.compute_dtype):
            logits = self.classifier(self.combo_vae.decode(z_s, z_u), training=False)
        return tf.cast(logits, tf.float32)


def _layers(model) -> list:
    out = []
    for layer in model.layers:
        out.extend([layer, *_layers(layer)] if isinstance(layer, keras.Model) else [layer])
    return out


def test_users_models_keep_their_policy_weights_and_outputs_after_a_bf16_engine_ran(case):
    vae, clf, x, x_val, z_s, z_u = case
    models = (vae.decoder, clf)
    policies = [[layer.dtype_policy.name for layer in _layers(m)] for m in models]
    weights = [[w.copy() for w in m.get_weights()] for m in models]
    before = (clf(x, training=False).numpy(), vae.decoder([z_s, z_u], training=False).numpy())
    engine = _engine(vae, clf, x_val, "bfloat16")
    engine.resistance(x, batch_size=4)
    engine.morph_images(x[:1])
    assert [[layer.dtype_policy.name for layer in _layers(m)] for m in models] == policies
    assert {p for ps in policies for p in ps} == {"float32"}
    for m, ws in zip(models, weights, strict=True):
        for a, b in zip(m.get_weights(), ws, strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(clf(x, training=False).numpy(), before[0])
    np.testing.assert_array_equal(vae.decoder([z_s, z_u], training=False).numpy(), before[1])
    assert clf(x).dtype == tf.float32


def test_clone_computes_in_bfloat16_on_float32_copies_of_every_weight(case):
    _, clf, x, *_ = case
    clone = mixed_bfloat16_clone(clf)
    assert clone is not clf
    inner, inner_clone = clf.get_layer("inner"), clone.get_layer("inner")
    assert inner_clone is not inner
    assert isinstance(clone.layers[4], Scale) and clone.layers[4] is not clf.layers[4]
    computing = [layer for layer in _layers(clone) if not isinstance(layer, keras.Model)
                 and not isinstance(layer, keras.layers.InputLayer)]
    assert {layer.dtype_policy.name for layer in computing} == {"mixed_bfloat16"}
    assert len(clone.weights) == len(clf.weights) == 17  # BatchNorm: 4 each (moving stats too)
    for a, b in zip(clf.weights, clone.weights, strict=True):
        assert b.dtype == "float32" and a is not b and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(_layers(clf), _layers(clone), strict=True):  # layer by layer, in order
        assert type(a) is type(b) and len(a.weights) == len(b.weights)
    # the copy's own variables: writing one leaves the user's model alone
    clone.weights[0].assign(np.zeros(clone.weights[0].shape, "float32"))
    assert np.any(np.asarray(clf.weights[0]) != 0)
    assert clone(x).dtype == tf.bfloat16


def test_bf16_logits_and_resistances_equal_the_switching_implementation(case):
    vae, clf, x, x_val, z_s, z_u = case
    new, old = (_engine(vae, clf, x_val, "bfloat16", cls) for cls in (MorphEngine, SwitchingEngine))
    np.testing.assert_array_equal(new._decode_and_classify(z_s, z_u).numpy(),
                                  old._decode_and_classify(z_s, z_u).numpy())
    r_new, r_old = new.resistance(x, batch_size=4), old.resistance(x, batch_size=4)
    np.testing.assert_array_equal(r_new, r_old)
    # the case is one where the precision matters: float32 logits differ from bfloat16 ones
    f32 = _engine(vae, clf, x_val, "float32")
    assert np.abs(f32._decode_and_classify(z_s, z_u).numpy()
                  - new._decode_and_classify(z_s, z_u).numpy()).max() > 1e-2


def test_fit_copies_the_models_current_weights_into_the_bf16_copies(case):
    vae, clf, _, x_val, *_ = case
    engine = _engine(vae, clf, x_val, "bfloat16")
    kept = clf.get_weights()
    try:
        clf.set_weights([w + 1.0 for w in kept])  # the classifier retrained after construction
        engine.fit(x_val)
        for a, b in zip(clf.get_weights(), engine._morph_models[1].get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    finally:
        clf.set_weights(kept)


def test_float32_engine_runs_the_users_models_themselves(case):
    vae, clf, _, x_val, *_ = case
    decoder, classifier = _engine(vae, clf, x_val, "float32")._morph_models
    assert decoder is vae.decoder and classifier is clf


def test_a_subclassed_classifier_cannot_run_in_bfloat16(case):
    vae, *_ = case

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.flat, self.dense = keras.layers.Flatten(), keras.layers.Dense(10)

        def call(self, x):
            return self.dense(self.flat(x))

    clf = Subclassed()
    clf(np.zeros((1, 28, 28, 1), "float32"))
    with pytest.raises(ValueError, match="classifier: compute_dtype 'bfloat16'"):
        MorphEngine(vae, clf, compute_dtype="bfloat16")
