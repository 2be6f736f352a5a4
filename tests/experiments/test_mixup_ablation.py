"""The mixup ablation: its table, findings and figure on made-up numbers (fast), its recipe
variants in the report's recipe tables, and one tiny end-to-end run (slow)."""

import json
import os

import pytest

from tfdefense.experiments import Context, available, get
from tfdefense.experiments import cdvae_mixup_ablation as ab
from tfdefense.experiments import cdvae_models as cm
from tfdefense.experiments import training_recipes as tr
from tfdefense.experiments.registry import datasets_of
from tfdefense.recipes import unmarked_deviations


def _per_alpha(*accs):
    return {a: {**ab.example_measurement(acc), "alpha": a} for a, acc in accs}


def test_table_has_one_row_per_alpha_and_the_claim():
    per_alpha = _per_alpha((2.0, 92.0), (0.0, 90.0), (0.2, 91.0))
    rows = ab.table_rows(per_alpha)
    assert [r["mixup α"] for r in rows] == ["0", "0.2", "2", "authors' claim (issue #2)"]
    assert rows[2]["D(R(x)) accuracy"] == 92.0 and rows[0]["cosine G(x) vs G(x′)"] == "0.9000 ± 0.0500"
    assert rows[0]["Fréchet R"] == "40.0000" and rows[0]["AUC MD (R(x))"] == 90.0
    assert "higher with mixup" in rows[-1]["D(R(x)) accuracy"]
    columns = ab.columns(per_alpha)
    assert columns[-2:] == ["grey-box clean", "grey-box PGD-Linf"]
    assert set(columns) >= {c for r in rows for c in r}


@pytest.mark.parametrize("accs, verdict", [
    (((0.0, 90.0), (0.2, 91.0), (2.0, 92.0)), "as the authors claim"),
    (((0.0, 90.0), (2.0, 89.0)), "against the claim (in this run)"),
    (((0.0, 90.0), (0.2, 89.0), (2.0, 92.0)), "no consistent effect"),
])
def test_findings_say_whether_the_claim_holds(accs, verdict):
    lines = ab.findings(_per_alpha(*accs))
    assert verdict in lines[0]
    assert any(line.startswith("Detection AUC on R(x)") for line in lines)
    assert any("Grey-box accuracy (D̂ on G(x′)), PGD-Linf: 20.00 at α = 0" in line for line in lines)
    assert "--seeds N" in lines[-1]


def test_findings_need_alpha_zero():
    assert "no finding" in ab.findings(_per_alpha((2.0, 90.0)))[0]


def test_figure_is_written(tmp_path):
    path = ab.plot_ablation(_per_alpha((0.0, 90.0), (2.0, 92.0)), str(tmp_path / "f.png"))
    assert os.path.getsize(path) > 1000


def test_registered_for_cifar10_only_and_last():
    assert datasets_of(ab.NAME) == ("cifar10",)
    assert available().index(ab.NAME) > available().index("fm_fig4_celeb_a")  # runs after the others


def test_not_run_without_cifar10_data(tmp_path):
    result = get(ab.NAME)(Context("paper_imagenet", str(tmp_path)))
    assert result.measurements["status"] == "not run"


def test_the_recipes_own_alpha_is_the_presets_cdvae(tmp_path):
    quick, paper = Context("quick", str(tmp_path / "q")), Context("paper", str(tmp_path / "p"))
    assert cm.mixup_key(quick, 0) == "" and cm.mixup_key(quick, 2) == "_mixup2"
    assert cm.mixup_key(paper, 2) == "" and cm.mixup_key(paper, 0.2) == "_mixup0.2"
    assert cm.setting(quick, "mixup_grid") == (0.0, 2.0)
    assert cm.setting(paper, "mixup_grid") == (0.0, 0.2, 1.0, 2.0)


def test_an_alpha_variant_shows_in_the_recipe_table_with_its_reason(tmp_path):
    ctx = Context("paper", str(tmp_path))
    recipe = tr.recipe_for(ctx, "cdvae", label="cdvae, mixup α = 0.2",
                           fields={"mixup_alpha": (0.2, "the ablation's α")}, ce=2.0)
    assert recipe.mixup_alpha == 0.2
    entry = ctx.recipes["cdvae, mixup α = 0.2"]
    rows = {r.field: r for r in tr.table("paper", "cdvae", entry["recipe"], entry["overridden"],
                                         entry["reasons"])}
    assert (rows["mixup_alpha"].official, rows["mixup_alpha"].ours) == (2.0, 0.2)
    assert rows["mixup_alpha"].why == "the ablation's α"
    assert "UNMARKED" not in {r.why for r in rows.values()}
    # the preset's own α records no reason: its table is the preset's
    tr.recipe_for(ctx, "cdvae", fields={"mixup_alpha": (2.0, "unused")}, ce=2.0)
    assert ctx.recipes["cdvae"]["reasons"] == {}
    ref = tr.REFERENCES["cdvae_cifar10"]
    assert unmarked_deviations(recipe, ref, tr.deviations("paper", "cdvae")) == ["mixup_alpha"]


@pytest.mark.slow
def test_tiny_ablation_end_to_end(tmp_path, tiny_settings):
    """Two CD-VAEs (α = 0 is the preset's, reused), every column measured (~25 s on 2 cores)."""
    from tfdefense.report import reproduce

    out = str(tmp_path)
    run = reproduce("quick", out, only=[ab.NAME], overrides={**tiny_settings, "detection_min_images": 2},
                    log=lambda *_: None)
    assert run.failed == []
    result, = run.results
    assert [r["mixup α"] for r in result.rows][:2] == ["0", "2"]
    keys = [m["cache_key"] for m in result.measurements["per_alpha"]]
    assert keys == ["cdvae_gamma2", "cdvae_gamma2_mixup2"]
    cache = sorted(os.listdir(os.path.join(out, "cache")))
    assert "cdvae_gamma2.keras" in cache and "cdvae_gamma2_mixup2.keras" in cache
    assert not any("mixup0" in name for name in cache)
    assert os.path.exists(result.figures["accuracy and detection AUC against mixup α"])
    payload = json.load(open(run.files["results"], encoding="utf-8"))
    ours = {r["field"]: r["ours"] for r in payload["recipes"]["cdvae, mixup α = 2"]}
    assert ours["mixup_alpha"] == 2.0
    assert "cdvae, mixup α = 2" in open(run.files["report"], encoding="utf-8").read()
