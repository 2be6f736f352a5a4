"""Command line: ``tfdefense <command> ...``.

Building the parser imports no TensorFlow: ``tfdefense --help`` answers at
once. The commands defined by TensorFlow-importing modules (``attack``,
``evaluate``, ``detect``) are listed by name and help only until one of them
is chosen; runners import what they need when they run.

Example:
    $ tfdefense train cdvae --dataset mnist_5k --epochs 5 --out runs/cdvae
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Sequence

# TensorFlow's C++ info/warning lines (retracing, allocator notes) drown a command's own output;
# a user who wants them back sets TF_CPP_MIN_LOG_LEVEL=0. Set before anything imports TensorFlow.
# (The three absl lines printed at import come before that setting is read and cannot be hidden.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model with model.fit")
    p.add_argument("model", choices=["cdvae"], help="which model to train")
    p.add_argument("--dataset", default="mnist_5k", help="a tfdefense.data name (default mnist_5k)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--gamma", type=float, default=2.0, help="CE weight γ (Eq. 1; paper: 2)")
    p.add_argument("--beta", type=float, default=0.2, help="KL weight β (Eq. 2; paper: 0.2)")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--width", type=int, default=None, help="VAE feature width d")
    p.add_argument("--mixup-alpha", type=float, default=0.0, help="Beta(α, α) input mixup")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=None,
                   help="use only the first N training images (quick runs)")
    p.add_argument("--out", default="runs/cdvae", help="output folder")
    p.add_argument("--tensorboard", metavar="DIR", default=None,
                   help="write TensorBoard logs to DIR: every loss term, the learning rate and a "
                        "grid of x / G(x) / R(x) of 8 test images each epoch")
    _add_scale_options(p)
    p.set_defaults(func=_run_train)


def _add_scale_options(p, strategy_default: str = "default") -> None:
    """--strategy / --cpu-devices / --precision of a training command (tfdefense.distribute)."""
    p.add_argument("--strategy", default=strategy_default,
                   choices=["auto", "default", "mirrored", "multi_worker", "tpu"],
                   help="tf.distribute strategy (multi_worker reads TF_CONFIG)")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="with --strategy mirrored and no GPU: mirror over N logical CPU devices")
    p.add_argument("--precision", default=None,
                   choices=["float32", "mixed_bfloat16", "mixed_float16"],
                   help="Keras dtype policy of the model (default float32)")


def _strategy(args: argparse.Namespace):
    """The strategy of --strategy, created before TensorFlow runs any op."""
    if args.strategy == "default" and args.cpu_devices is None:
        return None
    from tfdefense.distribute import get_strategy

    return get_strategy(args.strategy, cpu_devices=args.cpu_devices)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a saved model as a TF Serving SavedModel")
    p.add_argument("model", help="a .keras file (CDVAE or a Keras classifier) or a folder saved "
                   "by Defense.save / Detector.save (MagNet, Defense-GAN, FM-Defense, ...)")
    p.add_argument("--name", required=True, help="model name: writes BASE_DIR/NAME/VERSION/")
    p.add_argument("--version", type=int, default=1, help="TF Serving version folder (>= 1)")
    p.add_argument("--base-dir", default="saved_models", help="folder of exported models")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    import os

    from tfdefense import export
    from tfdefense.defend import base as defenses
    from tfdefense.detect import base as detectors

    if os.path.isfile(os.path.join(args.model, defenses.CONFIG_FILE)):
        obj = defenses.load(args.model)  # a Defense.save folder (MagNet, Defense-GAN, ...)
    elif os.path.isfile(os.path.join(args.model, detectors.CONFIG_FILE)):
        obj = detectors.load(args.model)
    else:
        obj = export.load_for_export(args.model)
    path = export.for_serving(obj, os.path.join(args.base_dir, args.name), args.version,
                              overwrite=args.overwrite)
    print(json.dumps({"path": path, "signatures": sorted(export.read_metadata(path)["signatures"])},
                     indent=2))
    return 0


def _run_train(args: argparse.Namespace) -> int:
    strategy = _strategy(args)
    from tfdefense.training import train_cdvae

    callbacks = None
    if args.tensorboard:
        from tfdefense import data
        from tfdefense.callbacks import tensorboard_callbacks

        images = next(iter(data.load(args.dataset, "test").batch(8)))[0].numpy()
        callbacks = tensorboard_callbacks(args.tensorboard, images=images)
    run = train_cdvae(
        args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        out=args.out,
        gamma=args.gamma,
        beta=args.beta,
        seed=args.seed,
        latent_dim=args.latent_dim,
        width=args.width,
        mixup_alpha=args.mixup_alpha,
        train_limit=args.train_limit,
        strategy=strategy,
        precision=args.precision,
        callbacks=callbacks,
    )
    print(json.dumps({"test": run.test_metrics, "files": run.files}, indent=2))
    return 0


def _parse_setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (numbers, lists), else as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="run the papers' experiments and write report.md")
    p.add_argument("--preset", default="quick", help="quick (mnist_5k, CPU minutes) or paper (CIFAR-10)")
    p.add_argument("--out", default="report", help="output folder (report.md, figures/, results.json)")
    p.add_argument("--only", nargs="+", metavar="NAME", default=None,
                   help="run only these experiments (see --list)")
    p.add_argument("--set", dest="overrides", type=_parse_setting, action="append", default=[],
                   metavar="KEY=VALUE", help="override a setting, e.g. --set eval_images=100")
    p.add_argument("--list", action="store_true", help="list the registered experiments and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="run every experiment of the preset on tfds mock data with tiny sizes but "
                        "the preset's architectures, and print what the real run trains and "
                        "its estimated cost (tfdefense.experiments.dry_run)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="run under seeds 0..N-1 (N >= 2), each in OUT/seed<k>/, and write OUT/report.md "
                        "with every number as mean ± std (min–max) over them (tfdefense.report_seeds)")
    p.add_argument("--combine-only", action="store_true",
                   help="with --seeds N: run nothing, combine the finished runs in OUT/seed0 .. "
                        "OUT/seed<N-1> (e.g. made apart with --set seed=k --out OUT/seed<k>)")
    p.add_argument("--profile", action="store_true",
                   help="also write OUT/profile.jsonl (per experiment and for the run: seconds "
                        "training, attacking, scoring, writing and other, peak RSS) and print it as "
                        "a table (tfdefense.profiling); with --seeds one per OUT/seed<k>/")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run up to N experiments at a time, each in its own process sharing OUT's "
                        "cache (a model two need is trained once), and write the one report "
                        "(tfdefense.report_jobs); 2 keeps both cores of a 2-core machine busy; "
                        "on GPUs the workers share them (memory growth)")
    _add_scale_options(p, strategy_default="auto")
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    from tfdefense.experiments import available
    from tfdefense.report import reproduce

    if args.list:
        print("\n".join(available()))
        return 0
    overrides = dict(args.overrides)
    if args.combine_only and args.seeds is None:
        raise ValueError("--combine-only: combines OUT/seed0 .. OUT/seed<N-1>; give --seeds N")
    if args.seeds is not None and args.dry_run:
        raise ValueError("--seeds and --dry-run: a dry run's numbers are of random images; run one "
                         "or the other")
    if args.profile and args.combine_only:
        raise ValueError("--profile and --combine-only: combining runs nothing to profile; profile "
                         "the runs themselves")
    if args.precision is not None:  # a model trained under another policy is another model
        overrides["precision"] = args.precision
    if args.jobs != 1:
        return _reproduction_summary(_run_reproduce_jobs(args, overrides))
    strategy = _strategy(args)
    from tfdefense import profiling
    from tfdefense.distribute import precision_scope

    with contextlib.ExitStack() as stack:
        if strategy is not None:  # models build, train and get attacked over its replicas
            stack.enter_context(strategy.scope())
        stack.enter_context(precision_scope(args.precision))
        if args.profile:  # every reproduce() below writes its profile.jsonl
            stack.enter_context(profiling.requested())
        if args.dry_run:
            from tfdefense.experiments.dry_run import dry_run

            run = dry_run(args.preset, args.out, only=args.only, overrides=overrides).reproduction
        elif args.seeds is not None and args.combine_only:
            from tfdefense.report_seeds import combine_saved

            run = combine_saved(args.preset, args.out, args.seeds, overrides=overrides)
        elif args.seeds is not None:
            from tfdefense.report_seeds import reproduce_seeds

            run = reproduce_seeds(args.preset, args.out, args.seeds, only=args.only, overrides=overrides)
        else:
            run = reproduce(args.preset, args.out, only=args.only, overrides=overrides)
    return _reproduction_summary(run)


def _reproduction_summary(run) -> int:
    """Print a reproduction's files, failures and seconds as JSON; its exit code."""
    print(json.dumps({"report": run.files, "failed": run.failed, "seconds": round(run.seconds)}, indent=2))
    return 1 if run.failed else 0


