"""Table 6 on tiny settings: the AutoAttack rows and columns, and the paper-only ImageNet rows."""

import pytest

from tfdefense.experiments import Context, get
from tfdefense.experiments.cdvae_greybox import (
    AUTOATTACK,
    NEEDS_DATA,
    PAPER_TABLE6_IMAGENET,
    aa_setting,
)

#: AutoAttack on 8 images, 3 steps and 30 Square queries (the rest: conftest's TINY)
AA_TINY = {"autoattack_images": 8, "autoattack_steps": 3, "autoattack_queries": 30}


@pytest.fixture(scope="module")
def table6_run(tmp_path_factory, tiny_settings):
    out = str(tmp_path_factory.mktemp("table6"))
    return out, get("cdvae_table6")(Context("quick", out, {**tiny_settings, **AA_TINY}))


@pytest.fixture(scope="module")
def table6(table6_run):
    return table6_run[1]


def _rows(result, prefix):
    return [r for r in result.rows if r["defense"].startswith(prefix)]


@pytest.mark.slow
def test_autoattack_rows_beside_the_existing_rows(table6):
    assert "AutoAttack-Linf" in table6.columns and "worst-case Linf" in table6.columns
    assert "AutoAttack-L2" not in table6.columns  # the quick preset runs Linf only
    grey = _rows(table6, "AutoAttack grey-box (8 images)")
    white = _rows(table6, "white-box through G, AutoAttack (8 images)")
    sampling = _rows(table6, "white-box, sampling G, AutoAttack-rand (8 images")
    assert len(grey) == 3 and len(white) == 2 and len(sampling) == 1
    for row in grey + white + sampling:
        for col in ("clean", "PGD-Linf", "AutoAttack-Linf", "worst-case Linf"):
            assert 0.0 <= float(row[col]) <= 100.0, (row["defense"], col)
    # the rows that existed before keep their cells and get none of the new ones
    assert _rows(table6, "normal (D̂ on x′)")[0]["AutoAttack-Linf"] == "–"


@pytest.mark.slow
def test_worst_case_never_above_pgd_cw_or_autoattack_on_the_same_images(table6):
    names = [r["defense"] for r in table6.rows if "AutoAttack" in r["defense"]]
    assert len(names) == 6
    for name in names:
        m = table6.measurements[name]
        assert m["worst_linf"] <= m["aa_linf"] + 1e-9, name
        assert m["worst_linf"] <= m["pgd_linf"] + 1e-9, name
        if "cw_linf" in m:
            assert m["worst_linf"] <= m["cw_linf"] + 1e-9, name
    runs = table6.measurements["autoattack"]
    assert set(runs) == {"greybox_linf", "whitebox_same_linf", "whitebox_g_linf", "whitebox_sampling_linf"}
    for key, run in runs.items():
        assert run["n"] == 8 and 0.0 <= run["robust"] <= run["clean"] + 1e-9 <= 100.0 + 1e-9
        expected = None if key == "whitebox_sampling_linf" else bool(run["gradient_masking"])
        assert run["gradient_masking"] is expected  # no Square in the EOT ("rand") version
    assert runs["whitebox_sampling_linf"]["params"]["version"] == "rand"
    assert runs["whitebox_sampling_linf"]["params"]["eot_iter"] == 2  # eot_samples


@pytest.mark.slow
def test_paper_only_imagenet_rows_never_show_a_number_of_ours(table6):
    rows = _rows(table6, "restricted ImageNet")
    assert len(rows) == 2 and all(NEEDS_DATA in r["defense"] for r in rows)
    cd = next(r for r in rows if "CD-VAE" in r["defense"])
    assert cd["clean"] == f"– (paper {PAPER_TABLE6_IMAGENET['CD-VAE'][0]:.2f})"
    assert cd["PGD-Linf"] == "– (paper 52.48)"
    notes = " ".join(table6.notes)
    assert "AutoAttack rows" in notes and "the first 8 images" in notes and "masking" in notes


def test_autoattack_settings_per_preset(tmp_path):
    quick = Context("quick", str(tmp_path))
    assert aa_setting(quick, "autoattack_version") == "quick"
    assert aa_setting(Context("paper", str(tmp_path)), "autoattack_norms") == ("linf", "l2")
    assert aa_setting(Context("quick", str(tmp_path), {"autoattack_images": 3}), "autoattack_images") == 3
    assert set(AUTOATTACK["quick"]) == set(AUTOATTACK["paper"])


@pytest.mark.slow
def test_the_saved_greybox_defenses_load(table6_run):
    import os

    from tfdefense.defend import GreyBoxDefense, load

    out, _ = table6_run
    (dataset,) = os.listdir(os.path.join(out, "defenses"))
    names = sorted(os.listdir(os.path.join(out, "defenses", dataset)))
    assert names == ["cdvae_greybox", "cdvae_greybox_g"]
    for name in names:
        assert type(load(os.path.join(out, "defenses", dataset, name))) is GreyBoxDefense
