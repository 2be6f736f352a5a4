"""FM-Defense Table II on tiny settings: every cell computed, paper beside ours, cache reused."""

import os

import numpy as np
import pytest

from tfdefense.experiments import Context, available, get
from tfdefense.experiments import fm_models as fm
from tfdefense.experiments.fm_figures import curves

#: small enough for 2 shared cores (~2-3 minutes): 400 training images, 1 epoch each
TINY = {"fm_train_images": 400, "fm_classifier_epochs": 1, "fm_dgmm_epochs": 1, "fm_vae_epochs": 1,
        "fm_discriminator_units": 32, "fm_codes": 3, "fm_morphs": 4, "fm_magnet_epochs": 1,
        "fm_gan_width": 8, "fm_gan_epochs": 1, "fm_dgan_iterations": 5, "fm_dgan_restarts": 2,
        "fm_eval_images": 24, "fm_adaptive_images": 12, "fm_dgan_adaptive_images": 6,
        "fm_pgd_steps": 2, "fm_eot_morphs": 2, "fm_cw_steps": (1, 5), "fm_deepfool_steps": 3,
        "fm_autoattack_images": 8, "fm_autoattack_dgan_images": 4, "fm_autoattack_steps": 3,
        "fm_detector_aware_images": 8, "fm_autoattack_eot_iter": 2,
        "fm_autoattack_queries": 20, "fm_autoattack_dgan_queries": 10}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fm_table2"))
    return out, get("fm_table2")(Context("quick", out, TINY))


def test_registered_in_report_order():
    assert "fm_table2" in available()


@pytest.mark.slow  # the tiny Table II run: ~45 s on 2 cores, kept out of the default suite
def test_table_has_every_row_and_the_paper_beside_ours(tiny):
    _, r = tiny
    assert r.name == "fm_table2"  # not a row's name (run_table2 once shadowed it)
    names = [row["attack"] for row in r.rows]
    assert names[0] == "clean (no attack)"
    for attack in ("FGSM", "C&W-L2", "DeepFool"):
        assert any(n.startswith(attack) and "paper protocol" in n for n in names)
        assert any(n.startswith(attack) and "adaptive" in n for n in names)
    from tfdefense.experiments.fm_table2 import DETECTOR_AWARE_ROW, TARGETED_ROW

    assert TARGETED_ROW in names and DETECTOR_AWARE_ROW in names
    aware = r.measurements[DETECTOR_AWARE_ROW]
    assert aware["magnet"] is not None and aware["fm_adv"] is not None  # both defenses detect
    fgsm = next(row for row in r.rows if row["attack"].startswith("FGSM ε=0.3 (paper"))
    assert "(paper 99.80)" in fgsm["FM-Defense"] and "(paper 74.60)" in fgsm["MagNet"]
    assert "(paper 83.21)" in fgsm["Defense-GAN"] and "(paper 21.20)" in fgsm["no defense"]
    for name, cells in r.measurements.items():
        if isinstance(cells, dict) and "fm" in cells:
            assert 0.0 <= cells["fm"] <= 1.0, name
    assert "ρ =" in " ".join(r.notes) and "⌈1/r⌉" in " ".join(r.notes)


