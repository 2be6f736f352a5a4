"""CD-VAE training throughput and peak RSS against the PyTorch reference (issue 18, item 3).

One architecture per invocation (the official CIFAR VAE + WRN-depth-width, batch
128, the same synthetic 32x32x3 batch of a fixed seed on both sides,
``_common.synthetic_images``, 2 intra-op threads on both sides). Every
measurement runs in its OWN fresh process (``--child``), so its peak RSS
(VmHWM) is that model's alone and no two share allocator state. The default
order interleaves the frameworks so neighbours in time are compared:

    keras float32, torch float32, keras mixed_bfloat16, torch bfloat16,
    keras float32, keras mixed_bfloat16

Keras trains with ``CDVAE.fit`` under the ``keras.mixed_precision`` policy
(``tfdefense.distribute.precision_scope``); torch under
``torch.autocast("cpu", dtype=torch.bfloat16)`` (``bench/torch_cdvae_reference.py``).
Warm-up: the first ``--warmup`` steps (tracing included) are excluded from
timing; images/s is over the next ``--steps`` steps.

Output, JSON lines: one ``train_throughput_measurement`` per child (images/s,
peak RSS MiB, 1-minute load average when its timed steps started), then one
``train_throughput_summary`` per precision with BOTH Keras measurements, each
one's ratio over torch at the same precision (target >= 1.4) and each peak RSS
with its ratio Keras/torch (target <= 1).

Usage:
    python bench/train_throughput.py --wrn-depth 16 --wrn-width 4 --steps 10 \
        --torch-python /tmp/torchvenv/bin/python
    python bench/train_throughput.py --wrn-depth 28 --wrn-width 10 --steps 2 --warmup 1 \
        --torch-python /tmp/torchvenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _common import emit, synthetic_images, vm_hwm_mb  # noqa: E402

BATCH = 128
THREADS = 2
#: the order of the measurements, each "framework:precision" in its own process
DEFAULT_SEQUENCE = ("keras:float32", "torch:float32", "keras:mixed_bfloat16", "torch:bfloat16",
                    "keras:float32", "keras:mixed_bfloat16")
#: torch's autocast dtype beside each Keras policy
TORCH_PRECISION = {"float32": "float32", "mixed_bfloat16": "bfloat16"}
SPEED_TARGET = 1.4  # issue 18 item 3: Keras >= 1.4x torch at the same precision
HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------- the Keras child
def _configure_threads(threads: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _step_timer(warmup: int):
    """A callback timing the batches after ``warmup`` of them (tracing excluded)."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen, self.timed = 0, 0
            self.start = self.end = self.load = None
            self.last_loss = float("nan")

        def on_train_batch_end(self, batch, logs=None):
            self.seen += 1
            if self.seen == warmup:
                self.start, self.load = time.perf_counter(), os.getloadavg()[0]
            elif self.seen > warmup:
                self.timed += 1
                self.last_loss = float(logs["loss"])  # waits for the step
                self.end = time.perf_counter()

    return StepTimer()


def _cifar_model(depth: int, width: int, precision: str, jit: bool):
    import keras

    from tfdefense import distribute, nets
    from tfdefense.models import CDVAE
    from tfdefense.models.cdvae import CIFAR_NORMALIZATION

    keras.utils.set_random_seed(0)
    with distribute.precision_scope(precision):
        model = CDVAE(nets.cdvae_encoder((32, 32, 3)), nets.cdvae_decoder((32, 32, 3)),
                      nets.wide_resnet((32, 32, 3), 10, depth=depth, width=width),
                      normalization_mean=CIFAR_NORMALIZATION[0],
                      normalization_std=CIFAR_NORMALIZATION[1], seed=0)
    model.compile(jit_compile=jit)
    return model


