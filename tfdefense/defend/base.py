"""The one interface every defense shares: predict, be attacked as a whole, save, serve.

A ``Defense`` holds its Keras models and answers through a few methods, whatever it is
made of (a purifier, a detector, an adversarially trained classifier):

* ``defend(x) -> (labels, decisions)``: the defense's decision for a batch, as TensorFlow
  ops (one graph: the serving ``defend`` signature and ``predict`` run it). Labels are
  int64 with ``REJECTED`` (−1) where refused; decisions are int32 codes of
  :class:`tfdefense.decisions.Decision` (accepted / purified / rejected).
* ``predict(x)`` / ``predict_with_decisions(x)``: the same on numpy images in [0, 1],
  validated and batched.
* ``logits(x)``: the differentiable end-to-end path an adaptive attacker targets, with
  BPDA (``attacks.bpda``) where a step has no useful gradient; when ``stochastic`` is
  True the path is random and an attacker averages it (``attacks.eot``).
* ``purify(x)`` (defenses that purify: ``GreyBoxDefense``, ``AdversarialCDVAEDefense``,
  ``FMDefense``): the purified images of a batch, the ones the defense classifies, as a
  float32 ``tf.Tensor`` (N, H, W, C) of TensorFlow ops like ``logits`` (differentiable where
  the purifier is); ``.numpy()`` gives the array.
* ``detection_margin(x)`` (defenses with ``detects = True``): a float (N,) tensor, > 0
  exactly where ``defend`` rejects, differentiable, so a gradient attack becomes
  detector-aware by one loss term (push it below 0).
* ``serving_spec()``: the ``serving_default`` (``serving_logits``), ``detect`` (if the
  defense detects) and ``defend`` signatures that ``tfdefense.export.for_serving`` writes.
* ``save(path)`` and :func:`load`: a folder holding ``defense.json`` (the registered class
  name and ``get_config()``), one ``<name>.keras`` per component model and ``state.npz``
  (fitted arrays such as thresholds).

A subclass implements ``logits``, ``components``, ``get_config`` and ``from_parts``; it
overrides ``defend`` if it rejects or purifies (the default accepts every input with
``argmax(logits)``), ``detection_margin`` if it detects and ``state`` if it holds fitted
arrays. ``@register_defense`` makes ``load`` find it.

Example:
    >>> import numpy as np
    >>> import keras
    >>> from tfdefense.defend.base import Defense, register_defense
    >>> @register_defense
    ... class Plain(Defense):
    ...     def __init__(self, classifier):
    ...         self.classifier = classifier
    ...         self.input_shape = tuple(classifier.input_shape[1:])
    ...     def logits(self, x):
    ...         return self.classifier(x, training=False)
    ...     def components(self):
    ...         return {"classifier": self.classifier}
    ...     def get_config(self):
    ...         return {}
    ...     @classmethod
    ...     def from_parts(cls, config, components, state):
    ...         return cls(components["classifier"])
    >>> net = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    >>> labels, decisions = Plain(net).predict_with_decisions(np.zeros((2, 4, 4, 1), "float32"))
    >>> labels.shape, decisions.tolist()
    ((2,), [0, 0])
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfdefense.decisions import DECISIONS, REJECTED_LABEL, Decision
from tfdefense.profiling import timed
from tfdefense.saving import PartsRegistry, SavedAsParts
from tfdefense.validation import check_images, check_positive_int

__all__ = ["DECISIONS", "REJECTED", "Decision", "Defense", "load", "register_defense"]

#: the label of a rejected input (``tfdefense.decisions.REJECTED_LABEL``)
REJECTED = REJECTED_LABEL

CONFIG_FILE = "defense.json"
#: every registered defense class; ``Defense.save`` and :func:`load` go through it
DEFENSES = PartsRegistry("defense", CONFIG_FILE)
#: class decorator: :func:`load` rebuilds saved defenses of the class by its name
register_defense = DEFENSES.register


def registered_defenses() -> dict[str, type[Defense]]:
    """Name -> class of every registered defense (importing ``tfdefense.defend`` registers ours)."""
    return DEFENSES.classes()


class Defense(SavedAsParts):
    """Base class of every defense; see the module docstring for the contract."""

    _parts_registry = DEFENSES

    #: per-image shape (H, W, C) the defense expects, or None for any
    input_shape: tuple[int | None, int | None, int | None] | None = None
    #: True when ``logits`` is random (an attacker needs EOT over it)
    stochastic: bool = False
    #: True when the defense can reject inputs (``detection_margin`` is defined)
    detects: bool = False
    #: images per compiled batch in ``predict`` / ``predict_with_decisions``
    batch_size: int = 256

    # ------------------------------------------------------------ what subclasses give
    def logits(self, x: tf.Tensor) -> tf.Tensor:
        """Differentiable images -> logits through the whole defense (the attack surface)."""
        raise NotImplementedError(f"{type(self).__name__}.logits")

    def serving_logits(self, x: tf.Tensor) -> tf.Tensor:
        """The logits of the ``serving_default`` signature (deterministic; default ``logits``)."""
        return self.logits(x)

    def defend(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(labels int64 (N,), decisions int32 (N,)) as TensorFlow ops; default: accept all."""
        labels = tf.argmax(self.serving_logits(x), axis=-1, output_type=tf.int64)
        return labels, tf.fill(tf.shape(labels), tf.constant(int(Decision.ACCEPTED), tf.int32))

    def detection_margin(self, x: tf.Tensor) -> tf.Tensor:
        """float32 (N,): > 0 exactly where ``defend`` rejects; differentiable."""
        raise ValueError(f"{type(self).__name__} does not detect (detects = False): it has no "
                         "detection margin")

    def detection_outputs(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        """Extra outputs of the ``detect`` signature beside score and is_adversarial."""
        return {}

    # -------------------------------------------------------------- numpy front door
    def _defend_graph(self):
        graph = self.__dict__.get("_defend_fn")
        if graph is None:
            graph = tf.function(self.defend, reduce_retracing=True)
            self.__dict__["_defend_fn"] = graph
        return graph

    @timed("score")
    def predict_with_decisions(self, x, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(labels int64, decisions int32) for ``x`` (float32 NHWC in [0, 1]), batch by batch."""
        x = check_images(x, "x", shape=self.input_shape, allow_empty=True)
        batch_size = check_positive_int(batch_size or self.batch_size, "batch_size")
        if len(x) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        graph = self._defend_graph()
        labels, decisions = [], []
        for i in range(0, len(x), batch_size):
            lab, dec = graph(tf.constant(x[i : i + batch_size]))
            labels.append(lab.numpy())
            decisions.append(dec.numpy())
        return (np.concatenate(labels).astype(np.int64), np.concatenate(decisions).astype(np.int32))

    @timed("score")
    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        """Labels for ``x`` (float32 NHWC in [0, 1]); ``REJECTED`` (−1) where refused."""
        return self.predict_with_decisions(x, batch_size)[0]

    def accuracy(self, x, y, batch_size: int | None = None) -> float:
        """Fraction of ``x`` labelled ``y`` (a rejected input counts as wrong)."""
        labels = self.predict(x, batch_size)
        y = np.asarray(y).reshape(-1)
        if y.shape != labels.shape:
            raise ValueError(f"y: expected {len(labels)} labels, got shape {np.asarray(y).shape}")
        return float(np.mean(labels == y))

    # ----------------------------------------------------------------------- serving
    def serving_spec(self):
        """``serving_default`` (``serving_logits``), ``detect`` (if it detects), ``defend``."""
        from tfdefense.serving import (
            DEFEND_OUTPUTS,
            DETECT_OUTPUTS,
            ServingSpec,
            Signature,
            classify_signature,
        )

        if self.input_shape is None or None in self.input_shape:
            raise ValueError(f"{type(self).__name__}: export needs a fixed input_shape, "
                             f"got {self.input_shape}")
        sigs = [classify_signature(self.serving_logits)]
        if self.detects:
            def detect_fn(x):
                margin = tf.cast(self.detection_margin(x), tf.float32)
                return {"score": margin, "is_adversarial": margin > 0.0, **self.detection_outputs(x)}

            outputs = dict(DETECT_OUTPUTS, score="float32 (N,) detection margin; > 0 = rejected")
            sigs.append(Signature("detect", detect_fn, outputs))

        def defend_fn(x):
            labels, decisions = self.defend(x)
            decisions = tf.cast(decisions, tf.int32)
            return {"label": tf.cast(labels, tf.int64), "decision": decisions,
                    "decision_name": tf.gather(tf.constant(DECISIONS), decisions)}

        sigs.append(Signature("defend", defend_fn, dict(DEFEND_OUTPUTS)))
        metadata = {"model": type(self).__name__, "defense_config": self.get_config(),
                    "stochastic": self.stochastic, "detects": self.detects,
                    **{k: np.asarray(v).tolist() for k, v in self.state().items()}}
        return ServingSpec(tuple(self.input_shape), sigs, list(self.components().values()), metadata)


def load(path: str) -> Defense:
    """The defense ``Defense.save`` wrote to the folder ``path``.

    Raises ``ValueError`` for a missing folder, a folder without ``defense.json`` or a class
    that is not registered.
    """
    import tfdefense.defend  # noqa: F401  (registers the library's defenses)

    return DEFENSES.load(path)
