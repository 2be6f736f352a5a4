"""The dry run's plan: each recorded fit scaled to the real run by hand-checkable arithmetic."""

import pytest

from tfdefense.experiments.dry_run import DRY_RUN_SETTINGS, Fit, format_plan, plan, real_setting


def _fit(**kw):
    base = dict(experiment="cdvae_table7", role="cifar10", model="AdversarialCDVAE", params=10,
                samples=24, batch=8, epochs=1, steps=3, step_seconds=0.5, seconds=2.0,
                epochs_key="at_epochs", images_key="train_images", batch_key="at_batch_size")
    return Fit(**{**base, **kw})


def test_a_fit_on_the_whole_split_scales_to_the_real_epochs_images_and_batch():
    row, = plan("paper", [_fit()], mock_examples=24)
    # paper: at_epochs 82, train_images None (all 50,000 CIFAR-10), at_batch_size 100
    assert (row["epochs"], row["images"], row["batch"]) == (82, 50_000, 100)
    assert row["steps"] == 82 * 500
    # 0.5 s per step of 8 images -> 100 images: 6.25 s per step
    assert row["hours"] == pytest.approx(82 * 500 * 0.5 * 100 / 8 / 3600)


def test_an_image_limit_caps_the_real_images_and_a_partial_use_keeps_its_share():
    # FM-Defense: fm_train_images 20,000 of mnist's 60,000; the fit used half the dry split
    row, = plan("paper", [_fit(role="mnist", samples=12, images_key="fm_train_images",
                                epochs_key="fm_vae_epochs", batch_key=None, batch=64)], 24)
    assert (row["images"], row["batch"], row["epochs"]) == (10_000, 64, 100)
    assert row["steps"] == 100 * 157  # ceil(10000 / 64)


def test_a_fit_without_a_known_size_has_no_estimate_and_the_total_skips_it():
    rows = plan("paper", [_fit(samples=None), _fit()], 24)
    assert rows[0]["hours"] is None and rows[1]["hours"] is not None
    text = format_plan("paper", rows)
    assert "?" in text and f"{rows[1]['hours']:.1f} h" in text
    assert "gamma_grid (2 values here, 6 in the real run)" in text


def test_real_settings_follow_the_lookup_order_of_the_experiments():
    assert real_setting("paper", "cdvae_epochs") == 300  # PRESETS
    assert real_setting("paper_imagenet", "cdvae_epochs") == 60
    assert real_setting("paper", "fm_codes", role="fashion_mnist") == 10  # per-dataset override
    assert real_setting("paper", "fm_codes", role="mnist") == 20
    assert real_setting("paper", "no_such_setting") is None
    assert DRY_RUN_SETTINGS["cdvae_epochs"] == 1


def test_a_repeated_fit_without_new_reads_keeps_the_settings_of_the_fit_it_repeats(tmp_path):
    """keras-tuner trials read epochs and batch once, before the search: every trial's fit is
    planned with them, not only the first (the second trial was planned as 1 epoch of batch 8)."""
    import keras
    import numpy as np

    from tfdefense.experiments.context import Context
    from tfdefense.experiments.dry_run import _ReadLog, record_fits

    ctx = Context("quick", str(tmp_path))
    ctx.settings = _ReadLog(ctx.settings)
    x, y = np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32")

    def model(name):
        m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name=name)
        m.compile("sgd", "mse")
        return m

    with record_fits(ctx) as fits:
        ctx.settings["cdvae_epochs"], ctx.settings["batch_size"]  # read once, as a search does
        for _ in range(2):  # two trials of one search
            model("trial").fit(x, y, epochs=1, batch_size=4, verbose=0)
        model("other").fit(x, y, epochs=1, batch_size=4, verbose=0)  # another model, no reads
    keys = [(f.model, f.epochs_key, f.batch_key) for f in fits]
    assert keys == [("trial", "cdvae_epochs", "batch_size"), ("trial", "cdvae_epochs", "batch_size"),
                    ("other", None, None)]