def keras_child(args: argparse.Namespace) -> dict:
    """Fit the Keras CD-VAE for warm-up + timed steps in this (fresh) process."""
    _configure_threads(args.threads)
    import keras
    import tensorflow as tf

    model = _cifar_model(args.wrn_depth, args.wrn_width, args.precision, args.jit)
    x, y = synthetic_images(BATCH, seed=args.seed)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(args.warmup + args.steps)
    timer = _step_timer(args.warmup)
    model.fit(ds, epochs=1, verbose=0, callbacks=[timer])
    return {"framework": "keras", "precision": args.precision, "jit_compile": args.jit,
            "images_per_s": round(timer.timed * BATCH / (timer.end - timer.start), 2),
            "peak_rss_mb": round(vm_hwm_mb()), "load_avg_1m": round(timer.load, 2),
            "last_loss": round(timer.last_loss, 4), "steps": timer.timed, "warmup": args.warmup,
            "compute_dtype": model.classifier.dtype_policy.compute_dtype,
            "optimizer": type(model.optimizer).__name__, "keras": keras.__version__,
            "tensorflow": tf.__version__, "threads": args.threads}


# ------------------------------------------------------------------ the parent
def _run_child(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(spec: str, args: argparse.Namespace) -> dict:
    """One measurement ("keras:<policy>" or "torch:<dtype>") in a fresh process."""
    framework, precision = spec.split(":")
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup),
              "--wrn-depth", str(args.wrn_depth), "--wrn-width", str(args.wrn_width),
              "--threads", str(args.threads), "--seed", str(args.seed)]
    if framework == "keras":
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--precision", precision,
               *common, *(["--jit"] if args.jit else [])]
    elif framework == "torch":
        cmd = [args.torch_python, os.path.join(HERE, "torch_cdvae_reference.py"),
               "--precision", precision, "--batch", str(BATCH), *common]
    else:
        raise ValueError(f"sequence: expected keras:<policy> or torch:<dtype>, got {spec!r}")
    return _run_child(cmd)


def summarize(results: list[dict], arch: str) -> None:
    """One summary line per Keras policy: both Keras runs, their ratios over torch, RSS."""
    for policy, torch_dtype in TORCH_PRECISION.items():
        runs = [r for r in results if r["framework"] == "keras" and r["precision"] == policy]
        ref = [r for r in results if r["framework"] == "torch" and r["precision"] == torch_dtype]
        if not runs or not ref:
            continue
        t = ref[0]
        emit(figure="train_throughput_summary", arch=arch, precision=policy,
             torch_precision=torch_dtype,
             keras_images_per_s=[r["images_per_s"] for r in runs],
             torch_images_per_s=t["images_per_s"],
             ratio_keras_over_torch=[round(r["images_per_s"] / t["images_per_s"], 3)
                                     for r in runs],
             keras_peak_rss_mb=[r["peak_rss_mb"] for r in runs],
             torch_peak_rss_mb=t["peak_rss_mb"],
             rss_ratio_keras_over_torch=[round(r["peak_rss_mb"] / t["peak_rss_mb"], 3)
                                         for r in runs],
             keras_load_avg_1m=[r["load_avg_1m"] for r in runs], torch_load_avg_1m=t["load_avg_1m"],
             speed_target=SPEED_TARGET,
             meets_speed=all(r["images_per_s"] >= SPEED_TARGET * t["images_per_s"] for r in runs),
             meets_rss=all(r["peak_rss_mb"] <= t["peak_rss_mb"] for r in runs))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (tracing included)")
    p.add_argument("--wrn-depth", type=int, default=16)
    p.add_argument("--wrn-width", type=int, default=4)
    p.add_argument("--threads", type=int, default=THREADS, help="intra-op threads, both sides")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic batch")
    p.add_argument("--torch-python", default="/tmp/torchvenv/bin/python",
                   help="a python with torch for the reference (never a dependency)")
    p.add_argument("--sequence", default=",".join(DEFAULT_SEQUENCE),
                   help="comma-separated framework:precision measurements, in order")
    p.add_argument("--jit", action="store_true", help="Keras children compile with jit_compile")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        emit(**keras_child(args))
        return
    arch = f"cdvae_cifar+wrn-{args.wrn_depth}-{args.wrn_width}"
    results = []
    for order, spec in enumerate(args.sequence.split(",")):
        result = measure(spec, args)
        results.append(result)
        emit(**{**result, "figure": "train_throughput_measurement", "arch": arch, "order": order,
                "batch": BATCH})
    summarize(results, arch)


if __name__ == "__main__":
    main()
