"""Docstring examples are runnable: each listed module's doctests pass."""

import doctest
import importlib

import pytest

MODULES = [
    "tfdefense",
    "tfdefense.validation",
    "tfdefense.perturbation",
    "tfdefense.data",
    "tfdefense.plots",
    "tfdefense.schedules",
    "tfdefense.optimizers",
    "tfdefense.augment",
    "tfdefense.recipes",
    "tfdefense.defend.base",
    "tfdefense.defend.greybox",
    "tfdefense.defend.classifier",
    "tfdefense.defend.adversarial_cdvae",
    "tfdefense.defend.fm_defense",
    "tfdefense.attacks.detector_aware",
    "tfdefense.detect.morphs",
    "tfdefense.detect.base",
    "tfdefense.detect.characteristic",
    "tfdefense.saving",
    "tfdefense.baselines.magnet",
    "tfdefense.baselines.magnet_detector",
    "tfdefense.baselines.defense_gan",
    "tfdefense.baselines.wgan_gp",
    "tfdefense.nets.small_cnn",
    "tfdefense.nets.cdvae_nets",
    "tfdefense.nets.wide_resnet",
    "tfdefense.nets.resnet50",
    "tfdefense.models.vae_losses",
    "tfdefense.models.input_checks",
    "tfdefense.models.cdvae",
    "tfdefense.models.adversarial_losses",
    "tfdefense.models.adversarial",
    "tfdefense.experiments.result",
    "tfdefense.experiments.context",
    "tfdefense.experiments.registry",
    "tfdefense.experiments.reference_recipes",
    "tfdefense.experiments.recipe_deviations",
    "tfdefense.experiments.training_recipes",
    "tfdefense.experiments.cdvae_models",
    "tfdefense.experiments.cdvae_empirical",
    "tfdefense.experiments.cdvae_mixup_ablation",
    "tfdefense.experiments.cdvae_table7",
    "tfdefense.experiments.dry_run",
    "tfdefense.experiments.fm_models",
    "tfdefense.report",
    "tfdefense.report_seeds",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0
