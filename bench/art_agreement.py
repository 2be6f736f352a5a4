"""ART's attacks on wrapped defenses against ``evaluate_robustness`` with ours, same images.

Defenses (mnist_5k, tiny models trained here, seed 0; the recipes of the tests' fixtures):

* ``greybox``: ``GreyBoxDefense`` — a CD-VAE (latent 16, width 16, γ = 2·10⁻³, the grey-box
  setting of CD-VAE §4.3 and ``experiments.cdvae_models``, 3 epochs) and a plain
  ``small_cnn(width=16, dense_units=64)`` (2 epochs) classifying G(x);
* ``magnet``: ``MagNet`` — MNIST autoencoders I and II (4 epochs on 2,000 images), the same
  classifier, thresholds for a 0.2 % rejection rate on the 500 validation images;
* ``fm_defense``: ``FMDefense`` — DGMM (4 epochs), combo-VAE (latent 20, 5 epochs), 4 codes ×
  10 morphs, thresholds fitted on 200 validation images; stochastic: both sides attack the
  log-mean-softmax of ``--eot`` draws of its ``logits`` per step.

Attacks, Linf, eps ``--eps`` (default 0.1), on the first ``--n`` test images (default 100):

* ``pgd_fixed_start``: PGD from x itself, ``--steps`` steps of ``--step-size`` — ours
  ``get_attack("pgd_linf", rand_init=False)`` through ``evaluate_robustness``, ART's
  ``ProjectedGradientDescent(num_random_init=0)`` on ``as_art_classifier(defense)``. For a
  deterministic defense both are the same computation (sign of the cross-entropy gradient,
  clip, project): tolerance 1 point; for FM-Defense the EOT draws differ: 5 points;
* ``pgd``: the same with one uniform random start (``rand_init=True`` /
  ``num_random_init=1``; the draws differ): tolerance 5 points;
* ``autoattack``: ours ``AutoAttack(version="rand")`` (APGD-CE then APGD-DLR, ``--aa-steps``
  iterations, initial step 2·eps, EOT ``--eot`` draws for FM-Defense, 1 otherwise) against
  ART's ``AutoAttack`` with the same two components (``AutoProjectedGradientDescent``,
  ``nb_random_init=1``, ``eps_step=2·eps``; ART's default list adds DeepFool and a
  5,000-query Square, which do not run in CPU time here): tolerance 5 points.

Compared: the fraction of images the attack did not fool, ``defense.predict(x_adv)`` right or
rejected (``defense_accuracy`` of ``evaluate_robustness``, whose worst case also counts a
rejection as not fooled) — the tolerance applies to it. Beside it, the strict accuracy
(``predict == y``, a rejection wrong): for a defense that rejects it also depends on which
image an ensemble keeps where it failed, and there the two differ by design: our AutoAttack
keeps x where no component fooled the defense (a rejected example is no success), ART's keeps
the rejected example (the wrapper's extra class is not y, so ART counts it a success). One JSON
line per (defense, attack), then a Markdown table. Needs ART and ``multiprocess``
(``pip install -e .[bench]``).

    python bench/art_agreement.py --n 100
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import emit  # noqa: E402

from tfdefense import data  # noqa: E402
from tfdefense.attacks import AutoAttack, evaluate_robustness, get_attack  # noqa: E402
from tfdefense.baselines import (  # noqa: E402
    MNIST_STRUCTURE_I,
    MNIST_STRUCTURE_II,
    DenoisingAutoEncoder,
    MagNet,
    magnet_autoencoder,
)
from tfdefense.defend import REJECTED, FMDefense, GreyBoxDefense  # noqa: E402
from tfdefense.detect import MorphEngine, ResistanceDetector  # noqa: E402
from tfdefense.detect.morphs import most_active_codes  # noqa: E402
from tfdefense.interop.art import as_art_classifier  # noqa: E402
from tfdefense.models import CDVAE, DGMM, ComboVAE  # noqa: E402
from tfdefense.nets import small_cnn  # noqa: E402

#: a priori tolerance on |ours - ART| robust accuracy (fraction of the images)
TOLERANCE = {"same_computation": 0.01, "random": 0.05}


def arrays():
    return {s: data.load_arrays("mnist_5k", s) for s in ("train", "validation", "test")}


def classifier(x, y):
    keras.utils.set_random_seed(0)
    clf = small_cnn((28, 28, 1), 10, width=16, dense_units=64)
    clf.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clf.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return clf


def greybox(d, clf):
    keras.utils.set_random_seed(0)
    cdvae = CDVAE.for_dataset("mnist_5k", latent_dim=16, width=16, gamma=2e-3, seed=0)
    cdvae.compile()
    cdvae.fit(*d["train"], epochs=3, batch_size=64, verbose=0)
    return GreyBoxDefense(cdvae, clf)


def magnet(d, clf):
    x = d["train"][0][:2000]

    def autoencoder(structure):
        keras.utils.set_random_seed(0)
        dae = DenoisingAutoEncoder(magnet_autoencoder(structure), noise_std=0.1, seed=0)
        dae.compile(optimizer=keras.optimizers.Adam(3e-2))
        dae.fit(x, batch_size=16, epochs=4, verbose=0)
        return dae

    model = MagNet(clf, autoencoder(MNIST_STRUCTURE_I), autoencoder(MNIST_STRUCTURE_II),
                   rejection_rate=0.002)
    model.fit_thresholds(d["validation"][0])
    return model


def fm_defense(d, clf):
    x, y = d["train"]
    xv = d["validation"][0]
    keras.utils.set_random_seed(0)
    dgmm = DGMM.for_dataset("mnist_5k", feature_dim=10, seed=0)
    dgmm.compile(optimizer=keras.optimizers.Adam(1e-3))
    dgmm.fit(x, y, epochs=4, batch_size=64, verbose=0)
    vae = ComboVAE.for_dataset("mnist_5k", dgmm, latent_dim=20, discriminator_units=128,
                               discriminator_depth=2, reconstruction="bernoulli", seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3),
                discriminator_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.9))
    vae.fit(x, epochs=5, batch_size=64, verbose=0)
    engine = MorphEngine(vae, clf, codes=most_active_codes(vae, xv, 4), n_morphs=10, seed=0).fit(xv)
    return FMDefense(ResistanceDetector(engine).fit(xv[:200]), eot_seed=0)


def scores(defense, x_adv, y) -> tuple[float, float]:
    """(robust accuracy, defended fraction) of the defense's own predictions."""
    pred = defense.predict(x_adv)
    return float(np.mean(pred == y)), float(np.mean((pred == y) | (pred == REJECTED)))


