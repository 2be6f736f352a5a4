"""``reproduce --jobs N`` (tfdefense.report_jobs): experiments in worker processes side by side,
one shared cache taken under a per-file lock, one report in report order."""

import json
import multiprocessing
import os
import textwrap
import time

import numpy as np
import pytest

from tfdefense.experiments import Context
from tfdefense.experiments.context import cache_lock
from tfdefense.report_jobs import order_of_runs, reproduce_jobs

#: a module registering demo experiments; each records (pid, start, end) in ``$JOBS_TRACE/<name>``
DEMO = textwrap.dedent('''
    import json, os, time
    from tfdefense.experiments import Result, register

    def _trace(name, start):
        with open(os.path.join(os.environ["JOBS_TRACE"], name), "w") as fh:
            json.dump({"pid": os.getpid(), "start": start, "end": time.time()}, fh)

    def _demo(name, seconds, value):
        def run(ctx):
            start = time.time()
            time.sleep(seconds)
            _trace(name, start)
            return Result(name, name.upper(), ctx.preset, ctx.dataset, ["row", "acc"],
                          [{"row": "r", "acc": value}], measurements={"acc": value})
        return run

    register("jobs_demo_a", order=901)(_demo("jobs_demo_a", 3.0, 1.5))
    register("jobs_demo_b", order=902)(_demo("jobs_demo_b", 3.0, 2.5))
    register("jobs_demo_c", order=903, after=("jobs_demo_a",))(_demo("jobs_demo_c", 0.0, 3.5))

    @register("jobs_demo_dies", order=904)
    def dies(ctx):
        print("about to die: marker 7f3a", flush=True)
        os._exit(3)

    @register("jobs_demo_raises", order=905)
    def raises(ctx):
        raise ArithmeticError("demo failure 51c2")
''')


@pytest.fixture()
def demo(tmp_path, monkeypatch):
    (tmp_path / "jobs_demo_module.py").write_text(DEMO)
    trace = tmp_path / "trace"
    trace.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBS_TRACE", str(trace))
    return tmp_path, trace


def _trace(folder, name):
    return json.loads((folder / name).read_text())


def test_two_jobs_run_side_by_side_in_their_own_processes_and_after_waits(demo):
    tmp_path, trace = demo
    out = tmp_path / "run"
    run = reproduce_jobs("quick", str(out), jobs=2, imports=["jobs_demo_module"],
                         only=["jobs_demo_a", "jobs_demo_b", "jobs_demo_c"], log=lambda *_: None,
                         profile=True)
    a, b, c = (_trace(trace, n) for n in ("jobs_demo_a", "jobs_demo_b", "jobs_demo_c"))
    assert len({a["pid"], b["pid"], c["pid"], os.getpid()}) == 4
    assert a["start"] < b["end"] and b["start"] < a["end"]  # a and b overlapped
    assert c["start"] >= a["end"]  # c waited for a (register(after=...))
    assert run.failed == []
    assert [r.name for r in run.results] == ["jobs_demo_a", "jobs_demo_b", "jobs_demo_c"]
    results = json.loads((out / "results.json").read_text())
    assert [e["measurements"]["acc"] for e in results["experiments"]] == [1.5, 2.5, 3.5]
    report = (out / "report.md").read_text()
    assert report.index("## JOBS_DEMO_A") < report.index("## JOBS_DEMO_B") < report.index("## JOBS_DEMO_C")
    lines = [json.loads(x) for x in (out / "profile.jsonl").read_text().splitlines()]
    assert [x["experiment"] for x in lines] == ["jobs_demo_a", "jobs_demo_b", "jobs_demo_c", "total"]
    assert sorted(x["worker"] for x in lines[:2]) == [0, 1]
    # the total's phases add up the workers' (3 s asleep each in a and b: "other"), more than the
    # wall clock between a's start and b's end allows one process
    assert lines[-1]["other_s"] >= 6.0 and lines[-1]["jobs"] == 2


