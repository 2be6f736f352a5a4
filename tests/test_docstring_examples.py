"""Docstring examples are runnable: each listed module's doctests pass, and every module of
the package with an example is run here or in the test file named in ``RUN_ELSEWHERE``."""

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import tfdefense

TESTS = Path(__file__).resolve().parent

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
    "tfdefense.report_jobs",
    "tfdefense.nets.fused_batch_norm",
    "tfdefense.profiling",
    "tfdefense.decisions",
    "tfdefense.distribute",
    "tfdefense.training",
    "tfdefense.tune",
    "tfdefense.serving",
    "tfdefense.export",
    "tfdefense.callbacks",
    "tfdefense.data_imagenet",
    "tfdefense.nets.fm_nets",
    "tfdefense.nets.vq_nets",
    "tfdefense.models.vq",
    "tfdefense.models.pgd_training",
    "tfdefense.models.dgmm",
    "tfdefense.models.combo_vae",
    "tfdefense.detect.metrics",
    "tfdefense.detect.extractor",
    "tfdefense.detect.kernel_density",
    "tfdefense.detect.lid",
    "tfdefense.detect.mahalanobis",
    "tfdefense.detect.detector",
    "tfdefense.detect.resistance",
    "tfdefense.detect.commands",
    "tfdefense.baselines.losses",
    "tfdefense.baselines.magnet_nets",
    "tfdefense.baselines.denoising_autoencoder",
    "tfdefense.baselines.defense_gan_nets",
    "tfdefense.certify",
    "tfdefense.certify.smoothing",
    "tfdefense.certify.stability",
    "tfdefense.certify.statistics",
    "tfdefense.interop",
    "tfdefense.interop.art",
    "tfdefense.experiments.fm_figures",
    "tfdefense.experiments.fm_table2",
    "tfdefense.experiments.grid",
    "tfdefense.experiments.certified_l2",
    "tfdefense.experiments.imagenet_preset",
]

#: modules whose examples another test file runs (with the attack fixtures it already has)
RUN_ELSEWHERE = {
    **{f"tfdefense.attacks{suffix}": "attacks/test_attacks_docstrings.py" for suffix in (
        "", ".base", ".iterative", ".cw_linf", ".spsa", ".stadv", ".foolbox_attacks",
        ".adaptive", ".presets", ".adversarial_set", ".robustness", ".commands")},
    **{f"tfdefense.attacks.{name}": "attacks/test_autoattack.py"
       for name in ("apgd", "fab", "square", "autoattack", "losses")},
    "tfdefense.attacks.jpeg": "attacks/test_attacks_jpeg_recolor.py",
    "tfdefense.attacks.recolor": "attacks/test_attacks_jpeg_recolor.py",
}


#: examples that take 4-9 s on 2 cores (a fit plus artifacts, a keras-tuner search, a detector
#: fitted on three characteristics, a stability sweep): run with the slow tests, so the
#: default suite stays short; tests/test_cli.py (train_cdvae through ``tfdefense train``),
#: tests/test_tune.py, tests/detect/test_detect_detector.py and tests/test_certify.py cover
#: the same calls there
SLOW_EXAMPLES = {"tfdefense.training", "tfdefense.tune", "tfdefense.detect.detector",
                 "tfdefense.certify.stability"}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW_EXAMPLES else name
    for name in MODULES])
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0


def modules_with_examples() -> set[str]:
    """Every module of the package (the package too) whose docstrings hold a doctest."""
    finder = doctest.DocTestFinder()
    names = ["tfdefense"] + [m.name for m in pkgutil.walk_packages(tfdefense.__path__, "tfdefense.")]
    return {name for name in names
            if any(test.examples for test in finder.find(importlib.import_module(name)))}


def test_every_module_with_an_example_has_its_example_run():
    found = modules_with_examples()
    missing = sorted(found - set(MODULES) - set(RUN_ELSEWHERE))
    assert missing == [], f"add these to MODULES (or RUN_ELSEWHERE): {missing}"
    assert set(MODULES) <= found  # a listed module lost its example: testmod would find none
    assert not set(MODULES) & set(RUN_ELSEWHERE)


@pytest.mark.parametrize("name", sorted(RUN_ELSEWHERE))
def test_the_file_that_runs_an_example_names_its_module(name):
    """RUN_ELSEWHERE is true: the named file runs doctests and names the module (in full or,
    for its parametrized short names, as a quoted last component)."""
    text = (TESTS / RUN_ELSEWHERE[name]).read_text()
    short = name.rsplit(".", 1)[-1]
    assert "doctest.testmod" in text
    assert f'"{name}"' in text or f'"{short}"' in text or (
        name == "tfdefense.attacks" and '"tfdefense.attacks",' in text)
