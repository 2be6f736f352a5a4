"""report.reproduce and the reproduce CLI: failures reported, never skipped; bad names refused."""

import json
import os

import pytest

from tfdefense import cli
from tfdefense.experiments import Result, register
from tfdefense.report import reproduce


@register("test_report_ok", order=998)
def _ok(ctx):
    return Result("test_report_ok", "OK table", ctx.preset, ctx.dataset, columns=["a"], rows=[{"a": 1.5}])


@register("test_report_boom", order=999)
def _boom(ctx):
    raise RuntimeError("boom")


def test_failure_is_reported_not_skipped(tmp_path):
    run = reproduce("quick", str(tmp_path), only=["test_report_ok", "test_report_boom"],
                    log=lambda *_: None)
    assert run.failed == ["test_report_boom"]
    assert [r.name for r in run.results] == ["test_report_ok", "test_report_boom"]
    report = open(run.files["report"], encoding="utf-8").read()
    assert "FAILED" in report and "RuntimeError: boom" in report and "| 1.50 |" in report
    payload = json.load(open(run.files["results"], encoding="utf-8"))
    assert payload["failed"] == ["test_report_boom"]
    assert "Traceback" in payload["experiments"][1]["measurements"]["traceback"]


def test_unknown_names_fail_before_work(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment"):
        reproduce("quick", str(tmp_path), only=["nope"])
    with pytest.raises(ValueError, match="distinct"):
        reproduce("quick", str(tmp_path), only=["test_report_ok", "test_report_ok"])
    with pytest.raises(ValueError, match="preset"):
        reproduce("nope", str(tmp_path))


def test_cli_reproduce(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert cli.main(["reproduce", "--out", out, "--only", "test_report_ok", "--set", "eval_images=7"]) == 0
    payload = json.load(open(os.path.join(out, "results.json"), encoding="utf-8"))
    assert payload["settings"]["eval_images"] == 7
    assert cli.main(["reproduce", "--out", out, "--only", "test_report_boom"]) == 1
    assert cli.main(["reproduce", "--out", out, "--only", "nope"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_cli_list(capsys):
    assert cli.main(["reproduce", "--list"]) == 0
    names = capsys.readouterr().out.split()
    assert "cdvae_table4" in names and "cdvae_fig4_gamma" in names


def test_parse_setting():
    assert cli._parse_setting("eval_images=32") == ("eval_images", 32)
    assert cli._parse_setting("gamma_grid=[0.2, 2]") == ("gamma_grid", [0.2, 2])
    assert cli._parse_setting("dataset=mnist_5k") == ("dataset", "mnist_5k")
    with pytest.raises(Exception, match="KEY=VALUE"):
        cli._parse_setting("novalue")
