"""Speed of our compiled attacks against the libraries they follow (cleverhans, Foolbox).

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

Second figure group (``--figures foolbox``): the minimization attacks FM-Defense
runs through Foolbox, ``backend="foolbox"`` (Foolbox 3 itself, eager) against
``backend="compiled"`` (our port, one tf.function graph), on the same model and
images: C&W-L2 at CD-VAE Table 6's quick MNIST setting
(``preset_params("cdvae_defense", "mnist", quick=True)``: 5 binary searches x 100
Adam steps, step 0.05, c from 1, clipped to L2 eps 2.0) and DeepFool-Linf at Table
II's (``preset_params("fm_defense", "mnist", quick=True)``: 50 steps, 10
candidates, overshoot 0.02). Besides the speed ratio each line gives the largest
difference between the two backends' examples and whether they fool the same
images.

Tracing happens in an untimed warm-up. Prints one JSON line per figure:
images/s (median over ``--repeats``) and robust accuracy per implementation,
then the speed ratios, each with the 1-minute load average. Never part of the
test run.

    python bench/attacks.py --n 256 --repeats 3
    python bench/attacks.py --figures foolbox --n 200 --repeats 1
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
from tfdefense.attacks import get_attack, preset_params  # noqa: E402
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
    parser.add_argument("--figures", choices=("all", "pgd", "foolbox"), default="all",
                        help="pgd: compiled PGD vs cleverhans; foolbox: C&W-L2 and DeepFool, "
                             "compiled vs Foolbox")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x_train, y_train = data.load_arrays("mnist_5k", "train")
    model = small_cnn((28, 28, 1), 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    x, y = data.load_arrays("mnist_5k", "test")
    x, y = x[: args.n], y[: args.n]
    if args.figures in ("all", "pgd"):
        bench_pgd(args, model, x, y)
    if args.figures in ("all", "foolbox"):
        bench_foolbox(args, model, x, y)


def accuracy(model, x_adv, y) -> float:
    return float(np.mean(np.argmax(model.predict(x_adv, verbose=0), 1) == y))


def time_runs(runs: dict, repeats: int, x: np.ndarray, y: np.ndarray):
    """Warm up each ``run(x, y)`` on two images (untimed, emitted: the compiled attacks
    trace once for any batch size), then time ``repeats`` interleaved rounds on all.

    Returns ({name: [seconds]}, {name: last x_adv}).
    """
    for name, fn in runs.items():
        t = time.perf_counter()
        fn(x[:2], y[:2])
        emit(figure="warmup_seconds", impl=name, seconds=round(time.perf_counter() - t, 2))
    times = {name: [] for name in runs}
    last = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            last[name] = fn(x, y)
            times[name].append(time.perf_counter() - t)
    return times, last


def bench_pgd(args, model, x, y) -> None:
    """Compiled PGD-Linf (with and without early stop) against cleverhans'."""
    clean = accuracy(model, x, y)
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
    accs = {name: [] for name in runs}
    times = {name: [] for name in runs}
    for name, fn in runs.items():  # warm-up: traces, not timed
        t = time.perf_counter()
        fn()
        emit(figure="warmup_seconds", impl=name, seconds=round(time.perf_counter() - t, 2))
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            x_adv = fn()
            times[name].append(time.perf_counter() - t)
            assert np.abs(x_adv - x).max() <= args.eps + 1e-6
            accs[name].append(accuracy(model, x_adv, y))

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


def bench_foolbox(args, model, x, y) -> None:
    """C&W-L2 (Table 6 quick) and DeepFool-Linf (Table II quick): compiled vs Foolbox."""
    settings = {
        "cw_l2": preset_params("cdvae_defense", "mnist", quick=True)["cw_l2"],
        "deepfool_linf": preset_params("fm_defense", "mnist", quick=True)["deepfool_linf"],
    }
    clean = accuracy(model, x, y)
    for label, (name, params) in settings.items():
        attacks = {backend: get_attack(name, backend=backend, batch_size=args.batch_size,
                                       **params) for backend in ("foolbox", "compiled")}
        runs = {backend: (lambda xs, ys, a=a: a.generate(xs, ys, model=model))
                for backend, a in attacks.items()}
        load_before = os.getloadavg()[0]
        times, last = time_runs(runs, args.repeats, x, y)
        fooled = {b: np.argmax(model.predict(a, verbose=0), 1) != y for b, a in last.items()}
        med = {b: statistics.median(t) for b, t in times.items()}
        emit(figure=f"{label}_compiled_vs_foolbox", attack=name, params=params,
             n=len(x), batch_size=args.batch_size, clean_accuracy=clean,
             seconds_foolbox=round(med["foolbox"], 3), seconds_compiled=round(med["compiled"], 3),
             seconds_all={b: [round(s, 3) for s in t] for b, t in times.items()},
             ratio=round(med["foolbox"] / med["compiled"], 2),
             robust_accuracy={b: accuracy(model, a, y) for b, a in last.items()},
             same_fooled=bool(np.array_equal(fooled["foolbox"], fooled["compiled"])),
             max_abs_difference=float(np.abs(last["foolbox"] - last["compiled"]).max()),
             load_avg_1min_before=round(load_before, 2),
             load_avg_1min=round(os.getloadavg()[0], 2), cpus=os.cpu_count())


if __name__ == "__main__":
    main()
