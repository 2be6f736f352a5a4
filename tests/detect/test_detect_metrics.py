import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tfdefense.detect import metrics


def test_tnr_at_95_tpr_equals_hand_computed_value():
    # 20 clean scores 0..19; an input is flagged when score >= t. 95% clean pass allows one
    # clean flag (the 19), so the lowest admissible t is just above 18: t = 18.5.
    clean = np.arange(20, dtype=float)
    adv = np.array([5.0, 18.5, 19.0, 25.0, 30.0])
    labels = np.r_[np.zeros(20), np.ones(5)]
    scores = np.r_[clean, adv]
    # t = 18.5: clean pass 19/20 = 95%; adversarial >= 18.5: 18.5, 19, 25, 30 -> 4/5
    assert metrics.tnr_at_tpr(labels, scores) == pytest.approx(0.8)
    # 100% clean pass needs t > 19: adversarial 25, 30 -> 2/5
    assert metrics.tnr_at_tpr(labels, scores, tpr=1.0) == pytest.approx(0.4)
    # 90% clean pass allows two clean flags (18, 19): t = 18 catches the same 4/5
    assert metrics.tnr_at_tpr(labels, scores, tpr=0.9) == pytest.approx(0.8)


def test_roc_auc_equals_sklearn_on_random_scores():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + labels
    assert metrics.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_detection_accuracy_equals_best_balanced_accuracy_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9])
    # threshold 0.5: clean pass 3/4, adversarial caught 2/2 -> (0.75 + 1) / 2
    assert metrics.detection_accuracy(labels, scores) == pytest.approx(0.875)


def test_perfect_separation_gives_ones_and_evaluate_reports_counts():
    labels = np.r_[np.zeros(10), np.ones(4)]
    scores = np.r_[np.zeros(10), np.ones(4)]
    m = metrics.evaluate(labels, scores)
    assert (m.tnr_at_tpr95, m.auc, m.detection_accuracy) == (1.0, 1.0, 1.0)
    assert (m.num_clean, m.num_adversarial) == (10, 4)
    assert m.to_markdown_row("KD") == "| KD | 100.00 / 100.00 |"


def test_metrics_reject_one_class_only():
    with pytest.raises(ValueError, match="both clean"):
        metrics.roc_auc(np.zeros(5), np.arange(5.0))


def test_metrics_reject_different_lengths():
    with pytest.raises(ValueError, match="same length"):
        metrics.tnr_at_tpr([0, 1, 1], [0.1, 0.2])


def test_metrics_reject_nan_scores():
    with pytest.raises(ValueError, match="NaN"):
        metrics.evaluate([0, 1], [0.1, np.nan])


def test_metrics_reject_non_binary_labels():
    with pytest.raises(ValueError, match="0 \\(clean\\) or 1"):
        metrics.roc_auc([0, 2], [0.1, 0.2])


def test_plot_roc_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(50), np.ones(50)]
    path = metrics.plot_roc(
        {"KD": (labels, rng.normal(size=100) + labels), "LID": (labels, rng.normal(size=100))},
        tmp_path / "figs" / "roc.png",
    )
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_roc_rejects_non_png_path(tmp_path):
    with pytest.raises(ValueError, match="png"):
        metrics.plot_roc({"KD": ([0, 1], [0.0, 1.0])}, tmp_path / "roc.pdf")
