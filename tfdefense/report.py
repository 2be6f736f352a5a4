"""``tfdefense reproduce``: run registered experiments and write ``report.md``, figures, ``results.json``.

Every experiment in the registry (or those named) runs with one shared
``Context``, so models are trained once and cached under ``out/cache``; an
interrupted run resumes from what it finished. A failing experiment is
written into the report as FAILED with its error and traceback, and the
others still run. The report puts the paper's numbers beside ours (each
experiment's own table), lists the data, settings and library versions
used and the CPU (model and instruction sets: AVX-512, bf16, AMX), and
shows the training recipe of every model the run trained or loaded: per
field the reference value and its source, ours, and why they differ
(``training_recipes``). ``tfdefense.report_seeds`` runs it under several
seeds and combines the reports.

Example:
    >>> import tempfile
    >>> from tfdefense.experiments import Result, register
    >>> from tfdefense.report import reproduce
    >>> @register("demo_report", order=999)
    ... def demo(ctx):
    ...     return Result("demo_report", "Demo", ctx.preset, ctx.dataset)
    >>> run = reproduce("quick", tempfile.mkdtemp(), only=["demo_report"], log=lambda *_: None)
    >>> [r.name for r in run.results], run.failed
    (['demo_report'], [])
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tfdefense import profiling
from tfdefense.experiments import Context, Result, available, get
from tfdefense.experiments import training_recipes as tr
from tfdefense.experiments.registry import datasets_of
from tfdefense.recipes import RecipeRow, to_markdown


@dataclass
class Reproduction:
    """What ``reproduce`` produced: results in report order, failed names, file paths."""

    results: list[Result]
    failed: list[str]
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def failed_result(name: str, ctx: Context, exc: BaseException, seconds: float) -> Result:
    """A Result that reports an experiment's failure (never a silent skip)."""
    return Result(
        name=name, title=f"{name}: FAILED", preset=ctx.preset,
        dataset=", ".join(ctx.datasets[r] for r in ctx.named_roles(datasets_of(name))) or "–",
        notes=[f"**FAILED** with {type(exc).__name__}: {exc}"],
        measurements={"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()},
        seconds=seconds)


def run_experiments(ctx: Context, names: Sequence[str], log=print,
                    after_each=None) -> tuple[list[Result], list[str]]:
    """Run each named experiment, catching and recording failures.

    ``after_each(results, failed)`` runs after every experiment (``reproduce``
    rewrites the report there, so a long run shows what it has finished). Under an
    active ``profiling.Profiler`` each experiment is one of its windows.
    """
    results, failed = [], []
    profiler = profiling.active()
    for name in names:
        fn = get(name)
        log(f"[reproduce] {name} ...")
        with (profiler.experiment(name) if profiler is not None
              else contextlib.nullcontext({})) as profile_line:
            start = time.perf_counter()
            try:
                result = fn(ctx)
                if not isinstance(result, Result):
                    raise TypeError(f"experiment {name!r} returned {type(result).__name__}, "
                                    "expected Result")
                result.seconds = time.perf_counter() - start
            except Exception as exc:  # noqa: BLE001 - reported, not swallowed
                result = failed_result(name, ctx, exc, time.perf_counter() - start)
                failed.append(name)
                profile_line["status"] = "failed"
                log(f"[reproduce] {name} FAILED: {type(exc).__name__}: {exc}")
            else:
                log(f"[reproduce] {name} done in {result.seconds:.0f} s")
        results.append(result)
        if after_each is not None:
            after_each(results, failed)
    return results, failed


def library_versions() -> dict[str, str]:
    """The versions a report states: tfdefense, TensorFlow, Keras, numpy and Python.

    Example:
        >>> sorted(library_versions())
        ['keras', 'numpy', 'python', 'tensorflow', 'tfdefense']
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from tfdefense import __version__

    return {"tfdefense": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


#: instruction sets the report names: the vector and matrix units whose presence changes the
#: kernels TensorFlow (oneDNN) picks, and so the last bits of a float result
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")
#: the ones whose absence the report states too (AVX-512, its bf16 dot products, AMX)
CPU_FLAGS_ABSENT = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_info(text: str | None = None) -> dict[str, Any]:
    r"""The CPU model, logical CPU count and instruction sets (of :data:`CPU_FLAGS`) of
    ``/proc/cpuinfo`` (or of ``text``, its contents); ``flags`` is ``None`` where the file is
    unreadable (not Linux).

    Example:
        >>> block = "processor\t: {}\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx avx2 fma\n"
        >>> info = cpu_info(block.format(0) + block.format(1))
        >>> info["model"], info["logical_cpus"], info["flags"]
        ('AMD EPYC 7B13', 2, ['avx', 'avx2', 'fma'])
        >>> info["absent"]
        ['avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16', 'amx_int8']
        >>> cpu_line(info)  # doctest: +ELLIPSIS
        'AMD EPYC 7B13 (2 logical CPUs); avx, avx2, fma; no avx512f, avx512_bf16, amx_tile, ...'
    """
    if text is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                text = fh.read()
        except OSError:
            return {"model": platform.processor() or platform.machine() or "unknown",
                    "logical_cpus": os.cpu_count(), "flags": None, "absent": None}
    fields: dict[str, str] = {}
    count = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if not sep:
            continue
        if key == "processor":
            count += 1
        fields.setdefault(key, value.strip())
    # x86: "model name" and "flags"; ARM: "Features" (and no model name unless the kernel names it)
    model = fields.get("model name") or fields.get("hardware") or platform.processor() or "unknown"
    present = set((fields.get("flags") or fields.get("features") or "").split())
    return {"model": model, "logical_cpus": count or os.cpu_count(),
            "flags": [f for f in CPU_FLAGS if f in present],
            "absent": [f for f in CPU_FLAGS_ABSENT if f not in present]}


def cpu_line(info: dict[str, Any]) -> str:
    """The report's one line of :func:`cpu_info` (example there)."""
    line = f"{info['model']} ({info['logical_cpus']} logical CPUs)"
    if info["flags"] is None:
        return line + "; instruction sets unknown (no /proc/cpuinfo)"
    line += "; " + (", ".join(info["flags"]) or f"none of {', '.join(CPU_FLAGS)}")
    return line + (f"; no {', '.join(info['absent'])}" if info["absent"] else "")


def with_relative_figures(result: Result, out: str) -> Result:
    """A copy of ``result`` whose figure paths are relative to the report's folder ``out``
    (paths that are neither absolute nor existing files stay as they are).

    Example:
        >>> r = Result("demo", "Demo", "quick", "mnist_5k", figures={"grid": "/run/figures/grid.png"})
        >>> with_relative_figures(r, "/run").figures
        {'grid': 'figures/grid.png'}
    """
    figures = {k: os.path.relpath(v, out) if os.path.isabs(v) or os.path.exists(v) else v
               for k, v in result.figures.items()}
    return Result(**{**result.__dict__, "figures": figures})


@profiling.timed("write")
def write_report(ctx: Context, results: list[Result], failed: list[str], seconds: float) -> dict[str, str]:
    """Write ``report.md`` and ``results.json`` into ``ctx.out``; return their paths."""
    os.makedirs(ctx.out, exist_ok=True)
    versions, cpu = library_versions(), cpu_info()
    lines = [
        "# tfdefense reproduction report", "",
        f"Preset `{ctx.preset}` on {data_line(ctx)}, {len(results)} experiment(s), "
        f"{len(failed)} failed, {seconds:.0f} s wall clock.", "",
        "Every number in the tables was computed in this run; the paper's number stands beside "
        "ours as `ours (paper X)` or in a `paper` column, never instead of ours. Where the run's "
        "data or models differ from the paper's, each table's notes say how.", "",
        "**Settings**: " + ", ".join(f"`{k}={v}`" for k, v in ctx.settings.items()
                                     if k != "datasets"), "",
        "**Versions**: " + ", ".join(f"{k} {v}" for k, v in versions.items()), "",
        f"**CPU**: {cpu_line(cpu)} (the same versions, settings and seed repeat bit for bit on "
        "one kind of CPU, but the kernels differ with the instruction sets and training amplifies "
        "their round-off, so numbers differ across kinds; `tfdefense reproduce --seeds N` gives "
        "the spread a difference has to exceed)", "",
    ]
    if failed:
        lines += ["**Failed experiments**: " + ", ".join(f"`{n}`" for n in failed), ""]
    lines += ["## Contents", ""]
    lines += [f"- `{r.name}`: {r.title}" + (f" ({r.seconds:.0f} s)" if r.seconds is not None else "")
              for r in results]
    lines.append("")
    for r in results:
        lines.append(with_relative_figures(r, ctx.out).to_markdown())
    lines += recipe_section(ctx)
    report = os.path.join(ctx.out, "report.md")
    atomic_write(report, "\n".join(lines))
    payload: dict[str, Any] = {
        "preset": ctx.preset, "datasets": ctx.datasets, "settings": ctx.settings, "versions": versions,
        "cpu": cpu,
        "seconds": seconds, "failed": failed, "experiments": [r.to_json() for r in results],
        "recipes": {label: [row._asdict() for row in recipe_rows(ctx, entry)]
                    for label, entry in ctx.recipes.items()},
    }
    results_json = os.path.join(ctx.out, "results.json")
    atomic_write(results_json, json.dumps(payload, indent=2, default=str))
    return {"report": report, "results": results_json}


def recipe_rows(ctx: Context, entry: dict[str, Any]) -> list[RecipeRow]:
    """The recipe table (``training_recipes.table``) of one entry of ``ctx.recipes``.

    Example:
        >>> import tempfile
        >>> ctx = Context("paper", tempfile.mkdtemp(), {"at_epochs": 1})
        >>> _ = tr.recipe_for(ctx, "table7_cdvae_at")
        >>> rows = recipe_rows(ctx, ctx.recipes["table7_cdvae_at"])
        >>> [(row.official, row.ours) for row in rows if row.field == "epochs"]
        [(150, 1)]
    """
    return tr.table(ctx.preset, entry["model"], entry["recipe"], entry["overridden"],
                    entry.get("reasons"))


def recipe_section(ctx: Context) -> list[str]:
    """Markdown lines: per model this run trained (or loaded), its recipe table against the
    reference it follows, every difference with its reason (empty if no model was trained).

    Example:
        >>> import tempfile
        >>> ctx = Context("paper", tempfile.mkdtemp())
        >>> _ = tr.recipe_for(ctx, "table7_cdvae_at")
        >>> lines = recipe_section(ctx)
        >>> lines[0], any("| epochs | 150 |" in line for line in lines)
        ('## Training recipes', True)
    """
    if not ctx.recipes:
        return []
    lines = ["## Training recipes", "",
             "Per model: each field of its recipe, the reference value and where it comes from, "
             "ours, and why ours differs (`—`: the reference has no such field or does not state "
             "it). `tfdefense.experiments.training_recipes` holds the recipes.", ""]
    for label, entry in ctx.recipes.items():
        model = entry["model"]
        lines += [f"### `{label}`: {tr.MODELS[model].title}", "",
                  f"Reference: {tr.reference_title(ctx.preset, model)}.", "",
                  to_markdown(recipe_rows(ctx, entry)), ""]
    return lines


def data_line(ctx: Context) -> str:
    """The report header's line of the data each role of ``ctx`` ran on.

    Example:
        >>> import tempfile
        >>> data_line(Context("quick", tempfile.mkdtemp()))  # doctest: +ELLIPSIS
        '`mnist_5k` (for cifar10, mnist); no data for restricted_imagenet, fashion_mnist, celeb_a ...'
    """
    by_name: dict[str, list[str]] = {}
    for role, name in ctx.datasets.items():
        if name is not None:
            by_name.setdefault(name, []).append(role)
    line = "; ".join(f"`{n}` (for {', '.join(r)})" for n, r in by_name.items())
    off = [r for r, n in ctx.datasets.items() if n is None]
    return line + (f"; no data for {', '.join(off)} (their experiments say how to run them)"
                   if off else "")


def atomic_write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through ``path + ".partial"``, so a reader never sees half
    a file (an interrupted run leaves the previous one).

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "report.md")
        >>> atomic_write(path, "# report")
        >>> open(path).read(), os.listdir(os.path.dirname(path))
        ('# report', ['report.md'])
    """
    tmp = path + ".partial"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def experiment_names(only: Sequence[str] | None = None) -> list[str]:
    """The experiments a run runs: ``only``'s, else every registered one, in report order.

    Raises ``ValueError`` (before any work) for none, an unknown name or a repeated one.

    Example:
        >>> experiment_names(["cdvae_table4", "cdvae_table1"])
        ['cdvae_table4', 'cdvae_table1']
    """
    names = list(only) if only else available()
    if not names:
        raise ValueError("only: no experiment registered or named")
    for name in names:
        get(name)  # unknown names fail before any work
    if len(set(names)) != len(names):
        raise ValueError(f"only: expected distinct experiment names, got {names}")
    return names


def reproduce(preset: str = "quick", out: str = "report", only: Sequence[str] | None = None,
              overrides: dict[str, Any] | None = None, log=print,
              context: Context | None = None, profile: bool | None = None) -> Reproduction:
    """Run experiments (all registered, or ``only``) and write the report into ``out``.

    ``context``: run in this one instead of a new ``Context(preset, out, overrides)``
    (the dry run passes its own). ``profile``: also write ``profile.jsonl`` beside the
    report, a line per experiment with its seconds per phase and peak RSS and one for
    the run (``tfdefense.profiling``), and log them as a table; ``None``: as an enclosing
    ``profiling.requested()`` block says (off outside one). Raises ``ValueError`` for an
    unknown preset or experiment name before any work starts.
    """
    ctx = context if context is not None else Context(preset, out, overrides)
    names = experiment_names(only)
    if profile is None:
        profile = profiling.is_requested()
    profiler = profiling.Profiler(os.path.join(ctx.out, "profile.jsonl")) if profile else None
    with profiler.active() if profiler is not None else contextlib.nullcontext():
        start = time.perf_counter()

        def partial(results, failed):
            write_report(ctx, results, failed, time.perf_counter() - start)

        results, failed = run_experiments(ctx, names, log=log, after_each=partial)
        seconds = time.perf_counter() - start
        files = write_report(ctx, results, failed, seconds)
    log(f"[reproduce] wrote {files['report']} and {files['results']} ({seconds:.0f} s)")
    if profiler is not None:
        files["profile"] = profiler.path
        log(f"[reproduce] profile ({profiler.path}):\n{profiling.table(profiler.lines)}")
    return Reproduction(results, failed, files, seconds)
