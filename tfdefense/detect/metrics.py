"""Detection metrics: TNR at 95% TPR, ROC AUC, detection accuracy, ROC figures.

Convention (as in the detection papers' code): ``labels`` are 1 for an
adversarial input and 0 for a clean (or noisy) one; ``scores`` grow with the
belief that the input is adversarial (e.g. the ``LogisticDetector``
probability; negate a kernel density or a Mahalanobis confidence first).

* ``tnr_at_tpr`` follows Lee et al. 2018 (the code CD-VAE Table 4 was made
  with): the *clean* inputs are the positives, so "95% TPR" means the
  threshold accepts at least 95% of clean inputs, and TNR is the fraction of
  adversarial inputs rejected at that threshold. Lee et al. take the curve
  point *closest* to 95%; we take the best point with *at least* 95%, which
  never overstates the TNR.
* ``roc_auc`` is sklearn's ``roc_auc_score``.
* ``detection_accuracy`` is Lee et al.'s DTACC: max over thresholds of
  0.5 * (TPR + TNR).

Example:
    >>> import numpy as np
    >>> from tfdefense.detect import metrics
    >>> labels = np.array([0, 0, 0, 0, 1, 1])
    >>> scores = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9])
    >>> round(metrics.roc_auc(labels, scores), 4)
    0.875
    >>> metrics.tnr_at_tpr(labels, scores)  # accept all 4 clean -> only 0.9 > 0.6 rejected
    0.5
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from tfdefense.validation import check_number

#: Lee et al. 2018 / CD-VAE Table 4 report TNR at this TPR of clean inputs
DEFAULT_TPR = 0.95


def _check_labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.ndim != 1:
        raise ValueError(
            f"labels and scores: expected vectors (N,), got shapes {labels.shape} and {scores.shape}"
        )
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"labels and scores: expected the same length, got {labels.shape[0]} labels "
            f"and {scores.shape[0]} scores"
        )
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError(
            f"labels: expected 0 (clean) or 1 (adversarial), got values {np.unique(labels)[:10]}"
        )
    labels = labels.astype(np.int64)
    if labels.min(initial=1) != 0 or labels.max(initial=0) != 1:
        raise ValueError(
            "labels: expected both clean (0) and adversarial (1) examples, "
            f"got only class {np.unique(labels).tolist()}"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores: contains NaN or infinite values")
    return labels, scores


def tnr_at_tpr(labels, scores, tpr: float = DEFAULT_TPR) -> float:
    """Fraction of adversarial inputs rejected when at least ``tpr`` of clean ones pass.

    An input is flagged when its score is at or above the threshold. Among all
    thresholds that keep the clean pass rate (the TPR of Lee et al.) at least
    ``tpr``, the one flagging the most adversarial inputs is used.
    """
    labels, scores = _check_labels_scores(labels, scores)
    tpr = check_number(tpr, "tpr", 0.0, 1.0)
    fpr, tpr_adv, _ = roc_curve(labels, scores, drop_intermediate=False)
    clean_pass = 1.0 - fpr  # clean inputs below the threshold
    ok = clean_pass >= tpr - 1e-12
    return float(tpr_adv[ok].max())


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (sklearn ``roc_auc_score``); 0.5 is chance."""
    labels, scores = _check_labels_scores(labels, scores)
    return float(roc_auc_score(labels, scores))


def detection_accuracy(labels, scores) -> float:
    """Best balanced accuracy over thresholds, 0.5 * (TPR + TNR) (Lee et al.'s DTACC)."""
    labels, scores = _check_labels_scores(labels, scores)
    fpr, tpr_adv, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(np.max(0.5 * (tpr_adv + 1.0 - fpr)))


@dataclasses.dataclass(frozen=True)
class DetectionMetrics:
    """The three numbers of a detection table, as fractions in [0, 1].

    Attributes:
        tnr_at_tpr95: TNR at 95% TPR (CD-VAE Table 4's "TNR").
        auc: ROC AUC (Table 4's "AUC").
        detection_accuracy: Lee et al.'s DTACC.
        num_clean: clean (label 0) examples scored.
        num_adversarial: adversarial (label 1) examples scored.
    """

    tnr_at_tpr95: float
    auc: float
    detection_accuracy: float
    num_clean: int
    num_adversarial: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_markdown_row(self, name: str) -> str:
        """``| name | TNR / AUC |`` in percent, as CD-VAE Table 4 prints it."""
        return f"| {name} | {100 * self.tnr_at_tpr95:.2f} / {100 * self.auc:.2f} |"


def evaluate(labels, scores) -> DetectionMetrics:
    """All metrics for one detector on one attack."""
    labels, scores = _check_labels_scores(labels, scores)
    return DetectionMetrics(
        tnr_at_tpr95=tnr_at_tpr(labels, scores),
        auc=roc_auc(labels, scores),
        detection_accuracy=detection_accuracy(labels, scores),
        num_clean=int(np.sum(labels == 0)),
        num_adversarial=int(np.sum(labels == 1)),
    )


def plot_roc(
    curves: Mapping[str, tuple],
    path: str | os.PathLike,
    title: str = "ROC curves of adversarial detection",
) -> str:
    """Save ROC curves as a PNG and return its path.

    Args:
        curves: name -> (labels, scores); one line per entry, its AUC in the legend.
        path: where the PNG goes; parent folders are created.
        title: figure title.
    """
    if not curves:
        raise ValueError("curves: expected at least one (labels, scores) pair, got none")
    import matplotlib.pyplot as plt  # the caller's backend (a notebook keeps its inline plots)

    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"path: expected a .png file name, got {path!r}")
    fig, ax = plt.subplots(figsize=(5, 5))
    try:
        for name, pair in curves.items():
            if len(pair) != 2:
                raise ValueError(f"curves[{name!r}]: expected (labels, scores), got {len(pair)} items")
            labels, scores = _check_labels_scores(*pair)
            fpr, tpr_adv, _ = roc_curve(labels, scores)
            ax.plot(fpr, tpr_adv, label=f"{name} (AUC {100 * roc_auc_score(labels, scores):.1f}%)")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("false positive rate (clean flagged)")
        ax.set_ylabel("true positive rate (adversarial flagged)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize="small")
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
