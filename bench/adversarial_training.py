"""Throughput of ``AdversarialCDVAE.fit`` vs ``CDVAE.fit``: the cost of K attack steps per batch.

Same data (mnist_5k train, repeated), same batch, same architecture (the 28x28
CD-VAE, d = 32, latent 64, ``small_cnn`` for D and D_G). Every model is traced
and warmed up once, then timed through ``model.fit`` in interleaved rounds (so
load from other processes on a shared machine hits all of them alike); each
round times ``--steps`` batches after one warm-up batch. One JSON line per figure:

* ``cdvae_fit``: ``CDVAE.fit`` images/s (median over rounds);
* ``adversarial_cdvae_fit``, one per K in ``--attack-steps``: ``AdversarialCDVAE.fit``
  images/s with K PGD steps per batch, ``slowdown_vs_cdvae`` (CD-VAE images/s over
  this one's) and ``cdvae_steps_per_attack_step``: the extra time per attack step
  in units of one CD-VAE step, ((t_adv - t_cdvae) / K) / t_cdvae;
* ``adversarial_train_step_graph_mode``: the attack inside ``train_step`` runs in
  graph mode. A spy on ``defended_logits`` (the attack's forward pass) records,
  each time Python runs it, whether TF was executing eagerly and in which graph.
  Under ``fit`` it must run only while tracing (never eagerly), not again on later
  batches, and inside a ``while_body`` graph: the K steps are one ``tf.while_loop``,
  not K unrolled copies (the calls per trace do not grow with K). A control with
  ``run_eagerly=True`` shows the spy does see eager calls when they happen.

Usage:
    python bench/adversarial_training.py --steps 5 --rounds 3 --attack-steps 2 5 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import emit, peak_rss_mb  # noqa: E402

from tfdefense import data, nets  # noqa: E402
from tfdefense.models import CDVAE, AdversarialCDVAE  # noqa: E402


class _BatchTimer(keras.callbacks.Callback):
    """Seconds from the end of the first batch of a ``fit`` call to the end of its last."""

    def __init__(self):
        super().__init__()
        self.seen, self.start, self.end = 0, None, None

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        now = time.perf_counter()
        if self.seen == 1:
            self.start = now
        self.end = now


def timed_fit(model: keras.Model, ds: tf.data.Dataset, steps: int) -> float:
    """Seconds per batch over ``steps`` batches after one warm-up batch, through ``model.fit``."""
    timer = _BatchTimer()
    model.fit(ds.take(steps + 1), epochs=1, verbose=0, callbacks=[timer])
    return (timer.end - timer.start) / steps


def build_base(batch_norm_warmup: tf.data.Dataset) -> tuple[CDVAE, keras.Model]:
    keras.utils.set_random_seed(0)
    base = CDVAE.for_dataset("mnist_5k", seed=0)
    base.compile()
    base.fit(batch_norm_warmup, epochs=1, verbose=0)  # a "pre-trained" CD-VAE, built
    d_g = nets.small_cnn((28, 28, 1), 10, name="d_g")
    return base, d_g


def adversarial(base: CDVAE, d_g: keras.Model, k: int, **compile_kwargs) -> AdversarialCDVAE:
    model = AdversarialCDVAE.from_cdvae(base, keras.models.clone_model(d_g), eps=0.3, attack_steps=k)
    model.compile(**compile_kwargs)
    return model


def throughput(args, ds, base, d_g) -> None:
    models = {0: base}  # K = 0: the plain CD-VAE
    for k in args.attack_steps:
        models[k] = adversarial(base, d_g, k)
    for model in models.values():  # trace and warm up
        timed_fit(model, ds, 2)
    times = {k: [] for k in models}
    for _ in range(args.rounds):
        for k, model in models.items():
            times[k].append(timed_fit(model, ds, args.steps))
    common = {
        "batch": args.batch,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
    }
    t0 = statistics.median(times[0])
    emit(
        figure="cdvae_fit",
        images_per_s=round(args.batch / t0, 1),
        seconds_per_step_median=round(t0, 4),
        seconds_per_step_all=[round(t, 4) for t in times[0]],
        **common,
    )
    for k in args.attack_steps:
        t = statistics.median(times[k])
        emit(
            figure="adversarial_cdvae_fit",
            attack_steps=k,
            images_per_s=round(args.batch / t, 1),
            seconds_per_step_median=round(t, 4),
            seconds_per_step_all=[round(s, 4) for s in times[k]],
            slowdown_vs_cdvae=round(t / t0, 2),
            cdvae_steps_per_attack_step=round((t - t0) / k / t0, 2),
            peak_rss_mb=round(peak_rss_mb()),
            **common,
        )


def _spy(model: AdversarialCDVAE, calls: list) -> None:
    """Record (eager?, graph name) each time Python runs the model's D_G(G(x))."""
    original = model.defended_logits

    def spy(*a, **kw):
        graph = "" if tf.executing_eagerly() else tf.compat.v1.get_default_graph().name
        calls.append((tf.executing_eagerly(), graph))
        return original(*a, **kw)

    model.defended_logits = spy


