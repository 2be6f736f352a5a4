"""The ``tfdefense detect`` subcommand: fit a detector on a saved model, report it, save it.

    tfdefense detect --model cdvae.keras --on residual --features mahalanobis \\
        --adversarial adv.npz --out detector.npz
    tfdefense detect --model classifier.keras --attack pgd_linf --eps 0.3 --limit 400 --out det.npz

Adversarial examples come from ``tfdefense attack``'s ``.npz`` (``--adversarial``)
or are crafted here with ``--attack`` against the model's logits. As in the
detection papers, only images the model classifies correctly and whose attack
succeeds are used; the first half fits the detector (``LogisticDetector``:
characteristics on clean training images, regression on clean + noisy vs
adversarial), the second half measures it (TNR at 95% TPR, ROC AUC). The
fitted detector is written with ``LogisticDetector.save`` and reloads with
``LogisticDetector.load(path, model)``.

Example:
    >>> import argparse
    >>> from tfdefense.detect.commands import add_detect_parser
    >>> sub = argparse.ArgumentParser().add_subparsers()
    >>> add_detect_parser(sub).parse_args(["--model", "m.keras", "--out", "d.npz"]).features
    'kd,lid,mahalanobis'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_detect_parser(sub) -> argparse.ArgumentParser:
    """``detect``: fit a LogisticDetector on a saved model and save it."""
    p = sub.add_parser("detect", help="fit an adversarial-example detector (KD, LID, Mahalanobis)")
    p.add_argument("--model", required=True, help="a .keras classifier or CD-VAE")
    p.add_argument("--on", choices=["input", "residual"], default="input",
                   help="read the classifier on x, or the CD-VAE's D on R(x) (CD-VAE §3.3)")
    p.add_argument("--features", default="kd,lid,mahalanobis", help="comma-separated characteristics")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--adversarial", default=None, help="an .npz from `tfdefense attack` (x, x_adv, y)")
    source.add_argument("--attack", default="pgd_linf", help="attack to craft with (default pgd_linf)")
    p.add_argument("--eps", type=float, default=None, help="attack budget (default: the attack's)")
    p.add_argument("--steps", type=int, default=None, help="attack iterations (default: the attack's)")
    p.add_argument("--dataset", default="mnist_5k", help="a tfdefense.data name")
    p.add_argument("--split", default="test", choices=["validation", "test"],
                   help="split the detection images come from (with --attack)")
    p.add_argument("--limit", type=int, default=400, help="detection images (with --attack)")
    p.add_argument("--train-images", type=int, default=1000,
                   help="clean training images the characteristics are fitted on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="where to save the fitted detector (.npz)")
    p.set_defaults(func=run_detect)
    return p


def _load_model(path: str):
    import keras

    import tfdefense.baselines  # noqa: F401  (registers the library's models for loading)
    import tfdefense.models  # noqa: F401

    if not Path(path).is_file():
        raise ValueError(f"--model: no such file {path}")
    return keras.saving.load_model(path)


def _detection_images(args, model):
    import numpy as np

    from tfdefense import data

    if args.adversarial:
        if not Path(args.adversarial).is_file():
            raise ValueError(f"--adversarial: no such file {args.adversarial}")
        with np.load(args.adversarial, allow_pickle=False) as f:
            missing = {"x", "x_adv", "y"} - set(f.files)
            if missing:
                raise ValueError(f"--adversarial: {args.adversarial} lacks {sorted(missing)}; "
                                 "expected the .npz `tfdefense attack` writes")
            return f["x"], f["x_adv"], f["y"], "from " + str(args.adversarial)
    from tfdefense.attacks.base import get_attack

    if args.limit < 4:
        raise ValueError(f"--limit: expected at least 4 images, got {args.limit}")
    x, y = data.load_arrays(args.dataset, args.split)
    x, y = x[: args.limit], y[: args.limit]
    params = {k: v for k, v in (("eps", args.eps), ("steps", args.steps)) if v is not None}
    attack = get_attack(args.attack, seed=args.seed, verbose=True, **params)
    return x, attack.generate(x, y, model=model), y, attack.label


def run_detect(args) -> int:
    import numpy as np

    from tfdefense import data
    from tfdefense.detect.detector import LogisticDetector, make_noisy

    model = _load_model(args.model)
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    detector = LogisticDetector(model, features=features, on=args.on, seed=args.seed)
    x, x_adv, y, source = _detection_images(args, model)
    logits = lambda images: np.asarray(model.predict(images, verbose=0))  # noqa: E731
    keep = (np.argmax(logits(x), 1) == y) & (np.argmax(logits(x_adv), 1) != y)
    idx = np.flatnonzero(keep)
    fit, test = idx[: len(idx) // 2], idx[len(idx) // 2:]
    if min(len(fit), len(test)) < 10:
        raise ValueError(f"too few successful adversarial examples ({len(idx)} of {len(x)}); "
                         "need 20: raise --limit or the attack's --eps")
    if args.train_images < 20:
        raise ValueError(f"--train-images: expected at least 20, got {args.train_images}")
    x_train, y_train = data.load_arrays(args.dataset, "train")
    detector.fit(x_train[: args.train_images], y_train[: args.train_images], x[fit], x_adv[fit])
    noisy = make_noisy(x[test], x_adv[test], seed=args.seed + 1)
    measured = detector.evaluate(x[test], x_adv[test], noisy)
    path = detector.save(args.out)
    print(json.dumps({"out": path, "adversarial": source, "on": args.on, "features": features,
                      "fit_images": int(len(fit)), "test_images": int(len(test)),
                      "selection": detector.selection_, **measured.to_dict()}, default=float))
    return 0
