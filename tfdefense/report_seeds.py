"""``tfdefense reproduce --seeds N``: the same experiments under seeds 0..N-1, and their spread.

Each seed is a whole ordinary run (``report.reproduce``) with the setting ``seed`` = k in its
own folder ``out/seed<k>/`` (its report, results.json, figures and cache), so seed 0 is the
run without ``--seeds`` (the same settings, the same cache fingerprints: an existing run's
folder moved to ``out/seed0`` is reused) and an interrupted run resumes seed by seed.
``out/report.md`` and ``out/results.json`` then combine them, cell by cell
(:func:`combine_cell`): each number of ours becomes ``mean ± std (min–max)`` over the seeds
(std: the sample standard deviation, n − 1), so a reader can tell a difference from noise.

Example:
    >>> combine_cell([97.0, 96.0, 98.0])
    '97.00 ± 1.00 (96.00–98.00)'
    >>> combine_cell(["0.60 (paper 0.95)", "0.62 (paper 0.95)", "0.61 (paper 0.95)"])
    '0.61 ± 0.01 (0.60–0.62) (paper 0.95)'
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfdefense.experiments import Context, Result
from tfdefense.report import (
    Reproduction,
    atomic_write,
    cpu_info,
    cpu_line,
    data_line,
    library_versions,
    recipe_rows,
    recipe_section,
    reproduce,
    with_relative_figures,
)

_NUM = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
#: a cell that is nothing but our numbers: "97.00", "36.44 / 87.77", "0.9657 ± 0.0317"
_NUMERIC = re.compile(rf"^{_NUM.pattern}(?:\s*(?:±|/)\s*{_NUM.pattern})*$")
_PAPER = " (paper "
#: what a cell that cannot be combined says before its per-seed values
PER_SEED = "per seed: "


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def spread(values: Sequence[float], digits: int = 2, style: str = "f") -> str:
    """``mean ± std (min–max)`` of ``values`` (std with n − 1; 0 for one value).

    Example:
        >>> spread([1, 2, 3], digits=1)
        '2.0 ± 1.0 (1.0–3.0)'
    """
    v = np.asarray(values, np.float64)
    std = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    f = f"{{:.{digits}{style}}}"
    return f"{f.format(v.mean())} ± {f.format(std)} ({f.format(v.min())}–{f.format(v.max())})"


def _token_format(tokens: Sequence[str]) -> tuple[int, str]:
    """(decimals, "f" or "e") that print every one of ``tokens`` as the runs printed them."""
    style = "e" if any("e" in t.lower() for t in tokens) else "f"
    decimals = 0
    for t in tokens:
        mantissa = t.lower().split("e")[0]
        decimals = max(decimals, len(mantissa.split(".")[1]) if "." in mantissa else 0)
    return decimals, style


def _spread_tokens(tokens: Sequence[str]) -> str:
    decimals, style = _token_format(tokens)
    values = [float(t) for t in tokens]
    if decimals == 0 and style == "f":  # whole numbers: mean and std get one decimal
        v = np.asarray(values)
        std = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
        return f"{v.mean():.1f} ± {std:.1f} ({v.min():.0f}–{v.max():.0f})"
    return spread(values, decimals, style)


def _split_paper(cell: str) -> tuple[str, str]:
    i = cell.find(_PAPER)
    return (cell, "") if i < 0 else (cell[:i], cell[i:])


def _per_seed(values: Sequence[Any]) -> str:
    from tfdefense.experiments.result import fmt

    return PER_SEED + "; ".join(fmt(v) for v in values)


def combine_cell(values: Sequence[Any], verbatim: bool = False) -> Any:
    """One table cell over seeds (``values``: the cell of each seed's table, in seed order).

    * numbers: ``mean ± std (min–max)``, 2 decimals (as ``Result`` prints them);
    * text that is only our numbers (``"97.00"``, ``"36.44 / 87.77"``), with or without the
      paper's number after it (``" (paper 96.01)"``, kept as it is): each number so, with the
      decimals the runs printed; a ``"a ± b"`` (a mean ± std over images) keeps b as
      ``per image ± mean b``;
    * other text: kept if the same in every seed; if only its numbers differ, those become
      ``mean ± std (min–max)``; else (or where a seed has no number) ``per seed: v0; v1; ...``;
    * ``verbatim`` (row labels, the paper's columns): kept if the same in every seed.

    Example:
        >>> combine_cell(["0.9657 ± 0.0317", "0.9651 ± 0.0301", "0.9645 ± 0.0320"])
        '0.9651 ± 0.0006 (0.9645–0.9657), per image ± 0.0313'
        >>> combine_cell(["12 of 64", "13 of 64", "13 of 64"])
        '12.7 ± 0.6 (12–13) of 64'
        >>> combine_cell([1.5, None, 2.0])
        'per seed: 1.50; –; 2.00'
    """
    values = list(values)
    same = all(v == values[0] for v in values[1:])
    if verbatim or all(v is None for v in values):
        return values[0] if same else _per_seed(values)
    if all(_is_number(v) for v in values):
        if any(math.isnan(float(v)) for v in values):
            return _per_seed(values)
        return spread([float(v) for v in values])
    if not all(isinstance(v, str) for v in values):
        return values[0] if same else _per_seed(values)
    ours, paper = zip(*(_split_paper(v) for v in values))
    skeletons = {_NUM.sub("\0", o) for o in ours}
    if len(skeletons) != 1 or len(set(paper)) != 1:
        return values[0] if same else _per_seed(values)
    skeleton = skeletons.pop()
    numeric = all(_NUMERIC.match(o.strip()) for o in ours)
    if not numeric and same:
        return values[0]
    columns = list(zip(*(_NUM.findall(o) for o in ours)))  # per number: its token in each seed
    pieces = skeleton.split("\0")
    out = pieces[0]
    for i, tokens in enumerate(columns):
        if numeric and pieces[i].endswith("± ") and i > 0:  # "a ± b": b is a spread over images
            out = out[: -len(" ± ")] + ", per image ± " + _mean_token(tokens)
        elif numeric or len(set(tokens)) > 1:
            out += _spread_tokens(tokens)
        else:
            out += tokens[0]
        out += pieces[i + 1]
    return out + paper[0]


def _mean_token(tokens: Sequence[str]) -> str:
    decimals, style = _token_format(tokens)
    return f"{{:.{decimals}{style}}}".format(np.mean([float(t) for t in tokens]))


def combine_measurements(values: Sequence[Any]) -> Any:
    """results.json's measurements over seeds: numbers become ``{"mean", "std", "min", "max",
    "values"}``, dicts combine key by key, anything else is kept if equal, else
    ``{"values": [...]}``.

    Example:
        >>> combine_measurements([{"a": 1.0, "s": "x"}, {"a": 3.0, "s": "x"}])
        {'a': {'mean': 2.0, 'std': 1.41..., 'min': 1.0, 'max': 3.0, 'values': [1.0, 3.0]}, 's': 'x'}
    """
    values = list(values)
    if all(isinstance(v, dict) for v in values):
        keys = list(dict.fromkeys(k for v in values for k in v))
        return {k: combine_measurements([v.get(k) for v in values]) for k in keys}
    if all(_is_number(v) for v in values) and values:
        v = np.asarray(values, np.float64)
        return {"mean": float(v.mean()), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                "min": float(v.min()), "max": float(v.max()), "values": [float(x) for x in v]}
    return values[0] if all(v == values[0] for v in values[1:]) else {"values": values}


def combine_results(results: Sequence[Result], seeds: Sequence[int]) -> Result:
    """One experiment's ``Result`` of every seed (same name) as one: cells by
    :func:`combine_cell` (the first column and the paper's columns verbatim), measurements by
    :func:`combine_measurements`, seed 0's notes and figures, mean seconds. A seed whose run
    failed is left out and named in the notes."""
    ok = [(s, r) for s, r in zip(seeds, results) if r.measurements.get("status") != "failed"]
    failed = [s for s, r in zip(seeds, results) if r.measurements.get("status") == "failed"]
    if not ok:
        return results[0]
    used, rs = [s for s, _ in ok], [r for _, r in ok]
    first = rs[0]
    rows = first.rows
    note = (f"Cells: `mean ± std (min–max)` over seeds {', '.join(map(str, used))} (std with n − 1);"
            " notes and figures are seed "
            f"{used[0]}'s (numbers in the notes are that seed's).")
    if all(len(r.rows) == len(first.rows) for r in rs):
        rows = [{c: combine_cell([r.rows[i].get(c) for r in rs],
                                 verbatim=(j == 0 or c.lower().startswith("paper")))
                 for j, c in enumerate(first.columns)} for i in range(len(first.rows))]
    else:
        note += f" The seeds' tables have different rows ({[len(r.rows) for r in rs]}): seed {used[0]}'s."
    if failed:
        note += " FAILED under seed(s) " + ", ".join(
            f"{s} ({r.measurements.get('error')})" for s, r in zip(seeds, results) if s in failed) + "."
    seconds = [r.seconds for r in rs if r.seconds is not None]
    return Result(first.name, first.title, first.preset, first.dataset, columns=list(first.columns),
                  rows=rows, notes=[note, *first.notes], figures=dict(first.figures),
                  measurements={"seeds": used, "failed_seeds": failed,
                                "seconds_per_seed": seconds,
                                **combine_measurements([r.measurements for r in rs])},
                  seconds=float(np.mean(seconds)) if seconds else None)


def combine_runs(runs: Sequence[Reproduction], seeds: Sequence[int]) -> tuple[list[Result], list[str]]:
    """(combined results in seed 0's order, names that failed under any seed)."""
    names = [r.name for r in runs[0].results]
    by_seed = [{r.name: r for r in run.results} for run in runs]
    results = [combine_results([b[n] for b in by_seed if n in b],
                               [s for s, b in zip(seeds, by_seed) if n in b]) for n in names]
    failed = sorted({n for run in runs for n in run.failed}, key=lambda n: (n not in names, n))
    return results, failed


def write_combined(out: str, contexts: Sequence[Context], runs: Sequence[Reproduction],
                   seconds: float) -> tuple[dict[str, str], list[Result], list[str]]:
    """``out/report.md`` and ``out/results.json`` over the seeds' runs: (their paths, the
    combined results, the experiments that failed under any seed)."""
    os.makedirs(out, exist_ok=True)
    seeds = [ctx.settings["seed"] for ctx in contexts]
    ctx0 = contexts[0]
    results, failed = combine_runs(runs, seeds)
    versions, cpu = library_versions(), cpu_info()
    settings = {k: v for k, v in ctx0.settings.items() if k not in ("datasets", "seed")}
    lines = [
        f"# tfdefense reproduction report, {len(seeds)} seeds", "",
        f"Preset `{ctx0.preset}` on {data_line(ctx0)}, seeds {', '.join(map(str, seeds))} (each a "
        "whole run with the setting `seed` = k, its own report, results and cache in `seed<k>/`), "
        f"{len(results)} experiment(s), {len(failed)} failed in some seed, {seconds:.0f} s wall "
        "clock (per seed: " + ", ".join(f"{r.seconds:.0f} s" for r in runs) + ").", "",
        "Every cell of ours is `mean ± std (min–max)` over the seeds (std: the sample standard "
        "deviation, n − 1); a cell `a ± b` of one run (a mean ± std over images) shows the spread "
        "of a and `per image ± b` (b's mean); the paper's numbers, the same in every seed, stand "
        "as they are; a cell that differs between seeds in more than its numbers lists each "
        "seed's (`per seed: ...`). A difference between two runs is a finding only where it "
        "exceeds this spread. Notes and figures are seed "
        f"{seeds[0]}'s.", "",
        "**Settings** (besides `seed`): " + ", ".join(f"`{k}={v}`" for k, v in settings.items()), "",
        "**Versions**: " + ", ".join(f"{k} {v}" for k, v in versions.items()), "",
        f"**CPU**: {cpu_line(cpu)}", "",
    ]
    if failed:
        lines += ["**Failed experiments** (in some seed): " + ", ".join(f"`{n}`" for n in failed), ""]
    lines += ["## Contents", ""]
    lines += [f"- `{r.name}`: {r.title}" + (f" ({r.seconds:.0f} s per seed)" if r.seconds is not None
                                            else "") for r in results]
    lines.append("")
    lines += [with_relative_figures(r, out).to_markdown() for r in results]
    lines += recipe_section(ctx0)
    report = os.path.join(out, "report.md")
    atomic_write(report, "\n".join(lines))
    payload = {
        "preset": ctx0.preset, "seeds": seeds, "datasets": ctx0.datasets, "settings": settings,
        "versions": versions, "cpu": cpu, "seconds": seconds,
        "seconds_per_seed": [r.seconds for r in runs], "failed": failed,
        "failed_per_seed": {str(s): run.failed for s, run in zip(seeds, runs)},
        "folders": [os.path.relpath(ctx.out, out) for ctx in contexts],
        "experiments": [with_relative_figures(r, out).to_json() for r in results],
        "recipes": {label: [row._asdict() for row in recipe_rows(ctx0, entry)]
                    for label, entry in ctx0.recipes.items()},
    }
    path = os.path.join(out, "results.json")
    atomic_write(path, json.dumps(payload, indent=2, default=str))
    return {"report": report, "results": path}, results, failed


def seed_folder(out: str, seed: int) -> str:
    """Where seed ``seed``'s run lives: ``out/seed<seed>``."""
    return os.path.join(out, f"seed{seed}")


def reproduce_seeds(preset: str = "quick", out: str = "report", seeds: int = 3,
                    only: Sequence[str] | None = None, overrides: dict[str, Any] | None = None,
                    log=print) -> Reproduction:
    """Run the experiments (all, or ``only``) under seeds 0..``seeds``-1, each in
    :func:`seed_folder`, and write the combined report into ``out`` (after every seed from the
    second on, so a long run shows what it has). Returns the combined results; ``failed``:
    experiments that failed under any seed.

    Raises ``ValueError`` for fewer than 2 seeds or a ``seed`` in ``overrides``.
    """
    overrides = dict(overrides or {})
    if not isinstance(seeds, int) or seeds < 2:
        raise ValueError(f"seeds: expected an integer >= 2 (one run needs no --seeds), got {seeds!r}")
    if "seed" in overrides:
        raise ValueError("seeds: the runs take seeds 0..N-1; do not also set `seed`")
    start = time.perf_counter()
    contexts: list[Context] = []
    runs: list[Reproduction] = []
    for seed in range(seeds):
        log(f"[reproduce] seed {seed} ({seed + 1} of {seeds}) in {seed_folder(out, seed)}")
        ctx = Context(preset, seed_folder(out, seed), {**overrides, "seed": seed})
        runs.append(reproduce(preset, ctx.out, only=only, log=log, context=ctx))
        contexts.append(ctx)
        if len(runs) > 1:
            write_combined(out, contexts, runs, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    files, results, failed = write_combined(out, contexts, runs, seconds)
    log(f"[reproduce] wrote {files['report']} and {files['results']} over {seeds} seeds ({seconds:.0f} s)")
    return Reproduction(results, failed, files, seconds)


def load_run(folder: str) -> Reproduction:
    """A finished run's results from ``folder/results.json`` (figure paths made absolute).

    Raises ``ValueError`` when the folder holds no ``results.json``.
    """
    path = os.path.join(folder, "results.json")
    if not os.path.isfile(path):
        raise ValueError(f"seed run: {folder} holds no results.json (run it first)")
    with open(path, encoding="utf-8") as fh:
        payload = json.load(fh)
    results = []
    for entry in payload.get("experiments", []):
        result = Result(**entry)
        result.figures = {k: v if os.path.isabs(v) else os.path.join(folder, v)
                          for k, v in result.figures.items()}
        results.append(result)
    return Reproduction(results, list(payload.get("failed", [])), {"results": path},
                        float(payload.get("seconds") or 0.0))


def combine_saved(preset: str = "quick", out: str = "report", seeds: int = 3,
                  overrides: dict[str, Any] | None = None, log=print) -> Reproduction:
    """Combine the finished runs in ``out/seed0`` .. ``out/seed<N-1>`` without running anything.

    For runs made apart (e.g. ``--set seed=k --out OUT/seed<k>`` on several machines or one
    after another, or seed 0 being a longer run): only the experiments every seed ran are
    combined (a spread needs every seed); the others are named in the log. The combined report
    has no recipe section (each seed's own report has it).

    Example:
        >>> import os, tempfile
        >>> from tfdefense.experiments import Result
        >>> out = tempfile.mkdtemp()
        >>> for seed, value in ((0, 1.0), (1, 3.0)):
        ...     os.makedirs(seed_folder(out, seed))
        ...     r = Result("t", "T", "quick", "mnist_5k", ["row", "acc"], [{"row": "x", "acc": value}])
        ...     with open(os.path.join(seed_folder(out, seed), "results.json"), "w") as fh:
        ...         json.dump({"experiments": [r.to_json()], "seconds": 1.0}, fh)
        >>> combine_saved("quick", out, 2, log=lambda *_: None).results[0].rows[0]["acc"]
        '2.00 ± 1.41 (1.00–3.00)'
    """
    overrides = dict(overrides or {})
    if not isinstance(seeds, int) or seeds < 2:
        raise ValueError(f"seeds: expected an integer >= 2, got {seeds!r}")
    contexts = [Context(preset, seed_folder(out, s), {**overrides, "seed": s}) for s in range(seeds)]
    runs = [load_run(ctx.out) for ctx in contexts]
    common = set.intersection(*({r.name for r in run.results} for run in runs))
    left_out = [r.name for r in runs[0].results if r.name not in common]
    if left_out:
        log(f"[reproduce] not in every seed's run, left out of the spread: {', '.join(left_out)}")
    runs = [Reproduction([r for r in run.results if r.name in common], run.failed, run.files,
                         run.seconds) for run in runs]
    seconds = sum(run.seconds for run in runs)
    files, results, failed = write_combined(out, contexts, runs, seconds)
    log(f"[reproduce] wrote {files['report']} and {files['results']} over {seeds} seeds")
    return Reproduction(results, failed, files, seconds)