def graph_mode_check(args, base, d_g) -> None:
    batch = 16
    x, y = data.load_arrays("mnist_5k", "train")
    ds = tf.data.Dataset.from_tensor_slices((x[: batch * 8], y[: batch * 8])).batch(batch)
    per_trace, detail = {}, {}
    for k in sorted({1, *args.attack_steps}):
        calls: list = []
        model = adversarial(base, d_g, k)
        _spy(model, calls)
        model.fit(ds.take(2), epochs=1, verbose=0)
        first = len(calls)
        model.fit(ds.take(6), epochs=1, verbose=0)  # 3x the batches: no new Python calls in graph mode
        per_trace[k] = first
        detail[k] = {
            "python_calls_first_fit_2_batches": first,
            "python_calls_second_fit_6_batches": len(calls) - first,
            "eager_calls": sum(eager for eager, _ in calls),
            "attack_in_while_body": any("while_body" in g for _, g in calls),
        }
    k = max(detail)
    control: list = []
    eager_model = adversarial(base, d_g, k, run_eagerly=True)
    _spy(eager_model, control)
    eager_model.fit(ds.take(3), epochs=1, verbose=0)
    control_eager = sum(eager for eager, _ in control)
    passed = (
        all(
            d["eager_calls"] == 0
            and d["python_calls_second_fit_6_batches"] == 0
            and d["attack_in_while_body"]
            for d in detail.values()
        )
        and len(set(per_trace.values())) == 1
        and control_eager >= 3
    )
    emit(
        figure="adversarial_train_step_graph_mode",
        passed=passed,
        run_eagerly=False,
        per_attack_steps={str(k): v for k, v in detail.items()},
        python_calls_per_trace_independent_of_k=len(set(per_trace.values())) == 1,
        control_run_eagerly_true={
            "attack_steps": k,
            "batches": 3,
            "eager_calls": control_eager,
            "python_calls": len(control),
        },
    )
    if not passed:
        raise SystemExit("adversarial_train_step_graph_mode: the attack did not run as a graph")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="timed batches per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument(
        "--attack-steps",
        type=int,
        nargs="+",
        default=[5, 10],
        help="K: PGD steps per training batch (official CIFAR-10: 10)",
    )
    p.add_argument("--skip-throughput", action="store_true", help="only the graph-mode check")
    args = p.parse_args()
    ds = data.load("mnist_5k", "train").repeat().batch(args.batch, drop_remainder=True)
    base, d_g = build_base(ds.take(2))
    if not args.skip_throughput:
        throughput(args, ds, base, d_g)
    graph_mode_check(args, base, d_g)


if __name__ == "__main__":
    main()
