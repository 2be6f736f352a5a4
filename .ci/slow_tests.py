"""Run the slow tests file by file, only while each file's expected time fits before CI's deadline.

CI rejects a run past 90 minutes, whatever the host. ``.ci/run`` runs the default suite, then
calls this script with the moment it started and the seconds the default suite took. Each slow
test's expected time comes from ``.ci/durations.json``: the seconds it took on the host that
recorded it and that host's default-suite time, so the expectation is scaled by how much slower
or faster this host ran the same default suite. Files with a test marked ``ci_first`` (what an open
issue requires CI to show, e.g. the presets' dry runs) run before all others; within each group
tests run cheapest first; a test whose expected
time does not fit before the deadline (its file's, as a file's tests run in one process and share
its fixtures) is printed by name as ``not run: time`` (never a silent
pass), a test still running at the deadline is stopped and printed the same way, and a failing
test fails CI. Measured times are written back to the durations file, so a run that completes
refreshes it (commit the file to keep the table current).

Standard library only: it runs before anything else is known to work.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

#: a test with no recorded time is expected to take this long on the recording host (seconds)
UNKNOWN_SECONDS = 900.0
#: scale factors outside this band mean the default-suite time is not a fair speed reading
SCALE_BOUNDS = (0.25, 10.0)


@dataclass
class Plan:
    """One test file's slow tests, run together in one pytest process (they share its fixtures)."""

    path: str
    nodeids: list[str]
    expected: float  # seconds on this host
    known: bool
    first: bool = False  # holds a ``ci_first`` test: runs before every file without one


def collect(python: str, pytest_args: list[str], cwd: Path, marks: str = "slow") -> list[str]:
    """Node ids of the tests ``-m marks`` selects, in pytest's collection order."""
    cmd = [python, "-m", "pytest", "-m", marks, "--collect-only", "-q", "-p", "no:cacheprovider",
           *pytest_args]
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if out.returncode not in (0, 5):
        sys.stdout.write(out.stdout + out.stderr)
        raise SystemExit(f"ci: collecting the slow tests failed (exit {out.returncode})")
    ids = []
    for line in out.stdout.splitlines():  # one node id per line, then a blank line and the summary
        if not line.strip():
            break
        ids.append(line.strip())
    return [i for i in ids if "::" in i]


def load_durations(path: Path) -> dict:
    if not path.exists():
        return {"tests": {}}
    table = json.loads(path.read_text())
    table.setdefault("tests", {})
    return table


def speed_scale(entry_suite: float | None, suite_now: float | None) -> float:
    """How much longer than on the recording host a test should take here."""
    if not entry_suite or not suite_now:
        return 1.0
    lo, hi = SCALE_BOUNDS
    return min(hi, max(lo, suite_now / entry_suite))


def plan(nodeids: list[str], table: dict, suite_now: float | None,
         first: frozenset[str] = frozenset()) -> list[Plan]:
    """Per test file, its slow tests and their expected seconds on this host: files holding a
    test of ``first`` (the ``ci_first`` ones) before the others, each group cheapest first.

    A file's expectation is the sum of its tests' recorded times (fixtures included: the first
    test of a file pays for the models it trains), each scaled by this host's speed.
    """
    files: dict[str, list[str]] = {}
    for nodeid in nodeids:
        files.setdefault(nodeid.split("::")[0], []).append(nodeid)
    plans = []
    for path, ids in files.items():
        entries = [table["tests"].get(i) for i in ids]
        known = all(e is not None for e in entries)
        expected = sum(UNKNOWN_SECONDS if e is None else
                       e["seconds"] * speed_scale(e.get("default_suite_seconds"), suite_now)
                       for e in entries)
        plans.append(Plan(path, ids, expected, known, any(i in first for i in ids)))
    return sorted(plans, key=lambda p: (not p.first, p.expected, p.path))


def run_file(python: str, p: Plan, pytest_args: list[str], cwd: Path,
             timeout: float) -> dict[str, tuple[str, float | None]] | None:
    """{nodeid: ('passed' | 'failed' | 'skipped', seconds)} from the run's JUnit report; None if stopped.

    The tests' own output goes to our stdout. A test the report does not name (a crash of the
    whole process, a collection error) counts as failed.
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        cmd = [python, "-m", "pytest", *p.nodeids, "-q", "-p", "no:cacheprovider",
               f"--junitxml={report}", "-o", "junit_family=xunit1", *pytest_args]
        proc = subprocess.Popen(cmd, cwd=cwd, start_new_session=True)
        try:
            proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the tests' own children (kernels, workers) too
            proc.wait()
            return None
        results = _junit_results(report) if report.exists() else {}
    return {i: results.get(i, ("failed", None)) for i in p.nodeids}


def suite_seconds(report: Path) -> int:
    """pytest's own time for a run, from its JUnit report (the install is not in it)."""
    root = ET.parse(report).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return round(float(suite.get("time")))


