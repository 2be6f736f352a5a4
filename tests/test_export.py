"""SavedModels as TF Serving uses them: fresh-process load, saved_model_cli, request protos, REST."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2

from tfdefense import data, export
from tfdefense.baselines import MNIST_STRUCTURE_II, MagNet, magnet_autoencoder
from tfdefense.models import CDVAE
from tfdefense.nets import small_cnn

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}
CDVAE_OUTPUTS = {
    "serving_default": {"logits": "DT_FLOAT", "probabilities": "DT_FLOAT", "label": "DT_INT64"},
    "decompose": {"generated": "DT_FLOAT", "residual": "DT_FLOAT"},
}


def images(n=6, start=0):
    x, _ = data.load_arrays("mnist_5k", "test")
    return x[start:start + n]


@pytest.fixture(scope="module")
def cdvae():
    keras.utils.set_random_seed(0)
    model = CDVAE.for_dataset("mnist_5k", latent_dim=8, width=8, seed=0)
    model.compile()
    x, y = data.load_arrays("mnist_5k", "train")
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)  # non-trivial BN statistics
    return model


@pytest.fixture(scope="module")
def exported(cdvae, tmp_path_factory):
    return export.for_serving(cdvae, str(tmp_path_factory.mktemp("saved") / "cdvae"), version=1)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported)


def run(loaded, name, x):
    return {k: v.numpy() for k, v in loaded.signatures[name](images=tf.constant(x)).items()}


# ------------------------------------------------------------------ layout
def test_layout_is_what_tf_serving_reads(exported):
    base = os.path.dirname(exported)
    assert os.listdir(base) == ["1"]  # no staging folder left behind
    assert os.path.isfile(os.path.join(exported, "saved_model.pb"))
    assert os.path.isdir(os.path.join(exported, "variables"))
    assert sorted(os.listdir(os.path.join(exported, "assets.extra"))) == sorted([
        export.METADATA_FILE, export.WARMUP_FILE])


def test_metadata_describes_input_classes_and_signatures(exported):
    meta = export.read_metadata(exported)
    assert meta["input"] == {"name": "images", "dtype": "float32", "shape": [None, 28, 28, 1],
                             "range": [0.0, 1.0], "layout": "NHWC"}
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert sorted(meta["signatures"]) == ["decompose", "serving_default"]
    assert meta["library"]["tfdefense"] == __import__("tfdefense").__version__
    assert meta["name"] == "cdvae" and meta["version"] == 1


# ------------------------------------------------------ as TF Serving loads it
FRESH = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    x = tf.constant(np.load(sys.argv[2]))
    out = {f"{name}/{key}": value.numpy() for name in sorted(loaded.signatures)
           for key, value in loaded.signatures[name](images=x).items()}
    assert "tfdefense" not in sys.modules, "tfdefense was imported"
    out["__keras_imported"] = np.array("keras" in sys.modules)
    np.savez(sys.argv[3], **out)
""")


#: after FRESH, the same child runs saved_model_cli's console script on the model, as a shell would
#: (its own code reads the SavedModel: a second TensorFlow start-up would only cost ~5 s of CPU)
SHOW = textwrap.dedent("""
    import contextlib
    import runpy
    model_dir, cli, shown = sys.argv[1], sys.argv[4], sys.argv[5]
    sys.argv = [cli, "show", "--dir", model_dir, "--all"]
    with open(shown, "w") as fh, contextlib.redirect_stdout(fh):
        try:
            runpy.run_path(cli, run_name="__main__")
        except SystemExit as exc:
            assert exc.code in (0, None), f"saved_model_cli exited with {exc.code}"
""")


