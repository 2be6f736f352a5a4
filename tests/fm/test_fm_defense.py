"""FMDefense as a whole Defense on mnist_5k: one graph detects, purifies or rejects; the
adaptive attacker's logits; the detection margin; save / load. The end-to-end checks of
resistance and thresholds on 100 images are slow."""

import numpy as np
import pytest
import tensorflow as tf

from tfdefense.decisions import Decision
from tfdefense.defend import REJECTED, FMDefense, defense_accuracy, load
from tfdefense.detect import MorphEngine, ResistanceDetector
from tfdefense.detect.morphs import most_active_codes


@pytest.fixture(scope="module")
def fitted(fm_models, mnist, fgsm_test):
    """A detector on 4 codes × 10 morphs with a unified θ_r = 0.8 (the tiny models' clean
    resistances are low), and 30 clean test images followed by their FGSM versions; θ_d is
    halfway between the least and the most suspicious of them, so that the defense
    accepts, purifies and rejects some."""
    xv, _ = mnist["validation"]
    codes = most_active_codes(fm_models["vae"], xv, 4)
    engine = MorphEngine(fm_models["vae"], fm_models["classifier"], codes=codes, n_morphs=10,
                         seed=0).fit(xv)
    x, y, x_adv = fgsm_test
    x, y = np.r_[x[:30], x_adv[:30]], np.r_[y[:30], y[:30]]
    first = ResistanceDetector(engine, unified_threshold=0.8, theta_d=0.0).fit(xv[:100])
    d = first.score(x)
    det = ResistanceDetector(engine, unified_threshold=0.8,
                             theta_d=float(d[d > 0].min() + d[d > 0].max()) / 2)
    return {"detector": det.fit_resistance(first.val_resistance_), "x": x, "y": y}


def reference(det, x, r):
    """Labels and decisions from the numpy parts: the engine's resistance r of x, ``decide``,
    the classifier on x and on the combo-VAE's reconstruction."""
    decisions = det.decide_resistance(r)
    clf, vae = det.engine.classifier, det.engine.combo_vae
    on_x = np.argmax(clf(x), -1)
    on_purified = np.argmax(clf(vae.reconstruct(x)), -1)
    labels = np.where(decisions == 0, on_x, np.where(decisions == 1, on_purified, REJECTED))
    return labels, decisions


def test_defend_gives_the_labels_and_decisions_of_resistance_decide_and_classifier(fitted):
    det, x = fitted["detector"], fitted["x"]
    ref_labels, ref_decisions = reference(det, x, det.resistance(x))
    # the three outcomes occur, so every branch of the graph is compared
    assert set(ref_decisions.tolist()) == {0, 1, 2}, np.bincount(ref_decisions)
    defense = FMDefense(det)
    labels, decisions = defense.predict_with_decisions(x)
    assert labels.dtype == np.int64 and decisions.dtype == np.int32
    np.testing.assert_array_equal(decisions, ref_decisions)
    np.testing.assert_array_equal(labels, ref_labels)


@pytest.mark.slow
def test_other_batches_and_cached_resistances_give_the_same_answers(fitted):
    det, x = fitted["detector"], fitted["x"]
    defense = FMDefense(det)
    labels, decisions = defense.predict_with_decisions(x)
    # the morphs are seeded per image: other batches, the same answers
    np.testing.assert_array_equal(defense.predict_with_decisions(x[::-1], batch_size=7)[0],
                                  labels[::-1])
    pl, pd = defense.predict_resistance(x, det.resistance(x))
    np.testing.assert_array_equal(pl, labels)
    np.testing.assert_array_equal(pd, decisions)


def test_detection_margin_is_distance_minus_theta_d_with_a_surrogate_gradient(fitted):
    det, x = fitted["detector"], fitted["x"][24:42]  # 6 clean, 12 FGSM
    defense = FMDefense(det)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        margin = defense.detection_margin(xt)
    grad = tape.gradient(margin, xt).numpy()
    expected = (det.score(x) - det.theta_d_).astype(np.float32)
    np.testing.assert_array_equal(margin.numpy(), expected)
    _, decisions = defense.predict_with_decisions(x)
    np.testing.assert_array_equal(margin.numpy() > 0, decisions == Decision.REJECTED)
    assert np.all(np.isfinite(grad))
    per_image = np.abs(grad).reshape(len(x), -1).sum(1)
    suspicious = det.score(x) > 0
    assert suspicious.any() and not suspicious.all() and (margin.numpy() > 0).any()
    assert np.all(per_image[suspicious] > 0)  # codes below θ_r give a gradient
    assert np.all(per_image[~suspicious] == 0)  # accepted: no code counts in Eq 5
    np.testing.assert_array_equal(defense.detection_outputs(xt)["resistance"].numpy(),
                                  det.resistance(x))


