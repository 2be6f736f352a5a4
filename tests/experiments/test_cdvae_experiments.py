"""The CD-VAE experiments on tiny settings: tables filled, paper beside ours, figures written."""

import json
import os

import numpy as np
import pytest

from tfdefense.experiments import Context
from tfdefense.experiments.cdvae_models import setting


def _result(run, name):
    return next(r for r in run.results if r.name == name)


def test_study_runs_without_failure(tiny_run, study_names):
    assert tiny_run.failed == []
    assert [r.name for r in tiny_run.results] == study_names
    for r in tiny_run.results:
        assert r.rows and r.seconds is not None and r.notes


def test_table1_cosine_and_frechet(tiny_run):
    r = _result(tiny_run, "cdvae_table1")
    assert [row["pair"] for row in r.rows] == [
        "G(x) vs G(x′)",
        "R(x) vs R(x′)",
        "G(x) vs G(x′) (restricted ImageNet)",
        "R(x) vs R(x′) (restricted ImageNet)",
    ]
    assert r.rows[2]["cosine similarity"] == "needs the data and a GPU"  # paper-only ImageNet rows
    for part in ("G", "R"):
        m = r.measurements[part]
        assert -1.0 <= m["cosine_mean"] <= 1.0 and m["frechet"] >= 0.0
    assert "penultimate" in r.measurements["feature_extractor"]
    assert any("0.9997" in row["paper cosine"] for row in r.rows)
    assert all(os.path.exists(p) for p in r.figures.values())


def test_table2_norms_add_up(tiny_run):
    r = _result(tiny_run, "cdvae_table2")
    m = r.measurements
    parts = [row["part"] for row in r.rows]
    assert parts[9] == "δ_z" and parts[-1] == "δ_R (restricted ImageNet)"
    # PGD-Linf eps 0.3: ||δ||_inf <= 0.3
    assert m["δ"]["linf"]["mean"] <= 0.3 + 1e-5
    # δ = δ_G + δ_R, so the triangle inequality holds for the mean ℓ2 norms
    assert m["δ"]["l2"]["mean"] <= m["δ_G"]["l2"]["mean"] + m["δ_R"]["l2"]["mean"] + 1e-5


def test_pearson_figure_and_numbers(tiny_run, tiny_settings):
    r = _result(tiny_run, "cdvae_fig3_pearson")
    assert r.measurements["latent_dim"] == tiny_settings["latent_dim"]
    assert all(-1.0 <= v <= 1.0 for v in r.measurements["r"])
    assert os.path.exists(next(iter(r.figures.values())))


def test_table3_three_by_three_with_paper(tiny_run):
    r = _result(tiny_run, "cdvae_table3")
    assert [row["train \\ test"] for row in r.rows] == [
        "x",
        "R(x)",
        "G(x)",
        "x (restricted ImageNet)",
        "R(x) (restricted ImageNet)",
        "G(x) (restricted ImageNet)",
    ]
    assert r.rows[3]["x"].startswith("needs the data and a GPU (paper 82.53")
    assert all("(paper" in row[c] for row in r.rows for c in ("x", "R(x)", "G(x)"))
    top1 = [v["top1"] for v in r.measurements.values()]
    assert len(top1) == 9 and all(0.0 <= v <= 100.0 for v in top1)


def test_report_files(tiny_run, tiny_out, study_names, tiny_settings):
    report = open(os.path.join(tiny_out, "report.md"), encoding="utf-8").read()
    for name in study_names:
        assert f"`{name}`" in report
    assert "paper" in report and "figures/cdvae_decomposition.png" in report
    payload = json.load(open(os.path.join(tiny_out, "results.json"), encoding="utf-8"))
    assert payload["failed"] == [] and len(payload["experiments"]) == len(study_names)
    assert payload["settings"]["latent_dim"] == tiny_settings["latent_dim"]


def test_models_are_cached_and_reused(tiny_run, tiny_out):
    cached = os.listdir(os.path.join(tiny_out, "cache"))
    assert "classifier_x.keras" in cached and "cdvae_gamma2.keras" in cached


def test_setting_unknown_key(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        setting(Context("quick", str(tmp_path)), "nope")


@pytest.mark.slow
def test_heavy_experiments_tiny(tiny_out, heavy_names, tiny_settings):
    """Table 4, Table 6 and the γ sweep end to end on tiny settings (minutes on 2 cores)."""
    from tfdefense.report import reproduce

    run = reproduce("quick", tiny_out, only=heavy_names, overrides=tiny_settings, log=lambda *_: None)
    assert run.failed == [], [r.measurements.get("error") for r in run.results]
    t4 = _result(run, "cdvae_table4")
    assert [row["method"] for row in t4.rows][:2] == ["KD", "KD (R(x))"]
    t6 = _result(run, "cdvae_table6")
    assert any(row["defense"].startswith("white-box") for row in t6.rows)
    assert any("BREAKS" in n or "keeps at least" in n for n in t6.notes)
    t4_cells = [c for row in t4.rows for k, c in row.items() if k != "method"]
    assert all("paper" in c for c in t4_cells)
    fig4 = _result(run, "cdvae_fig4_gamma")
    assert [row["γ"] for row in fig4.rows] == ["0.2", "2"]
    assert np.isfinite([v for row in fig4.rows for k, v in row.items() if k != "γ"]).all()
