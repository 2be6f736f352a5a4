"""Experiments declare their datasets; a preset maps each onto data; nothing else can be read."""

import numpy as np
import pytest

from tfdefense.experiments import Context, Result, available, get, register
from tfdefense.experiments.context import PRESETS, ROLES
from tfdefense.experiments.registry import datasets_of
from tfdefense.report import run_experiments


@register("test_reads_celeb_a", order=999, datasets=("cifar10",))
def _reads_undeclared(ctx):
    with ctx.on_dataset("celeb_a"):
        return Result("test_reads_celeb_a", "x", ctx.preset, ctx.dataset)


@register("test_two_datasets", order=999, datasets=("mnist", "celeb_a"))
def _two_datasets(ctx):
    seen = {}
    for role in ctx.named_roles():
        with ctx.on_dataset(role):
            seen[role] = (ctx.dataset, len(ctx.arrays("test", limit=3)[0]))
    with ctx.on_dataset("celeb_a"):  # declared but not named by quick: refused
        pass
    return Result("test_two_datasets", "x", ctx.preset, ctx.dataset, measurements=seen)


def test_an_experiment_reading_a_dataset_it_did_not_declare_fails(tmp_path):
    results, failed = run_experiments(Context("quick", str(tmp_path)), ["test_reads_celeb_a"],
                                      log=lambda *_: None)
    assert failed == ["test_reads_celeb_a"]
    assert "does not declare (it declares cifar10)" in results[0].measurements["error"]


def test_an_experiment_reading_a_dataset_its_preset_does_not_name_fails(tmp_path):
    with pytest.raises(ValueError, match="preset 'quick' names no data for dataset 'celeb_a'"):
        get("test_two_datasets")(Context("quick", str(tmp_path)))


def test_a_declared_role_runs_on_the_data_the_override_names(tmp_path):
    ctx = Context("quick", str(tmp_path), {"dataset.celeb_a": "mnist_5k"})
    result = get("test_two_datasets")(ctx)
    assert result.measurements == {"mnist": ("mnist_5k", 3), "celeb_a": ("mnist_5k", 3)}


def test_an_experiment_whose_datasets_the_preset_does_not_run_says_how_to_run_it(tmp_path):
    result = get("fm_table2")(Context("paper_imagenet", str(tmp_path)))
    assert result.measurements == {"status": "not run", "needs": ["mnist"]}
    assert "`--preset quick`" in result.notes[0] and "paper_imagenet" in result.notes[0]


def test_one_dataset_override_moves_every_role_the_preset_runs_and_only_those():
    ctx = Context("paper_imagenet", "/tmp/unused_ctx", {"dataset": "restricted_imagenet_32"})
    assert ctx.datasets == {"cifar10": None, "restricted_imagenet": "restricted_imagenet_32",
                            "mnist": None, "fashion_mnist": None, "celeb_a": None}
    assert ctx.dataset == "restricted_imagenet_32" and "dataset" not in ctx.settings


@pytest.mark.parametrize("overrides, message", [
    ({"dataset.svhn": "mnist"}, "unknown role"),
    ({"dataset.mnist": "mnist_50k"}, "unknown dataset 'mnist_50k'"),
])
def test_bad_dataset_overrides_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        Context("quick", str(tmp_path), overrides)


def test_arrays_are_kept_per_dataset_and_limit(tmp_path):
    ctx = Context("quick", str(tmp_path), {"dataset.fashion_mnist": "mnist_5k"})
    with ctx.on_dataset("mnist"):
        x, y = ctx.arrays("validation")
        x3, y3 = ctx.arrays("validation", limit=3)
    assert len(x) == 500 and np.array_equal(x3, x[:3]) and np.array_equal(y3, y[:3])


@pytest.mark.parametrize("preset, name, role", [
    ("quick", "cdvae_table1", "cifar10"), ("paper", "cdvae_table1", "cifar10"),
    ("paper_imagenet", "cdvae_table1", "restricted_imagenet"), ("paper", "fm_table2", "mnist"),
    ("paper", "cdvae_table7", "cifar10"),
])
def test_each_preset_runs_an_experiment_on_the_papers_dataset(tmp_path, preset, name, role):
    ctx = Context(preset, str(tmp_path))
    assert ctx.named_roles(datasets_of(name))[0] == role
    expected = {"quick": "mnist_5k"}.get(preset, role)
    assert ctx.datasets[role] == expected


def test_every_experiment_declares_datasets_every_preset_maps():
    for name in available():
        assert set(datasets_of(name)) <= set(ROLES), name
    for preset in PRESETS:
        assert set(PRESETS[preset]["datasets"]) == set(ROLES), preset
