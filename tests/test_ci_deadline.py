"""`.ci/run` keeps CI's deadline: slow tests run only while their expected time fits, by name.

Each test builds a throwaway project (a README whose test command runs pytest, one default test,
slow tests that pass or fail) around a copy of the real `.ci/run` and `.ci/slow_tests.py`, with
this interpreter's environment as its `.venv`, and runs CI on it. CI starts pytest several times
per run (the README's suite, two collections, one process per slow test file); the throwaway
project uses no pytest plugin, so those children skip plugin autoload (hypothesis' plugin alone
costs a second or more of start-up per process), which `.ci/run` and `.ci/slow_tests.py` never
look at.
"""

import json
import os
import re
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

#: test files of the throwaway project: a default test, and two files of one slow test each
TESTS = {
    "test_default.py": "def test_default():\n    assert 1 + 1 == 2\n",
    "test_a.py": "import pytest\n\n@pytest.mark.slow\ndef test_slow_passes():\n    assert True\n",
    "test_b.py": ("import pytest\n\n@pytest.mark.slow\ndef test_slow_fails():\n"
                  "    assert 2 + 2 == 5, 'a broken slow test'\n"),
}

PASSING = "tests/test_a.py::test_slow_passes"
FAILING = "tests/test_b.py::test_slow_fails"


def _project(tmp_path: Path, durations: dict, tests: dict[str, str] = TESTS) -> Path:
    (tmp_path / ".ci").mkdir()
    for name in ("run", "slow_tests.py"):
        shutil.copy(REPO / ".ci" / name, tmp_path / ".ci" / name)
    (tmp_path / ".ci" / "durations.json").write_text(json.dumps({"tests": durations}))
    (tmp_path / "README.md").write_text(README)
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nmarkers = ["slow: slow"]\n')
    (tmp_path / "tests").mkdir()
    for name, text in tests.items():
        (tmp_path / "tests" / name).write_text(text)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


def _ci(project: Path, deadline: int = 4500) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST")}
    env["CI_DEADLINE_SECONDS"] = str(deadline)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the fake project's tests need no plugin
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


def test_ci_first_tests_run_before_cheaper_ones_and_take_the_time(tmp_path):
    # test_c (ci_first, 60 s recorded) runs before test_a (0.5 s) although it costs more
    tests = {**TESTS, "test_c.py": ("import pytest\n\n@pytest.mark.slow\n@pytest.mark.ci_first\n"
                                    "def test_first():\n    assert True\n")}
    first = "tests/test_c.py::test_first"
    project = _project(tmp_path, {PASSING: {"seconds": 0.5, "default_suite_seconds": None},
                                  FAILING: {"seconds": 5000.0, "default_suite_seconds": None},
                                  first: {"seconds": 60.0, "default_suite_seconds": None}}, tests)
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nmarkers = ["slow: slow", "ci_first: first"]\n')
    out = _ci(project, deadline=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    order = [next(i for i, line in enumerate(lines) if line.startswith(f"ci: passed {t}"))
             for t in (first, PASSING)]
    assert order == sorted(order)
    assert lines[-1] == "ci: 2 of 3 slow tests ran (2 passed, 0 failed), 1 not run: time"


def test_a_completed_run_refreshes_the_durations_table(tmp_path):
    project = _project(tmp_path, {})  # nothing recorded: each test is expected to take UNKNOWN_SECONDS
    out = _ci(project)
    assert "no recorded time" in out.stdout
    table = json.loads((project / ".ci" / "durations.json").read_text())["tests"]
    assert set(table) == {PASSING, FAILING}
    suite = int(re.search(r"ci: default suite passed: pytest (\d+) s", out.stdout).group(1))
    assert all(0 <= t["seconds"] < 60 and t["default_suite_seconds"] == suite for t in table.values())


def test_a_failing_default_suite_stops_ci_before_the_slow_tests(tmp_path):
    broken = {**TESTS, "test_default.py": TESTS["test_default.py"].replace("1 + 1 == 2", "1 + 1 == 3")}
    project = _project(tmp_path, {}, tests=broken)
    out = _ci(project)
    assert out.returncode != 0
    assert "ci: tests failed" in out.stdout
    assert "slow tests ran" not in out.stdout


def test_a_slower_host_scales_the_recorded_times():
    slow_tests = _slow_tests_module()
    table = {"tests": {"a.py::t1": {"seconds": 60.0, "default_suite_seconds": 600.0},
                       "a.py::t2": {"seconds": 40.0, "default_suite_seconds": 600.0},
                       "b.py::t": {"seconds": 150.0, "default_suite_seconds": 1200.0}}}
    # this host ran the default suite in 1200 s: a.py is expected 2 x (60 + 40) s, b.py 1 x 150 s,
    # so b.py first; c.py has no record and is expected UNKNOWN_SECONDS
    plans = slow_tests.plan(["a.py::t1", "a.py::t2", "b.py::t", "c.py::t"], table, 1200.0)
    assert [(p.path, p.nodeids, p.expected, p.known) for p in plans] == [
        ("b.py", ["b.py::t"], 150.0, True), ("a.py", ["a.py::t1", "a.py::t2"], 200.0, True),
        ("c.py", ["c.py::t"], slow_tests.UNKNOWN_SECONDS, False)]
    # a file holding a ci_first test goes before every other file, however long it takes
    first = slow_tests.plan(["a.py::t1", "a.py::t2", "b.py::t", "c.py::t"], table, 1200.0,
                            frozenset({"c.py::t", "a.py::t2"}))
    assert [(p.path, p.first) for p in first] == [("a.py", True), ("c.py", True), ("b.py", False)]


def _slow_tests_module():
    sys.path.insert(0, str(REPO / ".ci"))
    try:
        import slow_tests
    finally:
        sys.path.pop(0)
    return slow_tests


@pytest.mark.parametrize("suite", [None, 0.0])
def test_no_default_suite_time_means_no_scaling(suite):
    assert _slow_tests_module().speed_scale(600.0, suite) == 1.0