def ours(defense, x, y, attack, eot):
    start = time.perf_counter()
    result = evaluate_robustness(defense, (x, y), [attack], eot_samples=eot, verbose=False)
    row = result.rows[-1]  # AutoAttack: its component rows come first, the ensemble last
    return row.accuracy, row.defense_accuracy, time.perf_counter() - start, result.clean_accuracy


def art_pgd(classifier_art, args, random_start: bool):
    from art.attacks.evasion import ProjectedGradientDescent

    return ProjectedGradientDescent(classifier_art, norm=np.inf, eps=args.eps, eps_step=args.step_size,
                                    max_iter=args.steps, num_random_init=int(random_start),
                                    batch_size=args.n, verbose=False)


def art_autoattack(classifier_art, args):
    from art.attacks.evasion import AutoAttack as ARTAutoAttack
    from art.attacks.evasion import AutoProjectedGradientDescent

    def apgd(loss_type):
        return AutoProjectedGradientDescent(classifier_art, norm=np.inf, eps=args.eps,
                                            eps_step=2 * args.eps, max_iter=args.aa_steps,
                                            nb_random_init=1, batch_size=args.n,
                                            loss_type=loss_type, verbose=False)

    return ARTAutoAttack(classifier_art, norm=np.inf, eps=args.eps, eps_step=2 * args.eps,
                         batch_size=args.n,
                         attacks=[apgd("cross_entropy"), apgd("difference_logits_ratio")])


