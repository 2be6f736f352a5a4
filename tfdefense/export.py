"""SavedModels in the layout TF Serving reads, with named signatures over plain tensors.

``for_serving(obj, base_path, version)`` writes ``<base_path>/<version>/``
(``saved_model.pb``, ``variables/``, ``assets.extra/``) with
``keras.export.ExportArchive`` (ECOSYSTEM_NOTES: a ``tf.Module`` around a
Keras 3 model saves a SavedModel TF Serving cannot load). Every signature
takes one input, ``images``: float32 (N, H, W, C) in [0, 1]. Shape and dtype
are fixed by the signature; values are checked in the graph, so NaN or a pixel
outside [0, 1] fails the request with ``InvalidArgument`` and a message that
says what came.

Signatures (outputs by name):

* ``serving_default``: ``logits`` (N, K) float32, ``probabilities`` (N, K)
  float32, ``label`` (N,) int64 — the undefended classifier of the object
  (for a defense: what it classifies, without rejection).
* ``decompose`` (CD-VAE): ``generated`` G(x) and ``residual`` R(x), (N, H, W, C).
* ``detect`` (detectors, MagNet): ``score`` (N,) float32 (larger = more
  adversarial), ``is_adversarial`` (N,) bool, and per-detector ``scores``.
* ``defend`` (whole defenses): ``label`` (N,) int64, ``REJECTED`` = -1 where the
  defense refuses, and ``decision`` (N,) int32 (0 accepted, 1 purified,
  2 rejected) with ``decision_name`` (N,) string — one call detects, purifies
  and classifies.

What an object exports comes from ``serving_spec(obj)``: an object that has a
``serving_spec()`` method describes itself; CD-VAE, MagNet and plain Keras
classifiers (images -> logits) are known here; a defense made of tensor parts
uses ``DefenseParts``. Anything else raises ``ValueError``.

Example:
    >>> import tempfile
    >>> from tfdefense import export, models
    >>> model = models.CDVAE.for_dataset("mnist_5k", latent_dim=8, width=8)
    >>> path = export.for_serving(model, tempfile.mkdtemp() + "/cdvae", version=1)
    >>> sorted(export.read_metadata(path)["signatures"])
    ['decompose', 'serving_default']
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense._version import __version__
from tfdefense.defend.base import REJECTED

INPUT_NAME = "images"
METADATA_FILE = "tfdefense_metadata.json"
WARMUP_FILE = "tf_serving_warmup_requests"
#: ``decision`` codes of the ``defend`` signature
DECISIONS = ("accepted", "purified", "rejected")
ACCEPTED, PURIFIED, REJECTED_DECISION = 0, 1, 2

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


def _magnet_spec(magnet) -> ServingSpec:
    if not magnet.fitted:
        raise ValueError("magnet: thresholds are not fitted; call fit_thresholds(clean) before export")
    from tfdefense.baselines.losses import reconstruction_error

    def detect(x):
        scores = tf.stack([reconstruction_error(x, magnet.autoencoder_i(x, training=False), p=2),
                           reconstruction_error(x, magnet.autoencoder_ii(x, training=False), p=1)],
                          axis=1)
        # margin over the threshold: > 0 exactly where a detector rejects
        margin = tf.reduce_max(scores - magnet.thresholds[None, :], axis=1)
        return margin, margin > 0.0, {"scores": scores}

    thresholds = magnet.thresholds.numpy().tolist()
    sigs = defense_signatures(DefenseParts(magnet.reformed_logits, detect,
                                           thresholds={"I": thresholds[0], "II": thresholds[1]}))
    sigs[1].outputs["score"] = ("float32 (N,) largest detector score minus its threshold; "
                                "> 0 = rejected")
    sigs[1].outputs["scores"] = "float32 (N, 2) detector I (MSE) and II (MAE) reconstruction errors"
    return ServingSpec(tuple(magnet.input_shape), sigs, [magnet], {
        "model": "MagNet", "thresholds": {"I": thresholds[0], "II": thresholds[1]},
        "rejection_rate": magnet.rejection_rate})


def _greybox_spec(defense) -> ServingSpec:
    sigs = defense_signatures(DefenseParts(defense.logits))
    sigs.append(Signature("purify", lambda x: {"purified": defense.purify(x)}, {
        "purified": "float32 (N, H, W, C) G(x), clipped to [0, 1] when the defense clips"}))
    return ServingSpec(tuple(defense.input_shape), sigs, [defense.cdvae, defense.classifier], {
        "model": "GreyBoxDefense", "clip": defense.clip, "sample": defense.sample,
        "num_classes": int(defense.classifier.output_shape[-1])
        if hasattr(defense.classifier, "output_shape") else None})


LID_REASON = (
    "LID scores each query batch against a minibatch of clean training activations drawn by "
    "numpy's RNG per call (Ma et al.'s protocol), so its value depends on the batch it comes in "
    "and on host-side sampling; a graph with a fixed reference set would compute a different "
    "characteristic than the one the regression was fitted on")


def _logistic_detector_spec(det) -> ServingSpec:
    """LogisticDetector in one graph: KD / Mahalanobis in TF, the sklearn pipeline as constants."""
    if det._pipeline is None:
        raise ValueError("detector: not fitted; call fit(...) before export")
    if "lid" in det.features:
        raise ValueError(f"detector: a LogisticDetector with 'lid' is not exportable: {LID_REASON}; "
                         "export one fitted on ['kd', 'mahalanobis']")
    from tfdefense.detect.kernel_density import class_log_density

    scaler, regression = det._pipeline[0], det._pipeline[-1]
    mean = tf.constant(scaler.mean_, tf.float64)
    scale = tf.constant(scaler.scale_, tf.float64)
    coef = tf.constant(np.ravel(regression.coef_), tf.float64)
    intercept = tf.constant(float(np.ravel(regression.intercept_)[0]), tf.float64)

    def kd_columns(c, x):
        acts, logits = c.extractor.activations(x, reduce=c.reduce)
        pred = tf.argmax(logits, axis=-1)
        inv = tf.constant(1.0 / (2.0 * c.bandwidth**2), tf.float64)
        return tf.stack([class_log_density(tf.reshape(tf.cast(a, tf.float64), [tf.shape(a)[0], -1]),
                                           pred, train, c._labels, log_norm, inv)
                         for a, train, log_norm in zip(acts, c._train, c._log_norm, strict=True)],
                        axis=1)

    def features(x):
        cols = []
        for name, c in det.characteristics.items():
            if name == "kd":
                cols.append(kd_columns(c, x))
            else:  # mahalanobis, with its selected pre-processing magnitude
                cols.append(c._batch_fn()(x, (c.magnitude,))[0])
        return tf.concat([tf.cast(col, tf.float64) for col in cols], axis=1)

    def detect(x):
        f = features(x)
        prob = tf.sigmoid(tf.reduce_sum((f - mean) / scale * coef, axis=1) + intercept)
        return tf.cast(prob, tf.float32), prob >= det.threshold, {"features": tf.cast(f, tf.float32)}

    def detect_fn(x):
        prob, flagged, extra = detect(x)
        return {"score": prob, "is_adversarial": flagged, **extra}

    outputs = dict(DETECT_OUTPUTS, score="float32 (N,) probability that the input is adversarial",
                   features=f"float32 (N, F) characteristics {list(det.feature_names_)}")
    models = [det.model]  # for on="residual" the CD-VAE whose R(x) the extractor reads
    for c in det.characteristics.values():
        if all(c.extractor.model is not m for m in models):
            models.append(c.extractor.model)
    shape = tuple(det.characteristics[det.features[0]].extractor.input_shape)
    return ServingSpec(shape, [Signature("detect", detect_fn, outputs)], models, {
        "model": "LogisticDetector", "features": list(det.feature_names_), "on": det.on,
        "threshold": det.threshold})


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
    from tfdefense.baselines.magnet import MagNet
    from tfdefense.models.cdvae import CDVAE

    if isinstance(obj, CDVAE):
        return _cdvae_spec(obj)
    if isinstance(obj, MagNet):
        return _magnet_spec(obj)
    from tfdefense.defend.greybox import GreyBoxDefense
    from tfdefense.detect.detector import LogisticDetector

    if isinstance(obj, GreyBoxDefense):
        return _greybox_spec(obj)

    if isinstance(obj, LogisticDetector):
        return _logistic_detector_spec(obj)
    if isinstance(obj, DefenseParts):
        raise ValueError("obj: wrap DefenseParts in a ServingSpec(input_shape, "
                         "defense_signatures(parts), track=[models])")
    if isinstance(obj, keras.Model):
        if not obj.built or not obj.inputs:
            raise ValueError(f"obj: the Keras model {obj.name!r} is not built (call it on a batch "
                             "or give it an Input) and has no exportable signatures")
        return _keras_classifier_spec(obj)
    raise ValueError(
        f"obj: {type(obj).__name__} has no exportable signatures; expected a CDVAE, MagNet, a "
        "functional Keras classifier, a ServingSpec or an object with a serving_spec() method")


# ------------------------------------------------------------ input checks
def checked_images(x: tf.Tensor, value_range=(0.0, 1.0)) -> tf.Tensor:
    """``x`` after in-graph checks: ``InvalidArgument`` for NaN/inf or values outside the range."""
    lo, hi = value_range
    finite = tf.debugging.assert_all_finite(
        x, f"{INPUT_NAME}: expected finite pixel values, got NaN or infinity")
    with tf.control_dependencies([finite]):
        x_min, x_max = tf.reduce_min(x), tf.reduce_max(x)
        in_range = tf.logical_or(tf.equal(tf.size(x), 0),
                                 tf.logical_and(x_min >= lo, x_max <= hi))
        check = tf.debugging.Assert(in_range, [
            f"{INPUT_NAME}: expected pixel values in [{lo:g}, {hi:g}] (float32 NHWC; 0-255 images "
            "must be divided by 255), got min/max", x_min, x_max])
    with tf.control_dependencies([check]):
        return tf.identity(x)


# ------------------------------------------------------------------ writing
def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, int | np.integer):
        raise ValueError(f"version: expected an integer >= 1 (TF Serving's version folder), "
                         f"got {version!r}")
    if version < 1:
        raise ValueError(f"version: expected an integer >= 1 (TF Serving's version folder), "
                         f"got {version}")
    return int(version)


def warmup_requests(spec: ServingSpec, model_name: str, batch_size: int = 1) -> list:
    """One ``PredictionLog`` per signature: a ``PredictRequest`` on mid-grey images."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    lo, hi = spec.value_range
    images = np.full((batch_size, *spec.input_shape), (lo + hi) / 2, np.float32)
    logs = []
    for sig in spec.signatures:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=sig.name))
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(images))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def _metadata(spec: ServingSpec, model_name: str, version: int, class_names) -> dict[str, Any]:
    num_classes = spec.metadata.get("num_classes")
    if class_names is None and num_classes:
        class_names = [str(i) for i in range(num_classes)]
    return {
        "name": model_name,
        "version": version,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, *spec.input_shape],
                  "range": list(spec.value_range), "layout": "NHWC"},
        "class_names": list(class_names) if class_names is not None else None,
        "signatures": {s.name: {"inputs": {INPUT_NAME: "float32 (N, H, W, C) in [0, 1]"},
                                "outputs": s.outputs} for s in spec.signatures},
        "decisions": dict(enumerate(DECISIONS)),
        "rejected_label": REJECTED,
        **{k: v for k, v in spec.metadata.items() if k != "num_classes"},
        "num_classes": num_classes,
        "library": {"tfdefense": __version__, "tensorflow": tf.__version__,
                    "keras": keras.__version__},
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _endpoint(fn: TensorFn, value_range) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    def endpoint(images):
        return fn(checked_images(images, value_range))

    return endpoint


