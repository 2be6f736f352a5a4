"""The certified_l2 experiment: its table and figure on hand-made cells (fast), its settings
against the certifiable radius, and one tiny end-to-end run (slow)."""

import os

import numpy as np
import pytest
from scipy import stats

from tfdefense.experiments import Context, available, get
from tfdefense.experiments import certified_l2 as cl
from tfdefense.experiments.registry import datasets_of


def _cell(labels, radii, y):
    return {"labels": np.array(labels), "radii": np.array(radii, float), "y": np.array(y)}


def test_a_cell_summary_counts_right_labels_certified_at_each_radius():
    # right at 0.3 and 0.6; abstained (-1, radius 0); wrong label at 1.2
    summary = cl.summarize(_cell([1, 2, -1, 3], [0.3, 0.6, 0.0, 1.2], [1, 2, 0, 0]))
    # r = 0: 2 of 4; 0.25: 2; 0.5: 1 (the 0.6); 0.75 and 1: none (1.2 is the wrong label)
    assert summary["certified_accuracy"] == {"0": 50.0, "0.25": 50.0, "0.5": 25.0, "0.75": 0.0,
                                             "1": 0.0}
    assert (summary["abstained"], summary["images"]) == (1, 4)


def test_table_rows_go_by_sigma_then_variant_with_the_paper_cell_beside():
    summaries = {(v, s): cl.summarize(_cell([0], [r], [0]))
                 for s, r in ((0.5, 0.9), (0.25, 0.3)) for v in cl.VARIANTS}
    rows = cl.table_rows(summaries)
    assert [(r["σ"], r["model"]) for r in rows] == [
        (s, label) for s in ("0.25", "0.5") for label in cl.VARIANTS.values()]
    assert rows[0]["r = 0.25"] == 100.0 and rows[0]["r = 0.5"] == 0.0
    assert rows[-1]["r = 0.75"] == 100.0 and rows[-1]["r = 1"] == 0.0
    assert all(r["paper"] == cl.NOT_TRANSCRIBED for r in rows)


def test_the_quick_n_can_certify_radius_one_half_at_the_smaller_sigma():
    # all n draws right: sigma * Phi^-1(alpha ** (1 / n)); n = 400 -> 0.25 * 2.118 = 0.529
    quick = cl.SETTINGS["quick"]
    radius = cl.max_radius(min(quick["certify_sigmas"]), quick["certify_n"], quick["certify_alpha"])
    assert radius == pytest.approx(0.25 * stats.norm.ppf(0.001 ** (1 / 400)))
    assert radius > 0.5
    assert cl.max_radius(0.25, 300, 0.001) < 0.5  # why n is not 300


def test_paper_settings_are_cohen_et_al():
    paper = cl.SETTINGS["paper"]
    assert (paper["certify_n0"], paper["certify_n"], paper["certify_alpha"],
            paper["certify_images"], paper["certify_skip"]) == (100, 100_000, 0.001, 500, 20)
    assert tuple(paper["certify_sigmas"]) == (0.25, 0.5)


def test_the_figure_is_written(tmp_path):
    grid = np.linspace(0, 1, 5)
    curves = {s: {v: (grid, np.linspace(0.9, 0.1, 5)) for v in cl.VARIANTS} for s in (0.25, 0.5)}
    path = cl.plot_curves(curves, str(tmp_path / "c.png"))
    assert os.path.getsize(path) > 1000


def test_registered_for_cifar10_and_images_are_every_skip_th(tmp_path):
    assert cl.NAME in available() and datasets_of(cl.NAME) == ("cifar10",)
    ctx = Context("quick", str(tmp_path), {"certify_images": 3, "certify_skip": 7})
    with ctx.experiment(cl.NAME, ("cifar10",)), ctx.on_dataset("cifar10"):
        x, y = cl.certify_images(ctx)
        x_all, y_all = ctx.arrays("test")
    assert np.array_equal(y, y_all[[0, 7, 14]]) and np.array_equal(x, x_all[[0, 7, 14]])


def test_an_unknown_variant_is_refused(tmp_path):
    with pytest.raises(ValueError, match="variant"):
        cl.smoothed(Context("quick", str(tmp_path)), "nothing", 0.25)


@pytest.mark.slow  # about 60 s: a tiny D̂, CD-VAE, noise-trained classifier and fine-tuned G
def test_a_tiny_run_certifies_every_cell_and_reuses_its_cache(tmp_path, tiny_settings):
    settings = {**tiny_settings, "certify_sigmas": [0.5], "certify_images": 6, "certify_skip": 1,
                "certify_n0": 5, "certify_n": 60, "stability_epochs": 1, "noise_epochs": 1}
    run = get(cl.NAME)
    result = run(Context("quick", str(tmp_path), settings))
    assert [r["model"] for r in result.rows] == list(cl.VARIANTS.values())
    assert result.measurements["n"] == 60 and result.measurements["images"] == 6
    # 60 draws at sigma 0.5: no radius above 0.5 Phi^-1(0.001 ** (1 / 60)) = 0.5 * 1.233 = 0.617
    assert all(r["r = 0.75"] == 0.0 for r in result.rows)
    cache = os.path.join(str(tmp_path), "cache", "certify")
    assert sorted(f for f in os.listdir(cache) if f.endswith(".npz")) == sorted(
        f"{v}_sigma0.5.npz" for v in cl.VARIANTS)
    assert os.path.isfile(os.path.join(str(tmp_path), "figures", f"{cl.NAME}.png"))
    again = run(Context("quick", str(tmp_path), settings))  # every cell from the cache
    assert again.rows == result.rows
