"""``reproduce --preset paper --dry-run`` of CD-VAE's empirical study and detection tables:
WRN-28-10 CD-VAE and classifiers on CIFAR-shaped mock data (slow: minutes on 2 cores)."""

import pytest
from dry_run_check import check_dry_run

STUDY = ["cdvae_table1", "cdvae_table2", "cdvae_fig3_pearson", "cdvae_table3", "cdvae_table4",
         "cdvae_table5"]


@pytest.mark.slow
@pytest.mark.ci_first
def test_paper_dry_run_of_the_study_and_detection_trains_the_wrn_28_10(tmp_path):
    out = check_dry_run("paper", STUDY, tmp_path)
    fits = out["run"].fits
    # the preset's WRN-28-10 D (36.5 M parameters), inside the CD-VAE and alone
    assert all(f.params > 36e6 for f in fits)
    assert {f.epochs_key for f in fits} == {"cdvae_epochs", "classifier_epochs"}
    assert {r["dataset"] for r in out["run"].plan} == {"cifar10"}
    assert {r["epochs"] for r in out["run"].plan} == {300, 200}  # CD-VAE §5, the WRN recipe
