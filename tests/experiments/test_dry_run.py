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
    from tfdefense.experiments.dry_run import SettingsReadLog, record_fits

    ctx = Context("quick", str(tmp_path))
    ctx.settings = SettingsReadLog(ctx.settings)
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


def test_a_recipe_fit_is_planned_with_its_recipes_epochs_and_batch():
    # PGD-AT reads at_epochs (82 in paper's settings) but its recipe trains 100 epochs of batch 100
    # (Laidlaw et al.'s adv_train.py); the CD-VAE's recipe 300 epochs of batch 256 (official)
    pgd, vae = plan("paper", [_fit(recipe_model="table7_pgd_at"),
                              _fit(recipe_model="cdvae", epochs_key="cdvae_epochs",
                                   batch_key="batch_size", model="CDVAE")], mock_examples=24)
    assert (pgd["epochs"], pgd["batch"], pgd["steps"]) == (100, 100, 100 * 500)
    assert (vae["epochs"], vae["batch"], vae["steps"]) == (300, 256, 300 * 196)  # ceil(50000/256)


def test_an_augmented_fit_records_its_images_and_its_recipe_model(tmp_path):
    """An augmented fit passes a tf.data pipeline whose len() counts batches (24 images in
    batches of 8: 3); the recorder must see 24 images and the model the recipe trains."""
    import dataclasses

    import keras
    import numpy as np

    from tfdefense.experiments import training_recipes as tr
    from tfdefense.experiments.context import Context
    from tfdefense.experiments.dry_run import SettingsReadLog, record_fits

    ctx = Context("quick", str(tmp_path))
    ctx.settings = SettingsReadLog(ctx.settings)
    recipe = dataclasses.replace(tr.RECIPES["paper"]["table7_normal"], epochs=1, batch_size=8)
    assert recipe.augmentation is not None  # the pipeline path, not the array one
    x = np.random.default_rng(0).uniform(size=(24, 32, 32, 3)).astype("float32")
    y = np.arange(24) % 10
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile(recipe.build_optimizer(steps_per_epoch=3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with record_fits(ctx) as fits:
        tr.fit(model, x, y, recipe, seed=0, verbose=0, callbacks=[], model_key="table7_normal")
    (f,) = fits
    assert (f.samples, f.batch, f.steps, f.recipe_model) == (24, 8, 3, "table7_normal")