def test_logits_average_c_over_x_its_purification_and_engine_morphs(fitted):
    det, x = fitted["detector"], fitted["x"][:6]
    vae, clf, engine = det.engine.combo_vae, det.engine.classifier, det.engine
    defense = FMDefense(det, eot_morphs=5, eot_seed=3)
    assert defense.stochastic and defense.detects
    got = defense.logits(tf.constant(x)).numpy()
    # by hand: the first call draws its search seed from Generator.from_seed(3)
    seed = tf.random.Generator.from_seed(3).uniform_full_int([2], tf.int32)
    mean = vae.encode(x)[0]
    morphs = engine.sample_morph_latents(mean, 5, seed)  # (6, 5, m)
    z_u = vae.class_unique(x)
    images = [x, vae.decode(mean, z_u).numpy()] + [
        vae.decode(morphs[:, k], z_u).numpy() for k in range(5)]
    probs = np.stack([tf.nn.softmax(clf(im)).numpy() for im in images])  # (7, 6, K)
    np.testing.assert_allclose(got, np.log(probs.mean(0)), rtol=1e-4, atol=1e-4)
    # a fresh draw per call; the same seed replays the same draws
    assert not np.allclose(defense.logits(tf.constant(x)).numpy(), got)
    np.testing.assert_array_equal(FMDefense(det, eot_morphs=5, eot_seed=3).logits(x).numpy(), got)
    # gradients reach the encoder and the (frozen) DGMM: z_u is not stopped
    dgmm_vars = [v.value for v in vae.dgmm.weights]  # the tf.Variables under Keras'
    encoder_vars = [v.value for v in vae.encoder.weights]
    with tf.GradientTape() as tape:
        tape.watch(dgmm_vars + encoder_vars)
        loss = tf.reduce_sum(defense.logits(tf.constant(x))[:, 0])
    grads = tape.gradient(loss, dgmm_vars + encoder_vars)
    norms = [0.0 if g is None else float(tf.reduce_sum(tf.abs(g))) for g in grads]
    assert max(norms[:len(dgmm_vars)]) > 0 and max(norms[len(dgmm_vars):]) > 0


def test_purify_gives_a_tensor_of_the_reconstructions_c_classifies_when_purifying(fitted):
    det, x = fitted["detector"], fitted["x"][:6]
    vae = det.engine.combo_vae
    purified = FMDefense(det).purify(tf.constant(x))
    assert isinstance(purified, tf.Tensor) and purified.dtype == tf.float32  # the Defense contract
    np.testing.assert_allclose(purified.numpy(), vae.decode(vae.encode(x)[0], vae.class_unique(x)),
                               atol=1e-6)


def test_save_load_round_trip_keeps_every_answer(fitted, tmp_path):
    det, x = fitted["detector"], fitted["x"][::3]
    defense = FMDefense(det, eot_morphs=4, eot_seed=5)
    labels, decisions = defense.predict_with_decisions(x)
    path = defense.save(str(tmp_path / "fm"))
    loaded = load(path)
    assert isinstance(loaded, FMDefense)
    assert loaded.get_config() == defense.get_config()
    np.testing.assert_array_equal(loaded.detector.theta_r_, det.theta_r_)
    assert loaded.detector.theta_d_ == det.theta_d_
    np.testing.assert_array_equal(loaded.engine.low_, det.engine.low_)
    got_labels, got_decisions = loaded.predict_with_decisions(x)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(got_decisions, decisions)
    np.testing.assert_array_equal(loaded.logits(x[:4]).numpy(),
                                  FMDefense(det, eot_morphs=4, eot_seed=5).logits(x[:4]).numpy())


def test_serving_spec_has_the_three_signatures(fitted):
    spec = FMDefense(fitted["detector"]).serving_spec()
    assert [s.name for s in spec.signatures] == ["serving_default", "detect", "defend"]
    detect = dict((s.name, s) for s in spec.signatures)["detect"]
    assert set(detect.outputs) == {"score", "is_adversarial", "resistance", "distance"}
    assert spec.metadata["codes"] == fitted["detector"].engine.codes


def test_bad_inputs_and_unfitted_detectors_are_refused(fitted, fm_models):
    defense = FMDefense(fitted["detector"])
    x = fitted["x"][:2]
    with pytest.raises(ValueError, match="range"):
        defense.predict(x * 255)
    with pytest.raises(ValueError, match="NaN"):
        defense.predict(np.full_like(x, np.nan))
    with pytest.raises(ValueError, match="shape"):
        defense.predict(np.zeros((2, 14, 14, 1), "float32"))
    with pytest.raises(ValueError, match="resistance vectors"):
        defense.predict_resistance(x, np.ones((3, 4)))
    with pytest.raises(ValueError, match="ResistanceDetector"):
        FMDefense(fitted["detector"].engine)
    engine = MorphEngine(fm_models["vae"], fm_models["classifier"], codes=[0, 1], n_morphs=2)
    with pytest.raises(ValueError, match="not fitted"):
        FMDefense(ResistanceDetector(engine))
    with pytest.raises(ValueError, match="eot_morphs"):
        FMDefense(fitted["detector"], eot_morphs=0)