@pytest.fixture(scope="module")
def fresh(exported, tmp_path_factory):
    """One fresh process on the exported CD-VAE: FRESH's outputs, then ``saved_model_cli show``."""
    tmp = tmp_path_factory.mktemp("fresh")
    np.save(tmp / "x.npy", images())
    script = tmp / "serve.py"
    script.write_text(FRESH + SHOW)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    cli = cli if os.path.exists(cli) else shutil.which("saved_model_cli")
    proc = subprocess.run([sys.executable, str(script), exported, str(tmp / "x.npy"),
                           str(tmp / "out.npz"), cli, str(tmp / "shown.txt")], env=ENV,
                          cwd=str(tmp), capture_output=True, text=True, timeout=600)
    return proc, tmp


def test_fresh_process_with_only_tensorflow_gives_the_keras_outputs(cdvae, fresh):
    proc, tmp = fresh
    x = images()
    assert (tmp / "out.npz").exists(), proc.stderr[-5000:]  # written once FRESH's checks passed
    out = np.load(tmp / "out.npz")
    logits = cdvae(x).numpy()
    g, r = (t.numpy() for t in cdvae.decompose(x))
    np.testing.assert_allclose(out["serving_default/logits"], logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["serving_default/probabilities"],
                               tf.nn.softmax(logits).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["serving_default/label"], logits.argmax(1))
    np.testing.assert_allclose(out["decompose/generated"], g, atol=1e-5)
    np.testing.assert_allclose(out["decompose/residual"], r, atol=1e-5)
    np.testing.assert_allclose(out["decompose/generated"] + out["decompose/residual"], x, atol=1e-5)


def test_saved_model_cli_lists_every_signature_with_names_and_dtypes(fresh):
    proc, tmp = fresh
    assert proc.returncode == 0, proc.stderr[-5000:]
    shown = (tmp / "shown.txt").read_text()
    blocks = shown.split("signature_def['")[1:]
    by_name = {b.split("']", 1)[0]: b for b in blocks}
    assert set(CDVAE_OUTPUTS) <= set(by_name)
    for name, outputs in CDVAE_OUTPUTS.items():
        inputs, outs = by_name[name].split("The given SavedModel SignatureDef contains the following "
                                           "output(s):")
        assert "inputs['images'] tensor_info:" in inputs
        assert "dtype: DT_FLOAT" in inputs and "shape: (-1, 28, 28, 1)" in inputs
        for key, dtype in outputs.items():
            part = outs.split(f"outputs['{key}'] tensor_info:", 1)[1]
            assert part.split("dtype: ", 1)[1].split()[0] == dtype, (name, key)


def test_predict_request_protos_run_against_each_signature(cdvae, loaded):
    x = images(3, start=10)
    for name in CDVAE_OUTPUTS:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name="cdvae", signature_name=name))
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(x))
        wire = predict_pb2.PredictRequest.FromString(request.SerializeToString())
        fn = loaded.signatures[wire.model_spec.signature_name]
        out = fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in wire.inputs.items()})
        response = predict_pb2.PredictResponse()
        for key, value in out.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        assert set(response.outputs) == set(CDVAE_OUTPUTS[name])
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["residual"]),
                               cdvae.decompose(x)[1].numpy(), atol=1e-5)


def _rest(loaded, body: str) -> dict:
    """What TF Serving's REST predict does with a body: row ("instances") or columnar ("inputs")."""
    request = json.loads(body)
    fn = loaded.signatures[request.get("signature_name", "serving_default")]
    if "instances" in request:
        out = fn(images=tf.constant(np.asarray(request["instances"], np.float32)))
        rows = [dict(zip(out, values, strict=True))
                for values in zip(*(v.numpy().tolist() for v in out.values()), strict=True)]
        return json.loads(json.dumps({"predictions": rows}))
    out = fn(images=tf.constant(np.asarray(request["inputs"]["images"], np.float32)))
    return json.loads(json.dumps({"outputs": {k: v.numpy().tolist() for k, v in out.items()}}))


