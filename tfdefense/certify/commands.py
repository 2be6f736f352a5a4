"""``tfdefense certify``: certified l2 accuracy of a saved classifier by randomized smoothing.

Loads a Keras classifier (images in [0, 1] → logits) and, with ``--denoiser``, a CD-VAE or
image → image model put in front of it (denoised smoothing); runs Cohen et al.'s CERTIFY on
test images of a ``tfdefense.data`` dataset; prints the certified accuracy per radius and a
JSON summary, and writes one JSON line per image to ``--out``.

Example:
    $ tfdefense certify --model clf.keras --sigma 0.25 --n 10000 --n0 100 --alpha 0.001 \\
        --images 100 --dataset mnist_5k --out certify.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tfdefense.certify.smoothing import DEFAULT_SIGMA, PAPER_ALPHA, PAPER_N, PAPER_N0

#: the radii the table reports unless --radii says otherwise (Cohen et al.'s CIFAR-10 steps)
DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def add_certify_parser(sub) -> argparse.ArgumentParser:
    """Add the ``certify`` command to the ``tfdefense`` subparsers."""
    p = sub.add_parser("certify", help="certified l2 accuracy of a saved classifier by randomized "
                       "smoothing (Cohen et al. 2019; with --denoiser, denoised smoothing)")
    p.add_argument("--model", required=True, help="a .keras classifier: images in [0, 1] -> logits")
    p.add_argument("--denoiser", default=None,
                   help="a .keras CD-VAE (its G) or images -> images model read before the "
                        "classifier; noise is added before it")
    p.add_argument("--sigma", type=float, default=DEFAULT_SIGMA, help="noise level σ (default 0.25)")
    p.add_argument("--n", type=int, default=PAPER_N, help="estimation draws (Cohen et al.: 100,000)")
    p.add_argument("--n0", type=int, default=PAPER_N0, help="selection draws (Cohen et al.: 100)")
    p.add_argument("--alpha", type=float, default=PAPER_ALPHA, help="failure probability (0.001)")
    p.add_argument("--dataset", "--data", dest="dataset", default="mnist_5k",
                   help="a tfdefense.data name")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--images", "--limit", dest="limit", type=int, default=100, metavar="N",
                   help="certify N images (default 100)")
    p.add_argument("--skip", type=int, default=1,
                   help="take every SKIP-th image of the split (Cohen et al.: 20 on CIFAR-10)")
    p.add_argument("--radii", type=float, nargs="+", default=list(DEFAULT_RADII),
                   help="radii of the printed table")
    p.add_argument("--batch-size", type=int, default=1000, help="noisy images per compiled pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write one JSON line per image to this file")
    p.set_defaults(func=run_certify)
    return p


def _load(path: str | None, flag: str):
    import keras

    if path is None:
        return None
    if not Path(path).is_file():
        raise ValueError(f"{flag}: no such file {path}")
    return keras.saving.load_model(path)


def run_certify(args) -> int:
    import numpy as np

    from tfdefense import data
    from tfdefense.certify.smoothing import SmoothedClassifier
    from tfdefense.certify.statistics import certified_accuracy
    from tfdefense.validation import check_positive_int

    limit = check_positive_int(args.limit, "--images")
    skip = check_positive_int(args.skip, "--skip")
    model = _load(args.model, "--model")
    denoiser = _load(args.denoiser, "--denoiser")
    x, y = data.load_arrays(args.dataset, args.split)
    x, y = x[::skip][:limit], y[::skip][:limit]
    smoothed = SmoothedClassifier(model, args.sigma, denoiser=denoiser, n0=args.n0, n=args.n,
                                  alpha=args.alpha, batch_size=args.batch_size, seed=args.seed,
                                  verbose=True)
    start = time.perf_counter()
    result = smoothed.certify(x)
    seconds = time.perf_counter() - start
    accuracy = certified_accuracy(result.radii, result.labels == y, args.radii)
    lines = ["| radius | certified accuracy (%) |", "|---|---|"]
    lines += [f"| {r:g} | {100 * a:.2f} |" for r, a in zip(args.radii, accuracy)]
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as f:
            for record in result.records(y):
                f.write(json.dumps(record) + "\n")
    print(json.dumps({
        "images": len(y), "sigma": result.sigma, "n0": result.n0, "n": result.n,
        "alpha": result.alpha, "denoiser": args.denoiser, "abstained": int(np.sum(result.labels < 0)),
        "certified_accuracy": {f"{r:g}": float(a) for r, a in zip(args.radii, accuracy)},
        "seconds": round(seconds, 1), "out": args.out}, indent=2))
    return 0
