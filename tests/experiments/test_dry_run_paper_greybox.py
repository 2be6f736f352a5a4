"""``reproduce --preset paper --dry-run`` of the grey-box defense (Table 6) and the γ sweep
(Fig 4) on CIFAR-shaped mock data (slow)."""

import pytest
from dry_run_check import check_dry_run


@pytest.mark.slow
@pytest.mark.ci_first
def test_paper_dry_run_of_table_6_and_the_gamma_sweep(tmp_path):
    # the γ sweep's CD-VAEs train inside keras-tuner trials: resumed per finished trial
    out = check_dry_run("paper", ["cdvae_table6", "cdvae_fig4_gamma"], tmp_path,
                        trial_resumed=("cdvae_fig4_gamma",))
    fragile = {f.experiment for f in out["run"].fits if not f.resumable}
    assert fragile == {"cdvae_fig4_gamma"}  # Table 6's trainings all resume per epoch
    sweep = out["results"]["cdvae_fig4_gamma"].measurements["trials"]
    assert len(sweep) == 2  # the dry run's two γ (the real grid has 6)
    assert all("val_detection_auc" in t and "val_defense_accuracy" in t for t in sweep)
