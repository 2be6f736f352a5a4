"""``tfdefense reproduce --jobs N``: the experiments of one run in N worker processes at a time.

One process keeps two cores only about 115% busy (a quick run spends much of its time in
small ops, Python and single-threaded scoring), so independent experiments run side by side
in separate processes, each a fresh ``python -m tfdefense.report_jobs`` that runs ONE
experiment with the same preset, settings and output folder as a one-process run:

* the cache (``out/cache``) is shared: ``Context`` takes an inter-process lock per cached
  file, so a model two experiments need is trained once (the second waits, then loads it);
* an experiment that reads another's cached sets without going through that lock names it
  in ``register(after=...)`` (Fig 4 after Table II) and starts only once it has finished;
* the longest work starts first (``register(cost=...)``, rough quick-preset seconds: Table II
  and Table 7 before the short tables), so the two processes end close together;
* each worker writes ``out/parts/<name>/`` (its log, its profile line, and ``part.pkl``: the
  ``Result``, the recipes of the models it trained or loaded, the defenses it saved); this
  process gathers them into the one ``report.md`` / ``results.json`` in report order,
  rewritten as each experiment finishes, exactly as ``reproduce`` writes them;
* an experiment whose worker dies (killed, out of memory) is reported FAILED with the tail of
  its log, never skipped; Ctrl-C stops the workers (the cache keeps what they finished).

Every experiment seeds what it draws (models from ``keras.utils.set_random_seed``, attacks
and defenses from their own seeds), so its numbers do not depend on which process or order
it ran in: ``tests/test_report_jobs.py`` and the kept quick report check that.

With ``--profile`` the run's ``profile.jsonl`` has each worker's experiment line (``worker``:
its slot, ``started_s``: when it started after the run began) and a ``total`` line whose
``seconds`` is the wall clock, whose phase seconds are summed over the workers (so they add
up to more than the wall clock: that surplus is the parallelism) and whose ``peak_rss_mb``
is the largest worker's peak (``parent_peak_rss_mb``: this process's own).

Example (the order two workers take a few experiments in; ``tfdefense reproduce --preset quick
--jobs 2 --out report/`` runs them all, ``reproduce_jobs`` is the same from Python):
    >>> from tfdefense.experiments.registry import after_of, cost_of
    >>> names = ["cdvae_table1", "cdvae_table7", "fm_table2", "fm_fig4"]
    >>> queue = order_of_runs(names, {n: after_of(n) for n in names},
    ...                       {n: cost_of(n) for n in names})
    >>> queue  # Fig 4 waits for Table II, so Table II's work counts Fig 4's too
    [['fm_table2'], ['cdvae_table7'], ['cdvae_table1'], ['fm_fig4', 'fm_table2']]
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: how often the scheduler looks at its workers (seconds)
POLL_S = 0.5
#: lines of a dead worker's log quoted in its FAILED result
LOG_TAIL_LINES = 40


@dataclass
class WorkerSpec:
    """What one worker runs: one experiment of one run (all JSON-able, passed on its command line)."""

    name: str
    preset: str
    out: str
    overrides: dict[str, Any]
    profile: bool = False
    precision: str | None = None
    strategy: str = "default"
    cpu_devices: int | None = None
    imports: tuple[str, ...] = ()

    @property
    def folder(self) -> str:
        """``out/parts/<name>``: this worker's log, profile and result."""
        return os.path.join(self.out, "parts", self.name)