def _run_reproduce_jobs(args: argparse.Namespace, overrides: dict):
    """``reproduce --jobs N`` (its ``Reproduction``): this process schedules, each worker builds
    its own strategy."""
    from tfdefense.report_jobs import reproduce_jobs

    if args.jobs < 1:
        raise ValueError(f"--jobs: expected an integer >= 1, got {args.jobs}")
    for flag, given in (("--seeds", args.seeds is not None), ("--dry-run", args.dry_run),
                        ("--combine-only", args.combine_only)):
        if given:
            raise ValueError(f"--jobs and {flag}: run {flag} with one process (--jobs 1)")
    return reproduce_jobs(args.preset, args.out, args.jobs, only=args.only, overrides=overrides,
                          profile=args.profile, precision=args.precision, strategy=args.strategy,
                          cpu_devices=args.cpu_devices, imports=args.imports)


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="tune the CD-VAE's gamma/beta with keras-tuner")
    p.add_argument("model", choices=["cdvae"], help="which model to tune")
    p.add_argument("--dataset", default="mnist_5k")
    p.add_argument("--objective", default="accuracy",
                   help="accuracy | reconstruction_accuracy | g_accuracy | defense_accuracy | "
                        "detection_auc | loss")
    p.add_argument("--algorithm", default="random", choices=["grid", "random", "bayesian"])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--gamma", type=float, nargs="+", default=[2e-4, 20.0],
                   help="LOW HIGH (log-uniform) or one value, or 3+ choices")
    p.add_argument("--beta", type=float, nargs="+", default=[0.2], help="same forms as --gamma")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--train-images", type=int, default=None, help="use the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/tune", help="tuner folder (a search found there resumes)")
    p.set_defaults(func=_run_tune)


