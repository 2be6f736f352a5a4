"""``reproduce --preset paper --dry-run`` of FM-Defense on MNIST, Fashion-MNIST and CelebA
shaped mock data: Table II (both columns) and Fig 4 (all three datasets) (slow)."""

import pytest
from dry_run_check import check_dry_run

FM = ["fm_table2", "fm_table2_celeb_a", "fm_fig4", "fm_fig4_fashion_mnist", "fm_fig4_celeb_a"]


@pytest.mark.slow
@pytest.mark.ci_first
def test_paper_dry_run_of_fm_defense_on_every_dataset(tmp_path):
    out = check_dry_run("paper", FM, tmp_path)
    datasets = {r["dataset"] for r in out["run"].plan}
    assert datasets == {"mnist", "fashion_mnist", "celeb_a"}
    # the CelebA face nets: a combo-VAE on 64x64x3 faces was trained
    assert any(r["dataset"] == "celeb_a" and r["model"] == "ComboVAE" for r in out["run"].plan)
