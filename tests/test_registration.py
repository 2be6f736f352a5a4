"""``import tfdefense`` alone registers the library: saved models, defenses and detectors load
in a fresh process that imports nothing else of it (issue 16 item 7)."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from tfdefense import data, models, nets
from tfdefense.defend import GreyBoxDefense
from tfdefense.detect import MorphEngine, ResistanceDetector

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}

CHILD = textwrap.dedent("""
    import sys

    import numpy as np

    import keras
    import tfdefense

    folder = sys.argv[1]
    x = np.load(folder + "/x.npy")
    out = {
        "cdvae": keras.saving.load_model(folder + "/cdvae.keras")(x).numpy(),
        "combo_vae": keras.saving.load_model(folder + "/combo_vae.keras")(x).numpy(),
    }
    out["greybox_labels"], out["greybox_decisions"] = \\
        tfdefense.defend.load(folder + "/greybox").predict_with_decisions(x)
    report, out["resistance_flagged"] = tfdefense.detect.load(folder + "/resistance").detect(x)
    out["resistance"] = report["resistance"]
    np.savez(folder + "/out.npz", **out)
""")


@pytest.mark.slow
def test_fresh_process_loads_models_defenses_and_detectors_after_import_tfdefense(tmp_path):
    keras.utils.set_random_seed(0)
    x = data.load_arrays("mnist_5k", "test")[0][:8]
    cdvae = models.CDVAE.for_dataset("mnist_5k", latent_dim=4, width=4, seed=0)
    dgmm = models.DGMM.for_dataset("mnist_5k", feature_dim=4, seed=0)
    combo = models.ComboVAE.for_dataset("mnist_5k", dgmm, latent_dim=4, discriminator_units=8,
                                        discriminator_depth=1, seed=0)
    clf = nets.small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    greybox = GreyBoxDefense(cdvae, clf)
    engine = MorphEngine(combo, clf, codes=[0, 1], n_morphs=4, samples_per_iteration=4,
                         max_iterations=4).fit(x)
    detector = ResistanceDetector(engine, rho=0.5).fit_resistance(
        np.array([[1.0, 1.0], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]))

    np.save(tmp_path / "x.npy", x)
    cdvae.save(tmp_path / "cdvae.keras")
    combo.save(tmp_path / "combo_vae.keras")
    greybox.save(str(tmp_path / "greybox"))
    detector.save(str(tmp_path / "resistance"))
    (tmp_path / "child.py").write_text(CHILD)
    done = subprocess.run([sys.executable, str(tmp_path / "child.py"), str(tmp_path)], env=ENV,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["cdvae"], cdvae(x).numpy())
    np.testing.assert_array_equal(out["combo_vae"], combo(x).numpy())
    labels, decisions = greybox.predict_with_decisions(x)
    np.testing.assert_array_equal(out["greybox_labels"], labels)
    np.testing.assert_array_equal(out["greybox_decisions"], decisions)
    report, flagged = detector.detect(x)
    np.testing.assert_array_equal(out["resistance"], report["resistance"])
    np.testing.assert_array_equal(out["resistance_flagged"], flagged)


@pytest.mark.parametrize("orig_argv, argv0, deferred", [
    (["python", "-m", "tfdefense.cli", "--help"], "-m", True),  # python -m tfdefense.cli
    (["/venv/bin/python", "/venv/bin/tfdefense", "--help"], "/venv/bin/tfdefense", True),  # console script
    (["python", "-m", "pytest", "-q"], "-m", False),  # a library user under pytest
    (["python", "train.py"], "train.py", False),
    (["python", "-c", "import tfdefense"], "-c", False),
])
def test_only_the_command_line_defers_registration(monkeypatch, orig_argv, argv0, deferred):
    import tfdefense

    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    monkeypatch.setattr(sys, "argv", [argv0])
    assert tfdefense._command_line_process() is deferred
