"""Where a reproduction's time and memory go: ``tfdefense reproduce --profile``.

A :class:`Profiler` splits the wall time of every experiment into phases and
records its peak resident memory; ``reproduce`` writes one JSON line per
experiment and a last one for the whole run into ``OUT/profile.jsonl``::

    {"scope": "experiment", "experiment": "cdvae_table3", "status": "ok", "seconds": 31.2,
     "train_s": 24.0, "attack_s": 0.0, "score_s": 0.0, "write_s": 0.4, "other_s": 6.8,
     "peak_rss_mb": 1630.2, "rss_start_mb": 610.5, "peak_rss_source": "VmHWM"}

Phases (:data:`PHASES`), opened by ``with phase(name):`` at the library's chokepoints:

* ``train``: building and fitting a model ``Context.cached_model`` does not find in its cache;
* ``attack``: ``Attack.generate`` and ``AutoAttack.run`` (their own predictions included);
* ``score``: predictions and feature extraction outside attacks, where a scoring function is
  marked ``@timed("score")``;
* ``write``: saving a cached model or array file, a defense (``Context.save_defense``), the
  report (``report.write_report``) and this file;
* ``other``: everything else (data loading, cache loading, metrics, figures, unmarked scoring).

The phases partition the wall time: every interval between two clock readings is
charged to exactly one phase, the innermost one open, so their sum equals ``seconds``
(to rounding) and nested phases count once. An attack run inside training counts as
``attack``, a model saved inside an attack as ``write``. ``score`` is the one exception:
it counts only where no other phase is open (a prediction inside an attack is attack
work, inside training it is training), so ``score_s`` means scoring *outside* attacks.
A phase must not span a ``yield`` (the consumer's work would be charged to it).

Peak memory: before each experiment the kernel's high-water mark is reset
(``5`` into ``/proc/self/clear_refs``, Linux) and ``VmHWM`` of ``/proc/self/status``
read after it, so each line has that experiment's own peak (``peak_rss_source``:
``"VmHWM"``). Where the reset is refused, the line has the process's peak so far from
``resource.getrusage`` (``"ru_maxrss"``): monotone over the run, not per experiment.

Cost: with no profiler active ``phase`` returns one shared do-nothing context (a global
read and a call); with one it reads ``time.perf_counter`` twice per phase. Phases are
opened per call of a chokepoint, never per batch. Only the thread that started the
profiler is timed (a phase opened by another thread is ignored).

Example:
    >>> now = [0.0]  # a fake clock, so the seconds are exact
    >>> profiler = Profiler(clock=lambda: now[0])
    >>> with profiler.active():
    ...     with profiler.experiment("demo") as line:
    ...         with phase("train"):
    ...             now[0] += 2.0
    ...             with phase("attack"):  # innermost: counts as attack, not as train
    ...                 now[0] += 3.0
    ...             with phase("score"):   # inside train: counts as train
    ...                 now[0] += 1.0
    ...         now[0] += 0.5              # no phase open: other
    >>> line["seconds"], line["train_s"], line["attack_s"], line["score_s"], line["other_s"]
    (6.5, 3.0, 3.0, 0.0, 0.5)
    >>> [x["experiment"] for x in profiler.lines]
    ['demo', 'total']
    >>> phase("train") is phase("write")  # no profiler active: one shared no-op
    True
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

#: the measured phases, as the module docstring defines them
PHASES = ("train", "attack", "score", "write")
#: every phase a line reports; ``other`` is the time no phase was open
ALL_PHASES = (*PHASES, "other")
#: phases that count only where no other phase is open (scoring *outside* attacks)
OUTERMOST_ONLY = frozenset({"score"})

_F = TypeVar("_F", bound=Callable[..., Any])

_active: Profiler | None = None


class _NoPhase:
    """The do-nothing context ``phase`` returns when nothing is profiled."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_PHASE = _NoPhase()


class _Phase:
    __slots__ = ("_profiler", "_name")

    def __init__(self, profiler: Profiler, name: str):
        self._profiler, self._name = profiler, name

    def __enter__(self) -> None:
        self._profiler._enter(self._name)

    def __exit__(self, *exc: object) -> None:
        self._profiler._exit()