def order_of_runs(names: Sequence[str], after: dict[str, tuple[str, ...]],
                  cost: dict[str, float] | None = None) -> list[list[str]]:
    """The queue: each name with the names among ``names`` it must wait for, longest work
    first. An experiment's work is its ``cost`` plus the longest work waiting for it (so
    Table II, which Fig 4 waits for, counts Fig 4 too); ties keep report order.

    Raises ``ValueError`` on a cycle (it could never start).

    Example:
        >>> order_of_runs(["a", "b", "c"], {"c": ("a", "x")}, {"a": 1, "b": 5, "c": 6})
        [['a'], ['c', 'a'], ['b']]
        >>> order_of_runs(["a", "b"], {"a": ("b",), "b": ("a",)})
        Traceback (most recent call last):
        ...
        ValueError: after: the experiments a, b wait for each other
    """
    cost = cost or {}
    wanted = set(names)
    waits = {n: [d for d in after.get(n, ()) if d in wanted] for n in names}
    done: list[str] = []
    while True:  # peel off what can start; a remainder is a cycle
        ready = [n for n in names if n not in done and all(d in done for d in waits[n])]
        if not ready:
            break
        done.extend(ready)
    stuck = [n for n in names if n not in done]
    if stuck:
        raise ValueError(f"after: the experiments {', '.join(stuck)} wait for each other")
    work: dict[str, float] = {}
    for n in reversed(done):  # those waiting for n come later in ``done``
        work[n] = cost.get(n, 0.0) + max((work[m] for m in names if n in waits[m]), default=0.0)
    queue = sorted(names, key=lambda n: (-work[n], names.index(n)))
    return [[n, *waits[n]] for n in queue]


def _command(spec: WorkerSpec) -> list[str]:
    return [sys.executable, "-m", "tfdefense.report_jobs", json.dumps(spec.__dict__)]


def _log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _read_part(spec: WorkerSpec, returncode: int, seconds: float, ctx) -> dict[str, Any]:
    """The worker's part, or a FAILED result when it wrote none (it died)."""
    from tfdefense.report import failed_result

    path = os.path.join(spec.folder, "part.pkl")
    if returncode == 0 and os.path.isfile(path):
        with open(path, "rb") as fh:
            return pickle.load(fh)
    log = os.path.join(spec.folder, "log.txt")
    try:  # raised and caught so the result's traceback field is filled as for any failure
        raise RuntimeError(f"its worker process exited with code {returncode} before writing "
                           f"a result; the last lines of {log}:\n{_log_tail(log)}")
    except RuntimeError as exc:
        result = failed_result(spec.name, ctx, exc, seconds)
    return {"result": result, "failed": True, "recipes": {}, "saved_defenses": {}}