@pytest.mark.slow  # the tiny Table II run: ~45 s on 2 cores, kept out of the default suite
def test_autoattack_rows_and_a_worst_case_over_every_linf_attack_of_the_table(tiny):
    from tfdefense.experiments.fm_table2 import AA_ROW, WORST_ROW

    _, r = tiny
    names = [row["attack"] for row in r.rows]
    assert AA_ROW in names and WORST_ROW in names
    aa_row = next(row for row in r.rows if row["attack"] == AA_ROW)
    for col in ("no defense", "FM-Defense", "FM-Defense (ADV only)", "MagNet", "Defense-GAN"):
        assert 0.0 <= float(aa_row[col]) <= 100.0, col
    aa = r.measurements["autoattack"]
    assert (aa["n"], aa["n_dgan"]) == (8, 4)
    worst = r.measurements["worst_case"]
    # every Linf attack of the table, detector-aware and paper-protocol ones included; no L2
    assert worst["attacks"] == ["fgsm (paper protocol)", "fgsm (adaptive)",
                                "deepfool_linf (paper protocol)", "deepfool_linf (adaptive)",
                                "PGD (adaptive)", "targeted PGD (FM-Defense)",
                                "detector-aware PGD", "AutoAttack"]
    # the common images: AutoAttack's 8 (Defense-GAN: its 4)
    assert worst["images"] == {"none": 8, "fm_adv": 8, "magnet": 8, "dgan": 4}
    row = next(row for row in r.rows if row["attack"] == WORST_ROW)
    for key, col in (("none", "no defense"), ("fm_adv", "FM-Defense (ADV only)"),
                     ("magnet", "MagNet"), ("dgan", "Defense-GAN")):
        assert float(row[col]) == pytest.approx(100 * worst["accuracy"][key], abs=0.005), key
        assert 0.0 <= aa["autoattack"][key] <= 1.0, key
    for key, run in aa["runs"].items():
        assert run["robust"] <= run["clean"] + 1e-9, key
        # Square ran on every deterministic defense; FM-Defense's logits draw random morphs, so
        # it ran the rand version (APGD-CE and APGD-DLR with EOT, no Square: no masking check)
        assert run["gradient_masking"] in ((None,) if key == "fm" else (True, False)), key
    assert aa["runs"]["fm"]["params"]["version"] == "rand"
    assert aa["runs"]["fm"]["params"]["eot_iter"] == TINY["fm_autoattack_eot_iter"]
    assert set(aa["runs"]["magnet"]["broken_by"]) == {"apgd_ce", "apgd_t", "fab_t", "square"}
    notes = " ".join(r.notes)
    assert "AutoAttack rows" in notes and "first 8 test images" in notes and "masking" in notes


@pytest.mark.slow  # the tiny Table II run: ~45 s on 2 cores, kept out of the default suite
def test_quick_skips_only_expensive_defense_gan_cells(tiny):
    _, r = tiny
    cw = r.measurements["C&W-L2 (adaptive)"]
    assert "dgan" not in cw and cw["magnet"] is not None
    assert r.measurements["FGSM ε=0.3 (adaptive)"]["dgan"] is not None


@pytest.mark.slow  # the tiny Table II run: ~45 s on 2 cores, kept out of the default suite
def test_figures_and_curves(tiny):
    _, r = tiny
    assert len(r.figures) == 2 and all(os.path.exists(p) for p in r.figures.values())
    c = r.measurements["detection_curves"]
    assert c["unified"]["clean"][0] == 1.0  # threshold 0 flags nothing
    assert all(v["adv"][0] == 0.0 for v in c["unified"].values() if isinstance(v, dict))


@pytest.mark.slow  # the tiny Table II run: ~45 s on 2 cores, kept out of the default suite
def test_rerun_reuses_the_cache(tiny):
    out, r = tiny
    cache = os.path.join(out, "cache")
    assert {"fm_mnist_classifier.keras", "fm_mnist_combo_vae.keras",
            "fm_mnist_wgan_generator.keras"} <= set(os.listdir(cache))
    # the sets: one folder per evaluation of the grid, the paper-protocol ones shared by every
    # defense; FM-Defense's resistance vectors once per image set
    table = os.path.join(cache, "grid", "fm_mnist", "table2")
    assert {"paper", "fm_adaptive", "magnet_aware", "dgan_aa"} <= set(os.listdir(table))
    assert {"fgsm", "cw_l2", "deepfool_linf", "pgd"} == set(os.listdir(os.path.join(table, "paper")))
    # (fewer files than sets read: a set no attack changed is the clean one, read once)
    assert len(os.listdir(os.path.join(cache, "fm_mnist", "reads"))) >= 2 * 10
    again = get("fm_table2")(Context("quick", out, TINY))
    first, second = r.measurements["timings_s"], again.measurements["timings_s"]
    for stage in ("paper", "adaptive", "autoattacks"):  # read, not crafted or morphed again
        assert second[stage] < first[stage], stage
    assert again.rows == r.rows
    assert again.measurements["detection_curves"] == r.measurements["detection_curves"]


def test_curves_on_hand_made_resistances():
    r_val = np.array([[1.0, 1.0], [0.9, 1.0], [1.0, 0.8], [1.0, 1.0]])
    res = {"clean": np.array([[1.0, 1.0], [0.5, 1.0]]), "adv": np.array([[0.0, 0.0], [1.0, 1.0]])}
    c = curves(r_val, res)
    i = c["unified"]["threshold"].index(0.6)
    assert c["unified"]["clean"][i] == 0.5 and c["unified"]["adv"]["adv"][i] == 0.5
    assert c["unified"]["adv"]["overall"][i] == 0.5