def phase(name: str) -> _Phase | _NoPhase:
    """``with phase("train"): ...``: charge the block's time to ``name`` (one of
    :data:`PHASES`) in the active profiler; nothing (and almost no cost) when none is."""
    profiler = _active
    if profiler is None or threading.get_ident() != profiler.thread:
        return _NO_PHASE
    if name not in PHASES:
        raise ValueError(f"phase: expected one of {', '.join(PHASES)}, got {name!r}")
    if name in OUTERMOST_ONLY and profiler._stack:
        return _NO_PHASE
    return _Phase(profiler, name)


def timed(name: str) -> Callable[[_F], _F]:
    """Decorator: every call of the function is a ``phase(name)``.

    Example:
        >>> @timed("score")
        ... def logits(x):
        ...     return x
        >>> logits(3)
        3
    """
    if name not in PHASES:
        raise ValueError(f"timed: expected one of {', '.join(PHASES)}, got {name!r}")

    def decorate(fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with phase(name):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def active() -> Profiler | None:
    """The profiler timing this process's phases, if any."""
    return _active


# ------------------------------------------------------------------ memory
def _status_mb(field: str) -> float | None:
    """``field`` (``VmHWM``, ``VmRSS``) of ``/proc/self/status`` in MiB, ``None`` off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-memory high-water mark (``VmHWM``); whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return _status_mb("VmHWM") is not None


def rusage_peak_mb() -> float:
    """The process's peak resident memory so far in MiB (``ru_maxrss``: kB on Linux, bytes on
    macOS); never reset."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def current_rss_mb() -> float | None:
    """The process's resident memory now in MiB (``VmRSS``; ``None`` where unreadable)."""
    return _status_mb("VmRSS")


# ------------------------------------------------------------------ profiler
class Profiler:
    """Phase clock and memory meter of one run; :meth:`experiment` yields each line.

    Args:
        path: JSON-lines file to write (truncated when the profiler becomes active);
            ``None``: keep the lines in :attr:`lines` only.
        clock: seconds as a float (``time.perf_counter``; tests pass a fake one).
    """

    def __init__(self, path: str | None = None, clock: Callable[[], float] = time.perf_counter):
        self.path = path
        self.clock = clock
        self.thread = threading.get_ident()
        self.lines: list[dict[str, Any]] = []
        self.totals = dict.fromkeys(ALL_PHASES, 0.0)
        self._stack: list[str] = []
        self._mark = clock()
        self._run: tuple[tuple[float, dict[str, float]], float | None] | None = None
        self._run_peak = 0.0
        self._resettable = False

    # -- the clock --------------------------------------------------------
    def _charge(self) -> None:
        now = self.clock()
        self.totals[self._stack[-1] if self._stack else "other"] += now - self._mark
        self._mark = now

    def _enter(self, name: str) -> None:
        self._charge()
        self._stack.append(name)

    def _exit(self) -> None:
        self._charge()
        self._stack.pop()

    def _window(self) -> tuple[float, dict[str, float]]:
        self._charge()
        return self._mark, dict(self.totals)

    def _line(self, start: tuple[float, dict[str, float]], rss_start: float | None,
              peak: float, **fields: Any) -> dict[str, Any]:
        end, totals = self._window()
        line: dict[str, Any] = {**fields, "seconds": end - start[0]}
        line.update({f"{p}_s": totals[p] - start[1][p] for p in ALL_PHASES})
        line.update(peak_rss_mb=peak, rss_start_mb=rss_start,
                    peak_rss_source="VmHWM" if self._resettable else "ru_maxrss")
        return line

    # -- memory -----------------------------------------------------------
    def _peak_since_reset(self) -> float:
        peak = _status_mb("VmHWM") if self._resettable else None
        peak = rusage_peak_mb() if peak is None else peak
        self._run_peak = max(self._run_peak, peak)
        return peak

    def _reset_peak(self) -> None:
        if self._resettable:
            self._peak_since_reset()  # keep the run's peak before forgetting it
            self._resettable = reset_peak_rss()

    # -- the run ----------------------------------------------------------
    @contextlib.contextmanager
    def active(self) -> Iterator[Profiler]:
        """Make this the profiler ``phase`` charges; on exit write the run's line."""
        global _active
        if _active is not None:
            raise RuntimeError("profiling: another profiler is already active (one run at a time)")
        if self.path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            open(self.path, "w", encoding="utf-8").close()
        self.thread = threading.get_ident()
        self._resettable = reset_peak_rss()
        self._run = (self._window(), current_rss_mb())
        _active = self
        try:
            yield self
        finally:
            _active = None
            start, rss = self._run
            self._peak_since_reset()  # the run's peak: the highest of every reading
            self._emit(self._line(start, rss, self._run_peak,
                                  scope="run", experiment="total",
                                  status="ok" if all(x.get("status") == "ok" for x in self.lines)
                                  else "failed"))

    @contextlib.contextmanager
    def experiment(self, name: str) -> Iterator[dict[str, Any]]:
        """Time the block as experiment ``name``; yields its line (filled in on exit; set
        ``line["status"] = "failed"`` inside to mark a failure) and writes it."""
        if self._stack:
            raise RuntimeError(f"profiling: experiment {name!r} started inside phase {self._stack[-1]!r}")
        self._reset_peak()
        start, rss = self._window(), current_rss_mb()
        line: dict[str, Any] = {"status": "ok"}
        try:
            yield line
        except BaseException:  # an interrupt or an error the caller did not catch
            line["status"] = "failed"
            raise
        finally:
            measured = self._line(start, rss, self._peak_since_reset(), scope="experiment",
                                  experiment=name, status=line.get("status", "ok"))
            extra = {k: v for k, v in line.items() if k not in measured}
            line.clear()
            line.update(measured, **extra)
            self._emit(line)

    def _emit(self, line: dict[str, Any]) -> None:
        self.lines.append(line)
        if self.path is not None:
            with phase("write"), open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rounded(line)) + "\n")


