"""Subprocess side of tests/attacks/test_attacks_distributed.py: attacks over 2 logical CPUs.

Logical devices must be configured before TensorFlow runs its first op, so this runs in a
fresh process:

    python tests/attacks/distributed_attacks_script.py compare OUT.json
    python tests/attacks/distributed_attacks_script.py placement OUT.json   (logs device placement)

``compare`` attacks the same points with the same seeds on one device and over a
MirroredStrategy of two replicas and writes, per case, the largest difference between the
two ``x_adv`` (and what is needed to judge that the case was not trivial).
"""

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = "-1"

MODE, OUT = sys.argv[1], sys.argv[2]

import tensorflow as tf  # noqa: E402

if MODE == "placement":
    tf.debugging.set_log_device_placement(True)  # before the runtime starts

from tfdefense import distribute  # noqa: E402

STRATEGY = distribute.get_strategy("mirrored", cpu_devices=2)  # before any TF op runs

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfdefense.attacks import evaluate_robustness, get_attack  # noqa: E402
from tfdefense.nets import small_cnn  # noqa: E402

# 11 points in batches of 4: batches of 4, 4, 3, so the second strategy step has one batch for
# two replicas, and the last batch is ragged; APGD splits 8 and 3 points over 2 replicas
N, BATCH = 11, 4


def build(shape=(28, 28, 1)):
    keras.utils.set_random_seed(0)
    return small_cnn(shape, 10, width=4, dense_units=8)


MODEL = build()  # built outside the strategy's scope, as a loaded model usually is
X = np.random.default_rng(0).uniform(size=(N, 28, 28, 1)).astype("float32")
Y = np.argmax(np.asarray(MODEL(X)), 1)
# colour images for the colour attacks (JPEG-Linf's YCbCr blocks, ReColor's colour map):
# 6 points, batches of 4 and 2, one step with a ragged second batch
COLOUR = build((16, 16, 3))
XC = np.random.default_rng(1).uniform(0.2, 0.8, size=(6, 16, 16, 3)).astype("float32")
YC = np.argmax(np.asarray(COLOUR(XC)), 1)

CASES = {
    "pgd_linf": dict(eps=0.01, steps=3),
    "pgd_l2_early_stop": dict(name="pgd_l2", eps=0.3, steps=4, early_stop=True),
    "mim": dict(eps=0.01, steps=3),
    "spsa": dict(eps=0.01, steps=2, samples=4),
    "cw_linf": dict(eps=0.01, steps=3),
    "stadv": dict(steps=3, learning_rate=0.05),
    "jpeg_linf": dict(eps=0.5, steps=3),
    "recolor": dict(eps=0.06, steps=3, learning_rate=0.02),
    "apgd_ce": dict(eps=0.004, steps=6, restarts=2),
    "apgd_t": dict(eps=0.004, steps=4, n_target_classes=2),
    "square": dict(eps=0.01, steps=15),
    "fab_t": dict(eps=0.01, steps=4, n_target_classes=2),
    "autoattack": dict(eps=0.004, version="quick", steps=4, queries=10, n_target_classes=2),
}


def make(label, **extra):
    params = dict(CASES[label])
    name = params.pop("name", label)
    return get_attack(name, batch_size=BATCH, seed=7, **params, **extra)


#: the cases attacking the colour model
ON_COLOUR = ("stadv", "jpeg_linf", "recolor")


def fooled(model, x_adv, y):
    return float(np.mean(np.argmax(np.asarray(model(x_adv)), 1) != y))


def tracing_count(attack) -> list[int]:
    """Traces of each replicated tf.function an attack built (batch runners, point splits)."""
    runners = [e[2] for e in attack.__dict__.get("_runners", {}).values()]
    runners += [e[2].runner for e in attack.__dict__.get("_splits", {}).values()]
    return [r._step.experimental_get_tracing_count() for r in runners]


