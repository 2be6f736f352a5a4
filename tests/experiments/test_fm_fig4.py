"""FM-Defense Fig 4 (and Table II's CelebA column): hand-worked accuracies, the paper beside ours.

The default tests work the new maths by hand (``rates``, ``code_curves``, the table's points) and
check what the quick preset says of the datasets it has no data for. The slow ones run the
experiments on ``tfds.testing.mock_data`` with tiny settings. Measured on 2 shared cores: the
default tests ~2 s; slow: Fig 4 on Fashion-MNIST 12 s (the module fixture; its two tests then
take 0.01 s), Table II's CelebA column (AutoAttack rows included) then Fig 4 on CelebA 45 s;
the whole file ~65 s with TensorFlow's import. Numbers on random mock images are wiring checks, not results.
"""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from tfdefense.detect.resistance import resistance_thresholds
from tfdefense.experiments import Context, available, get
from tfdefense.experiments.fm_fig4 import (
    ADAPTIVE,
    CODE_ATTACKS,
    EVADES,
    PAPER_ATTACKS,
    code_points,
    paper_cells,
    row,
    threshold_points,
)
from tfdefense.experiments.fm_figures import code_curves, curves, rates
from tfdefense.experiments.registry import datasets_of

#: Fig 4 needs no MagNet or Defense-GAN: classifier, combo-VAE, detector and the five attacks
TINY = {"fm_train_images": 400, "fm_classifier_epochs": 1, "fm_dgmm_epochs": 1,
        "fm_vae_epochs": 1, "fm_discriminator_units": 32, "fm_morphs": 4, "fm_eval_images": 24,
        "fm_adaptive_images": 12, "fm_pgd_steps": 2, "fm_eot_morphs": 2, "fm_cw_steps": (1, 5),
        "fm_deepfool_steps": 3}
#: CelebA's face nets cut down; Table II's MagNet / Defense-GAN / AutoAttack cells tiny too
#: (MagNet's rejection rate 0.002 needs 500 validation images, the mock split has 48)
TINY_FACES = {**TINY, "fm_face_filters": (4, 8, 8), "fm_face_residual_filters": 8,
              "fm_magnet_epochs": 1, "fm_magnet_rejection_rate": 0.05, "fm_gan_width": 8,
              "fm_gan_epochs": 1, "fm_dgan_iterations": 5, "fm_dgan_restarts": 2,
              "fm_dgan_adaptive_images": 6, "fm_autoattack_images": 8,
              "fm_autoattack_dgan_images": 4, "fm_autoattack_steps": 3,
              "fm_autoattack_queries": 20, "fm_autoattack_dgan_queries": 10}
MOCK_EXAMPLES = 48
KEYS = (*PAPER_ATTACKS, *ADAPTIVE)

# ------------------------------------------------------------------ hand-worked cases
R_VAL = np.array([[1.0, 0.5], [0.8, 1.0], [0.6, 1.0], [1.0, 0.9]])  # ρ 0.75: θ = (0.8, 0.9)
CLEAN = np.array([[1.0, 1.0], [0.7, 1.0], [1.0, 0.8], [0.9, 0.95]])
ADV = np.array([[0.5, 1.0], [1.0, 0.2], [0.9, 0.85], [0.7, 0.7]])


def test_rates_by_hand():
    r_clean = np.array([[1.0, 1.0], [0.5, 1.0], [1.0, 0.25], [1.0, 1.0]])
    r_adv = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 1.0], [1.0, 0.75]])
    s = rates(r_clean, r_adv, [0.6, 0.8], fooled=[True, True, False, True])
    # clean rows 1, 2 flagged; adv rows 0, 2, 3 flagged; only adv row 1 fools C and passes
    assert s == {"adv": 0.75, "clean": 0.5, "overall": 0.625, "evades": 0.25}
    # r = θ counts as clean (as the detector); unequal sets: Overall on the first n of each
    assert rates(r_clean, np.array([[0.6, 0.8]]), [0.6, 0.8])["adv"] == 0.0
    # first 2: adv row 0 flagged, clean row 0 passed (row 1 flagged): 2 of 4 right
    assert rates(r_clean, r_adv[:2], [0.6, 0.8])["overall"] == (1 + 1) / 4