def reproduce_jobs(preset: str = "quick", out: str = "report", jobs: int = 2,
                   only: Sequence[str] | None = None, overrides: dict[str, Any] | None = None,
                   log: Callable[..., None] = print, profile: bool = False,
                   precision: str | None = None, strategy: str = "default",
                   cpu_devices: int | None = None, imports: Sequence[str] = ()):
    """Run the experiments (all registered, or ``only``) in up to ``jobs`` worker processes at a
    time and write the report into ``out``, as ``report.reproduce`` would (module docstring).

    ``precision``, ``strategy``, ``cpu_devices``: what each worker enters, as the CLI's options
    of the same names; ``imports``: modules each worker imports first (e.g. one registering
    more experiments). Raises ``ValueError`` for ``jobs < 1``, an unknown preset or experiment
    name, or experiments that wait for each other (``register(after=...)``), before any work.
    Returns a ``report.Reproduction``.
    """
    from tfdefense import profiling
    from tfdefense.cli import import_user_modules

    import_user_modules(list(imports))  # what they register must be known here too
    from tfdefense.experiments import Context
    from tfdefense.experiments.registry import after_of, cost_of
    from tfdefense.report import Reproduction, experiment_names, write_report

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs: expected an integer >= 1, got {jobs!r}")
    ctx = Context(preset, out, overrides)
    names = experiment_names(only)
    queue = order_of_runs(names, {n: after_of(n) for n in names}, {n: cost_of(n) for n in names})
    specs = {n: WorkerSpec(n, preset, out, dict(overrides or {}), profile, precision, strategy,
                           cpu_devices, tuple(imports)) for n in names}
    parts: dict[str, dict[str, Any]] = {}
    running: dict[str, tuple[subprocess.Popen, float, int, Any]] = {}
    start = time.perf_counter()
    profiling.reset_peak_rss()

    def rewrite() -> dict[str, str]:
        """The report of what has finished, in report order."""
        done = [n for n in names if n in parts]
        return write_report(ctx, [parts[n]["result"] for n in done],
                            [n for n in done if parts[n]["failed"]], time.perf_counter() - start)

    try:
        while queue or running:
            free = [slot for slot in range(jobs) if slot not in {r[2] for r in running.values()}]
            for entry in list(queue):
                if not free:
                    break
                name, *waits = entry
                if any(w not in parts for w in waits):
                    continue
                queue.remove(entry)
                spec = specs[name]
                os.makedirs(spec.folder, exist_ok=True)
                for stale in ("part.pkl", "profile.jsonl"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(spec.folder, stale))
                logfile = open(os.path.join(spec.folder, "log.txt"), "w", encoding="utf-8")
                proc = subprocess.Popen(_command(spec), stdout=logfile, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
                slot = free.pop(0)
                running[name] = (proc, time.perf_counter(), slot, logfile)
                log(f"[reproduce] {name} ... (worker {slot}, pid {proc.pid}, log "
                    f"{os.path.join(spec.folder, 'log.txt')})")
            finished = [n for n, (proc, *_rest) in running.items() if proc.poll() is not None]
            for name in finished:
                proc, began, slot, logfile = running.pop(name)
                logfile.close()
                seconds = time.perf_counter() - began
                parts[name] = _read_part(specs[name], proc.returncode, seconds, ctx)
                ctx.recipes.update(parts[name]["recipes"])  # its models' recipe tables
                ctx.saved_defenses.update(parts[name]["saved_defenses"])
                if parts[name].get("profile"):
                    parts[name]["profile"].update(worker=slot, started_s=began - start)
                if parts[name]["failed"]:
                    log(f"[reproduce] {name} FAILED: {parts[name]['result'].notes[0]}")
                else:
                    log(f"[reproduce] {name} done in {parts[name]['result'].seconds:.0f} s")
                rewrite()
            if not finished:
                time.sleep(POLL_S)
    except BaseException:  # Ctrl-C or an error here: no worker outlives the run
        for proc, *_rest in running.values():
            proc.terminate()
        for proc, *_rest in running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            if proc.poll() is None:
                proc.kill()
        raise
    files = rewrite()
    seconds = time.perf_counter() - start
    results = [parts[n]["result"] for n in names]
    failed = [n for n in names if parts[n]["failed"]]
    log(f"[reproduce] wrote {files['report']} and {files['results']} ({seconds:.0f} s, "
        f"{jobs} jobs)")
    if profile:
        lines = merged_profile([parts[n] for n in names], names, seconds, jobs,
                               profiling.rusage_peak_mb())
        path = os.path.join(out, "profile.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(profiling.rounded(line)) + "\n" for line in lines)
        files["profile"] = path
        log(f"[reproduce] profile ({path}):\n{profiling.table(lines)}")
    return Reproduction(results, failed, files, seconds)


def merged_profile(parts: Sequence[dict[str, Any]], names: Sequence[str], seconds: float,
                   jobs: int, parent_peak_mb: float) -> list[dict[str, Any]]:
    """The run's profile lines: each worker's experiment line, then the ``total`` line
    (module docstring). A worker that wrote no line (it died) has one with its status only.

    Example:
        >>> a = {"profile": {"experiment": "a", "status": "ok", "seconds": 3.0, "train_s": 2.0,
        ...      "attack_s": 1.0, "score_s": 0.0, "write_s": 0.0, "other_s": 0.0,
        ...      "peak_rss_mb": 900.0, "peak_rss_source": "VmHWM", "worker": 0, "started_s": 0.1}}
        >>> b = {"profile": {**a["profile"], "experiment": "b", "train_s": 0.0, "attack_s": 3.0,
        ...      "peak_rss_mb": 1200.0, "worker": 1}}
        >>> total = merged_profile([a, b], ["a", "b"], 3.5, 2, 300.0)[-1]
        >>> total["seconds"], total["train_s"], total["attack_s"], total["peak_rss_mb"]
        (3.5, 2.0, 4.0, 1200.0)
    """
    from tfdefense.profiling import ALL_PHASES

    lines = []
    for name, part in zip(names, parts):
        line = part.get("profile")
        lines.append(dict(line) if line else {"scope": "experiment", "experiment": name,
                                               "status": "failed", "seconds": 0.0,
                                               **{f"{p}_s": 0.0 for p in ALL_PHASES}})
    peaks = [line["peak_rss_mb"] for line in lines if line.get("peak_rss_mb") is not None]
    total = {"scope": "run", "experiment": "total",
             "status": "ok" if all(line.get("status") == "ok" for line in lines) else "failed",
             "seconds": seconds, "jobs": jobs,
             **{f"{p}_s": sum(line[f"{p}_s"] for line in lines) for p in ALL_PHASES},
             "peak_rss_mb": max(peaks) if peaks else None,
             "parent_peak_rss_mb": parent_peak_mb,
             "peak_rss_source": "largest worker's VmHWM"}
    return [*lines, total]


# ------------------------------------------------------------------ the worker
def share_gpus(config=None) -> int:
    """Let this worker's TensorFlow take GPU memory as it needs it (memory growth) instead of
    all of it at start, TensorFlow's default, under which a second worker on the same GPUs
    would fail to allocate. Must run before TensorFlow touches a GPU; returns the number of
    GPUs set (0 on a CPU host). ``config``: ``tf.config`` (a stand-in in the tests).

    Example:
        >>> share_gpus()  # this machine has no GPU
        0
    """
    if config is None:
        import tensorflow as tf

        config = tf.config
    gpus = config.list_physical_devices("GPU")
    for gpu in gpus:
        config.experimental.set_memory_growth(gpu, True)
    return len(gpus)


def run_worker(spec: WorkerSpec) -> int:
    """Run ``spec``'s experiment in this process and write its part (``part.pkl``); the exit
    code is 0 whenever the part was written, the experiment's failure included (it is in
    the part, as ``reproduce`` records one)."""
    from tfdefense import profiling
    from tfdefense.cli import import_user_modules
    from tfdefense.distribute import get_strategy, precision_scope

    share_gpus()
    import_user_modules(list(spec.imports))
    from tfdefense.experiments import Context
    from tfdefense.report import run_experiments

    os.makedirs(spec.folder, exist_ok=True)
    ctx = Context(spec.preset, spec.out, spec.overrides)
    profiler = (profiling.Profiler(os.path.join(spec.folder, "profile.jsonl"))
                if spec.profile else None)
    with contextlib.ExitStack() as stack:
        if spec.strategy != "default" or spec.cpu_devices is not None:
            stack.enter_context(get_strategy(spec.strategy, cpu_devices=spec.cpu_devices).scope())
        stack.enter_context(precision_scope(spec.precision))
        if profiler is not None:
            stack.enter_context(profiler.active())
        results, failed = run_experiments(ctx, [spec.name])
    line = next((x for x in profiler.lines if x.get("scope") == "experiment"), None) \
        if profiler is not None else None
    part = {"result": results[0], "failed": bool(failed), "recipes": ctx.recipes,
            "saved_defenses": ctx.saved_defenses, "profile": line}
    tmp = os.path.join(spec.folder, "part.pkl.partial")
    with open(tmp, "wb") as fh:
        pickle.dump(part, fh)
    os.replace(tmp, os.path.join(spec.folder, "part.pkl"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 1:
        raise SystemExit("usage: python -m tfdefense.report_jobs '<WorkerSpec as JSON>' "
                         "(started by `tfdefense reproduce --jobs N`)")
    fields = json.loads(argv[0])
    fields["imports"] = tuple(fields.get("imports", ()))
    return run_worker(WorkerSpec(**fields))


if __name__ == "__main__":
    sys.exit(main())
