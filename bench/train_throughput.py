"""Steady-state training throughput of ``CDVAE.fit`` (images/s after tracing), batch 128.

One JSON line per figure:

* ``cdvae_fit_mnist``: the 28x28 variant on mnist_5k;
* ``cdvae_fit_cifar``: the official CIFAR VAE + WRN-depth-width D on synthetic
  32x32x3 data, float32 and, with ``--xla``, ``jit_compile=True``;
* ``torch_cdvae_cifar``: the same CIFAR step in PyTorch (CPU), when
  ``--torch-python`` points at an interpreter with torch installed (torch is
  never a dependency: ``python -m venv /tmp/t && /tmp/t/bin/pip install
  torch==2.13.0 numpy``), and ``ratio_keras_over_torch`` measured in the same
  run. The torch reference is ``bench/torch_cdvae_reference.py``;
* ``vqcdvae_fit_resnet50`` (``--vq``): CD-VAE's ImageNet pair, the VQ-VAE
  (d 64, k 128) + ResNet-50, on synthetic ``--vq-size`` (64) images, 9 classes.

Usage:
    python bench/train_throughput.py --steps 10 --wrn-depth 16 --wrn-width 4 \
        --torch-python /work/torchvenv/bin/python --xla
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import emit, peak_rss_mb  # noqa: E402

from tfdefense import data, nets  # noqa: E402
from tfdefense.models import CDVAE  # noqa: E402
from tfdefense.models.cdvae import CIFAR_NORMALIZATION  # noqa: E402

BATCH = 128


class _StepTimer(keras.callbacks.Callback):
    """Times batches after ``warmup`` of them (tracing and the first steps excluded)."""

    def __init__(self, warmup: int):
        super().__init__()
        self.warmup = warmup
        self.seen = 0
        self.start = None
        self.timed = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.warmup:
            self.start = time.perf_counter()
        elif self.seen > self.warmup:
            self.timed += 1

    def images_per_second(self) -> float:
        return self.timed * BATCH / (time.perf_counter() - self.start)


def measure(model: CDVAE, ds: tf.data.Dataset, steps: int, warmup: int = 3) -> float:
    timer = _StepTimer(warmup)
    model.fit(ds.take(steps + warmup), epochs=1, verbose=0, callbacks=[timer])
    return timer.images_per_second()


def cifar_model(depth: int, width: int, jit: bool) -> CDVAE:
    enc = nets.cdvae_encoder((32, 32, 3))
    dec = nets.cdvae_decoder((32, 32, 3))
    clf = nets.wide_resnet((32, 32, 3), 10, depth=depth, width=width)
    model = CDVAE(enc, dec, clf, normalization_mean=CIFAR_NORMALIZATION[0],
                  normalization_std=CIFAR_NORMALIZATION[1], seed=0)
    model.compile(jit_compile=jit)
    return model


def vq_imagenet_row(steps: int, size: int, common: dict) -> None:
    """The VQ-VAE + ResNet-50 CD-VAE (restricted ImageNet's models) at a small resolution."""
    from tfdefense.models import VQCDVAE

    rng = np.random.default_rng(0)
    x = rng.random((BATCH * 2, size, size, 3), dtype=np.float32)
    y = rng.integers(0, 9, BATCH * 2).astype(np.int64)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(BATCH, drop_remainder=True)
    model = VQCDVAE(nets.vq_encoder((size, size, 3)), nets.vq_decoder((size, size, 3)),
                    nets.resnet50((size, size, 3), 9), seed=0)
    model.compile()
    emit(figure="vqcdvae_fit_resnet50", arch=f"vq-vae d64 k128 + resnet50 @ {size}x{size}",
         images_per_s=round(measure(model, ds, steps), 1), peak_rss_mb=round(peak_rss_mb()), **common)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per figure")
    parser.add_argument("--wrn-depth", type=int, default=16)
    parser.add_argument("--wrn-width", type=int, default=4)
    parser.add_argument("--xla", action="store_true", help="also measure jit_compile=True")
    parser.add_argument("--torch-python", default=None, help="python with torch for the reference")
    parser.add_argument("--vq", action="store_true", help="also the VQ-VAE + ResNet-50 row")
    parser.add_argument("--vq-size", type=int, default=64, help="image size of the VQ row")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    common = {"batch": BATCH, "steps": args.steps, "threads": os.cpu_count()}

    mnist = data.load("mnist_5k", "train").repeat().batch(BATCH, drop_remainder=True)
    model = CDVAE.for_dataset("mnist_5k", seed=0)
    model.compile()
    ips = measure(model, mnist, args.steps)
    emit(figure="cdvae_fit_mnist", images_per_s=round(ips, 1), peak_rss_mb=round(peak_rss_mb()),
         **common)

    rng = np.random.default_rng(0)
    x = rng.random((BATCH * 4, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, BATCH * 4).astype(np.int64)
    cifar = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(BATCH, drop_remainder=True)
    arch = f"cdvae_cifar+wrn-{args.wrn_depth}-{args.wrn_width}"
    keras_ips = measure(cifar_model(args.wrn_depth, args.wrn_width, False), cifar, args.steps)
    emit(figure="cdvae_fit_cifar", arch=arch, jit_compile=False, images_per_s=round(keras_ips, 1),
         peak_rss_mb=round(peak_rss_mb()), **common)
    if args.xla:
        xla_ips = measure(cifar_model(args.wrn_depth, args.wrn_width, True), cifar, args.steps)
        emit(figure="cdvae_fit_cifar", arch=arch, jit_compile=True, images_per_s=round(xla_ips, 1),
             ratio_xla_over_default=round(xla_ips / keras_ips, 3), peak_rss_mb=round(peak_rss_mb()),
             **common)
    if args.torch_python:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_cdvae_reference.py")
        out = subprocess.run(
            [args.torch_python, script, "--steps", str(args.steps), "--batch", str(BATCH),
             "--wrn-depth", str(args.wrn_depth), "--wrn-width", str(args.wrn_width)],
            check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]
        import json

        torch_ips = json.loads(out)["images_per_s"]
        # Keras again right after torch, so the ratio compares neighbours in time on a noisy machine.
        keras_again = measure(cifar_model(args.wrn_depth, args.wrn_width, False), cifar, args.steps)
        keras_best = max(keras_ips, keras_again)
        emit(figure="torch_cdvae_cifar", arch=arch, images_per_s=torch_ips,
             keras_images_per_s=round(keras_best, 1),
             ratio_keras_over_torch=round(keras_best / torch_ips, 3), **common)
    if args.vq:
        vq_imagenet_row(args.steps, args.vq_size, common)


if __name__ == "__main__":
    main()
