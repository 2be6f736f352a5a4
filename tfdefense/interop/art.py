"""Every ``Defense`` as an ART classifier, every ``Detector`` as an ART evasion detector.

The Adversarial Robustness Toolbox (ART, ``pip install adversarial-robustness-toolbox``)
runs its attacks on *estimators*. Two adapters make the library's objects ones:

* :func:`as_art_classifier` gives a :class:`DefenseClassifier`, an ART
  ``TensorFlowV2Classifier`` whose

  - ``model`` is the defense's attack surface (:class:`AttackSurface`): ``defense.logits``
    (BPDA where the defense needs it), averaged over ``eot_samples`` draws
    (``tfdefense.perturbation.eot``) when ``defense.stochastic``, compiled once. It is what
    ``tfdefense.attacks.evaluate_robustness`` attacks, so an ART attack and ours climb the
    same loss; ART's APGD, which rebuilds a classifier around ``model``, climbs it too;
  - ``loss_gradient`` / ``class_gradient`` / ``compute_loss`` are compiled ``tf.function``
    graphs over that surface (ART's own run eagerly); the loss is ART's: categorical
    cross-entropy on the logits, mean over the batch;
  - ``predict`` returns the defense's *decisions* (``Defense.predict_with_decisions``), as
    sign votes: +1 for the decided class, −1 for every other one. A rejected input is the
    extra class ``num_classes`` (``rejected="extra_class"``, rows of ``num_classes + 1``
    columns, as ART's ``DetectorClassifier`` does) or a row of zeros (``"abstain"``, as
    ART's randomized smoothing abstains). The votes are not probabilities (they are
    negative), so ART's APGD takes the estimator for one that predicts logits, which its
    surface does.

  ``nb_classes`` stays the task's ``num_classes`` in both modes: labels given to an ART
  attack are class ids below it, and the gradients are those of the ``num_classes`` logits.
* :func:`as_art_detector` gives a :class:`DetectorAdapter`, an ART ``EvasionDetector``
  (``detect(x) -> (report, is_adversarial)``) around a ``tfdefense.detect.base.Detector``
  or a detecting ``Defense`` (its ``detection_margin``: report ``score``, adversarial where
  it is > 0).

Images are float32 NHWC in [0, 1] as everywhere in the library (``clip_values=(0, 1)``).
This module needs ART; ``import tfdefense`` does not import it.

Example:
    >>> import numpy as np
    >>> from art.attacks.evasion import ProjectedGradientDescent
    >>> from tfdefense.defend import ClassifierDefense
    >>> from tfdefense.interop.art import as_art_classifier
    >>> from tfdefense.nets import small_cnn
    >>> defense = ClassifierDefense(small_cnn((28, 28, 1), 10, width=4, dense_units=8))
    >>> classifier = as_art_classifier(defense)
    >>> x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    >>> votes = classifier.predict(x)
    >>> votes.shape, bool((votes.argmax(1) == defense.predict(x)).all())  # 10 classes + rejected
    ((3, 11), True)
    >>> pgd = ProjectedGradientDescent(classifier, eps=0.1, eps_step=0.05, max_iter=2, verbose=False)
    >>> x_adv = pgd.generate(x, y=np.array([0, 1, 2]))
    >>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
    True
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

try:
    with warnings.catch_warnings():  # ART 1.20 warns at import that PyTorch is missing
        warnings.filterwarnings("ignore", "PyTorch not found", UserWarning)
        from art.defences.detector.evasion import EvasionDetector
        from art.estimators.classification import TensorFlowV2Classifier
except ImportError as error:  # pragma: no cover - exercised only without ART
    raise ImportError("tfdefense.interop.art needs the Adversarial Robustness Toolbox: "
                      "pip install adversarial-robustness-toolbox") from error

from tfdefense.defend.base import REJECTED, Defense
from tfdefense.detect.base import Detector
from tfdefense.perturbation import eot
from tfdefense.validation import check_images, check_positive_int

__all__ = [
    "REJECTED_MODES",
    "AttackSurface",
    "DefenseClassifier",
    "DetectorAdapter",
    "as_art_classifier",
    "as_art_detector",
    "decision_votes",
]

#: how ``predict`` shows a rejected input: an extra class, or a row of zeros
REJECTED_MODES = ("extra_class", "abstain")
#: EOT draws per step of a stochastic defense: ``evaluate_robustness``'s default (Athalye et
#: al. 2018 §5 use tens of draws), so that an ART attack and ours climb the same surface
DEFAULT_EOT = 10


def decision_votes(labels, num_classes: int, rejected: str = "extra_class") -> np.ndarray:
    """Sign votes of a defense's labels: +1 for the label, −1 for the other classes.

    ``labels`` are class ids with ``REJECTED`` (−1) where the defense refused; a refused
    input votes for the extra class ``num_classes`` (``rejected="extra_class"``, rows of
    ``num_classes + 1``) or is a row of zeros (``"abstain"``, rows of ``num_classes``).

    Example:
        >>> decision_votes(np.array([1, -1]), 2).tolist()
        [[-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]
        >>> decision_votes(np.array([1, -1]), 2, rejected="abstain").tolist()
        [[-1.0, 1.0], [0.0, 0.0]]
    """
    num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
    if rejected not in REJECTED_MODES:
        raise ValueError(f"rejected: expected one of {REJECTED_MODES}, got {rejected!r}")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.size and (labels.max() >= num_classes or labels.min() < REJECTED):
        raise ValueError(f"labels: expected class ids in [0, {num_classes}) or REJECTED "
                         f"({REJECTED}), got values in [{labels.min()}, {labels.max()}]")
    refused = labels == REJECTED
    width = num_classes + 1 if rejected == "extra_class" else num_classes
    target = np.where(refused, num_classes, labels)
    votes = np.where(np.arange(width) == target[:, None], 1.0, -1.0).astype(np.float32)
    if rejected == "abstain":
        votes[refused] = 0.0
    return votes


class AttackSurface:
    """The differentiable images -> logits path of a defense, compiled once.

    ``defense.logits`` for a deterministic defense; for a stochastic one the log of the
    mean softmax over ``eot_samples`` draws (``tfdefense.perturbation.eot``, Athalye et al.
    2018 §4), the surface ``evaluate_robustness`` attacks. Called as ART calls a model:
    ``surface(x, training=False)`` (``training`` is ignored: a defense runs in inference).
    """

    def __init__(self, defense: Defense, eot_samples: int = DEFAULT_EOT):
        if not isinstance(defense, Defense):
            raise ValueError(f"defense: expected a tfdefense Defense, got {type(defense).__name__}")
        self.defense = defense
        self.eot_samples = check_positive_int(eot_samples, "eot_samples")
        fn = eot(defense.logits, self.eot_samples) if defense.stochastic else defense.logits
        self._graph = tf.function(fn, reduce_retracing=True)

    def __call__(self, x, training: bool = False) -> tf.Tensor:
        return self._graph(tf.cast(tf.convert_to_tensor(x), tf.float32))


class DefenseClassifier(TensorFlowV2Classifier):
    """A ``Defense`` as an ART ``TensorFlowV2Classifier``; build it with :func:`as_art_classifier`.

    Args:
        defense: any ``tfdefense.defend.base.Defense``.
        rejected: "extra_class" (default) or "abstain": how ``predict`` shows a rejected
            input (see the module docstring).
        eot_samples: draws of a stochastic defense's logits per gradient (default 10, as
            ``evaluate_robustness``); ignored for a deterministic one.
        input_shape: (H, W, C); default ``defense.input_shape`` (required when it is None).
    """

    def __init__(self, defense: Defense, *, rejected: str = "extra_class",
                 eot_samples: int = DEFAULT_EOT, input_shape: tuple[int, int, int] | None = None):
        if rejected not in REJECTED_MODES:
            raise ValueError(f"rejected: expected one of {REJECTED_MODES}, got {rejected!r}")
        surface = AttackSurface(defense, eot_samples)
        shape = tuple(input_shape or defense.input_shape or ())
        if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"input_shape: expected (H, W, C) of positive ints (the defense "
                             f"declares {defense.input_shape}), got {input_shape}")
        probe = surface(tf.zeros((1, *shape)))
        if probe.shape.rank != 2 or probe.shape[-1] < 2:
            raise ValueError(f"defense: logits must be (N, num_classes >= 2), got {probe.shape}")
        super().__init__(model=surface, nb_classes=int(probe.shape[-1]), input_shape=shape,
                         loss_object=keras.losses.CategoricalCrossentropy(from_logits=True),
                         clip_values=(0.0, 1.0))
        self.defense = defense
        self.rejected = rejected
        self.eot_samples = surface.eot_samples
        self._gradient_graphs: dict[str, Any] = {}

    # ---------------------------------------------------------------- decisions
    def predict(self, x, batch_size: int = 128, training_mode: bool = False, **kwargs) -> np.ndarray:
        """Sign votes of the defense's decisions (``decision_votes``), one row per image."""
        x = check_images(np.asarray(x, dtype=np.float32), "x", shape=self.input_shape,
                         allow_empty=True)
        labels, _ = self.defense.predict_with_decisions(x, batch_size=batch_size)
        return decision_votes(labels, self.nb_classes, self.rejected)

    def fit(self, x, y, batch_size: int = 128, nb_epochs: int = 10, **kwargs) -> None:
        raise NotImplementedError("DefenseClassifier attacks and predicts a trained defense; train "
                                  "its models with tfdefense (model.fit) before wrapping it")

    # ---------------------------------------------------------------- gradients
    def _class_ids(self, y) -> tf.Tensor:
        """Class ids of ART's labels (one-hot rows or ids); the extra class (a rejection in
        ART's labels of our ``predict``) becomes -1: the surface's own prediction."""
        y = np.asarray(y.numpy() if isinstance(y, tf.Tensor) else y)
        ids = y.argmax(axis=1) if y.ndim == 2 else y.reshape(-1)
        ids = ids.astype(np.int32)
        if ids.size and (ids.min() < 0 or ids.max() > self.nb_classes):
            raise ValueError(f"y: expected class ids in [0, {self.nb_classes}], got values in "
                             f"[{ids.min()}, {ids.max()}]")
        return tf.constant(np.where(ids == self.nb_classes, -1, ids))

    def _graph(self, name: str):
        graph = self._gradient_graphs.get(name)
        if graph is None:
            graph = tf.function(getattr(self, f"_{name}"), reduce_retracing=True)
            self._gradient_graphs[name] = graph
        return graph

    def _loss(self, x, ids):
        logits = self._model(x)
        ids = tf.where(ids < 0, tf.argmax(logits, axis=-1, output_type=tf.int32), ids)
        onehot = tf.one_hot(ids, self.nb_classes, dtype=logits.dtype)
        return self._loss_object(onehot, logits)

    def _loss_gradient(self, x, ids):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = self._loss(x, ids)
        return tape.gradient(loss, x)

    def _per_example_loss(self, x, ids):
        logits = self._model(x)
        ids = tf.where(ids < 0, tf.argmax(logits, axis=-1, output_type=tf.int32), ids)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(ids, logits)

    def _all_class_gradients(self, x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            logits = self._model(x)  # one forward pass (one set of EOT draws) for every class
            per_class = [tf.reduce_sum(logits[:, k]) for k in range(self.nb_classes)]
        return tf.stack([tape.gradient(v, x) for v in per_class], axis=1)

    def _chosen_class_gradients(self, x, ids):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = self._model(x)
            chosen = tf.reduce_sum(logits * tf.one_hot(ids, self.nb_classes, dtype=logits.dtype))
        return tape.gradient(chosen, x)[:, None]

    def _images(self, x) -> tf.Tensor:
        if isinstance(x, tf.Tensor):
            return tf.cast(x, tf.float32)
        return tf.constant(check_images(np.asarray(x, dtype=np.float32), "x", shape=self.input_shape))

    def loss_gradient(self, x, y, training_mode: bool = False, **kwargs):
        """Gradient of ART's loss (cross-entropy, batch mean) through the defense's surface.

        ``x`` a numpy array or a tensor (ART's TF2 PGD passes tensors); the result is of the
        same kind. ``y`` one-hot rows or class ids (the extra class: the surface's argmax).
        """
        grad = self._graph("loss_gradient")(self._images(x), self._class_ids(y))
        return grad if isinstance(x, tf.Tensor) else grad.numpy()

    def compute_loss(self, x, y, reduction: str = "none", training_mode: bool = False,
                     **kwargs) -> np.ndarray:
        """Per-example cross-entropy of the surface's logits ("none"), or its "mean" / "sum"."""
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"reduction: expected 'none', 'mean' or 'sum', got {reduction!r}")
        x = x if isinstance(x, tf.Tensor) else np.asarray(x)
        loss = self._graph("per_example_loss")(self._images(x), self._class_ids(y)).numpy()
        return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]

    def class_gradient(self, x, label=None, training_mode: bool = False, **kwargs) -> np.ndarray:
        """Gradients of the surface's logits: (N, num_classes, H, W, C) for ``label=None``,
        else (N, 1, H, W, C) for one class id or one per image."""
        images = self._images(x)
        if label is None:
            return self._graph("all_class_gradients")(images).numpy()
        ids = np.broadcast_to(np.asarray(label), (len(images),)).astype(np.int32)
        if ids.min() < 0 or ids.max() >= self.nb_classes:
            raise ValueError(f"label: expected class ids in [0, {self.nb_classes}), got {label!r}")
        return self._graph("chosen_class_gradients")(images, tf.constant(ids)).numpy()


