"""ROC AUC and TNR at 95% TPR on a score list small enough to sort by hand.

tests/detect/test_detect_metrics.py compares AUC with sklearn on random scores and has the
TNR hand case on 25 scores; this one pins AUC itself (with ties) to a count of pairs.
"""

import numpy as np
import pytest

from tfdefense.detect import metrics

# clean (label 0): 0.1, 0.4, 0.4, 0.8; adversarial (label 1): 0.35, 0.4, 0.9
CLEAN = [0.1, 0.4, 0.4, 0.8]
ADVERSARIAL = [0.35, 0.4, 0.9]
LABELS = np.r_[np.zeros(len(CLEAN)), np.ones(len(ADVERSARIAL))]
SCORES = np.r_[CLEAN, ADVERSARIAL]


def test_auc_is_the_share_of_adversarial_clean_pairs_ranked_right_ties_half():
    # 3 x 4 = 12 (adversarial, clean) pairs; a pair counts 1 when the adversarial score is
    # higher, 1/2 on a tie:
    #   0.35 > 0.1 only                      -> 1
    #   0.4  > 0.1, ties 0.4 twice, < 0.8     -> 1 + 0.5 + 0.5 = 2
    #   0.9  > all four                       -> 4
    # AUC = 7/12 = 0.58333
    assert metrics.roc_auc(LABELS, SCORES) == pytest.approx(7 / 12)
    # flipping the score's sign ranks every pair the other way: 1 − 7/12
    assert metrics.roc_auc(LABELS, -SCORES) == pytest.approx(5 / 12)


def test_tnr_at_95_tpr_on_four_clean_scores():
    # an input is flagged when its score is >= the threshold t.
    # 95% of 4 clean inputs must pass: all 4, so t > 0.8 and only the adversarial 0.9 is
    # flagged: TNR = 1/3. 75% and 50% let one or two clean be flagged, but the two clean 0.4
    # fall together: t in (0.4, 0.8] flags clean 0.8 only, and still only the adversarial
    # 0.9 -> 1/3. 25% needs one clean pass (0.1): t = 0.35 flags every adversarial -> 1
    assert metrics.tnr_at_tpr(LABELS, SCORES) == pytest.approx(1 / 3)
    assert metrics.tnr_at_tpr(LABELS, SCORES, tpr=0.75) == pytest.approx(1 / 3)
    assert metrics.tnr_at_tpr(LABELS, SCORES, tpr=0.5) == pytest.approx(1 / 3)
    assert metrics.tnr_at_tpr(LABELS, SCORES, tpr=0.25) == pytest.approx(1.0)


def test_tnr_at_tpr_keeps_collinear_roc_points():
    # 20 clean, 10 adversarial scores, flagged at or above a threshold. Descending: 5
    # adversarial alone (ROC point fpr 0, tpr 0.5); then a tie of 1 clean + 2 adversarial
    # (0.05, 0.7); another such tie (0.10, 0.9); then 1 adversarial (0.10, 1.0) and 18 clean.
    # The middle point lies on the segment between its neighbours: a ROC that drops such
    # "intermediate" points (sklearn's drop_intermediate=True) would answer 0.5, because 95%
    # clean passing allows fpr <= 0.05 and only (0, 0.5) would be left there
    scores = [10.0] * 5 + [8.0] * 3 + [6.0] * 3 + [5.0] + [1.0] * 18
    labels = [1] * 5 + [0, 1, 1] + [0, 1, 1] + [1] + [0] * 18
    assert metrics.tnr_at_tpr(labels, scores, tpr=0.95) == pytest.approx(0.7)
    # the best balanced accuracy: 0.5 (1.0 + 0.90) at the (0.10, 1.0) point
    assert metrics.detection_accuracy(labels, scores) == pytest.approx(0.95)


@pytest.mark.parametrize("tpr", [-0.1, 1.5])
def test_tnr_at_tpr_rejects_a_rate_outside_0_1(tpr):
    with pytest.raises(ValueError, match=rf"^tpr: expected a value in \[0.0, 1.0\], got {tpr}$"):
        metrics.tnr_at_tpr([0, 1], [0.0, 1.0], tpr=tpr)


def test_labels_and_scores_must_both_be_vectors():
    with pytest.raises(ValueError, match=r"expected vectors \(N,\), got shapes \(2,\) and \(2, 1\)"):
        metrics.tnr_at_tpr([0, 1], [[0.0], [1.0]])
    with pytest.raises(ValueError, match=r"got only class \[0\]"):
        metrics.roc_auc([0, 0], [0.0, 1.0])


def test_metrics_print_as_percentages_and_export_every_field():
    m = metrics.DetectionMetrics(tnr_at_tpr95=0.5, auc=0.25, detection_accuracy=0.75,
                                 num_clean=3, num_adversarial=4)
    assert m.to_markdown_row("KD") == "| KD | 50.00 / 25.00 |"
    assert m.to_dict() == {"tnr_at_tpr95": 0.5, "auc": 0.25, "detection_accuracy": 0.75,
                           "num_clean": 3, "num_adversarial": 4}
