"""The morph engine's bfloat16 option on a hand-built case: same resistances and decisions
as float32, the option kept through get_config / save / load, the float32 path untouched.

The hand-built models (4x4 images, m = 2 codes, two classes):

* encoder: μ_i = 6·x[i] − 3 (pixel i of the flattened image), log σ² = 0;
* decoder: every pixel = (z_0 + z_1)/8 + 0.5 (z_u ignored);
* classifier: logit_0 = 0, logit_1 = 8·x[15] − 5, so a decoded image is class 1 exactly when
  z_0 + z_1 > 1.

Both codes' normal range is [2, 3], so a morph of code i sets z_i in [2, 3]. Images, (z_0, z_1)
and C(x) from pixel 15: A (2.5, 2.5), class 1, every morph class 1, r = (1, 1); B (0, 0),
class 0, every morph class 1, r = (0, 0); C (0, −3), class 0, code 0's morphs sum to
[−1, 0] (class 0) and code 1's to [2, 3] (class 1), r = (1, 0). Every morph's logit lies at
least 1 from 0, far beyond bfloat16's rounding (2⁻⁸ relative), so both precisions must give
these values exactly. With θ_r = 0.5 for both codes and θ_d = 0.75 the Eq 5 distances are
0, 1, 0.5: accepted, rejected, purified.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense import detect
from tfdefense.decisions import Decision
from tfdefense.detect import MorphEngine, ResistanceDetector
from tfdefense.models import DGMM, ComboVAE

SHAPE = (4, 4, 1)
EXPECTED_R = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]], "float32")
EXPECTED_DECISIONS = [Decision.CLEAN, Decision.REJECTED, Decision.SALVAGEABLE]


def _dense_model(inputs, kernel, bias, name):
    """A functional model: inputs (flattened and concatenated) -> Dense with these weights."""
    h = keras.layers.Concatenate()(inputs) if isinstance(inputs, list) else inputs
    dense = keras.layers.Dense(kernel.shape[1])
    out = dense(keras.layers.Flatten()(h))
    dense.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return keras.Model(inputs, out, name=name)


def _hand_built():
    """(combo_vae, classifier) of the module docstring."""
    x_in = keras.Input(SHAPE)
    enc_k = np.zeros((16, 4))
    enc_k[0, 0] = enc_k[1, 1] = 6.0
    encoder = _dense_model(x_in, enc_k, np.array([-3.0, -3.0, 0.0, 0.0]), "encoder")
    dgmm = DGMM(keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(),
                                  keras.layers.Dense(1)]), num_classes=2, seed=0)
    z_s, z_u = keras.Input((2,)), keras.Input((1,))
    dec_k = np.zeros((3, 16))
    dec_k[:2] = 1.0 / 8.0
    flat = _dense_model([z_s, z_u], dec_k, np.full(16, 0.5), "decoder_flat")
    decoder = keras.Model([z_s, z_u], keras.layers.Reshape(SHAPE)(flat([z_s, z_u])),
                          name="decoder")
    clf_k = np.zeros((16, 2))
    clf_k[15, 1] = 8.0
    classifier = _dense_model(keras.Input(SHAPE), clf_k, np.array([0.0, -5.0]), "classifier")
    return ComboVAE(encoder, decoder, dgmm, None, seed=0), classifier


def _images() -> np.ndarray:
    """A, B, C: pixels 0 and 1 give (z_0, z_1) through μ = 6x − 3, pixel 15 gives C(x)."""
    x = np.zeros((3, 16), "float32")
    x[:, 0] = [11 / 12, 0.5, 0.5]
    x[:, 1] = [11 / 12, 0.5, 0.0]
    x[:, 15] = [1.0, 0.0, 0.0]
    return x.reshape(3, *SHAPE)


@pytest.fixture(scope="module")
def parts():
    return _hand_built()


def _detector(parts, compute_dtype):
    vae, clf = parts
    engine = MorphEngine(vae, clf, n_morphs=16, samples_per_iteration=4, max_iterations=8,
                         chunk_size=20, compute_dtype=compute_dtype).set_ranges([2, 2], [3, 3])
    det = ResistanceDetector(engine, unified_threshold=0.5, theta_d=0.75, batch_size=2)
    return det.fit_resistance(np.ones((4, 2)))


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_both_precisions_give_the_hand_computed_resistance_and_decisions(parts, compute_dtype):
    det = _detector(parts, compute_dtype)
    x = _images()
    np.testing.assert_array_equal(det.resistance(x), EXPECTED_R)
    np.testing.assert_array_equal(det.engine.resistance_naive(x), EXPECTED_R)
    report, is_adv = det.detect(x)
    assert report["decision"].tolist() == [int(d) for d in EXPECTED_DECISIONS]
    assert is_adv.tolist() == [False, True, True]
    np.testing.assert_allclose(report["distance"], [0.0, 1.0, 0.5])
    graph = det.resistance_tensors(tf.constant(x))  # the serving graph's path
    assert graph["decision"].numpy().tolist() == [int(d) for d in EXPECTED_DECISIONS]


def test_bfloat16_engine_computes_the_morphs_in_bfloat16_only(parts):
    """Decoded pixel (0.3 + 0)/8 + 0.5 = 0.5375 rounds to 0.5390625 in bfloat16, so its logit
    is 8·0.5390625 − 5 = −0.6875 instead of −0.7; the layers are float32 again afterwards."""
    f32, bf16 = (_detector(parts, d).engine for d in ("float32", "bfloat16"))
    z_s, z_u = tf.constant([[0.3, 0.0]]), tf.zeros((1, 1))
    np.testing.assert_allclose(f32._decode_and_classify(z_s, z_u).numpy()[0, 1], -0.7,
                               atol=1e-6)
    logits = bf16._decode_and_classify(z_s, z_u)
    assert logits.dtype == tf.float32
    np.testing.assert_allclose(logits.numpy()[0, 1], -0.6875, atol=1e-6)
    vae, clf = parts
    layers = vae.decoder.layers + vae.decoder.layers[-2].layers + clf.layers
    assert {layer.dtype_policy.name for layer in layers} == {"float32"}
    assert clf(_images()).dtype == tf.float32


def test_compute_dtype_round_trips_through_config_save_and_load(parts, tmp_path):
    det = _detector(parts, "bfloat16")
    assert det.get_config()["engine"]["compute_dtype"] == "bfloat16"
    assert _detector(parts, "float32").get_config()["engine"]["compute_dtype"] == "float32"
    det.save(str(tmp_path / "det"))
    loaded = detect.load(str(tmp_path / "det"))
    assert loaded.engine.compute_dtype == "bfloat16"
    np.testing.assert_array_equal(loaded.resistance(_images()), EXPECTED_R)
    old = det.get_config()
    del old["engine"]["compute_dtype"]  # a detector saved before the option: float32
    rebuilt = ResistanceDetector.from_parts(old, det.components(), det.state())
    assert rebuilt.engine.compute_dtype == "float32"


def test_bad_compute_dtype(parts):
    vae, clf = parts
    with pytest.raises(ValueError, match="compute_dtype"):
        MorphEngine(vae, clf, compute_dtype="float16")
    with pytest.raises(ValueError, match="Keras classifier"):
        MorphEngine(vae, lambda x, training=False: clf(x), compute_dtype="bfloat16")