def rounded(line: dict[str, Any], digits: int = 3) -> dict[str, Any]:
    """``line`` with its floats rounded to ``digits`` decimals (for the file and the table).

    Example:
        >>> rounded({"seconds": 1.23456, "experiment": "demo"}, 2)
        {'seconds': 1.23, 'experiment': 'demo'}
    """
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in line.items()}


def table(lines: list[dict[str, Any]]) -> str:
    """The profile as a plain-text table: seconds per phase and peak RSS per line.

    Example:
        >>> line = {"experiment": "demo", "seconds": 3.0, "train_s": 2.0, "attack_s": 0.5,
        ...         "score_s": 0.0, "write_s": 0.375, "other_s": 0.125, "peak_rss_mb": 612.4,
        ...         "peak_rss_source": "VmHWM"}
        >>> print(table([line]))
        experiment          seconds   train  attack   score   write   other  peak MB
        demo                    3.0     2.0     0.5     0.0     0.4     0.1      612
        (peak MB: VmHWM)
    """
    head = f"{'experiment':<18} {'seconds':>8}" + "".join(f"{p:>8}" for p in ALL_PHASES)
    rows = [head + f"{'peak MB':>9}"]
    for line in lines:
        peak = line.get("peak_rss_mb")
        rows.append(f"{line['experiment']:<18} {line['seconds']:>8.1f}"
                    + "".join(f"{line[f'{p}_s']:>8.1f}" for p in ALL_PHASES)
                    + (f"{peak:>9.0f}" if peak is not None else f"{'–':>9}"))
    sources = sorted({line["peak_rss_source"] for line in lines if "peak_rss_source" in line})
    if sources:
        rows.append(f"(peak MB: {', '.join(sources)})")
    return "\n".join(rows)


# ------------------------------------------------------------------ requests
_requested = False


@contextlib.contextmanager
def requested() -> Iterator[None]:
    """Inside the block every ``report.reproduce`` run that is not told otherwise profiles
    itself (``tfdefense reproduce --profile`` with ``--seeds`` or ``--dry-run``, whose
    runners call ``reproduce`` for it)."""
    global _requested
    previous, _requested = _requested, True
    try:
        yield
    finally:
        _requested = previous


def is_requested() -> bool:
    """Whether a :func:`requested` block is open."""
    return _requested