def _junit_results(report: Path) -> dict[str, tuple[str, float]]:
    """Node id -> (status, seconds with setup and teardown) from an xunit1 JUnit report."""
    out = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        # xunit1 names the file and the test; a test in a class has "module.Class" as classname
        cls = case.get("classname", "").rsplit(".", 1)
        parts = [case.get("file")] + ([cls[1]] if len(cls) == 2 and cls[1][:1].isupper() else [])
        nodeid = "::".join([*parts, case.get("name")])
        bad = any(child.tag in ("failure", "error") for child in case)
        skipped = any(child.tag == "skipped" for child in case)
        out[nodeid] = ("failed" if bad else "skipped" if skipped else "passed", float(case.get("time", 0)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=float, required=True, help="epoch seconds when CI started")
    ap.add_argument("--deadline", type=float, default=55 * 60, help="seconds after --start (55 min)")
    ap.add_argument("--suite-report", type=Path, default=None,
                    help="the default suite's JUnit report on this host (its time scales the expectations)")
    ap.add_argument("--durations", type=Path, default=Path(__file__).with_name("durations.json"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--cwd", type=Path, default=Path.cwd())
    ap.add_argument("--reserve", type=float, default=30.0,
                    help="seconds kept free before the deadline (process start, writing the table)")
    ap.add_argument("pytest_args", nargs="*",
                    help="extra pytest options (after --), not paths: each test is run by its node id")
    args = ap.parse_args(argv)

    suite = suite_seconds(args.suite_report) if args.suite_report else None
    if suite is not None:
        print(f"ci: default suite passed: pytest {suite} s, "
              f"{time.time() - args.start:.0f} s with the install", flush=True)
    table = load_durations(args.durations)
    nodeids = collect(args.python, args.pytest_args, args.cwd)
    plans = plan(nodeids, table, suite, frozenset(collect(args.python, args.pytest_args, args.cwd,
                                                          "slow and ci_first")))
    print(f"ci: {len(nodeids)} slow tests in {len(plans)} files "
          f"({sum(p.first for p in plans)} first: ci_first); "
          f"{args.deadline - (time.time() - args.start):.0f} s left "
          f"before the {args.deadline / 60:.0f}-minute deadline", flush=True)
    outcome: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": [], "not run": []}
    for p in plans:
        left = args.deadline - (time.time() - args.start) - args.reserve
        guess = "" if p.known else ", no recorded time for some"
        if p.expected > left:
            for nodeid in p.nodeids:
                print(f"ci: not run: time {nodeid} (its file expected {p.expected:.0f} s{guess}, "
                      f"{max(left, 0):.0f} s left)", flush=True)
            outcome["not run"] += p.nodeids
            continue
        print(f"ci: running {p.path}: {len(p.nodeids)} slow tests (expected {p.expected:.0f} s{guess}"
              f"{', ci_first' if p.first else ''})",
              flush=True)
        t0 = time.monotonic()
        results = run_file(args.python, p, args.pytest_args, args.cwd, left)
        if results is None:
            for nodeid in p.nodeids:
                print(f"ci: not run: time {nodeid} (stopped at the deadline after "
                      f"{time.monotonic() - t0:.0f} s)", flush=True)
            outcome["not run"] += p.nodeids
            continue
        for nodeid, (status, seconds) in results.items():
            if seconds is None:
                print(f"ci: failed {nodeid}: not in pytest's report (crash or collection error)")
                outcome["failed"].append(nodeid)
                continue
            print(f"ci: {status} {nodeid} in {seconds:.0f} s", flush=True)
            outcome[status].append(nodeid)
            table["tests"][nodeid] = {"seconds": round(seconds, 2),
                                      "default_suite_seconds": suite}
    table["tests"] = dict(sorted(table["tests"].items()))
    args.durations.write_text(json.dumps(table, indent=1) + "\n")
    ran = len(outcome["passed"]) + len(outcome["failed"]) + len(outcome["skipped"])
    if outcome["failed"]:
        print("ci: failed: " + " ".join(outcome["failed"]))
    skipped = f", {len(outcome['skipped'])} skipped" if outcome["skipped"] else ""
    print(f"ci: {ran} of {len(nodeids)} slow tests ran ({len(outcome['passed'])} passed, "
          f"{len(outcome['failed'])} failed{skipped}), {len(outcome['not run'])} not run: time")
    return 1 if outcome["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
