"""Latency of the exported SavedModel's signatures vs the Keras object, batch 1 and 32.

Exports the mnist_5k-sized CD-VAE (untrained weights: latency does not depend
on them), loads it with ``tf.saved_model.load`` as TF Serving's runtime would,
and times each signature (median of ``--repeats`` calls after a warm-up) next
to the compiled Keras call of the same computation, in the same run. One JSON
line per figure. The export time itself is a figure too.

Usage:
    python bench/export_latency.py --repeats 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import emit  # noqa: E402

from tfdefense import export  # noqa: E402
from tfdefense.models import CDVAE  # noqa: E402


def median_ms(fn, x, repeats: int) -> float:
    for _ in range(3):
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(x)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    args = p.parse_args()
    keras.utils.set_random_seed(0)
    model = CDVAE.for_dataset("mnist_5k", seed=0)
    start = time.perf_counter()
    path = export.for_serving(model, os.path.join(tempfile.mkdtemp(), "cdvae"), 1)
    emit(figure="export_seconds", model="cdvae_mnist", seconds=round(time.perf_counter() - start, 2))
    loaded = tf.saved_model.load(path)
    keras_fns = {"serving_default": tf.function(lambda x: model(x, training=False)),
                 "decompose": tf.function(lambda x: model.decompose(x))}
    rng = np.random.default_rng(0)
    for batch in args.batches:
        x = tf.constant(rng.uniform(size=(batch, 28, 28, 1)).astype("float32"))
        for name, keras_fn in keras_fns.items():
            sig = loaded.signatures[name]
            saved = median_ms(lambda t, s=sig: s(images=t), x, args.repeats)
            direct = median_ms(keras_fn, x, args.repeats)
            emit(figure="signature_latency_ms", signature=name, batch=batch,
                 saved_model_ms=round(saved, 3), keras_tf_function_ms=round(direct, 3),
                 ratio_saved_over_keras=round(saved / direct, 3), load_average=os.getloadavg()[0])


if __name__ == "__main__":
    main()
