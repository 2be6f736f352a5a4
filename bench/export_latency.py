"""Latency of the exported SavedModel's signatures vs the Keras object, batch 1 and 32.

Exports the mnist_5k-sized CD-VAE (untrained weights: latency does not depend
on them), loads it with ``tf.saved_model.load`` as TF Serving's runtime would,
and times each signature (median of ``--repeats`` calls after a warm-up) next
to the compiled Keras call of the same computation, in the same run. One JSON
line per figure. The export time itself is a figure too.

FM-Defense (issue 18 item 4): the same for its ``defend`` signature (morphs →
resistance → thresholds → purify or reject → classify, one graph) of an untrained
Table I combo-VAE + DGMM and ``small_cnn`` with ``--fm-codes`` × ``--fm-morphs``
morphs per image, beside ``FMDefense.defend`` compiled in this process and the
engine's roofline: the decoder + classifier FLOPs of every morph of the batch at
this machine's float32 matmul rate (``bench/morphs.py``'s counts), so
``roofline_fraction`` = roofline time / measured time. Both the float32 engine and its
``compute_dtype="bfloat16"`` option are exported and timed (``--fm-compute-dtypes``); the
roofline stays the float32 one, so a bfloat16 fraction above 1 is possible.

Usage:
    python bench/export_latency.py --repeats 50
    python bench/export_latency.py --only fm --fm-codes 20 --fm-morphs 100
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


def fm_defense_latency(args) -> None:
    """FM-Defense's exported ``defend`` against the in-process graph and the roofline, for
    each ``--fm-compute-dtypes`` of the morph engine (the option travels in the detector's
    config, so the exported graph computes the morphs in that precision)."""
    from morphs import matmul_gflops, model_flops

    from tfdefense.defend import FMDefense
    from tfdefense.detect import MorphEngine, ResistanceDetector
    from tfdefense.models import DGMM, ComboVAE
    from tfdefense.nets import small_cnn

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x_fit = rng.uniform(size=(64, 28, 28, 1)).astype("float32")
    dgmm = DGMM.for_dataset("mnist_5k", feature_dim=10, seed=0)
    vae = ComboVAE.for_dataset("mnist_5k", dgmm, latent_dim=20, discriminator_units=8,
                               discriminator_depth=1, seed=0)
    clf = small_cnn((28, 28, 1), 10)
    per_morph = model_flops(vae.decoder) + model_flops(clf)
    peak = matmul_gflops()
    emit(figure="matmul_gflops", value=round(peak, 2), load_average=os.getloadavg()[0])
    for dtype in args.fm_compute_dtypes:
        engine = MorphEngine(vae, clf, codes=list(range(args.fm_codes)), n_morphs=args.fm_morphs,
                             seed=0, compute_dtype=dtype).fit(x_fit)
        defense = FMDefense(ResistanceDetector(engine, unified_threshold=0.8,
                                               theta_d=0.5).fit(x_fit))
        start = time.perf_counter()
        path = export.for_serving(defense, os.path.join(tempfile.mkdtemp(), "fm_defense"), 1)
        emit(figure="export_seconds", model="fm_defense_mnist", compute_dtype=dtype,
             seconds=round(time.perf_counter() - start, 2))
        signature = tf.saved_model.load(path).signatures["defend"]
        graph = tf.function(defense.defend)
        for batch in args.batches:
            x = tf.constant(rng.uniform(size=(batch, 28, 28, 1)).astype("float32"))
            saved = median_ms(lambda t, s=signature: s(images=t), x, args.repeats)
            direct = median_ms(graph, x, args.repeats)
            roofline = 1000 * batch * args.fm_codes * args.fm_morphs * per_morph / (peak * 1e9)
            emit(figure="fm_defend_latency_ms", compute_dtype=dtype, batch=batch,
                 codes=args.fm_codes, morphs=args.fm_morphs, saved_model_ms=round(saved, 3),
                 in_process_graph_ms=round(direct, 3),
                 ratio_saved_over_graph=round(saved / direct, 3),
                 roofline_ms=round(roofline, 3), roofline_fraction=round(roofline / saved, 3),
                 load_average=os.getloadavg()[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--only", choices=["cdvae", "fm"], default=None,
                   help="time one model's signatures (default both)")
    p.add_argument("--fm-codes", type=int, default=8,
                   help="FM-Defense: latent codes morphed (quick preset 8, paper 20)")
    p.add_argument("--fm-morphs", type=int, default=20,
                   help="FM-Defense: morphs per code (quick preset 20, paper 100)")
    p.add_argument("--fm-compute-dtypes", nargs="+", default=["float32", "bfloat16"],
                   choices=["float32", "bfloat16"],
                   help="FM-Defense: the morph engine's compute_dtype(s) to export and time")
    args = p.parse_args()
    if args.only != "cdvae":
        fm_defense_latency(args)
    if args.only == "fm":
        return
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
