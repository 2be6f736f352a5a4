"""Morph-detection throughput: the batched one-graph engine vs a naive per-morph loop.

Prints one JSON line per figure:

* ``batched_images_per_s``: images/s of ``MorphEngine.resistance`` (S codes ×
  n morphs per image, decoded and classified in one compiled graph);
* ``naive_images_per_s``: images/s of the naive loop — one image, one code,
  one morph at a time through decoder and classifier (eager Keras calls,
  ``MorphEngine.resistance_naive``), measured in the same run;
* ``speedup``: their ratio (issue #7 target ≥ 30×);
* ``engine_gflops`` and ``matmul_gflops``: the engine's achieved GFLOP/s
  (decoder + classifier FLOPs of every morph, counted layer by layer; the
  encoder pass is ignored) beside this machine's float32 matmul rate
  (target ≥ 50%).

Throughput does not depend on the weights, so the nets are untrained Table I
networks (``fm_encoder``, ``fm_decoder``, DGMM network) and the library's
``small_cnn``.

    python bench/morphs.py --codes 20 --morphs 100 --images 64 --naive-images 1
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfdefense.detect.morphs import MorphEngine  # noqa: E402
from tfdefense.models import DGMM, ComboVAE  # noqa: E402
from tfdefense.nets import small_cnn  # noqa: E402


def model_flops(model) -> int:
    """Multiply-adds × 2 of Dense, Conv2D and Conv2DTranspose layers for one example."""
    total = 0
    for layer in model.layers:
        name = type(layer).__name__
        if name == "Dense":
            total += 2 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
        elif name == "Conv2D":
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            total += 2 * h * w * c_out * kh * kw * c_in
        elif name == "Conv2DTranspose":
            _, h, w, c_in = layer.input.shape
            kh, kw, c_out, _ = layer.kernel.shape
            total += 2 * h * w * c_in * kh * kw * c_out
    return int(total)


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))

    @tf.function
    def mm(a, b):
        out = a
        for _ in range(repeats):
            out = tf.matmul(out, b) * 1e-3
        return out

    mm(a, b).numpy()
    t = time.perf_counter()
    mm(a, b).numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", type=int, default=20)
    p.add_argument("--morphs", type=int, default=100)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--chunk-size", type=int, default=2048)
    p.add_argument("--naive-images", type=int, default=1)
    args = p.parse_args()

    rng = np.random.default_rng(0)
    x = rng.random((max(args.images, 2), 28, 28, 1), dtype="float32")
    dgmm = DGMM.for_dataset("mnist_5k", feature_dim=10, seed=0)
    vae = ComboVAE.for_dataset("mnist_5k", dgmm, latent_dim=20, discriminator_units=8,
                               discriminator_depth=1, seed=0)
    clf = small_cnn((28, 28, 1), 10)
    engine = MorphEngine(vae, clf, codes=list(range(args.codes)), n_morphs=args.morphs,
                         chunk_size=args.chunk_size).fit(x)
    common = {"codes": args.codes, "morphs": args.morphs, "data": "uniform noise 28x28x1",
              "nets": "fm_encoder/fm_decoder (Table I) + small_cnn(width 32)"}

    engine.resistance(x[: args.batch_size], batch_size=args.batch_size)  # trace + warm up
    t = time.perf_counter()
    engine.resistance(x[: args.images], batch_size=args.batch_size)
    batched = args.images / (time.perf_counter() - t)
    print(json.dumps({"figure": "batched_images_per_s", "value": round(batched, 3),
                      "images": args.images, "batch_size": args.batch_size,
                      "chunk_size": args.chunk_size, **common}), flush=True)

    t = time.perf_counter()
    engine.resistance_naive(x[: args.naive_images])
    naive = args.naive_images / (time.perf_counter() - t)
    print(json.dumps({"figure": "naive_images_per_s", "value": round(naive, 5),
                      "images": args.naive_images, **common}), flush=True)
    print(json.dumps({"figure": "speedup", "value": round(batched / naive, 1),
                      "target": 30, **common}), flush=True)

    per_morph = model_flops(vae.decoder) + model_flops(clf)
    gflops = batched * args.codes * args.morphs * per_morph / 1e9
    peak = matmul_gflops()
    print(json.dumps({"figure": "engine_gflops", "value": round(gflops, 2),
                      "flops_per_morph": per_morph, **common}), flush=True)
    print(json.dumps({"figure": "matmul_gflops", "value": round(peak, 2),
                      "engine_fraction": round(gflops / peak, 3), "target_fraction": 0.5}),
          flush=True)


if __name__ == "__main__":
    main()