def test_code_curves_by_hand():
    c = code_curves(R_VAL, {"clean": CLEAN, "cw": ADV}, rho=0.75)
    assert c["single"]["codes"] == [[0], [1]] and c["first"]["codes"] == [[0], [0, 1]]
    # code 0 alone (θ 0.8): clean row 1 flagged, adv rows 0, 3; code 1 (θ 0.9): clean row 2,
    # adv rows 1, 2, 3; both: clean rows 1, 2 and every adv row
    assert c["single"]["clean"] == [0.75, 0.75] and c["single"]["cw"]["adv"] == [0.5, 0.75]
    assert c["single"]["cw"]["overall"] == [0.625, 0.75]
    assert c["first"]["clean"] == [0.75, 0.5] and c["first"]["cw"]["adv"] == [0.5, 1.0]
    assert c["first"]["cw"]["overall"] == [0.625, 0.75]


def _det(rho=0.75, codes=(7, 3)):
    return SimpleNamespace(rho=rho, theta_r_=resistance_thresholds(R_VAL, rho),
                           engine=SimpleNamespace(codes=list(codes)))


def test_table_points_by_hand_with_the_papers_mnist_numbers():
    res = {"clean": CLEAN, **{k: ADV for k in KEYS}}
    fooled = {k: np.ones(4, bool) for k in KEYS}
    det = _det()
    points = threshold_points("mnist", det, res, fooled, curves(R_VAL, res))
    assert len(points) == 6 * len(KEYS)
    by = {(p["attack"], p["detector"].split(" (")[0]): p for p in points}
    in_use = by[("cw_l2", "per-code θ, ρ = 0.75")]
    assert (in_use["adv"], in_use["clean"], in_use["overall"], in_use["evades"]) == (1, .5, .75, 0)
    # θ 0.30: adv row 1 (min 0.2) flagged, no clean row: 25% / 100% / 62.5%, paper's 0.30 point
    fgsm = row(by[("fgsm", "unified θ = 0.30")])
    assert (fgsm["Adv"], fgsm["Clean"], fgsm["Overall"]) == (
        "25.00 (paper 85–93)", "100.00 (paper 75.00)", "62.50 (paper ≈ 80)")
    assert fgsm[EVADES] == 75.0 and fgsm["attack"] == "FGSM ε=0.3 (paper protocol)"
    assert row(by[("fgsm", "unified θ = 0.05")])["Clean"] == "100.00 (paper 81.00)"
    # the adaptive attackers are not in the paper: ours alone
    adaptive = row(by[("adaptive_pgd", "unified θ = 0.30")])
    assert adaptive["Adv"] == "25.00" and "paper" not in json.dumps(adaptive)
    # best Overall on the 0.05 grid: 6 of 8 first at θ 0.55 (adv mins 0.2, 0.5 below it)
    best = by[("deepfool_linf", "unified θ = 0.55")]
    assert best["overall"] == 0.75 and "best Overall" in best["detector"]
    assert best["detector"] == "unified θ = 0.55 (best Overall; paper θ = 0.30)"
    # every adv row flagged first at θ 0.90 (adv mins 0.85); C&W: the paper's θ 0.85 point
    full = by[("cw_l2", "unified θ = 0.90")]
    assert full["detector"] == "unified θ = 0.90 (smallest with Adv ≥ 99.9%; paper θ = 0.85)"
    assert (row(full)["Adv"], row(full)["Clean"]) == ("100.00 (paper 99.90)", "50.00 (paper 13.00)")
    assert row(by[("fgsm", "unified θ = 0.90")])["Adv"] == "100.00 (paper > 99.9)"
    # choice of codes: each code alone, then the first 2 of 2 (= the detector in use)
    codes = code_points(det, R_VAL, res, fooled)
    assert [p["detector"].split(",")[0] for p in codes] == [
        "code 7 alone", "code 3 alone", "first 2 of 2 codes"] * len(CODE_ATTACKS)
    assert [p["adv"] for p in codes[:3]] == [0.5, 0.75, 1.0]
    assert all(codes[2][k] == in_use[k] for k in ("adv", "clean", "overall", "evades"))
    assert code_points(_det(), R_VAL[:, :1], res, fooled) == []  # one factor: nothing to choose


def test_paper_cells_per_dataset():
    assert paper_cells("mnist", "full", "cw_l2")["theta"] == 0.85
    assert paper_cells("mnist", "full", "fgsm") == {"adv": "> 99.9"}
    assert paper_cells("fashion_mnist", "full", "deepfool_linf") == {"adv": "> 99.9"}
    assert paper_cells("fashion_mnist", 0.30, "fgsm") == {}
    assert paper_cells("celeb_a", 0.90, "cw_l2") == {"adv": 100.0, "clean": 100.0,
                                                    "overall": 100.0}
    assert paper_cells("celeb_a", 0.90, "adaptive_pgd_targeted") == {}


