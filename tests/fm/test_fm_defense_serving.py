"""FM-Defense served in one call (issue 16, "Done when"): the exported ``defend`` signature,
loaded with plain ``tf.saved_model.load`` in a fresh process that never imports tfdefense,
answers 200 mnist_5k test images and their FGSM versions exactly as
``FMDefense.predict_with_decisions`` does in this process (the morphs are seeded per image)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfdefense import export
from tfdefense.attacks import get_attack
from tfdefense.decisions import DECISIONS
from tfdefense.defend import FMDefense
from tfdefense.detect import MorphEngine, ResistanceDetector
from tfdefense.detect.morphs import most_active_codes

pytestmark = pytest.mark.slow  # 400 images × 4 codes × 10 morphs, three times, plus export

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf

    assert not any(m.startswith("tfdefense") for m in sys.modules)
    loaded = tf.saved_model.load(sys.argv[1])
    x = tf.constant(np.load(sys.argv[2]))
    out = {}
    for name in ("defend", "detect", "serving_default"):
        for key, value in loaded.signatures[name](images=x).items():
            value = value.numpy()
            out[f"{name}/{key}"] = value.astype(str) if value.dtype == object else value
    assert not any(m.startswith("tfdefense") for m in sys.modules)
    np.savez(sys.argv[3], **out)
""")


@pytest.fixture(scope="module")
def served(fm_models, mnist, tmp_path_factory):
    """A fitted tiny FM-Defense, 200 test images + FGSM, and the child process's answers."""
    xv, _ = mnist["validation"]
    xt, yt = mnist["test"]
    clf = fm_models["classifier"]
    codes = most_active_codes(fm_models["vae"], xv, 4)
    engine = MorphEngine(fm_models["vae"], clf, codes=codes, n_morphs=10, seed=0).fit(xv)
    # a unified θ_r = 0.8 and a fixed θ_d = 0.5 (the tiny models' clean resistances are low;
    # their FGSM distances reach about 3), so that the defense accepts, purifies and rejects
    det = ResistanceDetector(engine, unified_threshold=0.8, theta_d=0.5).fit(xv[:200])
    defense = FMDefense(det)
    x, y = xt[:200], yt[:200]
    x_fgsm = get_attack("fgsm", model=clf, eps=0.3).generate(x, y)
    x_all = np.r_[x, x_fgsm].astype("float32")
    tmp = tmp_path_factory.mktemp("fm_serving")
    path = export.for_serving(defense, str(tmp / "fm_defense"), version=1)
    np.save(tmp / "x.npy", x_all)
    (tmp / "child.py").write_text(CHILD)
    subprocess.run([sys.executable, str(tmp / "child.py"), path, str(tmp / "x.npy"),
                    str(tmp / "out.npz")], check=True, env=ENV, cwd=str(tmp), timeout=1200)
    with np.load(tmp / "out.npz") as f:
        out = {k: f[k] for k in f.files}
    return {"defense": defense, "detector": det, "x": x_all, "out": out, "path": path}


def test_exported_defend_agrees_with_predict_with_decisions(served):
    labels, decisions = served["defense"].predict_with_decisions(served["x"])
    out = served["out"]
    agreement = float(np.mean((out["defend/label"] == labels)
                              & (out["defend/decision"] == decisions)))
    print(f"\nexported defend vs predict_with_decisions: {100 * agreement:.2f}% of "
          f"{len(labels)} images agree; decisions {np.bincount(decisions, minlength=3)} "
          "(accepted, purified, rejected)")
    assert np.bincount(decisions, minlength=3).min() > 0  # every outcome occurs
    assert agreement == 1.0
    np.testing.assert_array_equal(out["defend/decision_name"], np.asarray(DECISIONS)[decisions])


def test_exported_detect_gives_resistance_distance_and_margin(served):
    det, out, x = served["detector"], served["out"], served["x"]
    r = det.resistance(x)
    np.testing.assert_array_equal(out["detect/resistance"], r)
    distance = det.score_resistance(r)
    np.testing.assert_array_equal(out["detect/distance"], distance.astype(np.float32))
    np.testing.assert_array_equal(out["detect/score"], (distance - det.theta_d_).astype(np.float32))
    _, decisions = served["defense"].predict_with_decisions(x)
    np.testing.assert_array_equal(out["detect/is_adversarial"], decisions == 2)
    # serving_default: the logits behind defend's label wherever it does not reject
    kept = decisions != 2
    np.testing.assert_array_equal(out["serving_default/label"][kept], out["defend/label"][kept])
    meta = export.read_metadata(served["path"])
    assert sorted(meta["signatures"]) == ["defend", "detect", "serving_default"]
    assert meta["theta_r"] == det.theta_r_.tolist() and meta["codes"] == det.engine.codes
