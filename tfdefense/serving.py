"""What an object exports: named signatures over plain tensors (used by ``tfdefense.export``).

``serving_spec(obj)`` asks the object: a defense (``tfdefense.defend.Defense``),
a detector (``tfdefense.detect.Detector``) or any object with a
``serving_spec()`` method describes itself; a CDVAE (a model, not a defense)
and a functional Keras classifier are known here. A ``ServingSpec`` holds the
per-image input shape, a list of ``Signature`` (name,
``fn(images) -> {output: tensor}``, output descriptions) and the Keras objects
the SavedModel must track. A defense made of tensor functions becomes
signatures through ``DefenseParts`` and ``defense_signatures``.
``tfdefense.export.for_serving`` writes the SavedModel.

Example:
    >>> import tensorflow as tf
    >>> from tfdefense.serving import DefenseParts, defense_signatures
    >>> parts = DefenseParts(classify=lambda x: tf.reduce_mean(x, axis=[1, 2]))
    >>> [s.name for s in defense_signatures(parts)]
    ['serving_default', 'defend']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

from tfdefense.decisions import DECISIONS, Decision
from tfdefense.decisions import REJECTED_LABEL as REJECTED
from tfdefense.detect.lid import LID_REASON  # noqa: F401  (re-exported by tfdefense.export)

#: ``decision`` codes of the ``defend`` signature (``tfdefense.decisions.Decision``)
ACCEPTED, PURIFIED, REJECTED_DECISION = (int(Decision.ACCEPTED), int(Decision.PURIFIED),
                                         int(Decision.REJECTED))

TensorFn = Callable[[tf.Tensor], dict[str, tf.Tensor]]


@dataclass
class Signature:
    """One named endpoint: ``fn(images) -> {output name: tensor}`` and what each output means."""

    name: str
    fn: TensorFn
    outputs: dict[str, str]


@dataclass
class ServingSpec:
    """What ``for_serving`` exports: input shape, signatures, objects to track, metadata."""

    input_shape: tuple[int, int, int]
    signatures: list[Signature]
    track: list[Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    value_range: tuple[float, float] = (0.0, 1.0)


@dataclass
class DefenseParts:
    """A defense as tensor functions, the generic path to a ``defend`` signature.

    Attributes:
        classify: images -> logits of what the defense classifies (e.g. D(G(x))
            for the grey-box defense, the classifier on the reformed image for
            MagNet).
        detect: images -> (score (N,), is_adversarial (N,) bool, extra outputs
            dict); ``None`` for a defense that never rejects.
        purify: images -> purified images, classified where ``detect`` flags an
            input that ``salvageable`` accepts; ``None``: flagged inputs are
            rejected.
        salvageable: images -> (N,) bool, which flagged inputs ``purify`` may
            save (default: all of them when ``purify`` is given).
        thresholds: detector thresholds, written to the metadata.
    """

    classify: Callable[[tf.Tensor], tf.Tensor]
    detect: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]] | None = None
    purify: Callable[[tf.Tensor], tf.Tensor] | None = None
    salvageable: Callable[[tf.Tensor], tf.Tensor] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------- signatures
CLASSIFY_OUTPUTS = {
    "logits": "float32 (N, K) classifier logits",
    "probabilities": "float32 (N, K) softmax of the logits",
    "label": "int64 (N,) argmax class id",
}
DETECT_OUTPUTS = {
    "score": "float32 (N,) detection score, larger = more adversarial",
    "is_adversarial": "bool (N,) score above the fitted threshold",
}
DEFEND_OUTPUTS = {
    "label": f"int64 (N,) class id, {REJECTED} where the defense rejects the input",
    "decision": "int32 (N,) 0 accepted, 1 purified, 2 rejected",
    "decision_name": "string (N,) the decision as a word",
}


def classify_signature(logits_fn: Callable[[tf.Tensor], tf.Tensor],
                       name: str = "serving_default") -> Signature:
    def fn(x):
        logits = tf.cast(logits_fn(x), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits),
                "label": tf.argmax(logits, axis=-1, output_type=tf.int64)}

    return Signature(name, fn, dict(CLASSIFY_OUTPUTS))


def defense_signatures(parts: DefenseParts) -> list[Signature]:
    """``serving_default`` (no rejection), ``detect`` (if any) and ``defend`` from ``parts``."""
    sigs = [classify_signature(parts.classify)]
    if parts.detect is not None:
        def detect_fn(x):
            score, flagged, extra = parts.detect(x)
            return {"score": tf.cast(score, tf.float32), "is_adversarial": tf.cast(flagged, tf.bool),
                    **extra}

        outputs = dict(DETECT_OUTPUTS)
        sigs.append(Signature("detect", detect_fn, outputs))

    def defend_fn(x):
        labels = tf.argmax(parts.classify(x), axis=-1, output_type=tf.int64)
        n = tf.shape(x)[0]
        decision = tf.fill([n], ACCEPTED)
        if parts.detect is not None:
            _, flagged, _ = parts.detect(x)
            flagged = tf.cast(flagged, tf.bool)
            if parts.purify is not None:
                saved = flagged if parts.salvageable is None else tf.logical_and(
                    flagged, tf.cast(parts.salvageable(x), tf.bool))
                purified = tf.argmax(parts.classify(parts.purify(x)), axis=-1, output_type=tf.int64)
                labels = tf.where(saved, purified, labels)
                decision = tf.where(saved, PURIFIED, decision)
                flagged = tf.logical_and(flagged, tf.logical_not(saved))
            labels = tf.where(flagged, tf.constant(REJECTED, tf.int64), labels)
            decision = tf.where(flagged, REJECTED_DECISION, decision)
        decision = tf.cast(decision, tf.int32)
        return {"label": labels, "decision": decision,
                "decision_name": tf.gather(tf.constant(DECISIONS), decision)}

    sigs.append(Signature("defend", defend_fn, dict(DEFEND_OUTPUTS)))
    return sigs


# ----------------------------------------------------------- known objects
def _cdvae_spec(model) -> ServingSpec:
    def decompose(x):
        g, r = model.decompose(x)
        return {"generated": g, "residual": r}

    sigs = [classify_signature(lambda x: model(x, training=False)),
            Signature("decompose", decompose, {
                "generated": "float32 (N, H, W, C) G(x), the class-free reconstruction (pixel scale)",
                "residual": "float32 (N, H, W, C) R(x) = x - G(x), the class-carrying residual"})]
    return ServingSpec(tuple(model.input_shape_), sigs, [model], {
        "model": type(model).__name__, "num_classes": model.num_classes,
        "beta": model.beta, "gamma": model.gamma, "classifier_input": model.classifier_input})


def _keras_classifier_spec(model: keras.Model) -> ServingSpec:
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or None in shape or len(model.output_shape) != 2:
        raise ValueError(
            f"obj: a Keras model exports as a classifier only with images (N, H, W, C) -> logits "
            f"(N, K); got input {model.input_shape}, output {model.output_shape}")
    return ServingSpec(shape, [classify_signature(lambda x: model(x, training=False))], [model],
                       {"model": type(model).__name__, "num_classes": int(model.output_shape[-1])})


def serving_spec(obj) -> ServingSpec:
    """The ``ServingSpec`` of ``obj``; ``ValueError`` when it has no exportable signatures."""
    if hasattr(obj, "serving_spec"):
        return obj.serving_spec()
    from tfdefense.models.cdvae import CDVAE

    if isinstance(obj, CDVAE):
        return _cdvae_spec(obj)
    if isinstance(obj, DefenseParts):
        raise ValueError("obj: wrap DefenseParts in a ServingSpec(input_shape, "
                         "defense_signatures(parts), track=[models])")
    if isinstance(obj, keras.Model):
        if not obj.built or not obj.inputs:
            raise ValueError(f"obj: the Keras model {obj.name!r} is not built (call it on a batch "
                             "or give it an Input) and has no exportable signatures")
        return _keras_classifier_spec(obj)
    raise ValueError(
        f"obj: {type(obj).__name__} has no exportable signatures; expected a defense, a detector, "
        "a CDVAE, a functional Keras classifier, a ServingSpec or an object with a serving_spec() "
        "method")
