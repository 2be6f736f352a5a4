"""End to end on mnist_5k: resistance separates clean from FGSM, thresholds, FMDefense."""

import numpy as np
import pytest

from tfdefense.defend import REJECTED, FMDefense, defense_accuracy
from tfdefense.detect import MorphEngine, ResistanceDetector
from tfdefense.detect.morphs import most_active_codes

pytestmark = pytest.mark.slow


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


def test_fgsm_fools_the_classifier(fm_models, fgsm_test):
    x, y, x_adv = fgsm_test
    clf = fm_models["classifier"]
    assert np.mean(np.argmax(clf(x), -1) == y) > 0.85
    assert np.mean(np.argmax(clf(x_adv), -1) == y) < 0.3


def test_clean_images_resist_more_than_fgsm(resistances):
    clean, adv = resistances["clean"].mean(), resistances["adv"].mean()
    assert clean > adv + 0.1, (clean, adv)


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


def test_fm_defense_predicts_purifies_and_rejects(resistances):
    det = ResistanceDetector(resistances["engine"], rho=0.9, eta=0.9)
    det.fit_resistance(resistances["val"])
    defense = FMDefense(det)
    x, y, x_adv = resistances["x"], resistances["y"], resistances["x_adv"]
    labels_c, dec_c = defense.predict_resistance(x, resistances["clean"])
    labels_a, dec_a = defense.predict_resistance(x_adv, resistances["adv"])
    assert set(np.unique(np.r_[labels_c, labels_a])) <= set(range(-1, 10))
    assert np.all((labels_a == REJECTED) == (dec_a == 2))
    acc = defense_accuracy(np.r_[y, y], np.r_[np.zeros(len(y), bool), np.ones(len(y), bool)],
                           np.r_[labels_c, labels_a], np.r_[dec_c, dec_a])
    assert acc["true_positive"] + acc["true_negative"] + acc["recovered"] == round(
        acc["final_accuracy"] * acc["n"])
    # predict() runs the engine itself and agrees with the precomputed path
    np.testing.assert_array_equal(defense.predict(x[:8]), labels_c[:8])
    with pytest.raises(ValueError, match="range"):
        defense.predict(x[:2] * 255)