def for_serving(obj, base_path: str, version: int = 1, *, overwrite: bool = False,
                class_names=None, warmup_batch: int = 1) -> str:
    """Export ``obj`` to ``<base_path>/<version>/`` for TF Serving; returns that folder.

    Args:
        obj: a CDVAE, MagNet, functional Keras classifier, ``ServingSpec`` or an
            object with ``serving_spec()``.
        base_path: the model's folder (TF Serving's ``--model_base_path``);
            created if missing. Its last component names the model in the
            warm-up requests.
        version: the version folder, an integer >= 1.
        overwrite: replace an existing version (refused otherwise).
        class_names: written to the metadata (default "0" ... "K-1").
        warmup_batch: images per warm-up request.

    The version is written to a hidden sibling folder and renamed into place,
    so TF Serving, which polls ``base_path``, never sees a half-written version.
    """
    version = _check_version(version)
    spec = obj if isinstance(obj, ServingSpec) else serving_spec(obj)
    if not spec.signatures:
        raise ValueError("obj: the serving spec has no signatures")
    base_path = os.path.abspath(os.fspath(base_path))
    if os.path.exists(base_path) and not os.path.isdir(base_path):
        raise ValueError(f"base_path: {base_path} is a file, expected a folder (or a new path)")
    target = os.path.join(base_path, str(version))
    if os.path.exists(target) and not overwrite:
        raise ValueError(f"version: {target} exists; pick a new version or pass overwrite=True")
    os.makedirs(base_path, exist_ok=True)
    model_name = os.path.basename(base_path.rstrip(os.sep))

    archive = keras.export.ExportArchive()
    for item in spec.track:
        archive.track(item)
    input_sig = [tf.TensorSpec((None, *spec.input_shape), tf.float32, name=INPUT_NAME)]
    for sig in spec.signatures:
        archive.add_endpoint(sig.name, _endpoint(sig.fn, spec.value_range),
                             input_signature=input_sig)

    staging = tempfile.mkdtemp(prefix=f".{version}.", dir=base_path)
    try:
        out = os.path.join(staging, "model")
        archive.write_out(out, verbose=False)
        extra = os.path.join(out, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, METADATA_FILE), "w", encoding="utf-8") as fh:
            json.dump(_metadata(spec, model_name, version, class_names), fh, indent=2)
        with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as writer:
            for log in warmup_requests(spec, model_name, warmup_batch):
                writer.write(log.SerializeToString())
        if os.path.exists(target):
            old = os.path.join(staging, "old")
            os.replace(target, old)
        os.replace(out, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata JSON of an exported version folder."""
    with open(os.path.join(path, "assets.extra", METADATA_FILE), encoding="utf-8") as fh:
        return json.load(fh)


def read_warmup(path: str) -> list:
    """The ``PredictionLog`` records of an exported version's warm-up file."""
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for record in tf.data.TFRecordDataset(os.path.join(path, "assets.extra", WARMUP_FILE)):
        logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    return logs


def load_for_export(path: str):
    """A model saved with ``model.save(...keras)``, with tfdefense's classes registered."""
    if not os.path.isfile(path):
        raise ValueError(f"model: {path} is not a file; expected a .keras file")
    import tfdefense.baselines  # noqa: F401  (registers MagNet & co)
    import tfdefense.models  # noqa: F401  (registers CDVAE & co)

    try:
        return keras.saving.load_model(path)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"model: {path} does not load as a Keras model ({exc})") from exc