def test_rest_bodies_row_and_columnar_run_against_each_signature(cdvae, loaded):
    x = images(2, start=20)
    labels = cdvae(x).numpy().argmax(1).tolist()
    row = _rest(loaded, json.dumps({"signature_name": "serving_default", "instances": x.tolist()}))
    assert [p["label"] for p in row["predictions"]] == labels
    col = _rest(loaded, json.dumps({"signature_name": "decompose", "inputs": {"images": x.tolist()}}))
    np.testing.assert_allclose(np.asarray(col["outputs"]["generated"]) + col["outputs"]["residual"],
                               x, atol=1e-5)


def test_warmup_file_parses_and_its_requests_run(exported, loaded):
    logs = export.read_warmup(exported)
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == \
        ["serving_default", "decompose"]
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == "cdvae"
        x = tf.make_ndarray(request.inputs["images"])
        assert x.shape == (1, 28, 28, 1) and x.dtype == np.float32
        loaded.signatures[request.model_spec.signature_name](images=tf.constant(x))


# ----------------------------------------------------------- in-graph checks
def test_nan_input_fails_with_invalid_argument(loaded):
    x = images(2)
    x[1, 3, 3, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected finite pixel values"):
        run(loaded, "serving_default", x)


def test_0_255_input_fails_with_invalid_argument_naming_the_range(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected pixel values in \[0, 1\]"):
        run(loaded, "decompose", images(2) * 255.0)


def test_wrong_shape_or_dtype_is_refused_by_the_signature(loaded):
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
        loaded.signatures["serving_default"](images=tf.zeros((1, 32, 32, 3)))
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
        loaded.signatures["serving_default"](images=tf.zeros((1, 28, 28, 1), tf.uint8))


# ------------------------------------------------------------------ bad use
@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True])
def test_bad_version_raises(cdvae, tmp_path, version):
    with pytest.raises(ValueError, match="version"):
        export.for_serving(cdvae, str(tmp_path / "m"), version)


def test_existing_version_is_refused_unless_overwrite(cdvae, exported):
    base = os.path.dirname(exported)
    before = open(os.path.join(exported, "saved_model.pb"), "rb").read()
    with pytest.raises(ValueError, match="exists"):
        export.for_serving(cdvae, base, 1)
    assert open(os.path.join(exported, "saved_model.pb"), "rb").read() == before


def test_overwrite_replaces_the_version(tmp_path):
    # the folder handling does not depend on the model: a small classifier exports in a fifth
    # of a CD-VAE's time
    model = small_cnn(width=4, dense_units=8)
    base = str(tmp_path / "m")
    path = export.for_serving(model, base, 3)
    marker = os.path.join(path, "assets.extra", "marker")
    open(marker, "w").close()
    assert export.for_serving(model, base, 3, overwrite=True) == path
    assert not os.path.exists(marker) and sorted(os.listdir(base)) == ["3"]


def test_base_path_that_is_a_file_raises(cdvae, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        export.for_serving(cdvae, str(tmp_path / "f"), 1)


def test_object_without_signatures_raises(tmp_path):
    with pytest.raises(ValueError, match="no exportable signatures"):
        export.for_serving(object(), str(tmp_path / "m"), 1)


def test_unbuilt_keras_model_raises(tmp_path):
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="not built"):
        export.for_serving(Net(), str(tmp_path / "m"), 1)


# --------------------------------------------------------- whole defenses
@pytest.fixture(scope="module")
def magnet():
    keras.utils.set_random_seed(0)
    model = MagNet(small_cnn(width=4, dense_units=8), magnet_autoencoder(),
                   magnet_autoencoder(MNIST_STRUCTURE_II), rejection_rate=0.05)
    model.fit_thresholds(images(40, start=100))
    return model


def test_unfitted_magnet_is_refused(tmp_path):
    model = MagNet(small_cnn(width=4, dense_units=8), magnet_autoencoder(),
                   magnet_autoencoder(MNIST_STRUCTURE_II))
    with pytest.raises(ValueError, match="not fitted"):
        export.for_serving(model, str(tmp_path / "m"), 1)