def test_cw_steps_override_takes_a_pair_or_one_number(tmp_path):
    from tfdefense.experiments.fm_table2 import attacks

    # the dry run sets fm_cw_steps = 2: one binary search of 2 Adam steps
    for value, expected in ((2, (1, 2)), ((3, 5), (3, 5))):
        cw = attacks(Context("quick", str(tmp_path), {"fm_cw_steps": value}), None)["cw_l2"]
        assert (cw.binary_search_steps, cw.steps) == expected


# ------------------------------------------------------------------ registry and presets
def test_registered_per_dataset_after_table2():
    names = available()
    for name, role in (("fm_fig4", "mnist"), ("fm_fig4_fashion_mnist", "fashion_mnist"),
                       ("fm_fig4_celeb_a", "celeb_a"), ("fm_table2_celeb_a", "celeb_a")):
        assert datasets_of(name) == (role,)
    # Fig 4 reads the adversarial sets Table II crafted in the same run
    assert names.index("fm_table2") < names.index("fm_fig4")
    assert names.index("fm_table2_celeb_a") < names.index("fm_fig4_celeb_a")


@pytest.mark.parametrize("name, role", [("fm_fig4_fashion_mnist", "fashion_mnist"),
                                        ("fm_fig4_celeb_a", "celeb_a"),
                                        ("fm_table2_celeb_a", "celeb_a")])
def test_quick_names_no_data_for_fmnist_and_celeb_a(tmp_path, name, role):
    r = get(name)(Context("quick", str(tmp_path)))
    assert r.measurements == {"status": "not run", "needs": [role]}
    assert "preset `quick` names no data for it" in r.notes[0] and "--preset paper" in r.notes[0]
    assert "not run" in r.to_markdown()
    assert not os.listdir(tmp_path / "cache")  # nothing trained


# ------------------------------------------------------------------ mock-data runs (slow)
def _mock(role, name, out, settings, ctx=None):
    import tensorflow_datasets as tfds

    ctx = ctx or Context("quick", str(out), {**settings, f"dataset.{role}": role})
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        return ctx, get(name)(ctx)


