"""CD-VAE train step time in float32 vs ``mixed_bfloat16`` (and ``mixed_float16``), same run.

The policies are timed in interleaved rounds (so load from other processes on
a shared machine hits all of them alike); each round times ``--steps`` compiled
``train_step`` calls after a warm-up. One JSON line per figure: median seconds
per step per policy and model, and ``ratio_vs_float32`` (> 1 = faster than
float32).

Usage:
    python bench/mixed_precision.py --steps 5 --rounds 3 --models mnist cifar
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import emit  # noqa: E402

from tfdefense import distribute, nets  # noqa: E402
from tfdefense.models import CDVAE  # noqa: E402


def build(kind: str, policy: str, wrn: tuple[int, int]) -> tuple[CDVAE, tuple]:
    keras.utils.set_random_seed(0)
    with distribute.precision_scope(policy):
        if kind == "mnist":
            model = CDVAE.for_dataset("mnist_5k", seed=0)
        else:
            clf = nets.wide_resnet((32, 32, 3), 10, depth=wrn[0], width=wrn[1], name="classifier")
            model = CDVAE.for_dataset("cifar10", classifier=clf, seed=0)
    model.compile()
    return model, model.input_shape_


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--models", nargs="+", default=["mnist", "cifar"], choices=["mnist", "cifar"])
    p.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"],
                   choices=list(distribute.PRECISIONS))
    p.add_argument("--wrn", type=int, nargs=2, default=[10, 2], help="WRN depth width (cifar)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    for kind in args.models:
        steps, times = {}, {pol: [] for pol in args.policies}
        for pol in args.policies:
            model, shape = build(kind, pol, tuple(args.wrn))
            x = tf.constant(rng.uniform(size=(args.batch, *shape)).astype("float32"))
            y = tf.constant(rng.integers(0, 10, args.batch).astype("int64"))
            step = tf.function(model.train_step)
            for _ in range(2):  # trace and warm up
                logs = step((x, y))
            steps[pol] = (step, x, y)
        for _ in range(args.rounds):
            for pol in args.policies:
                step, x, y = steps[pol]
                start = time.perf_counter()
                for _ in range(args.steps):
                    logs = step((x, y))
                float(logs["loss"])  # wait for the last step
                times[pol].append((time.perf_counter() - start) / args.steps)
        base = statistics.median(times["float32"]) if "float32" in times else None
        for pol in args.policies:
            med = statistics.median(times[pol])
            emit(figure=f"cdvae_train_step_{kind}", policy=pol, batch=args.batch,
                 seconds_per_step_median=round(med, 4),
                 seconds_per_step_all=[round(t, 4) for t in times[pol]],
                 images_per_second=round(args.batch / med, 1),
                 ratio_vs_float32=round(base / med, 3) if base else None,
                 wrn=args.wrn if kind == "cifar" else None, load_average=os.getloadavg()[0])


if __name__ == "__main__":
    main()
