"""``reproduce --preset paper_imagenet --dry-run``: the VQ-VAE CD-VAE with a ResNet-50 D on
224x224 restricted-ImageNet-shaped mock data (slow)."""

import pytest
from dry_run_check import check_dry_run

from tfdefense.experiments import available
from tfdefense.experiments.registry import datasets_of


@pytest.mark.slow
@pytest.mark.ci_first
def test_paper_imagenet_dry_run_trains_the_vq_cdvae_and_resnet_50(tmp_path):
    names = [n for n in available() if "restricted_imagenet" in datasets_of(n)]
    out = check_dry_run("paper_imagenet", names, tmp_path, trial_resumed=("cdvae_fig4_gamma",))
    models = {r["model"] for r in out["run"].plan}
    assert "VQCDVAE" in models
    assert {r["dataset"] for r in out["run"].plan} == {"restricted_imagenet"}
