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
