"""Throughput of the detection characteristics (images/s), one JSON line per figure.

Times ``score`` of kernel density, LID and Mahalanobis (magnitude 0 and a
7-magnitude grid) on a small CNN over mnist_5k, on x and on a stand-in R(x)
(x minus a 3x3 blur: the transform's cost without a trained CD-VAE). The
first call (tracing) is excluded.

    python bench/detect_features.py [--n 500] [--layers penultimate|all]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfdefense import data  # noqa: E402
from tfdefense.detect import LID, FeatureExtractor, KernelDensity, Mahalanobis  # noqa: E402
from tfdefense.detect.mahalanobis import MAGNITUDES  # noqa: E402
from tfdefense.nets import small_cnn  # noqa: E402


def _time(fn, x, repeats=2):
    fn(x[:8])  # trace
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500, help="images scored per timing")
    parser.add_argument("--train", type=int, default=2000, help="clean training images")
    parser.add_argument("--layers", default="all", choices=["penultimate", "all"])
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    x_train, y_train = data.load_arrays("mnist_5k", "train")
    x_train, y_train = x_train[: args.train], y_train[: args.train]
    x = data.load_arrays("mnist_5k", "test")[0][: args.n]
    model = small_cnn((28, 28, 1), 10)
    layers = None if args.layers == "penultimate" else "all"
    transforms = {"x": None, "R(x)": lambda v: v - tf.nn.avg_pool2d(v, 3, 1, "SAME")}
    for on, transform in transforms.items():

        def fx(layers_=layers, transform_=transform):
            return FeatureExtractor(model, layers=layers_, transform=transform_)

        cases = {
            "kd (penultimate)": (KernelDensity(fx(None), bandwidth=1.2), lambda c, v: c.score(v)),
            "lid k=20": (LID(fx(), k=20, batch_size=100), lambda c, v: c.score(v)),
            "lid k-grid(9)": (LID(fx(), k=20), lambda c, v: c.score_grid(v, range(10, 100, 10))),
            "mahalanobis eps=0": (Mahalanobis(fx()), lambda c, v: c.score(v)),
            "mahalanobis eps-grid(7)": (
                Mahalanobis(fx()),
                lambda c, v: c.score_grid(v, MAGNITUDES),
            ),
        }
        for name, (char, run) in cases.items():
            char.fit(x_train, y_train)
            seconds = _time(lambda v, c=char, r=run: r(c, v), x)
            print(
                json.dumps(
                    {
                        "figure": "detect_feature_throughput",
                        "feature": name,
                        "on": on,
                        "layers": args.layers,
                        "images": args.n,
                        "train_images": args.train,
                        "seconds": round(seconds, 3),
                        "images_per_second": round(args.n / seconds, 1),
                        "tf": tf.__version__,
                        "cpus": os.cpu_count(),
                        "machine": platform.machine(),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