def compare(name, defense, x, y, args) -> list[dict]:
    stochastic = defense.stochastic
    eot = args.eot if stochastic else 1
    clf_art = as_art_classifier(defense, eot_samples=eot)
    pgd = dict(eps=args.eps, steps=args.steps, step_size=args.step_size)
    runs = {
        "pgd_fixed_start": (get_attack("pgd_linf", rand_init=False, **pgd),
                            art_pgd(clf_art, args, random_start=False)),
        "pgd": (get_attack("pgd_linf", rand_init=True, **pgd), art_pgd(clf_art, args, True)),
        "autoattack": (AutoAttack(eps=args.eps, version="rand", steps=args.aa_steps, eot_iter=eot),
                       art_autoattack(clf_art, args)),
    }
    rows = []
    for attack, (our_attack, their_attack) in runs.items():
        if args.only and attack not in args.only:
            continue
        acc, defended, seconds, clean = ours(defense, x, y, our_attack, eot)
        start = time.perf_counter()
        x_art = their_attack.generate(x, y=y)
        art_seconds = time.perf_counter() - start
        art_acc, art_defended = scores(defense, x_art, y)
        # ART's view of the same: argmax of the wrapper's votes (extra class = rejected)
        art_own = float(np.mean(clf_art.predict(x_art).argmax(1) == y))
        same = attack == "pgd_fixed_start" and not stochastic
        tolerance = TOLERANCE["same_computation" if same else "random"]
        row = dict(figure="art_agreement", defense=name, attack=attack, n=len(x), eps=args.eps,
                   steps=args.aa_steps if attack == "autoattack" else args.steps,
                   step_size=2 * args.eps if attack == "autoattack" else args.step_size,
                   eot=eot, clean_accuracy=clean, ours_robust_accuracy=acc,
                   art_robust_accuracy=art_acc, art_predict_accuracy=art_own,
                   ours_defended=defended, art_defended=art_defended,
                   difference=round(defended - art_defended, 4), tolerance=tolerance,
                   within_tolerance=abs(defended - art_defended) <= tolerance + 1e-9,
                   strict_difference=round(acc - art_acc, 4),
                   ours_seconds=round(seconds, 1), art_seconds=round(art_seconds, 1),
                   linf_max_art=float(np.abs(x_art - x).max()))
        emit(**row)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| defense | attack | clean | not fooled: ours | ART | difference | tolerance | "
             "strict acc.: ours | ART | ours s | ART s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['defense']} | {r['attack']} | {pct(r['clean_accuracy'])} | "
                     f"{pct(r['ours_defended'])} | {pct(r['art_defended'])} | "
                     f"{pct(r['difference'])} | {pct(r['tolerance'])} | "
                     f"{pct(r['ours_robust_accuracy'])} | {pct(r['art_robust_accuracy'])} | "
                     f"{r['ours_seconds']} | {r['art_seconds']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-size", type=float, default=None, help="default eps / 4")
    parser.add_argument("--aa-steps", type=int, default=20)
    parser.add_argument("--eot", type=int, default=5, help="EOT draws of FM-Defense's logits")
    parser.add_argument("--defenses", nargs="+", default=["greybox", "magnet", "fm_defense"])
    parser.add_argument("--only", nargs="+", default=None,
                        help="attacks to run among pgd_fixed_start, pgd, autoattack")
    args = parser.parse_args()
    args.step_size = args.step_size or args.eps / 4
    d = arrays()
    start = time.perf_counter()
    clf = classifier(*d["train"])
    x, y = (a[: args.n] for a in d["test"])
    build = {"greybox": greybox, "magnet": magnet, "fm_defense": fm_defense}
    rows = []
    for name in args.defenses:
        t = time.perf_counter()
        defense = build[name](d, clf)
        emit(figure="trained", defense=name, seconds=round(time.perf_counter() - t, 1))
        rows += compare(name, defense, x, y, args)
    print(markdown(rows))
    emit(figure="total", seconds=round(time.perf_counter() - start, 1))


if __name__ == "__main__":
    main()
