"""Command line: ``tfdefense <command> ...``.

Example:
    $ tfdefense train cdvae --dataset mnist_5k --epochs 5 --out runs/cdvae
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


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
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from tfdefense.training import train_cdvae

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
    )
    print(json.dumps({"test": run.test_metrics, "files": run.files}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfdefense",
        description="Detect and defend against adversarial examples with VAEs (CD-VAE, FM-Defense).",
    )
    from tfdefense import __version__

    parser.add_argument("--version", action="version", version=f"tfdefense {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"tfdefense: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
