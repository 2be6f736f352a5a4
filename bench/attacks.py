"""Speed of our compiled PGD-Linf against cleverhans' projected_gradient_descent.

Same model (small_cnn, trained one epoch on mnist_5k), same images (the first
``--n`` mnist_5k test images, batches of ``--batch-size``), same eps (0.3),
steps (40) and step size (0.01) (Madry et al. 2018's MNIST setting), random
start for all. Three implementations, timed interleaved in the same process
so the ratios share the machine's load:

* ``cleverhans``: ``projected_gradient_descent`` run as it is (eager, the
  way its docs call it; ``sanity_checks=False`` because numpy 2 breaks them);
* ``compiled``: ``get_attack("pgd_linf")``, the whole attack one tf.function;
* ``compiled_early_stop``: the same with ``early_stop=True`` (examples leave
  the batch at their first success).

Tracing happens in an untimed warm-up. Prints one JSON line per figure:
images/s (median over ``--repeats``) and robust accuracy per implementation,
then the speed ratios. Never part of the test run.

    python bench/attacks.py --n 256 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from cleverhans.tf2.attacks.projected_gradient_descent import (  # noqa: E402
    projected_gradient_descent,
)

from tfdefense import data  # noqa: E402
from tfdefense.attacks import get_attack  # noqa: E402
from tfdefense.nets import small_cnn  # noqa: E402


def emit(**fields):
    print(json.dumps(fields), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--step-size", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x_train, y_train = data.load_arrays("mnist_5k", "train")
    model = small_cnn((28, 28, 1), 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    x, y = data.load_arrays("mnist_5k", "test")
    x, y = x[: args.n], y[: args.n]
    clean = float(np.mean(np.argmax(model.predict(x, verbose=0), 1) == y))
    bs = args.batch_size
    common = {"eps": args.eps, "steps": args.steps, "step_size": args.step_size,
              "rand_init": True, "batch_size": bs}
    ours = get_attack("pgd_linf", **common)
    ours_es = get_attack("pgd_linf", early_stop=True, **common)

    def run_cleverhans():
        out = []
        for i in range(0, len(x), bs):
            out.append(projected_gradient_descent(
                model, tf.constant(x[i:i + bs]), args.eps, args.step_size, args.steps, np.inf,
                clip_min=0.0, clip_max=1.0, y=tf.constant(y[i:i + bs]), rand_init=True,
                sanity_checks=False).numpy())
        return np.concatenate(out)

    runs = {
        "cleverhans": run_cleverhans,
        "compiled": lambda: ours.generate(x, y, model=model),
        "compiled_early_stop": lambda: ours_es.generate(x, y, model=model),
    }
    for name, fn in runs.items():  # warm-up: traces, not timed
        t = time.perf_counter()
        fn()
        emit(figure="warmup_seconds", impl=name, seconds=round(time.perf_counter() - t, 2))

    times = {name: [] for name in runs}
    accs = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            x_adv = fn()
            times[name].append(time.perf_counter() - t)
            assert np.abs(x_adv - x).max() <= args.eps + 1e-6
            accs[name].append(float(np.mean(np.argmax(model.predict(x_adv, verbose=0), 1) == y)))

    setting = {"n": len(x), "batch_size": bs, "eps": args.eps, "steps": args.steps,
               "step_size": args.step_size, "clean_accuracy": clean,
               "load_avg_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    speed = {}
    for name in runs:
        med = statistics.median(times[name])
        speed[name] = len(x) / med
        emit(figure="pgd_linf_images_per_s", impl=name, images_per_s=round(speed[name], 1),
             seconds_median=round(med, 3), seconds_all=[round(t, 3) for t in times[name]],
             robust_accuracy=accs[name], **setting)
    for name in ("compiled", "compiled_early_stop"):
        emit(figure="pgd_linf_speedup_vs_cleverhans", impl=name,
             ratio=round(speed[name] / speed["cleverhans"], 2),
             robust_accuracy_ours=statistics.mean(accs[name]),
             robust_accuracy_cleverhans=statistics.mean(accs["cleverhans"]), **setting)


if __name__ == "__main__":
    main()