def test_magnet_defend_and_detect_match_the_python_defense(magnet, tmp_path):
    path = export.for_serving(magnet, str(tmp_path / "magnet"), 1)
    loaded = tf.saved_model.load(path)
    # the threshold-fitting images: at 5% of 40, the 2 highest-scoring ones are rejected
    x = np.concatenate([images(40, start=100), images(4, start=200)])
    expected = magnet.predict(x)
    assert (expected == -1).any() and (expected != -1).any()  # both outcomes are exercised
    defended = run(loaded, "defend", x)
    np.testing.assert_array_equal(defended["label"], expected)
    np.testing.assert_array_equal(defended["decision"], np.where(expected == -1, 2, 0))
    assert [s.decode() for s in defended["decision_name"]] == \
        ["rejected" if e == -1 else "accepted" for e in expected]
    report, flagged = magnet.detect(x)
    detected = run(loaded, "detect", x)
    np.testing.assert_array_equal(detected["is_adversarial"], flagged)
    np.testing.assert_allclose(detected["scores"][:, 0], report["score_I"], rtol=1e-5)
    np.testing.assert_allclose(detected["scores"][:, 1], report["score_II"], rtol=1e-5)
    np.testing.assert_array_equal(detected["score"] > 0, flagged)
    # score is the detection margin: the largest detector score minus its threshold
    np.testing.assert_allclose(detected["score"], magnet.detection_margin(tf.constant(x)).numpy(),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(run(loaded, "serving_default", x)["logits"],
                               magnet.logits(x).numpy(), rtol=1e-5, atol=1e-6)
    meta = export.read_metadata(path)
    assert sorted(meta["signatures"]) == ["defend", "detect", "serving_default"]
    assert set(meta["signatures"]["detect"]["outputs"]) == {"score", "is_adversarial", "scores"}
    assert meta["thresholds"]["I"] == pytest.approx(float(magnet.thresholds.numpy()[0]))
    assert meta["rejection_rate"] == 0.05 and meta["model"] == "MagNet"


@pytest.mark.slow  # a SavedModel written and a second TensorFlow process: ~10 s on 2 cores
def test_magnet_export_runs_in_a_fresh_process_with_only_tensorflow(magnet, tmp_path):
    # the thresholds are a tf.Variable of the defense, not a Keras weight: the SavedModel
    # must carry them to a process that never imports tfdefense or keras
    path = export.for_serving(magnet, str(tmp_path / "magnet"), 1)
    x = np.concatenate([images(40, start=100), images(4, start=200)])
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "serve.py"
    script.write_text(FRESH)
    subprocess.run([sys.executable, str(script), path, str(tmp_path / "x.npy"),
                    str(tmp_path / "out.npz")], check=True, env=ENV, cwd=str(tmp_path),
                   timeout=600)
    out = np.load(tmp_path / "out.npz")
    labels, decisions = magnet.predict_with_decisions(x)
    assert (decisions == 2).any() and (decisions == 0).any()
    np.testing.assert_array_equal(out["defend/label"], labels)
    np.testing.assert_array_equal(out["defend/decision"], decisions)
    np.testing.assert_array_equal(out["detect/is_adversarial"], decisions == 2)


def test_defense_parts_purify_salvageable_and_reject_the_rest(tmp_path):
    """A synthetic detect -> purify or reject defense against a numpy reference."""
    keras.utils.set_random_seed(0)
    clf = small_cnn(width=4, dense_units=8)
    means = lambda x: tf.reduce_mean(x, axis=[1, 2, 3])  # noqa: E731
    parts = export.DefenseParts(
        classify=lambda x: clf(x, training=False),
        detect=lambda x: (means(x), means(x) > 0.5, {}),
        purify=lambda x: x * 0.25,
        salvageable=lambda x: means(x) < 0.8)
    spec = export.ServingSpec((28, 28, 1), export.defense_signatures(parts), [clf])
    loaded = tf.saved_model.load(export.for_serving(spec, str(tmp_path / "d"), 1))
    x = np.stack([np.full((28, 28, 1), v, np.float32) for v in (0.2, 0.7, 1.0, 0.3)])
    x[:, :4] *= 0.5  # not constant images
    out = run(loaded, "defend", x)
    m = x.mean(axis=(1, 2, 3))
    plain = clf(x).numpy().argmax(1)
    purified = clf(x * 0.25).numpy().argmax(1)
    decision = np.where(m <= 0.5, 0, np.where(m < 0.8, 1, 2))
    np.testing.assert_array_equal(out["decision"], decision)
    assert set(decision) == {0, 1, 2}
    np.testing.assert_array_equal(out["label"], np.select([decision == 0, decision == 1],
                                                          [plain, purified], -1))


def test_cli_export_writes_the_version_folder(cdvae, tmp_path):
    from tfdefense.cli import main

    cdvae.save(tmp_path / "m.keras")
    assert main(["export", str(tmp_path / "m.keras"), "--name", "cd", "--version", "2",
                 "--base-dir", str(tmp_path / "sm")]) == 0
    assert os.path.isfile(tmp_path / "sm" / "cd" / "2" / "saved_model.pb")
    assert main(["export", str(tmp_path / "m.keras"), "--name", "cd", "--version", "2",
                 "--base-dir", str(tmp_path / "sm")]) == 2  # exists, no --overwrite


# --------------------------------------------------------------- detectors
def _fitted_detector(features, **kwargs):
    from tfdefense.detect import LogisticDetector

    keras.utils.set_random_seed(0)
    x, y = data.load_arrays("mnist_5k", "train")
    clean = images(30, start=300)
    adv = np.clip(clean + 0.3 * np.sign(np.random.default_rng(0).normal(size=clean.shape)),
                  0, 1).astype("float32")
    det = LogisticDetector(small_cnn(width=4, dense_units=8), features=features, **kwargs)
    return det.fit(x[:60], y[:60], x_clean=clean, x_adv=adv), clean, adv


def test_logistic_detector_exports_kd_and_mahalanobis_in_graph(tmp_path):
    det, clean, adv = _fitted_detector(["kd", "mahalanobis"], md_magnitude=0.002)
    path = export.for_serving(det, str(tmp_path / "det"), 1)
    loaded = tf.saved_model.load(path)
    x = np.concatenate([clean[:5], adv[:5]])
    report, flagged = det.detect(x)
    out = run(loaded, "detect", x)
    np.testing.assert_allclose(out["features"], report["features"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(out["score"], report["probability"], atol=1e-4)
    np.testing.assert_array_equal(out["is_adversarial"], flagged)
    assert export.read_metadata(path)["features"] == det.feature_names_


def test_logistic_detector_with_lid_is_refused_saying_why(tmp_path):
    det, _, _ = _fitted_detector(["lid"], lid_k=[5], lid_batch_size=20)
    with pytest.raises(ValueError, match="LID scores each query batch"):
        export.for_serving(det, str(tmp_path / "det"), 1)


def test_greybox_defense_defend_matches_predict_and_purify_is_g(cdvae, tmp_path):
    from tfdefense.defend import GreyBoxDefense

    defense = GreyBoxDefense(cdvae, small_cnn(width=4, dense_units=8))
    path = export.for_serving(defense, str(tmp_path / "greybox"), 1)
    loaded = tf.saved_model.load(path)
    x = images(6, start=40)
    out = run(loaded, "defend", x)
    np.testing.assert_array_equal(out["label"], defense.predict(x))
    np.testing.assert_array_equal(out["decision"], np.zeros(6))  # the grey-box defense never rejects
    np.testing.assert_allclose(run(loaded, "purify", x)["purified"], defense.purify(x).numpy(),
                               atol=1e-5)
    assert sorted(export.read_metadata(path)["signatures"]) == ["defend", "purify", "serving_default"]