def test_a_worker_that_dies_or_raises_is_reported_failed_and_the_others_still_run(demo):
    tmp_path, _trace_dir = demo
    out = tmp_path / "run"
    run = reproduce_jobs("quick", str(out), jobs=2, imports=["jobs_demo_module"],
                         only=["jobs_demo_dies", "jobs_demo_raises", "jobs_demo_c"],
                         log=lambda *_: None)
    assert run.failed == ["jobs_demo_dies", "jobs_demo_raises"]
    results = {e["name"]: e for e in json.loads((out / "results.json").read_text())["experiments"]}
    died = results["jobs_demo_dies"]["measurements"]["error"]
    assert "exited with code 3" in died and "about to die: marker 7f3a" in died
    assert results["jobs_demo_raises"]["measurements"]["error"] == "ArithmeticError: demo failure 51c2"
    assert results["jobs_demo_c"]["measurements"] == {"acc": 3.5}
    assert "**Failed experiments**: `jobs_demo_dies`, `jobs_demo_raises`" in (out / "report.md").read_text()


def test_bad_jobs_and_waiting_cycles_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="jobs: expected an integer >= 1, got 0"):
        reproduce_jobs("quick", str(tmp_path), jobs=0, only=["cdvae_table1"])
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        reproduce_jobs("quick", str(tmp_path), jobs=2, only=["nope"])
    with pytest.raises(ValueError, match="the experiments b, c wait for each other"):
        order_of_runs(["a", "b", "c"], {"b": ("c",), "c": ("b",)})
    assert not (tmp_path / "parts").exists()


def test_the_registry_makes_fig4_wait_for_table2():
    from tfdefense.experiments.registry import after_of

    assert after_of("fm_fig4") == ("fm_table2",)
    assert after_of("fm_fig4_celeb_a") == ("fm_table2_celeb_a",)
    assert after_of("cdvae_table6") == ()


# ---------------------------------------------------------------- the shared cache's lock
def _hold(cache_dir, key, seconds, record):
    with cache_lock(cache_dir, key):
        start = time.time()
        time.sleep(seconds)
        with open(record, "a") as fh:
            fh.write(f"{start} {time.time()}\n")


def _spans(record):
    return sorted(tuple(map(float, line.split())) for line in open(record).read().splitlines())


def test_the_cache_lock_makes_two_processes_take_turns_on_one_key_but_not_on_two(tmp_path):
    ctx = multiprocessing.get_context("fork")
    same, other = tmp_path / "same.txt", tmp_path / "other.txt"
    procs = [ctx.Process(target=_hold, args=(str(tmp_path), "m/x", 0.8, str(same))) for _ in range(2)]
    procs += [ctx.Process(target=_hold, args=(str(tmp_path), f"k{i}", 0.8, str(other))) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    (s1, e1), (s2, e2) = _spans(same)
    assert s2 >= e1  # one key: the second started after the first finished
    (t1, f1), (t2, f2) = _spans(other)
    assert t2 < f1  # two keys: they overlapped


def _make_cached(out, record, result):
    ctx = Context("quick", out)

    def compute():
        with open(record, "a") as fh:
            fh.write("made\n")
        time.sleep(1.0)
        return {"a": np.arange(4) * 3}

    np.save(result, ctx.cached_arrays("shared/arrays", compute)["a"])


def test_two_processes_asking_for_one_cached_file_make_it_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    record = tmp_path / "made.txt"
    procs = [ctx.Process(target=_make_cached, args=(str(tmp_path / "run"), str(record),
                                                    str(tmp_path / f"r{i}.npy"))) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert record.read_text() == "made\n"  # the second process loaded the first one's file
    for i in range(2):
        assert np.load(tmp_path / f"r{i}.npy").tolist() == [0, 3, 6, 9]


@pytest.mark.parametrize("extra, flag", [(["--seeds", "2"], "--seeds"), (["--dry-run"], "--dry-run"),
                                         (["--jobs", "0"], None)])
def test_cli_jobs_refuses_what_one_process_must_run(tmp_path, capsys, extra, flag):
    from tfdefense.cli import main

    jobs = [] if "--jobs" in extra else ["--jobs", "2"]
    assert main(["reproduce", *jobs, *extra, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    if flag:
        assert f"--jobs and {flag}: run {flag} with one process (--jobs 1)" in err
    else:
        assert "--jobs: expected an integer >= 1, got 0" in err
    assert not (tmp_path / "parts").exists()


def test_each_worker_asks_for_gpu_memory_growth_so_two_can_share_a_gpu():
    from types import SimpleNamespace

    from tfdefense.report_jobs import share_gpus

    grown = []
    config = SimpleNamespace(
        list_physical_devices=lambda kind: ["gpu:0", "gpu:1"] if kind == "GPU" else [],
        experimental=SimpleNamespace(set_memory_growth=lambda d, on: grown.append((d, on))))
    assert share_gpus(config) == 2
    assert grown == [("gpu:0", True), ("gpu:1", True)]