def test_defense_accuracy_counts_by_decision_names():
    D = Decision
    acc = defense_accuracy(
        y_true=[0, 1, 2, 3, 4, 5],
        is_adversarial=[False, False, False, True, True, True],
        labels=[0, 7, -1, -1, 4, 9],
        decisions=[D.ACCEPTED, D.PURIFIED, D.REJECTED, D.REJECTED, D.PURIFIED, D.ACCEPTED])
    # TN: clean 0 accepted; TP: adversarial 3 rejected; recovered: purified 4 (purified 1 wrong)
    assert (acc["true_negative"], acc["true_positive"], acc["recovered"]) == (1, 1, 1)
    assert acc["final_accuracy"] == pytest.approx(3 / 6)
    assert acc["strict_accuracy"] == pytest.approx(3 / 6)  # 0, rejected 3, 4
    assert acc["salvageable"] == 2
    assert acc["clean_false_positive"] == pytest.approx(2 / 3)
    assert acc["detected_adversarial"] == pytest.approx(2 / 3)


# ----------------------------------------------------------- end to end (slow)
@pytest.fixture(scope="module")
def resistances(fm_models, mnist, fgsm_test):
    xv, _ = mnist["validation"]
    x, y, x_adv = fgsm_test
    codes = most_active_codes(fm_models["vae"], xv, 4)
    eng = MorphEngine(fm_models["vae"], fm_models["classifier"], codes=codes, n_morphs=10,
                      seed=0).fit(xv)
    n = 100
    return {"engine": eng, "val": eng.resistance(xv), "clean": eng.resistance(x[:n]),
            "adv": eng.resistance(x_adv[:n]), "x": x[:n], "y": y[:n], "x_adv": x_adv[:n]}


@pytest.mark.slow
def test_fgsm_fools_the_classifier(fm_models, fgsm_test):
    x, y, x_adv = fgsm_test
    clf = fm_models["classifier"]
    assert np.mean(np.argmax(clf(x), -1) == y) > 0.85
    assert np.mean(np.argmax(clf(x_adv), -1) == y) < 0.3


@pytest.mark.slow
def test_clean_images_resist_more_than_fgsm(resistances):
    clean, adv = resistances["clean"].mean(), resistances["adv"].mean()
    assert clean > adv + 0.1, (clean, adv)


@pytest.mark.slow
def test_thresholds_hold_their_false_positive_rate(resistances):
    det = ResistanceDetector(resistances["engine"], rho=0.9, eta=0.9)
    det.fit_resistance(resistances["val"])
    _, val_flag = det.report_resistance(resistances["val"])
    per_code = (resistances["val"] < det.theta_r_).mean(axis=0)
    assert np.all(per_code <= 0.1 + 1e-9)
    _, clean_flag = det.report_resistance(resistances["clean"])
    _, adv_flag = det.report_resistance(resistances["adv"])
    assert abs(clean_flag.mean() - val_flag.mean()) < 0.15  # test FPR near validation FPR
    assert adv_flag.mean() > clean_flag.mean() + 0.1  # detects FGSM better than chance


@pytest.mark.slow
def test_fm_defense_predicts_purifies_and_rejects(resistances):
    det = ResistanceDetector(resistances["engine"], rho=0.9, eta=0.9)
    det.fit_resistance(resistances["val"])
    defense = FMDefense(det)
    x, y, x_adv = resistances["x"], resistances["y"], resistances["x_adv"]
    labels_c, dec_c = defense.predict_resistance(x, resistances["clean"])
    labels_a, dec_a = defense.predict_resistance(x_adv, resistances["adv"])
    assert set(np.unique(np.r_[labels_c, labels_a])) <= set(range(-1, 10))
    assert np.all((labels_a == REJECTED) == (dec_a == Decision.REJECTED))
    acc = defense_accuracy(np.r_[y, y], np.r_[np.zeros(len(y), bool), np.ones(len(y), bool)],
                           np.r_[labels_c, labels_a], np.r_[dec_c, dec_a])
    assert acc["true_positive"] + acc["true_negative"] + acc["recovered"] == round(
        acc["final_accuracy"] * acc["n"])
    # predict() runs the engine itself, in its own graph, and agrees with the cached path
    np.testing.assert_array_equal(defense.predict(x), labels_c)
