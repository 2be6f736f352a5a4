"""A tiny reproduction shared by the experiment tests: every CD-VAE experiment, trained once."""

import pytest

#: settings small enough for CI on 2 shared cores: 1 epoch, latent 8, 48 images
TINY = {
    "train_images": 300,
    "cdvae_epochs": 1,
    "classifier_epochs": 1,
    "latent_dim": 8,
    "width": 8,
    "eval_images": 48,
    "defense_images": 24,
    "whitebox_images": 8,
    "eot_samples": 2,
    "gamma_grid": [0.2, 2.0],
    "sweep_epochs": 1,
    "pgd_steps": 3,
    "defense_steps": 3,
    "detection_train_images": 200,
    "lid_k": [5, 10],
    "md_magnitudes": [0.0, 0.001],
    "verbose": 0,
}

#: the empirical study: one reference classifier, one CD-VAE, two part classifiers (~2 min)
STUDY = ["cdvae_table1", "cdvae_table2", "cdvae_fig3_pearson", "cdvae_table3"]
#: detection, grey-box defense and the γ sweep: many attacks and models (slow)
HEAVY = ["cdvae_table4", "cdvae_table6", "cdvae_fig4_gamma"]


@pytest.fixture(scope="session")
def tiny_settings():
    return dict(TINY)


@pytest.fixture(scope="session")
def study_names():
    return list(STUDY)


@pytest.fixture(scope="session")
def heavy_names():
    return list(HEAVY)


@pytest.fixture(scope="session")
def tiny_out(tmp_path_factory):
    return str(tmp_path_factory.mktemp("reproduce"))


@pytest.fixture(scope="session")
def tiny_run(tiny_out):
    """``reproduce`` of the empirical study on tiny settings."""
    from tfdefense.report import reproduce

    return reproduce("quick", tiny_out, only=STUDY, overrides=TINY, log=lambda *_: None)
