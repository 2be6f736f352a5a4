"""Our AutoAttack against ART 1.20's, on the same small MNIST CNN and points.

Model: ``small_cnn(width=16, dense_units=64)`` trained 4 epochs on mnist_5k
(seed 0, the attack tests' fixture). Points: the first ``--n`` mnist_5k test
images. Budget: Linf eps ``--eps`` (default 0.1, where the model is half
broken, so agreement is informative) and L2 eps ``--eps-l2``.

Figures (one JSON line each):

* ``speed``: images/s of our APGD-CE (100 iterations, 1 restart), first call
  (tracing included) and second call, and of ART's APGD-CE on the same points
  (ART runs eagerly through ``TensorFlowV2Classifier``; no tracing).
* ``agreement``: robust accuracy, ours vs ART, for APGD-CE and APGD-DLR
  (100 iterations, 1 restart, initial step 2·eps as in the paper; ART takes
  it as ``eps_step``), Square (``--queries``, 1 restart), APGD-CE in L2, and
  the ensembles: ours ``standard`` (APGD-CE, APGD-T, FAB-T, Square) and ART's
  ``AutoAttack`` with the components it has (APGD-CE, APGD-DLR, Square; ART
  1.20 has no FAB and no targeted-DLR-on-top-classes schedule).

ART is a benchmark-only dependency (``pip install -e .[bench]``: ART and
``multiprocess``, which ART 1.20's ``AutoAttack.generate`` imports but does not
declare); never part of the test run. ``--only-ensembles`` / ``--skip-ensembles``
split the run.

    python bench/autoattack.py --n 100
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import emit  # noqa: E402

from tfdefense import data  # noqa: E402
from tfdefense.attacks import APGD, AutoAttack, Square  # noqa: E402
from tfdefense.nets import small_cnn  # noqa: E402


def trained_model():
    keras.utils.set_random_seed(0)
    x, y = data.load_arrays("mnist_5k", "train")
    model = small_cnn((28, 28, 1), 10, width=16, dense_units=64)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=4, verbose=0, shuffle=True)
    return model


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(np.asarray(model(tf.constant(x))), 1) == y))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--eps-l2", type=float, default=1.5)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--skip-ensembles", action="store_true")
    parser.add_argument("--only-ensembles", action="store_true")
    args = parser.parse_args()

    from art.attacks.evasion import AutoAttack as ARTAutoAttack
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
    from art.estimators.classification import TensorFlowV2Classifier

    model = trained_model()
    x, y = data.load_arrays("mnist_5k", "test")
    x, y = x[: args.n], y[: args.n]
    clean = accuracy(model, x, y)
    clf = TensorFlowV2Classifier(
        model=model, nb_classes=10, input_shape=(28, 28, 1), clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    common = dict(n=args.n, clean_accuracy=clean, eps=args.eps)

    def art_apgd(loss_type, norm=np.inf, eps=args.eps):
        return AutoProjectedGradientDescent(clf, norm=norm, eps=eps, eps_step=2 * eps, max_iter=100,
                                            nb_random_init=1, batch_size=128, loss_type=loss_type,
                                            verbose=False)

    def agree(name, ours_acc, art_acc, **extra):
        emit(figure="agreement", attack=name, **common, **extra, ours_robust_accuracy=ours_acc,
             art_robust_accuracy=art_acc, difference_points=round((ours_acc - art_acc) * args.n))

    if not args.only_ensembles:
        single(args, model, clf, x, y, common, art_apgd, agree)
    if not args.skip_ensembles:
        ensembles(args, model, clf, x, y, common, art_apgd, agree, ARTAutoAttack, SquareAttack)


def single(args, model, clf, x, y, common, art_apgd, agree):
    from art.attacks.evasion import SquareAttack

    # -- speed: APGD-CE, 100 iterations ------------------------------------------------
    ours = APGD(eps=args.eps, steps=100)
    first, t_first = timed(lambda: ours.generate(x, y, model=model))
    second, t_second = timed(lambda: ours.generate(x, y, model=model))
    theirs, t_art = timed(lambda: art_apgd("cross_entropy").generate(x, y=y))
    emit(figure="speed", attack="apgd_ce", steps=100, **common,
         ours_first_call_images_per_s=args.n / t_first, ours_images_per_s=args.n / t_second,
         art_images_per_s=args.n / t_art, speedup=t_art / t_second,
         deterministic=bool(np.array_equal(first, second)))

    agree("apgd_ce", accuracy(model, second, y), accuracy(model, theirs, y),
          ours_seconds=t_second, art_seconds=t_art)
    adv, t_o = timed(lambda: APGD(eps=args.eps, steps=100, loss="dlr").generate(x, y, model=model))
    adv_a, t_a = timed(lambda: art_apgd("difference_logits_ratio").generate(x, y=y))
    agree("apgd_dlr", accuracy(model, adv, y), accuracy(model, adv_a, y), ours_seconds=t_o,
          art_seconds=t_a)
    adv, t_o = timed(lambda: Square(eps=args.eps, steps=args.queries).generate(x, y, model=model))
    art_square = SquareAttack(clf, norm=np.inf, eps=args.eps, max_iter=args.queries, p_init=0.8,
                              nb_restarts=1, batch_size=128, verbose=False)
    adv_a, t_a = timed(lambda: art_square.generate(x, y=y))
    agree("square", accuracy(model, adv, y), accuracy(model, adv_a, y), queries=args.queries,
          ours_seconds=t_o, art_seconds=t_a)
    adv, t_o = timed(lambda: APGD(eps=args.eps_l2, norm="l2", steps=100).generate(x, y, model=model))
    adv_a, t_a = timed(lambda: art_apgd("cross_entropy", norm=2, eps=args.eps_l2).generate(x, y=y))
    agree("apgd_ce_l2", accuracy(model, adv, y), accuracy(model, adv_a, y), norm="l2",
          eps_l2=args.eps_l2, ours_seconds=t_o, art_seconds=t_a)


def ensembles(args, model, clf, x, y, common, art_apgd, agree, ARTAutoAttack, SquareAttack):  # noqa: N803
    aa = AutoAttack(eps=args.eps, version="standard", queries=args.queries)
    run, t_o = timed(lambda: aa.run(x, y, model=model))
    emit(figure="ensemble", attack="autoattack", **common, queries=args.queries,
         components=run.components, after_each=[run.accuracy_after(i) for i in range(len(run.components))],
         broken_by_each=[int((run.broken_by == i).sum()) for i in range(len(run.components))],
         robust_accuracy=run.robust_accuracy, gradient_masking=run.gradient_masking,
         seconds=t_o, images_per_s=args.n / t_o)
    art_square = SquareAttack(clf, norm=np.inf, eps=args.eps, max_iter=args.queries, p_init=0.8,
                              nb_restarts=1, batch_size=128, verbose=False)
    art_aa = ARTAutoAttack(clf, norm=np.inf, eps=args.eps, batch_size=128, attacks=[
        art_apgd("cross_entropy"), art_apgd("difference_logits_ratio"), art_square])
    adv_a, t_a = timed(lambda: art_aa.generate(x, y=y))
    agree("autoattack", run.robust_accuracy, accuracy(model, adv_a, y), queries=args.queries,
          ours_components=run.components, art_components=["apgd_ce", "apgd_dlr", "square"],
          ours_seconds=t_o, art_seconds=t_a, ours_images_per_s=args.n / t_o,
          art_images_per_s=args.n / t_a)


if __name__ == "__main__":
    main()
