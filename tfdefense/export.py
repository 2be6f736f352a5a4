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
* ``detect`` (detectors and defenses that detect): ``score`` (N,) float32
  (larger = more adversarial; for a defense its detection margin, > 0 =
  rejected), ``is_adversarial`` (N,) bool, and detector-specific outputs.
* ``defend`` (whole defenses): ``label`` (N,) int64, ``REJECTED`` = -1 where the
  defense refuses, and ``decision`` (N,) int32 (0 accepted, 1 purified,
  2 rejected) with ``decision_name`` (N,) string — one call detects, purifies
  and classifies.

What an object exports comes from ``tfdefense.serving.serving_spec(obj)``
(re-exported here): a defense (``tfdefense.defend.Defense``: ``serving_default``,
``detect`` if it detects, ``defend``), a detector (``tfdefense.detect.Detector``)
or any object with a ``serving_spec()`` method describes itself; a CD-VAE and a
functional Keras classifier (images -> logits) are known; a defense made of
tensor parts uses ``DefenseParts``. Anything else raises ``ValueError``.

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
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense._version import __version__
from tfdefense.defend.base import REJECTED
from tfdefense.serving import (  # noqa: F401  (the public names of export)
    ACCEPTED,
    CLASSIFY_OUTPUTS,
    DECISIONS,
    DEFEND_OUTPUTS,
    DETECT_OUTPUTS,
    LID_REASON,
    PURIFIED,
    REJECTED_DECISION,
    DefenseParts,
    ServingSpec,
    Signature,
    TensorFn,
    classify_signature,
    defense_signatures,
    serving_spec,
)

INPUT_NAME = "images"
METADATA_FILE = "tfdefense_metadata.json"
WARMUP_FILE = "tf_serving_warmup_requests"


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
        obj: a defense, detector, CDVAE, functional Keras classifier, ``ServingSpec`` or an
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
    """A model saved with ``model.save(...keras)`` (``import tfdefense`` registered its classes)."""
    if not os.path.isfile(path):
        raise ValueError(f"model: {path} is not a file; expected a .keras file")
    try:
        return keras.saving.load_model(path)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"model: {path} does not load as a Keras model ({exc})") from exc
