"""FM-Defense's morph engine: batched vs naive, its FLOP rate, float32 vs bfloat16.

Prints one JSON line per figure (issue 18 item 4), each with the 1-minute load average
at that moment; every ratio compares two measurements of this run:

* ``engine_vs_naive``: images/s of ``MorphEngine.resistance`` (S codes × n morphs per
  image decoded and classified in one compiled graph) against the naive loop, one image,
  one code, one morph at a time through decoder and classifier (eager Keras calls,
  ``MorphEngine.resistance_naive``); target ≥ 100×. ``bf16_ratio``: the bfloat16 engine
  against the same float32 loop.
* ``engine_flop_share``: the engine's achieved GFLOP/s (decoder + classifier FLOPs of
  every morph, Dense / Conv2D / Conv2DTranspose counted layer by layer; the encoder pass
  and C(x), once per image, are left out) against this machine's float32 matmul rate
  (1024² matmuls); target ≥ 70%.
* ``bf16_vs_fp32_speed``: the same engine with ``compute_dtype="bfloat16"`` against
  float32, images/s; target ≥ 1.5×. ``onednn_bf16_kernels``: the oneDNN implementations
  its convolutions and pooling ran with (``avx512_core_bf16`` on a CPU with AVX512-BF16).
* ``bf16_vs_fp32_decisions``: FM-Defense's decisions (accepted / purified / rejected) of
  the float32 and the bfloat16 detector on mnist_5k test images and their FGSM versions
  (ε = 0.3), with the quick preset's models (``tfdefense.experiments.fm_models``: classifier,
  combo-VAE, 8 most active codes × 20 morphs, ρ = 0.95, η = 0.9; trained on the first run
  and cached under ``--out``); the bfloat16 detector is the float32 one with
  ``compute_dtype`` changed in its config (the same θ_r, θ_d: the option flipped on a
  fitted, saved detector); ``refit_agreement`` refits θ on bfloat16 validation resistances
  instead. Its images/s ratio on these models is a figure too. Target ≥ 99% agreement.

The first three use untrained nets of the paper's size (throughput does not depend on the
weights): Table I's ``fm_encoder``/``fm_decoder`` with m = 20 and ``small_cnn`` (width 32),
on uniform noise. Each timing is the best of ``--repeats`` passes after a warm-up pass,
float32 and bfloat16 passes interleaved so that both see the same load. On a shared
machine the wall-clock figures move with the other processes' load; ``cpu_share``,
``cpu_ratio`` and ``cpu_speed_ratio`` give the same comparisons per second of this
process's CPU time (both engines and the matmul use the same two threads), which the
load moves much less; ``engine_vs_naive``'s ``cpu_ratio`` charges the engine both cores'
time against the naive loop's one (it is about half the wall ratio on a quiet machine).

    python bench/morphs.py --codes 20 --morphs 100 --images 32 --naive-images 1 --out /tmp/fm
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import emit  # noqa: E402

from tfdefense.detect import ResistanceDetector  # noqa: E402
from tfdefense.detect.morphs import MorphEngine  # noqa: E402
from tfdefense.models import DGMM, ComboVAE  # noqa: E402
from tfdefense.nets import small_cnn  # noqa: E402


def model_flops(model) -> int:
    """Multiply-adds × 2 of Dense, Conv2D and Conv2DTranspose layers for one example."""
    total = 0
    for layer in model.layers:
        name = type(layer).__name__
        if name == "Dense":
            total += 2 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
        elif name == "Conv2D":
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            total += 2 * h * w * c_out * kh * kw * c_in
        elif name == "Conv2DTranspose":
            _, h, w, c_in = layer.input.shape
            kh, kw, c_out, _ = layer.kernel.shape
            total += 2 * h * w * c_in * kh * kw * c_out
    return int(total)


def matmul_rates(n: int = 1024, repeats: int = 20) -> tuple[float, float]:
    """This machine's float32 matmul rate: ``repeats`` chained n × n matmuls in one graph;
    (GFLOP per wall second, GFLOP per second of this process's CPU time)."""
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))

    @tf.function
    def mm(a, b):
        out = a
        for _ in range(repeats):
            out = tf.matmul(out, b) * 1e-3
        return out

    mm(a, b).numpy()
    wall, cpu = time.perf_counter(), time.process_time()
    mm(a, b).numpy()
    flops = 2 * n**3 * repeats / 1e9
    return flops / (time.perf_counter() - wall), flops / (time.process_time() - cpu)


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """This machine's float32 matmul rate, GFLOP per wall second."""
    return matmul_rates(n, repeats)[0]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def images_per_s(fn, x) -> tuple[float, float]:
    """Images of ``x`` per wall second and per second of this process's CPU time in ``fn(x)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(x)
    return len(x) / (time.perf_counter() - wall), len(x) / (time.process_time() - cpu)


def best_rates(fns: dict, x, repeats: int) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) images/s of each ``fns[name](x)`` over ``repeats`` interleaved passes
    (after one warm-up pass each, which also traces)."""
    for fn in fns.values():
        fn(x[: min(len(x), 32)])
    rates = {name: (0.0, 0.0) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            rates[name] = tuple(map(max, rates[name], images_per_s(fn, x)))
    return rates


def paper_size_engines(args) -> tuple[dict[str, MorphEngine], int, np.ndarray]:
    """float32 and bfloat16 engines on untrained paper-size nets, FLOPs per morph, images."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((max(args.images, 2), 28, 28, 1), dtype="float32")
    dgmm = DGMM.for_dataset("mnist_5k", feature_dim=10, seed=0)
    vae = ComboVAE.for_dataset("mnist_5k", dgmm, latent_dim=20, discriminator_units=8,
                               discriminator_depth=1, seed=0)
    clf = small_cnn((28, 28, 1), 10)
    engines = {d: MorphEngine(vae, clf, codes=list(range(args.codes)), n_morphs=args.morphs,
                              chunk_size=args.chunk_size, compute_dtype=d).fit(x)
               for d in ("float32", "bfloat16")}
    return engines, model_flops(vae.decoder) + model_flops(clf), x


_ONEDNN_PROBE = """
import tensorflow as tf
from tfdefense.detect.morphs import mixed_bfloat16_clone
from tfdefense.nets import fm_nets, small_cnn
dec, clf = (mixed_bfloat16_clone(m) for m in (fm_nets.fm_decoder(20, 10),
                                              small_cnn((28, 28, 1), 10, width=16)))
tf.function(lambda z, u: clf(dec([z, u])))(tf.zeros((8, 20)), tf.zeros((8, 10)))
"""


def onednn_bf16_kernels() -> list[str]:
    """oneDNN's implementations of the bfloat16 engine's convolutions and pooling on this
    machine (a child process with ``ONEDNN_VERBOSE=1``), e.g. ``brg_conv_fwd:avx512_core_bf16``."""
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    run = subprocess.run([sys.executable, "-c", _ONEDNN_PROBE], env=env, capture_output=True,
                         text=True, timeout=300)
    kernels = {line.split(",")[6] for line in run.stdout.splitlines()
               if line.startswith("onednn_verbose") and ",exec,cpu," in line
               and line.split(",")[5] in ("convolution", "pooling")}
    return sorted(kernels)


def throughput_figures(args) -> None:
    engines, per_morph, x = paper_size_engines(args)
    common = {"codes": args.codes, "morphs": args.morphs, "images": args.images,
              "batch_size": args.batch_size, "chunk_size": args.chunk_size,
              "data": "uniform noise 28x28x1",
              "nets": "untrained fm_encoder/fm_decoder (Table I, m=20) + small_cnn(width 32)"}
    fns = {d: (lambda xs, e=e: e.resistance(xs, batch_size=args.batch_size))
           for d, e in engines.items()}
    peak = matmul_rates()
    rates = best_rates(fns, x[: args.images], args.repeats)
    peak = tuple(map(max, peak, matmul_rates()))  # before and after, the better of each
    naive, naive_cpu = images_per_s(engines["float32"].resistance_naive, x[: args.naive_images])
    (fp32, fp32_cpu), (bf16, bf16_cpu) = rates["float32"], rates["bfloat16"]
    emit(figure="engine_vs_naive", batched_images_per_s=round(fp32, 3),
         naive_images_per_s=round(naive, 5), naive_images=args.naive_images,
         ratio=round(fp32 / naive, 1), target=100, bf16_ratio=round(bf16 / naive, 1),
         cpu_ratio=round(fp32_cpu / naive_cpu, 1), load_average=load(), **common)
    flops = args.codes * args.morphs * per_morph / 1e9  # GFLOP per image
    emit(figure="engine_flop_share", engine_gflops=round(fp32 * flops, 2),
         matmul_gflops=round(peak[0], 2), share=round(fp32 * flops / peak[0], 3), target=0.7,
         cpu_share=round(fp32_cpu * flops / peak[1], 3), flops_per_morph=per_morph,
         load_average=load(), **common)
    emit(figure="bf16_vs_fp32_speed", fp32_images_per_s=round(fp32, 3),
         bf16_images_per_s=round(bf16, 3), ratio=round(bf16 / fp32, 3), target=1.5,
         cpu_ratio=round(bf16_cpu / fp32_cpu, 3), bf16_gflops=round(bf16 * flops, 2),
         onednn_bf16_kernels=onednn_bf16_kernels(), load_average=load(), **common)


def fgsm(classifier, x, y, eps: float, batch_size: int = 200) -> np.ndarray:
    """FGSM (Goodfellow et al. 2015) on the classifier's cross-entropy, images clipped to [0, 1]."""
    out = []
    for i in range(0, len(x), batch_size):
        xb = tf.constant(x[i: i + batch_size])
        with tf.GradientTape() as tape:
            tape.watch(xb)
            loss = keras.losses.sparse_categorical_crossentropy(
                y[i: i + batch_size], classifier(xb, training=False), from_logits=True)
        out.append(tf.clip_by_value(xb + eps * tf.sign(tape.gradient(loss, xb)), 0.0, 1.0))
    return np.concatenate([o.numpy() for o in out])


def quick_detectors(out: str) -> tuple[dict[str, ResistanceDetector], object]:
    """The quick preset's fitted float32 detector and its bfloat16 twin, and the run context."""
    from tfdefense.experiments import Context, fm_models

    ctx = Context("quick", out)
    with ctx.on_dataset("mnist"):
        det, _ = fm_models.detector(ctx)
    config = det.get_config()
    config["engine"]["compute_dtype"] = "bfloat16"
    twin = ResistanceDetector.from_parts(config, det.components(), det.state())
    return {"float32": det, "bfloat16": twin}, ctx


def decision_figures(args) -> None:
    out = args.out or tempfile.mkdtemp(prefix="bench_morphs_")
    dets, ctx = quick_detectors(out)
    with ctx.on_dataset("mnist"):
        xt, yt = ctx.arrays("test", limit=args.agreement_images)
        xv, _ = ctx.arrays("validation")
    x = np.concatenate([xt, fgsm(dets["float32"].engine.classifier, xt, yt, args.eps)])
    rates = best_rates({d: det.resistance for d, det in dets.items()}, x, args.repeats)
    r = {d: det.resistance(x) for d, det in dets.items()}
    decisions = {d: dets[d].decide_resistance(r[d]) for d in dets}
    same = decisions["float32"] == decisions["bfloat16"]
    refit = ResistanceDetector(dets["bfloat16"].engine, rho=dets["float32"].rho,
                               eta=dets["float32"].eta).fit_resistance(
        dets["bfloat16"].resistance(xv))
    refit_same = refit.decide_resistance(r["bfloat16"]) == decisions["float32"]
    engine = dets["float32"].engine
    counts = {d: np.bincount(decisions[d], minlength=3).tolist() for d in dets}
    emit(figure="bf16_vs_fp32_decisions", agreement=round(float(same.mean()), 4),
         disagreements=int((~same).sum()), decisions=len(same),
         clean_agreement=round(float(same[: len(xt)].mean()), 4),
         fgsm_agreement=round(float(same[len(xt):].mean()), 4),
         refit_agreement=round(float(refit_same.mean()), 4),
         resistance_entries_equal=round(float((r["float32"] == r["bfloat16"]).mean()), 4),
         max_resistance_change=float(np.abs(r["float32"] - r["bfloat16"]).max()),
         decision_counts_accepted_purified_rejected=counts, target=0.99,
         fp32_images_per_s=round(rates["float32"][0], 2),
         bf16_images_per_s=round(rates["bfloat16"][0], 2),
         speed_ratio=round(rates["bfloat16"][0] / rates["float32"][0], 3),
         cpu_speed_ratio=round(rates["bfloat16"][1] / rates["float32"][1], 3),
         data=f"mnist_5k test[:{len(xt)}] + FGSM eps {args.eps}",
         models="quick preset (fm_models): small_cnn width 16, combo-VAE m=20",
         codes=len(engine.codes), morphs=engine.n_morphs, load_average=load())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", type=int, default=20)
    p.add_argument("--morphs", type=int, default=100)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--chunk-size", type=int, default=2048)
    p.add_argument("--naive-images", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed passes, the best counts")
    p.add_argument("--agreement-images", type=int, default=400,
                   help="mnist_5k test images (each also as FGSM) for the decision agreement")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--out", default=None,
                   help="folder caching the quick preset's models (default: a new temp folder)")
    p.add_argument("--only", choices=["throughput", "decisions"], default=None)
    args = p.parse_args()
    if args.only != "decisions":
        throughput_figures(args)
    if args.only != "throughput":
        decision_figures(args)


if __name__ == "__main__":
    main()
