"""``tfdefense reproduce --profile``: phases partition each experiment's wall time, nested
phases count once, peak RSS is per experiment, the chokepoint hooks charge the right phase,
and the CLI flag writes ``OUT/profile.jsonl``."""

import json
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdefense.experiments  # noqa: F401 - the real experiments register before the fixture copies
from tfdefense import profiling
from tfdefense.attacks.autoattack import AutoAttack
from tfdefense.attacks.base import Attack
from tfdefense.cli import main
from tfdefense.experiments import Context, Result, registry
from tfdefense.report import reproduce, run_experiments

PHASE_KEYS = [f"{p}_s" for p in profiling.ALL_PHASES]
#: a sleep lasts at least its time and, on a busy 2-core machine, up to this much more
SLACK = 0.08


def read_lines(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture
def experiments(monkeypatch):
    """Register stub experiments into a copy of the registry, gone after the test."""
    for attr in ("_EXPERIMENTS", "_ORDER", "_DATASETS"):
        monkeypatch.setattr(registry, attr, dict(getattr(registry, attr)))

    def add(name, body):
        @registry.register(name, order=1000, datasets=("mnist",))
        def run(ctx):
            body(ctx)
            return Result(name, name, ctx.preset, ctx.dataset)

        return name

    return add


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


# ------------------------------------------------------------------ the clock, exact
def test_nested_phases_count_once_in_the_innermost_and_score_only_outside_others():
    clock = FakeClock()
    profiler = profiling.Profiler(clock=clock)
    with profiler.active():
        clock.advance(0.5)  # before the experiment: the run's other, not the experiment's
        with profiler.experiment("demo") as line:
            clock.advance(1.0)                    # other
            with profiling.phase("train"):
                clock.advance(2.0)                # train
                with profiling.phase("attack"):
                    clock.advance(4.0)            # attack (innermost), not train
                    with profiling.phase("write"):
                        clock.advance(8.0)        # write (innermost)
                    with profiling.phase("score"):
                        clock.advance(16.0)       # score inside attack: attack
                clock.advance(32.0)               # train again
            with profiling.phase("score"):
                clock.advance(64.0)               # score at top level: score
        clock.advance(128.0)  # after: the run's other
    # train 2 + 32, attack 4 + 16, write 8, score 64, other 1: 127 = the experiment's seconds
    assert {k: line[k] for k in ["seconds", *PHASE_KEYS]} == {
        "seconds": 127.0, "train_s": 34.0, "attack_s": 20.0, "score_s": 64.0, "write_s": 8.0,
        "other_s": 1.0}
    run = profiler.lines[-1]
    assert (run["experiment"], run["scope"], run["seconds"], run["other_s"]) == (
        "total", "run", 0.5 + 127.0 + 128.0, 0.5 + 1.0 + 128.0)


def test_two_experiments_split_the_run_and_a_failure_is_marked():
    clock = FakeClock()
    profiler = profiling.Profiler(clock=clock)
    with profiler.active():
        with profiler.experiment("a"):
            with profiling.phase("train"):
                clock.advance(3.0)
        with profiler.experiment("b") as line:
            with profiling.phase("attack"):
                clock.advance(5.0)
            line["status"] = "failed"
    a, b, run = profiler.lines
    assert (a["train_s"], a["attack_s"], a["status"]) == (3.0, 0.0, "ok")
    assert (b["train_s"], b["attack_s"], b["status"]) == (0.0, 5.0, "failed")
    assert (run["train_s"], run["attack_s"], run["seconds"], run["status"]) == (3.0, 5.0, 8.0, "failed")


def test_an_uncaught_error_marks_the_experiment_failed_and_restores_the_phases():
    clock = FakeClock()
    profiler = profiling.Profiler(clock=clock)
    with profiler.active():
        with pytest.raises(KeyError), profiler.experiment("broken"):
            with profiling.phase("train"):
                clock.advance(2.0)
                raise KeyError("x")
        clock.advance(1.0)  # no phase left open: the run's other
    broken, run = profiler.lines
    assert (broken["status"], broken["train_s"]) == ("failed", 2.0)
    assert (run["train_s"], run["other_s"]) == (2.0, 1.0)


def test_misuse_is_a_clear_error():
    profiler = profiling.Profiler()
    with profiler.active():
        with pytest.raises(ValueError, match="phase: expected one of train"):
            profiling.phase("training")
        with pytest.raises(RuntimeError, match="already active"), profiling.Profiler().active():
            pass
        with profiling.phase("train"), pytest.raises(RuntimeError, match="inside phase 'train'"):
            with profiler.experiment("x"):
                pass
    with pytest.raises(ValueError, match="timed: expected one of"):
        profiling.timed("scoring")


def test_phases_of_another_thread_are_ignored():
    clock = FakeClock()
    profiler = profiling.Profiler(clock=clock)

    def other_thread():
        with profiling.phase("attack"):
            clock.advance(7.0)

    with profiler.active(), profiler.experiment("demo") as line:
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert (line["attack_s"], line["other_s"]) == (0.0, 7.0)


def test_off_costs_one_shared_no_op_context():
    assert profiling.active() is None
    assert profiling.phase("train") is profiling.phase("attack")
    calls = 100_000
    start = time.perf_counter()
    for _ in range(calls):
        with profiling.phase("attack"):
            pass
    per_call = (time.perf_counter() - start) / calls
    assert per_call < 5e-6  # about 0.3 µs on the 2-core test machine; a real timer would show


# ------------------------------------------------------------------ through reproduce
def test_reproduce_profile_partitions_each_experiments_wall_time(tmp_path, experiments):
    def body(ctx):
        with profiling.phase("train"):
            time.sleep(0.20)
            with profiling.phase("attack"):
                time.sleep(0.10)
        with profiling.phase("write"):
            time.sleep(0.05)
        time.sleep(0.05)  # other

    name = experiments("profile_sleeps", body)
    logged = []
    run = reproduce("quick", str(tmp_path), only=[name], profile=True, log=logged.append)
    line, total = read_lines(run.files["profile"])
    assert run.files["profile"] == str(tmp_path / "profile.jsonl")
    assert (line["experiment"], line["scope"], line["status"]) == (name, "experiment", "ok")
    for key, slept in [("train_s", 0.20), ("attack_s", 0.10), ("write_s", 0.05), ("other_s", 0.05)]:
        assert slept <= line[key] + 1e-3 <= slept + SLACK, (key, line[key])
    assert line["score_s"] == 0.0
    # partition: the six rounded values (3 decimals) add up to the seconds within rounding
    assert abs(sum(line[k] for k in PHASE_KEYS) - line["seconds"]) <= 0.003
    assert abs(sum(total[k] for k in PHASE_KEYS) - total["seconds"]) <= 0.003
    assert total["experiment"] == "total" and total["seconds"] >= line["seconds"]
    # the run's report writes (after the experiment and at the end) are the run's, not its
    assert total["write_s"] > line["write_s"]
    assert any("profile (" in msg and name in msg and "attack" in msg for msg in logged)


def test_profiling_off_writes_no_profile(tmp_path, experiments):
    name = experiments("profile_off", lambda ctx: None)
    run = reproduce("quick", str(tmp_path), only=[name], log=lambda *_: None)
    assert "profile" not in run.files and not (tmp_path / "profile.jsonl").exists()


class SleepingAttack(Attack):
    """Returns x after sleeping, so the attack phase has a known length."""

    name = "sleeping"

    def _attack_batch(self, model, x, y, seed):
        time.sleep(0.05)
        return x


def test_the_chokepoint_hooks_charge_train_attack_and_write(tmp_path, experiments):
    def model_fn(images):
        return tf.zeros((tf.shape(images)[0], 3))

    tiny = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])  # built outside: 0 s

    def body(ctx):
        def build_and_train():
            time.sleep(0.10)
            return tiny

        ctx.cached_model("tiny", build_and_train)  # train 0.10, then its save: write
        x = np.zeros((4, 2, 2, 1), np.float32)
        ctx.cached_arrays("adv", lambda: {"x": SleepingAttack(batch_size=2).generate(
            x, model=model_fn)})  # two batches: attack 0.10, then the npz: write

    ctx = Context("quick", str(tmp_path))
    profiler = profiling.Profiler()
    with profiler.active():
        run_experiments(ctx, [experiments("profile_hooks", body)], log=lambda *_: None)
    line = profiler.lines[0]
    assert 0.10 <= line["train_s"] <= 0.10 + SLACK
    assert 0.10 <= line["attack_s"] <= 0.10 + SLACK + 0.2  # plus prepare's model probe
    assert line["write_s"] > 0.0
    assert (tmp_path / "cache" / "tiny.keras").exists() and (tmp_path / "cache" / "adv.npz").exists()