def _space(values: list[float]):
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return (values[0], values[1])
    return list(values)


def _run_tune(args: argparse.Namespace) -> int:
    from tfdefense.tune import run_tuning

    rows, best = run_tuning(
        args.dataset, objective_name=args.objective, algorithm=args.algorithm, trials=args.trials,
        epochs=args.epochs, batch_size=args.batch_size, gamma=_space(args.gamma),
        beta=_space(args.beta), latent_dim=args.latent_dim, width=args.width,
        train_images=args.train_images, seed=args.seed, directory=args.out)
    print(json.dumps({"best": best, "trials": rows}, indent=2))
    return 0


class _Subcommands(argparse._SubParsersAction):
    """Subparsers some of which are defined on first use.

    ``add_lazy_parser(name, help, module, function)`` lists ``name`` with
    ``help`` in the top-level usage, but imports ``module`` and calls
    ``function(self)`` (which adds the real ``name`` parser) only when ``name``
    is chosen on the command line or ``load(name)`` is called. Used for the
    commands whose argument choices come from modules that import TensorFlow.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, tuple[str, str]] = {}

    def add_lazy_parser(self, name: str, help: str, module: str, function: str) -> None:
        self.add_parser(name, help=help)
        self._lazy[name] = (module, function)

    def lazy_names(self) -> tuple[str, ...]:
        """The commands not defined yet."""
        return tuple(self._lazy)

    def load(self, name: str) -> argparse.ArgumentParser:
        """The parser of ``name``, defining it now if it is lazy."""
        if name in self._lazy:
            module, function = self._lazy.pop(name)
            index = next(i for i, a in enumerate(self._choices_actions) if a.dest == name)
            order = list(self._name_parser_map)
            del self._choices_actions[index]
            del self._name_parser_map[name]
            getattr(importlib.import_module(module), function)(self)
            # keep the command's place in the help listing and in the usage's choices
            self._choices_actions.insert(index, self._choices_actions.pop())
            parsers = dict(self._name_parser_map)
            self._name_parser_map.clear()
            self._name_parser_map.update((n, parsers[n]) for n in order)
        return self._name_parser_map[name]

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values and values[0] in self._lazy:
            self.load(values[0])
        super().__call__(parser, namespace, values, option_string)


#: commands defined by modules that import TensorFlow: (name, help, module, function adding the parser)
_LAZY_COMMANDS = (
    ("attack", "generate adversarial examples against a saved model",
     "tfdefense.attacks.commands", "add_attack_parser"),
    ("evaluate", "accuracy of a saved model or defense under the papers' (adaptive) attacks",
     "tfdefense.attacks.commands", "add_evaluate_parser"),
    ("detect", "fit an adversarial-example detector (KD, LID, Mahalanobis)",
     "tfdefense.detect.commands", "add_detect_parser"),
    ("certify", "certified l2 accuracy of a saved classifier by randomized smoothing",
     "tfdefense.certify.commands", "add_certify_parser"),
)


def import_user_modules(names: Sequence[str]) -> None:
    """Import each module of ``--import`` (the current folder first on ``sys.path``), so the
    classes it registers (a ``Defense``, a ``Detector``, a Keras object) load by name."""
    if not names:
        return
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        module = name[:-3] if name.endswith(".py") else name
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"--import: cannot import {module!r} ({exc}); give a module name "
                             "importable from the current folder or the Python path") from exc


def build_parser() -> argparse.ArgumentParser:
    """The ``tfdefense`` parser; building it (and ``--help``) imports no TensorFlow."""
    parser = argparse.ArgumentParser(
        prog="tfdefense",
        description="Detect and defend against adversarial examples with VAEs (CD-VAE, FM-Defense).",
    )
    from tfdefense import __version__

    parser.add_argument("--version", action="version", version=f"tfdefense {__version__}")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (repeatable; the current folder is on the "
                             "path), e.g. the module defining your own registered Defense, so "
                             "`evaluate --defense` and `export` can load it")
    sub = parser.add_subparsers(dest="command", required=True, action=_Subcommands)
    _add_train(sub)
    _add_reproduce(sub)
    _add_tune(sub)
    _add_export(sub)
    for name, help_text, module, function in _LAZY_COMMANDS:
        sub.add_lazy_parser(name, help_text, module, function)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import tfdefense  # every command may load a saved model: register the library's classes

    tfdefense.register_all()
    try:
        import_user_modules(args.imports)
        return args.func(args)
    except ValueError as exc:
        print(f"tfdefense: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
