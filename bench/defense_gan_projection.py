"""Defense-GAN projection throughput: all restarts in one graph vs a loop over restarts.

Prints one JSON line per figure: images/s of the batched projection, images/s
of the restart-by-restart loop (same starting codes, same descent code), and
their ratio, all measured in this run. The generator is Defense-GAN's MNIST
generator at the paper's size (latent 128, width 64); its weights are
untrained, which does not change the arithmetic. Inputs are mnist_5k test
images. Each mode runs once untimed first, so tracing is not counted; timed
runs alternate between the modes so that load from other processes hits both
alike, and process CPU seconds are reported beside wall seconds (on a shared
machine wall time overstates the cost).

    python bench/defense_gan_projection.py --images 16 --iterations 50 --restarts 10
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import emit  # noqa: E402

from tfdefense import data  # noqa: E402
from tfdefense.baselines import DefenseGAN, defense_gan_generator  # noqa: E402
from tfdefense.nets import small_cnn  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images per projection batch")
    parser.add_argument("--iterations", type=int, default=50, help="L (paper: 200)")
    parser.add_argument("--restarts", type=int, default=10, help="R (paper: 10)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per mode (best kept)")
    parser.add_argument("--width", type=int, default=64, help="generator width (paper: 64)")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    model = DefenseGAN(defense_gan_generator(width=args.width), small_cnn(),
                       iterations=args.iterations, restarts=args.restarts,
                       batch_size=args.images)
    x = data.load_arrays("mnist_5k", "test")[0][: args.images]
    common = {"images": args.images, "iterations": args.iterations, "restarts": args.restarts,
              "latent_dim": model.latent_dim, "width": args.width, "data": "mnist_5k test",
              "tf": tf.__version__, "cpus": os.cpu_count(), "machine": platform.machine()}

    modes = {"batched_restarts": True, "loop_over_restarts": False}
    for batched in modes.values():
        model.project(x, progress=False, batched=batched)  # trace
    wall = dict.fromkeys(modes, float("inf"))
    cpu = dict.fromkeys(modes, float("inf"))
    for _ in range(args.repeats):
        for mode, batched in modes.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            model.project(x, progress=False, batched=batched)
            wall[mode] = min(wall[mode], time.perf_counter() - start)
            cpu[mode] = min(cpu[mode], time.process_time() - start_cpu)
    for mode in modes:
        emit(figure="projection_images_per_s", mode=mode,
             value=round(args.images / wall[mode], 3), wall_seconds=round(wall[mode], 3),
             images_per_cpu_s=round(args.images / cpu[mode], 3),
             cpu_seconds=round(cpu[mode], 3), **common)
    emit(figure="batched_over_loop_speedup",
         value=round(wall["loop_over_restarts"] / wall["batched_restarts"], 3),
         cpu_value=round(cpu["loop_over_restarts"] / cpu["batched_restarts"], 3), **common)

if __name__ == "__main__":
    main()
