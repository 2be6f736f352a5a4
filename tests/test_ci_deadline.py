"""`.ci/run` keeps CI's deadline: slow tests run only while their expected time fits, by name.

Each test builds a throwaway project (a README whose test command runs pytest, one default test,
slow tests that pass or fail) around a copy of the real `.ci/run` and `.ci/slow_tests.py`, with
this interpreter's environment as its `.venv`, and runs CI on it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

README = """# fake

```bash
echo setup-and-run
.venv/bin/python -m pytest -m "not slow" -q
```
"""

TESTS = '''
import pytest

def test_default():
    assert 1 + 1 == 2

@pytest.mark.slow
def test_slow_passes():
    assert True

@pytest.mark.slow
def test_slow_fails():
    assert 2 + 2 == 5, "a broken slow test"
'''

PASSING = "tests/test_fake.py::test_slow_passes"
FAILING = "tests/test_fake.py::test_slow_fails"


def _project(tmp_path: Path, durations: dict, tests: str = TESTS) -> Path:
    (tmp_path / ".ci").mkdir()
    for name in ("run", "slow_tests.py"):
        shutil.copy(REPO / ".ci" / name, tmp_path / ".ci" / name)
    (tmp_path / ".ci" / "durations.json").write_text(json.dumps({"tests": durations}))
    (tmp_path / "README.md").write_text(README)
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nmarkers = ["slow: slow"]\n')
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_fake.py").write_text(tests)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


def _ci(project: Path, deadline: int = 4500) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST")}
    env["CI_DEADLINE_SECONDS"] = str(deadline)
    return subprocess.run(["bash", ".ci/run"], cwd=project, capture_output=True, text=True, env=env,
                          timeout=300)


def test_slow_tests_that_cannot_fit_are_named_not_run_and_ci_passes(tmp_path):
    # both recorded at an hour on a host whose default suite took as long as this one's: no fit
    project = _project(tmp_path, {PASSING: {"seconds": 3600.0, "default_suite_seconds": None},
                                  FAILING: {"seconds": 3600.0, "default_suite_seconds": None}})
    out = _ci(project, deadline=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout  # the default suite ran
    assert f"ci: not run: time {PASSING}" in out.stdout
    assert f"ci: not run: time {FAILING}" in out.stdout
    last = out.stdout.strip().splitlines()[-1]
    assert last == "ci: 0 of 2 slow tests ran (0 passed, 0 failed), 2 not run: time"


def test_a_failing_slow_test_fails_ci(tmp_path):
    project = _project(tmp_path, {PASSING: {"seconds": 1.0, "default_suite_seconds": None},
                                  FAILING: {"seconds": 2.0, "default_suite_seconds": None}})
    out = _ci(project)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "a broken slow test" in out.stdout
    last = out.stdout.strip().splitlines()[-1]
    assert last == "ci: 2 of 2 slow tests ran (1 passed, 1 failed), 0 not run: time"


def test_cheapest_first_and_the_rest_not_run_when_time_runs_out(tmp_path):
    # 0.5 s fits in what is left of a 90 s deadline; 1000 s does not, so the failing test never runs
    project = _project(tmp_path, {PASSING: {"seconds": 0.5, "default_suite_seconds": None},
                                  FAILING: {"seconds": 1000.0, "default_suite_seconds": None}})
    out = _ci(project, deadline=90)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    ran = next(i for i, line in enumerate(lines) if line.startswith(f"ci: passed {PASSING}"))
    skipped = next(i for i, line in enumerate(lines) if line.startswith(f"ci: not run: time {FAILING}"))
    assert ran < skipped
    assert lines[-1] == "ci: 1 of 2 slow tests ran (1 passed, 0 failed), 1 not run: time"


def test_a_completed_run_refreshes_the_durations_table(tmp_path):
    project = _project(tmp_path, {})  # nothing recorded: each test is expected to take UNKNOWN_SECONDS
    out = _ci(project)
    assert "no recorded time" in out.stdout
    table = json.loads((project / ".ci" / "durations.json").read_text())["tests"]
    assert set(table) == {PASSING, FAILING}
    assert all(0 < t["seconds"] < 60 and t["default_suite_seconds"] >= 0 for t in table.values())


def test_a_failing_default_suite_stops_ci_before_the_slow_tests(tmp_path):
    project = _project(tmp_path, {}, tests=TESTS.replace("1 + 1 == 2", "1 + 1 == 3"))
    out = _ci(project)
    assert out.returncode != 0
    assert "ci: tests failed" in out.stdout
    assert "slow tests ran" not in out.stdout


def test_a_slower_host_scales_the_recorded_times():
    sys.path.insert(0, str(REPO / ".ci"))
    try:
        import slow_tests
    finally:
        sys.path.pop(0)
    table = {"tests": {"a": {"seconds": 100.0, "default_suite_seconds": 600.0},
                       "b": {"seconds": 150.0, "default_suite_seconds": 1200.0}}}
    # this host ran the default suite in 1200 s: a is expected 2 x 100 s, b 1 x 150 s, so b first
    plans = slow_tests.plan(["a", "b", "c"], table, 1200.0)
    assert [(p.nodeid, p.expected, p.known) for p in plans] == [
        ("b", 150.0, True), ("a", 200.0, True), ("c", slow_tests.UNKNOWN_SECONDS, False)]


@pytest.mark.parametrize("suite", [None, 0.0])
def test_no_default_suite_time_means_no_scaling(suite):
    sys.path.insert(0, str(REPO / ".ci"))
    try:
        import slow_tests
    finally:
        sys.path.pop(0)
    assert slow_tests.speed_scale(600.0, suite) == 1.0