def as_art_classifier(defense: Defense, *, rejected: str = "extra_class",
                      eot_samples: int = DEFAULT_EOT,
                      input_shape: tuple[int, int, int] | None = None) -> DefenseClassifier:
    """``defense`` as an ART classifier (:class:`DefenseClassifier`; see the module docstring).

    Args:
        defense: any ``Defense`` (grey-box CD-VAE, MagNet, FM-Defense, Defense-GAN, ...).
        rejected: "extra_class" or "abstain": a rejected input in ``predict``.
        eot_samples: EOT draws per gradient of a stochastic defense (default 10).
        input_shape: (H, W, C) when the defense declares none.
    """
    return DefenseClassifier(defense, rejected=rejected, eot_samples=eot_samples,
                             input_shape=input_shape)


class DetectorAdapter(EvasionDetector):
    """A ``Detector`` (or a detecting ``Defense``) as an ART ``EvasionDetector``.

    ``detect(x)`` is the detector's own ``(report, is_adversarial)`` (also a defense's that
    has one, as MagNet); for another detecting ``Defense`` the report is
    ``{"score": detection_margin}`` and adversarial where the margin is > 0 (where the
    defense rejects). ``fit`` passes its arguments to the detector's own ``fit`` (ART's
    ``batch_size`` and ``nb_epochs`` do not apply to it).
    """

    defence_params = ["detector"]

    def __init__(self, detector: Detector | Defense):
        super().__init__()
        if not isinstance(detector, Detector | Defense):
            raise ValueError(f"detector: expected a tfdefense Detector or a detecting Defense, "
                             f"got {type(detector).__name__}")
        if isinstance(detector, Defense) and not detector.detects:
            raise ValueError(f"detector: {type(detector).__name__} does not detect (detects = False)")
        self.detector = detector

    def fit(self, x, y=None, batch_size: int = 128, nb_epochs: int = 20, **kwargs) -> None:
        if isinstance(self.detector, Defense):
            raise NotImplementedError(f"{type(self.detector).__name__} is fitted through its own "
                                      "methods (e.g. MagNet.fit_thresholds), not through ART")
        self.detector.fit(x, *(() if y is None else (y,)), **kwargs)

    def detect(self, x, batch_size: int = 128, **kwargs) -> tuple[dict, np.ndarray]:
        if isinstance(self.detector, Defense) and not callable(getattr(self.detector, "detect", None)):
            x = check_images(np.asarray(x, dtype=np.float32), "x", shape=self.detector.input_shape)
            margin = np.concatenate([
                np.asarray(self.detector.detection_margin(tf.constant(x[i : i + batch_size])))
                for i in range(0, len(x), batch_size)]) if len(x) else np.zeros(0, np.float32)
            return {"score": margin}, margin > 0
        report, is_adversarial = self.detector.detect(x)
        return report, np.asarray(is_adversarial, dtype=bool).reshape(-1)


def as_art_detector(detector: Detector | Defense) -> DetectorAdapter:
    """``detector`` as an ART evasion detector (``detect(x) -> (report, is_adversarial)``).

    Example:
        >>> from tfdefense.detect.base import Detector
        >>> class Bright(Detector):
        ...     def detect(self, x):
        ...         score = np.asarray(x).reshape(len(x), -1).mean(1)
        ...         return {"score": score}, score > 0.5
        >>> report, flagged = as_art_detector(Bright()).detect(np.array([[0.2], [0.9]]))
        >>> flagged.tolist()
        [False, True]
    """
    return DetectorAdapter(detector)
