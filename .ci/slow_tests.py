"""Run the slow tests one at a time, only while each one's expected time fits before CI's deadline.

CI rejects a run past 90 minutes, whatever the host. ``.ci/run`` runs the default suite, then
calls this script with the moment it started and the seconds the default suite took. Each slow
test's expected time comes from ``.ci/durations.json``: the seconds it took on the host that
recorded it and that host's default-suite time, so the expectation is scaled by how much slower
or faster this host ran the same default suite. Tests run cheapest first; a test whose expected
time does not fit before the deadline is printed by name as ``not run: time`` (never a silent
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
import time
from dataclasses import dataclass
from pathlib import Path

#: a test with no recorded time is expected to take this long on the recording host (seconds)
UNKNOWN_SECONDS = 900.0
#: scale factors outside this band mean the default-suite time is not a fair speed reading
SCALE_BOUNDS = (0.25, 10.0)


@dataclass
class Plan:
    nodeid: str
    expected: float  # seconds on this host
    known: bool


def collect(python: str, pytest_args: list[str], cwd: Path) -> list[str]:
    """Node ids of the slow tests, in pytest's collection order."""
    cmd = [python, "-m", "pytest", "-m", "slow", "--collect-only", "-q", "-p", "no:cacheprovider",
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


def plan(nodeids: list[str], table: dict, suite_now: float | None) -> list[Plan]:
    """Expected seconds per test on this host, cheapest first."""
    plans = []
    for nodeid in nodeids:
        entry = table["tests"].get(nodeid)
        if entry is None:
            plans.append(Plan(nodeid, UNKNOWN_SECONDS * speed_scale(None, None), False))
            continue
        plans.append(Plan(nodeid, entry["seconds"] * speed_scale(entry.get("default_suite_seconds"),
                                                                 suite_now), True))
    return sorted(plans, key=lambda p: (p.expected, p.nodeid))


def run_one(python: str, nodeid: str, pytest_args: list[str], cwd: Path, timeout: float) -> tuple[str, float]:
    """('passed' | 'failed' | 'stopped', seconds); the test's own output goes to our stdout."""
    cmd = [python, "-m", "pytest", nodeid, "-q", "-p", "no:cacheprovider", *pytest_args]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, start_new_session=True)
    try:
        code = proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the test's own children (kernels, workers) too
        proc.wait()
        return "stopped", time.monotonic() - t0
    return ("passed" if code == 0 else "failed"), time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=float, required=True, help="epoch seconds when CI started")
    ap.add_argument("--deadline", type=float, default=75 * 60, help="seconds after --start (75 min)")
    ap.add_argument("--suite-seconds", type=float, default=None,
                    help="seconds the default suite took on this host (scales the expectations)")
    ap.add_argument("--durations", type=Path, default=Path(__file__).with_name("durations.json"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--cwd", type=Path, default=Path.cwd())
    ap.add_argument("--reserve", type=float, default=30.0,
                    help="seconds kept free before the deadline (process start, writing the table)")
    ap.add_argument("pytest_args", nargs="*",
                    help="extra pytest options (after --), not paths: each test is run by its node id")
    args = ap.parse_args(argv)

    table = load_durations(args.durations)
    nodeids = collect(args.python, args.pytest_args, args.cwd)
    plans = plan(nodeids, table, args.suite_seconds)
    print(f"ci: {len(plans)} slow tests; {args.deadline - (time.time() - args.start):.0f} s left "
          f"before the {args.deadline / 60:.0f}-minute deadline", flush=True)
    outcome: dict[str, list[str]] = {"passed": [], "failed": [], "not run": []}
    for p in plans:
        left = args.deadline - (time.time() - args.start) - args.reserve
        guess = "" if p.known else ", no recorded time"
        if p.expected > left:
            print(f"ci: not run: time {p.nodeid} (expected {p.expected:.0f} s{guess}, "
                  f"{max(left, 0):.0f} s left)", flush=True)
            outcome["not run"].append(p.nodeid)
            continue
        print(f"ci: running {p.nodeid} (expected {p.expected:.0f} s{guess})", flush=True)
        status, seconds = run_one(args.python, p.nodeid, args.pytest_args, args.cwd, left)
        if status == "stopped":
            print(f"ci: not run: time {p.nodeid} (stopped at the deadline after {seconds:.0f} s)", flush=True)
            outcome["not run"].append(p.nodeid)
            continue
        print(f"ci: {status} {p.nodeid} in {seconds:.0f} s", flush=True)
        outcome[status].append(p.nodeid)
        table["tests"][p.nodeid] = {"seconds": round(seconds, 1),
                                    "default_suite_seconds": args.suite_seconds}
    table["tests"] = dict(sorted(table["tests"].items()))
    args.durations.write_text(json.dumps(table, indent=1) + "\n")
    ran = len(outcome["passed"]) + len(outcome["failed"])
    if outcome["failed"]:
        print("ci: failed: " + " ".join(outcome["failed"]))
    print(f"ci: {ran} of {len(plans)} slow tests ran ({len(outcome['passed'])} passed, "
          f"{len(outcome['failed'])} failed), {len(outcome['not run'])} not run: time")
    return 1 if outcome["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