def test_unknown_setting(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        fm.setting(Context("quick", str(tmp_path)), "fm_nope")


@pytest.mark.slow
def test_every_defense_gan_cell_on_tiny_settings(tmp_path):
    """The cells quick leaves out (adaptive C&W and DeepFool through Defense-GAN) on tiny settings.

    The quick preset's own numbers (FGSM transfers to C, clean accuracy) are in docs/quick_report,
    made by ``tfdefense reproduce``; this checks the code path the paper preset takes.
    """
    r = get("fm_table2")(Context("quick", str(tmp_path), {**TINY, "fm_dgan_every_attack": True}))
    n = TINY["fm_dgan_adaptive_images"]
    for label in ("FGSM ε=0.3", "C&W-L2", "DeepFool-Linf"):
        cell = r.measurements[f"{label} (adaptive)"]["dgan"]
        assert cell * n == pytest.approx(round(cell * n)), (label, cell)  # a count of n images
        row = next(row for row in r.rows if row["attack"] == f"{label} (adaptive)")
        assert row["Defense-GAN"].split()[0] == f"{100 * cell:.2f}", row


def _evaluations(y, fm_paper_fgsm, magnet_aware):
    """Hand-made evaluations of every row of the table on the images ``y``: every defense
    labels every set right, except FM-Defense on the paper's FGSM (``fm_paper_fgsm``: labels
    and decisions) and MagNet under the detector-aware PGD (``magnet_aware``: labels)."""
    from tfdefense.attacks.robustness import AttackResult, RobustnessResult

    right = (list(y), [0] * len(y))

    def result(rows, clean_decisions=None):
        return RobustnessResult(len(y), 1.0, 0.0, clean_labels=list(y),
                                clean_decisions=clean_decisions or [0] * len(y), rows=[
            AttackResult(k, "x", {}, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, labels=list(lab),
                         decisions=list(dec)) for k, (lab, dec) in rows.items()])

    paper = ("fgsm", "cw_l2", "deepfool_linf")
    evals = {("paper", d): result({k: right for k in paper}) for d in ("magnet", "dgan")}
    evals["paper", "none"] = result({k: right for k in (*paper, "pgd")})
    # FM-Defense purifies clean image 3 (to its right label) and accepts the rest
    evals["paper", "fm"] = result({"fgsm": fm_paper_fgsm, **{k: right for k in paper[1:]}},
                                  [0, 0, 0, 1])
    evals["adaptive", "fm"] = result({k: right for k in (*paper, "pgd", "pgd_targeted")})
    evals["adaptive", "magnet"] = result({k: right for k in (*paper, "pgd")})
    evals["adaptive", "dgan"] = result({k: right for k in ("fgsm", "pgd")})
    evals["aware", "fm"] = result({"detector_aware_pgd": right})
    evals["aware", "magnet"] = result({"detector_aware_pgd": (magnet_aware, [0] * len(y))})
    for d in ("none", "fm", "magnet", "dgan"):
        evals["aa", d] = result({"autoattack": right})
    return {k: (v, np.asarray(y)) for k, v in evals.items()}


def test_a_row_that_alone_breaks_an_image_lowers_the_worst_case_of_its_column():
    from tfdefense.defend import REJECTED
    from tfdefense.experiments.fm_table2 import (
        DETECTOR_AWARE_ROW,
        PAPER_TABLE2,
        WORST_ROW,
        table,
    )

    y = [0, 1, 2, 3]
    ok = (y, [0, 0, 0, 0])
    specs = (["fgsm", "deepfool_linf", "cw_l2"], ["fgsm", "deepfool_linf"], ["fgsm", "pgd"])
    base = table(PAPER_TABLE2, _evaluations(y, ok, y), *specs)
    assert base.meas["worst_case"]["accuracy"] == {"none": 1.0, "fm_adv": 1.0, "magnet": 1.0,
                                                   "dgan": 1.0}
    # the detector-aware PGD alone fools MagNet on image 2 (image 1 rejected: withstood)
    broken = table(PAPER_TABLE2, _evaluations(y, ok, [0, REJECTED, 9, 3]), *specs)
    worst = broken.meas["worst_case"]
    assert worst["accuracy"] == {"none": 1.0, "fm_adv": 1.0, "magnet": 0.75, "dgan": 1.0}
    assert worst["images"] == {"none": 4, "fm_adv": 4, "magnet": 4, "dgan": 4}
    assert "detector-aware PGD" in worst["attacks"]
    assert broken.meas[DETECTOR_AWARE_ROW]["magnet"] == 0.75
    row = next(r for r in broken.rows if r["attack"] == WORST_ROW)
    assert row["MagNet"] == "75.00" and row["FM-Defense (ADV only)"] == 100.0


def test_fm_defense_column_is_the_final_accuracy_on_clean_and_adversarial_from_the_decisions():
    from tfdefense.defend import REJECTED
    from tfdefense.experiments.fm_table2 import PAPER_TABLE2, table

    y = [0, 1, 2, 3]
    # FGSM: image 0 rejected (true positive), 1 purified to its label (recovered), 2 accepted
    # with a wrong label, 3 accepted with its label (an accepted ADV counts for nothing).
    # Clean half: 0-2 accepted (true negatives), 3 purified to its label (recovered).
    # Final = (1 + 3 + 2) / 8; ADV only (rejected or right): 3 of 4
    fgsm = ([REJECTED, 1, 5, 3], [2, 1, 0, 0])
    t = table(PAPER_TABLE2, _evaluations(y, fgsm, y), ["fgsm", "deepfool_linf", "cw_l2"],
              ["fgsm"], ["fgsm"])
    cells = t.meas["FGSM ε=0.3 (paper protocol)"]
    assert cells["fm"] == 0.75 and cells["fm_adv"] == 0.75
    assert {k: cells["fm_detail"][k] for k in ("true_positive", "true_negative", "recovered")} == {
        "true_positive": 1, "true_negative": 3, "recovered": 2}
    assert t.meas["clean (no attack)"]["fm_false_positive"] == 0.25  # clean image 3 purified
    row = next(r for r in t.rows if r["attack"] == "FGSM ε=0.3 (paper protocol)")
    assert row["FM-Defense"] == "75.00 (paper 99.80)"


def test_worst_case_is_the_per_image_minimum_over_attacks_on_common_images():
    from tfdefense.experiments.fm_table2 import worst_case

    # MagNet: attack a leaves images 0, 1, 3 standing, b leaves 0, 2: only image 0 survives
    # both; the first 4 images are common (b ran on 5), so 1 of 4. FM: one attack, 3 of 4.
    # Defense-GAN: a on 2 images only: the worst case is over those 2 (1 of 2).
    verdicts = {
        "a": {"magnet": np.array([1, 1, 0, 1], bool), "fm_adv": np.array([1, 0, 1, 1], bool),
              "dgan": np.array([1, 0], bool)},
        "b": {"magnet": np.array([1, 0, 1, 0, 1], bool), "dgan": np.array([1, 1, 0], bool)},
    }
    worst, n = worst_case(verdicts)
    assert worst == {"fm_adv": 0.75, "magnet": 0.25, "dgan": 0.5}
    assert n == {"fm_adv": 4, "magnet": 4, "dgan": 2}
    assert list(worst) == ["fm_adv", "magnet", "dgan"]  # the table's column order


@pytest.mark.slow  # the tiny Table II run: ~45 s on 2 cores, kept out of the default suite
def test_the_run_saves_each_defense_as_a_folder_that_loads_to_the_same_answers(tiny):
    from tfdefense.defend import load

    out, _ = tiny
    (dataset,) = os.listdir(os.path.join(out, "defenses"))
    folder = os.path.join(out, "defenses", dataset)
    assert sorted(os.listdir(folder)) == ["defense_gan", "fm_defense", "magnet"]
    ctx = Context("quick", out, TINY)
    with ctx.experiment("fm_table2", ("mnist",)), ctx.on_dataset("mnist"):
        x, _ = ctx.arrays("test", limit=6)
        built = {"fm_defense": fm.fm_defense(ctx), "magnet": fm.magnet(ctx)}
    for name, defense in built.items():
        loaded = load(os.path.join(folder, name))
        assert type(loaded) is type(defense)
        for a, b in zip(loaded.predict_with_decisions(x), defense.predict_with_decisions(x),
                        strict=True):
            np.testing.assert_array_equal(a, b)
