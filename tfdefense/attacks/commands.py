"""The ``tfdefense attack`` and ``tfdefense evaluate`` subcommands.

``tfdefense.cli`` registers them with ``add_attack_parser(sub)`` and
``add_evaluate_parser(sub)``; each sets ``func`` to its runner, which takes the
parsed arguments and returns an exit code.

    tfdefense attack --model m.keras --attack pgd_linf --eps 0.3 --out adv.npz
    tfdefense evaluate --model m.keras --preset cdvae_defense --limit 200 --quick
    tfdefense evaluate --defense runs/magnet --images 200 --quick --out eval/magnet

``evaluate --defense PATH`` loads a folder written by ``Defense.save`` and runs the
adaptive evaluation (``evaluate_robustness(defense, data, preset="adaptive")``): it
prints the Markdown table (per-attack rows, the worst case of each norm, AutoAttack's
reports) and the claims in RobustBench's format as JSON, and with ``--out DIR`` writes
``DIR/adaptive.md``, ``DIR/claim.json`` and ``DIR/result.json``.

Example:
    >>> import argparse
    >>> from tfdefense.attacks.commands import add_attack_parser
    >>> sub = argparse.ArgumentParser().add_subparsers()
    >>> add_attack_parser(sub).parse_args(["--model", "m.keras", "--out", "a.npz"]).attack
    'pgd_linf'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _common(p) -> None:
    p.add_argument("--model", required=True, help="a .keras file whose call() returns logits")
    p.add_argument("--dataset", default="mnist_5k", help="a tfdefense.data name")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)


def add_attack_parser(sub) -> argparse.ArgumentParser:
    """``attack``: generate adversarial examples and save them as .npz."""
    from tfdefense.attacks.base import available_attacks

    p = sub.add_parser("attack", help="generate adversarial examples against a saved model")
    _common(p)
    p.add_argument("--attack", default="pgd_linf", choices=available_attacks())
    p.add_argument("--eps", type=float, default=None, help="budget (default: the attack's)")
    p.add_argument("--steps", type=int, default=None, help="iterations (default: the attack's)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=JSON",
                   help="any other attack parameter, e.g. --param kappa=5 (repeatable)")
    p.add_argument("--out", required=True, help="output .npz (x_adv, x, y, attack, params)")
    p.set_defaults(func=run_attack)
    return p


def add_evaluate_parser(sub) -> argparse.ArgumentParser:
    """``evaluate``: robustness of a saved model or defense under a preset or a list of attacks."""
    from tfdefense.attacks.presets import PRESETS

    p = sub.add_parser("evaluate", help="accuracy of a saved model or defense under the papers' "
                       "(adaptive) attacks")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="a .keras file whose call() returns logits")
    target.add_argument("--defense", help="a folder written by Defense.save (defense.json): "
                        "runs the adaptive evaluation through the defense's own attack surface")
    p.add_argument("--dataset", default="mnist_5k", help="a tfdefense.data name")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--limit", "--images", dest="limit", type=int, default=None, metavar="N",
                   help="use only the first N images")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=PRESETS, default=None,
                       help="default: adaptive with --defense, cdvae_defense with --model")
    group.add_argument("--attacks", default=None, help="comma-separated attack names")
    p.add_argument("--data", choices=["cifar10", "mnist"], default=None,
                   help="budget scale of the preset (default: from the image shape)")
    p.add_argument("--quick", action="store_true", help="cheaper preset settings")
    p.add_argument("--reported", action="append", default=[], metavar="NORM=ACC",
                   help="the paper's robust accuracy for the claim, e.g. --reported linf=0.52")
    p.add_argument("--cache-dir", default=None, help="reuse adversarial sets stored here")
    p.add_argument("--out", default=None,
                   help="--model: write the result as JSON to this file; --defense: a folder for "
                        "adaptive.md, claim.json and result.json")
    p.set_defaults(func=run_evaluate)
    return p


def _load(args):
    import keras

    import tfdefense.models  # noqa: F401  (registers the library's models for loading)

    path = Path(args.model)
    if not path.exists():
        raise ValueError(f"--model: no such file {path}")
    model = keras.saving.load_model(path)
    return (model, *_arrays(args, "--limit"))


def _arrays(args, flag: str):
    """The ``--dataset`` / ``--split`` images and labels, the first ``args.limit`` if given."""
    from tfdefense import data

    x, y = data.load_arrays(args.dataset, args.split)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"{flag}: expected an integer >= 1, got {args.limit}")
        x, y = x[: args.limit], y[: args.limit]
    return x, y


def _params(items) -> dict:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param: expected NAME=VALUE, got {item!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def run_attack(args) -> int:
    import numpy as np

    from tfdefense.attacks.adversarial_set import model_fingerprint
    from tfdefense.attacks.base import get_attack

    params = _params(args.param)
    if args.eps is not None:
        params["eps"] = args.eps
    if args.steps is not None:
        params["steps"] = args.steps
    attack = get_attack(args.attack, batch_size=args.batch_size, seed=args.seed, verbose=True,
                        **params)
    model, x, y = _load(args)
    x_adv = attack.generate(x, y, model=model)
    config = {k: v for k, v in attack.get_config().items() if k != "verbose"}
    np.savez_compressed(args.out, x_adv=x_adv, x=x, y=y, attack=attack.label,
                        params=json.dumps(config), model_fingerprint=model_fingerprint(model))
    acc = float(np.mean(np.argmax(np.asarray(model.predict(x_adv, verbose=0)), 1) == y))
    print(json.dumps({"out": str(args.out), "attack": attack.label, "n": len(x),
                      "accuracy_under_attack": acc}))
    return 0


def _load_defense(args):
    from tfdefense.defend import base

    path = Path(args.defense)
    if not (path / base.CONFIG_FILE).is_file():
        raise ValueError(f"--defense: expected a folder written by Defense.save (with "
                         f"{base.CONFIG_FILE}), got {path}")
    defense = base.load(str(path))
    return (defense, *_arrays(args, "--images"))


def _reported(items) -> dict[str, float]:
    out = {}
    for item in items:
        norm, sep, value = item.partition("=")
        try:
            out[norm] = float(value)
        except ValueError:
            sep = ""
        if not sep or not norm:
            raise ValueError(f"--reported: expected NORM=ACCURACY (e.g. linf=0.52), got {item!r}")
    return out


def run_evaluate(args) -> int:
    from tfdefense.attacks.robustness import evaluate_robustness

    if args.defense:
        target, x, y = _load_defense(args)
        default = "adaptive"
    else:
        target, x, y = _load(args)
        default = "cdvae_defense"
    attacks = args.preset or (args.attacks.split(",") if args.attacks else default)
    if isinstance(attacks, list):
        from tfdefense.attacks.base import get_attack

        attacks = [get_attack(a.strip(), batch_size=args.batch_size, seed=args.seed)
                   for a in attacks]
    result = evaluate_robustness(target, (x, y), attacks, data=args.data, quick=args.quick,
                                 cache_dir=args.cache_dir, verbose=True,
                                 reported=_reported(args.reported))
    table = result.to_markdown()
    print(table)
    if not args.defense:
        if args.out:
            result.to_json(args.out)
        return 0
    claims = json.dumps(result.claims(dataset=args.dataset, quick=args.quick), indent=1)
    print(claims)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "adaptive.md").write_text(table + "\n")
        (out / "claim.json").write_text(claims + "\n")
        result.to_json(out / "result.json")
    return 0