def compare():
    result = {"replicas": STRATEGY.num_replicas_in_sync, "cases": {}}
    for label in CASES:
        model, x, y = (COLOUR, XC, YC) if label in ON_COLOUR else (MODEL, X, Y)
        attack = make(label)
        start = time.perf_counter()
        single = attack.generate(x, y, model=model)
        mid = time.perf_counter()
        mirrored = attack.generate(x, y, model=model, strategy=STRATEGY)
        end = time.perf_counter()
        result["cases"][label] = {
            "max_diff": float(np.abs(single - mirrored).max()),
            "moved": float(np.abs(single - x).max()),
            "fooled": fooled(model, single, y),
            "shape_ok": mirrored.shape == x.shape,
            "seconds": [mid - start, end - mid],
        }

    # fewer batches than replicas: 3 points are one batch (PGD) or 2 + 1 points (APGD)
    result["few"] = {}
    for label in ("pgd_linf", "apgd_ce"):
        single = make(label).generate(X[:3], Y[:3], model=MODEL)
        mirrored = make(label).generate(X[:3], Y[:3], model=MODEL, strategy=STRATEGY)
        result["few"][label] = {"max_diff": float(np.abs(single - mirrored).max()),
                                "moved": float(np.abs(single - X[:3]).max())}

    # retracing: one attack object over 4 sizes (ragged batches, idle replicas) traces its
    # replicated function at most twice (the first shapes, then relaxed ones)
    result["traces"] = {}
    for label in ("pgd_linf", "apgd_ce"):
        attack = make(label)
        for n in (11, 3, 7, 10):
            attack.generate(X[:n], Y[:n], model=MODEL, strategy=STRATEGY)
        result["traces"][label] = tracing_count(attack)

    # a strategy made current by its scope is used without being passed
    attack = make("pgd_linf")
    with STRATEGY.scope():
        scoped = attack.generate(X, Y, model=MODEL)
    result["scoped"] = {
        "max_diff": float(np.abs(scoped - make("pgd_linf").generate(X, Y, model=MODEL)).max()),
        "runners": len(attack.__dict__.get("_runners", {})),
    }

    # a model built in the scope (mirrored weights) gives the same examples
    with STRATEGY.scope():
        mirrored_model = build()
    mirrored_model.set_weights(MODEL.get_weights())
    result["mirrored_weights"] = {
        label: float(np.abs(make(label).generate(X, Y, model=mirrored_model, strategy=STRATEGY)
                            - make(label).generate(X, Y, model=MODEL)).max())
        for label in ("pgd_linf", "apgd_ce")
    }

    # AutoAttack.run: the same examples and the same component breaking each point
    single, mirrored = (make("autoattack").run(X, Y, model=MODEL, strategy=s)
                        for s in (None, STRATEGY))
    result["autoattack_run"] = {
        "max_diff": float(np.abs(single.x_adv - mirrored.x_adv).max()),
        "broken_by": [single.broken_by.tolist(), mirrored.broken_by.tolist()],
    }

    # evaluate_robustness over the replicas scores the same
    # (and so do its cached sets, generated batch by batch over the replicas)
    attacks = {label: make(label) for label in ("pgd_linf", "apgd_ce", "autoattack")}
    runs = [(None, None, attacks), (STRATEGY, None, attacks),
            (STRATEGY, tempfile.mkdtemp(), {k: attacks[k] for k in ("pgd_linf", "apgd_ce")})]
    rows = []
    for s, cache, chosen in runs:
        res = evaluate_robustness(MODEL, (X, Y), chosen, verbose=False, strategy=s, cache_dir=cache)
        rows.append({r.label: [r.accuracy, r.linf_max, r.l2_mean] for r in res.rows}
                    | {"worst": res.worst_case_accuracy, "clean": res.clean_accuracy})
    result["evaluate"] = rows

    return result


def placement():
    """A small PGD and APGD run whose device placement the caller reads from stderr."""
    make("pgd_linf").generate(X[:8], Y[:8], model=MODEL, strategy=STRATEGY)
    make("apgd_ce").generate(X[:8], Y[:8], model=MODEL, strategy=STRATEGY)
    return {"devices": list(STRATEGY.extended.worker_devices)}


start = time.perf_counter()
out = compare() if MODE == "compare" else placement()
out["seconds"] = time.perf_counter() - start
with open(OUT, "w") as fh:
    json.dump(out, fh)