def _cached(out, role, key):
    with np.load(os.path.join(out, "cache", f"fm_{role}", f"{key}.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    out = tmp_path_factory.mktemp("fm_fig4_fmnist")
    ctx, r = _mock("fashion_mnist", "fm_fig4_fashion_mnist", out, {**TINY, "fm_codes": 3})
    return str(out), r, ctx


@pytest.mark.slow
def test_fashion_mnist_rows_carry_ours_and_the_papers(fashion):
    _, r, _ = fashion
    assert r.dataset == "fashion_mnist" and len(r.measurements["codes"]) == 3
    assert {p["attack"] for p in r.measurements["points"]} == set(KEYS)
    assert len(r.rows) == len(r.measurements["points"]) == 6 * len(KEYS) + 2 * 5
    for point, cells in zip(r.measurements["points"], r.rows):
        assert cells == row(point)
        assert cells["Adv"].split()[0] == f"{100 * point['adv']:.2f}"
        assert cells[EVADES] == pytest.approx(100 * point["evades"])
        # FMNIST: the paper states only "Adv above 99.9%" (the full-detection rows)
        full = "Adv ≥ 99.9%" in point["detector"] and point["attack"] in PAPER_ATTACKS
        assert ("paper" in cells["Adv"]) == full
        assert "paper" not in cells["Clean"] + cells["Overall"]
    full = [c for c in r.rows if "Adv ≥ 99.9%" in c["detector"] and "paper protocol" in c["attack"]]
    assert len(full) == 3 and all(c["Adv"].endswith("(paper > 99.9)") for c in full)
    # codes: each of the 3 alone and the first 2, 3, for C&W and the targeted adaptive attack
    assert sum("alone" in c["detector"] or "first" in c["detector"] for c in r.rows) == 2 * 5
    text = r.to_markdown()
    assert "## FM-Defense Fig 4: detection accuracy (%), Fashion-MNIST" in text
    assert "| targeted PGD-Linf ε=0.3, EOT over morphs (adaptive) | per-code θ" in text
    assert "curves only" in text and "m = 10 codes" in text  # FMNIST's 10 codes (§IV-A)


@pytest.mark.slow
def test_fashion_mnist_curves_are_those_of_the_cached_resistances(fashion):
    import tensorflow_datasets as tfds

    from tfdefense.experiments import fm_models
    from tfdefense.experiments.fm_fig4 import read_sets
    from tfdefense.experiments.fm_table2 import Evaluator

    out, r, ctx = fashion
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES), ctx.on_dataset("fashion_mnist"):
        x, y = ctx.arrays("test", limit=fm_models.setting(ctx, "fm_eval_images"))
        res, _ = read_sets(ctx, Evaluator(ctx), x, y)  # every set read back from the run's cache
    assert set(res) == {"clean", *KEYS}
    r_val = _cached(out, "fashion_mnist", "resistance_validation")["r"]
    assert r.measurements["detection_curves"] == curves(r_val, res)
    assert r.measurements["code_curves"] == code_curves(r_val, res, r.measurements["rho"])
    assert r.measurements["n"] == {"clean": 24, **{k: 24 for k in PAPER_ATTACKS},
                                   **{k: 12 for k in ADAPTIVE}}
    # the table's first row per attack is the detector in use, the same as all its codes
    for key in CODE_ATTACKS:
        pts = [p for p in r.measurements["points"] if p["attack"] == key]
        assert pts[0]["theta"] == r.measurements["theta_r"]
        assert {k: pts[0][k] for k in ("adv", "clean", "overall", "evades")} == {
            k: pts[-1][k] for k in ("adv", "clean", "overall", "evades")}
    for path in r.figures.values():
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_celeb_a_table2_then_fig4_share_the_adversarial_sets(tmp_path):
    from tfdefense.report import write_report

    ctx, t2 = _mock("celeb_a", "fm_table2_celeb_a", tmp_path, TINY_FACES)

    def cache_files():  # the cached files, not the empty lock files beside them (cache/.locks)
        return {str(p.relative_to(tmp_path)): p.stat().st_mtime_ns
                for p in (tmp_path / "cache").rglob("*")
                if p.is_file() and ".locks" not in p.parts}

    made = cache_files()
    sets = [name for name in made if "/table2/" in name and name.endswith(".npz")]
    assert any("/paper/fgsm" in name for name in sets), sets
    assert any("/fm_adaptive/pgd_targeted" in name for name in sets), sets
    assert any("/reads/" in name for name in made)  # FM-Defense's resistance vectors
    _, f4 = _mock("celeb_a", "fm_fig4_celeb_a", tmp_path, TINY_FACES, ctx=ctx)
    after = cache_files()
    assert {k: after[k] for k in made} == made  # every set and resistance read, none made again
    assert all("/reads/classifier/" in k for k in set(after) - set(made))  # only C's labels
    # Table II, CelebA column: the paper's numbers beside ours
    fgsm = next(c for c in t2.rows if c["attack"] == "FGSM ε=0.3 (paper protocol)")
    assert "(paper 99.90)" in fgsm["FM-Defense"] and "(paper 59.20)" in fgsm["MagNet"]
    assert "(paper 7.60)" in fgsm["no defense"] and "(paper 32.17)" in fgsm["Defense-GAN"]
    assert t2.rows[0]["no defense"].endswith("(paper 94.70)")
    # AutoAttack on 2 classes: its rows are there, APGD-T on the targeted cross-entropy, 1 target
    from tfdefense.experiments.fm_table2 import AA_ROW, WORST_ROW

    names = [c["attack"] for c in t2.rows]
    assert AA_ROW in names and WORST_ROW in names
    aa = t2.measurements["autoattack"]
    assert aa["num_classes"] == 2 and aa["targets"] == {"apgd_t": 1, "fab_t": 1}
    assert aa["objectives"]["apgd_t"] == "ce_targeted"
    assert set(aa["runs"]) == {"none", "fm", "magnet", "dgan"}
    for key in ("none", "fm_adv", "magnet", "dgan"):
        worst = t2.measurements["worst_case"]["accuracy"][key]
        assert 0.0 <= worst <= aa["autoattack"][key] <= 1.0, key
    notes = " ".join(t2.notes)
    assert "AutoAttack rows" in notes and "targeted cross-entropy" in notes
    assert "No AutoAttack rows" not in notes
    assert "`Male` attribute" in " ".join(t2.notes) and t2.title.endswith("CelebA")
    # Fig 4, CelebA: one latent factor; θ 0.90 is the paper's point (100% Adv, no false positive)
    assert f4.measurements["codes"] == [0] and "no choice to vary" in " ".join(f4.notes)
    at90 = [c for c in f4.rows if c["detector"] == "unified θ = 0.90"]
    assert len(at90) == len(KEYS)
    for cells in at90:
        paper = "paper protocol" in cells["attack"]
        assert cells["Clean"].endswith("(paper 100.00)") == paper
    assert not any("alone" in c["detector"] for c in f4.rows)
    files = write_report(ctx, [t2, f4], [], 0.0)
    report = open(files["report"], encoding="utf-8").read()
    assert "## FM-Defense Table II: accuracy (%) under attack, CelebA" in report
    assert "## FM-Defense Fig 4: detection accuracy (%), CelebA" in report
    assert "(figures/fm_celeb_a_fig4.png)" in report