def test_autoattack_run_is_an_attack_phase(monkeypatch):
    def slow_prepare(self, x, y=None, model=None):
        time.sleep(0.05)
        raise ValueError("stop after the sleep")

    monkeypatch.setattr(AutoAttack, "prepare", slow_prepare)
    profiler = profiling.Profiler()
    with profiler.active(), profiler.experiment("aa") as line:
        with pytest.raises(ValueError, match="stop after"):
            AutoAttack(eps=0.1).run(np.zeros((2, 2, 2, 1), np.float32))
    assert 0.05 <= line["attack_s"] <= 0.05 + SLACK


# ------------------------------------------------------------------ memory
def test_peak_rss_rises_with_a_big_array_and_resets_for_the_next_experiment(tmp_path, experiments):
    if not profiling.reset_peak_rss():
        pytest.skip("/proc/self/clear_refs refused: the kernel's VmHWM cannot be reset here")
    mib = 160

    def allocate(ctx):
        big = np.ones(mib * 2**20 // 8)  # float64, every page written
        assert big.sum() > 0
        del big

    first = experiments("profile_big_array", allocate)
    second = experiments("profile_small", lambda ctx: None)
    run = reproduce("quick", str(tmp_path), only=[first, second], profile=True, log=lambda *_: None)
    big, small, total = read_lines(run.files["profile"])
    assert big["peak_rss_source"] == small["peak_rss_source"] == "VmHWM"
    assert big["peak_rss_mb"] - big["rss_start_mb"] >= 0.9 * mib
    # reset between them: the second's peak is its own, well below the first's
    assert small["peak_rss_mb"] <= big["peak_rss_mb"] - 0.8 * mib
    assert total["peak_rss_mb"] >= big["peak_rss_mb"]


def test_without_a_resettable_high_water_mark_the_line_says_ru_maxrss(monkeypatch):
    monkeypatch.setattr(profiling, "reset_peak_rss", lambda: False)
    profiler = profiling.Profiler()
    with profiler.active(), profiler.experiment("demo") as line:
        pass
    assert line["peak_rss_source"] == "ru_maxrss"
    assert line["peak_rss_mb"] == pytest.approx(profiling.rusage_peak_mb(), abs=1.0)


# ------------------------------------------------------------------ the command line
def test_cli_profile_writes_the_file_and_prints_the_table(tmp_path, experiments, capsys):
    name = experiments("profile_cli", lambda ctx: time.sleep(0.01))
    out = tmp_path / "run"
    assert main(["reproduce", "--only", name, "--profile", "--out", str(out)]) == 0
    lines = read_lines(out / "profile.jsonl")
    assert [(x["experiment"], x["scope"]) for x in lines] == [(name, "experiment"), ("total", "run")]
    assert set(lines[0]) >= {"experiment", "seconds", *PHASE_KEYS, "peak_rss_mb", "rss_start_mb",
                             "peak_rss_source"}
    printed = capsys.readouterr().out
    assert "peak MB" in printed and json.loads(printed[printed.index("{"):])["report"]["profile"]
    assert not profiling.is_requested()  # the request ends with the command


def test_cli_profile_refuses_combine_only(tmp_path, capsys):
    assert main(["reproduce", "--seeds", "2", "--combine-only", "--profile",
                 "--out", str(tmp_path)]) == 2
    assert "--profile and --combine-only" in capsys.readouterr().err


def test_attacks_run_by_evaluate_robustness_and_adversarial_sets_are_attack_time(tmp_path):
    from tfdefense.attacks import evaluate_robustness

    def model_fn(images):
        return tf.zeros((tf.shape(images)[0], 3))

    x, y = np.zeros((4, 2, 2, 1), np.float32), np.zeros(4, np.int64)
    profiler = profiling.Profiler()
    with profiler.active(), profiler.experiment("eval") as line:
        # two batches of 0.05 s each, uncached then through an AdversarialSet
        evaluate_robustness(model_fn, (x, y), {"s": SleepingAttack(batch_size=2)}, verbose=False)
        evaluate_robustness(model_fn, (x, y), {"s": SleepingAttack(batch_size=2)}, verbose=False,
                            cache_dir=tmp_path, fingerprint="f")
    assert 0.20 <= line["attack_s"] <= 0.20 + SLACK + 0.2
    assert line["write_s"] > 0.0  # the set's batch files
