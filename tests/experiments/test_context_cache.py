"""Context caches: reused under the same settings, recomputed (never silently reused) under others."""

import os

import keras
import numpy as np
import pytest

from tfdefense.experiments.context import Context


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"a": np.arange(3) + self.calls}


def test_same_settings_reuse_the_cached_arrays(tmp_path):
    compute = Counter()
    first = Context("quick", str(tmp_path), {"eval_images": 10}).cached_arrays("x/k", compute)
    again = Context("quick", str(tmp_path), {"eval_images": 10}).cached_arrays("x/k", compute)
    assert compute.calls == 1
    np.testing.assert_array_equal(first["a"], again["a"])


def test_other_overrides_recompute_instead_of_reusing_a_stale_file(tmp_path, capsys):
    compute = Counter()
    Context("quick", str(tmp_path), {"at_epochs": 3}).cached_arrays("k", compute)
    out = Context("quick", str(tmp_path), {"at_epochs": 12}).cached_arrays("k", compute)
    assert compute.calls == 2
    assert out["a"].tolist() == [2, 3, 4]
    assert "made with other settings" in capsys.readouterr().err


def test_a_cosmetic_setting_does_not_invalidate_the_cache(tmp_path):
    compute = Counter()
    Context("quick", str(tmp_path), {"verbose": 0}).cached_arrays("k", compute)
    Context("quick", str(tmp_path), {"verbose": 2}).cached_arrays("k", compute)
    assert compute.calls == 1


def test_depends_on_is_part_of_the_fingerprint(tmp_path):
    compute = Counter()
    Context("quick", str(tmp_path)).cached_arrays("k", compute, depends_on={"latent_dim": 16})
    Context("quick", str(tmp_path)).cached_arrays("k", compute, depends_on={"latent_dim": 64})
    Context("quick", str(tmp_path)).cached_arrays("k", compute, depends_on={"latent_dim": 64})
    assert compute.calls == 2


def test_a_file_without_its_settings_record_is_recomputed(tmp_path):
    compute = Counter()
    ctx = Context("quick", str(tmp_path))
    ctx.cached_arrays("k", compute)
    os.remove(os.path.join(ctx.cache_dir, "k.npz.settings.json"))
    Context("quick", str(tmp_path)).cached_arrays("k", compute)
    assert compute.calls == 2


def test_cached_models_follow_the_same_rule(tmp_path):
    builds = []

    def build():
        builds.append(1)
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])

    Context("quick", str(tmp_path), {"seed": 0}).cached_model("m", build)
    Context("quick", str(tmp_path), {"seed": 0}).cached_model("m", build)
    assert len(builds) == 1
    Context("quick", str(tmp_path), {"seed": 1}).cached_model("m", build)
    assert len(builds) == 2


class _Preempted(Exception):
    pass


def test_an_interrupted_experiment_training_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    """cdvae(ctx) stopped after epoch 2 of 3 trains only epoch 3 when the run starts again."""
    from tfdefense.experiments import cdvae_models as cm

    tiny = {"train_images": 64, "cdvae_epochs": 3, "batch_size": 32, "latent_dim": 4, "width": 4,
            "verbose": 0}
    epochs_run = []

    class Watch(keras.callbacks.Callback):
        def __init__(self, stop_after=None):
            super().__init__()
            self.stop_after = stop_after

        def on_epoch_begin(self, epoch, logs=None):
            epochs_run.append(epoch)

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == self.stop_after:
                raise _Preempted

    original_fit = keras.Model.fit

    def fit_with(watch):
        def fit(model, *args, callbacks=None, **kwargs):
            return original_fit(model, *args, callbacks=[*(callbacks or []), watch], **kwargs)
        return fit

    monkeypatch.setattr(keras.Model, "fit", fit_with(Watch(stop_after=2)))
    with pytest.raises(_Preempted):
        cm.cdvae(Context("quick", str(tmp_path), tiny))
    backups = os.listdir(tmp_path / "cache" / "backup")
    assert len(backups) == 1 and backups[0].startswith("cdvae_gamma2-")
    assert epochs_run == [0, 1]

    epochs_run.clear()
    monkeypatch.setattr(keras.Model, "fit", fit_with(Watch()))
    model = cm.cdvae(Context("quick", str(tmp_path), tiny))
    assert epochs_run == [2]  # epochs 0 and 1 came from the backup
    assert int(model.optimizer.iterations) == 3 * 2  # 3 epochs of 64 / 32 steps, optimizer restored
    assert os.listdir(tmp_path / "cache" / "backup") == []  # deleted once training ended
    assert os.path.exists(tmp_path / "cache" / "cdvae_gamma2.keras")


def _backup_dirs(ctx: Context, key: str, stages=(None,), inner: str | None = None) -> list[str]:
    """The backup folders ``ctx.backup(stage)`` names inside ``key``'s trainer (and, with
    ``inner``, inside a nested trainer), in call order; the trainers fail so nothing is cached."""
    dirs: list[str] = []

    def train():
        dirs.extend(ctx.backup(stage).backup_dir for stage in stages)
        if inner:
            try:
                ctx.cached_model(inner, lambda: dirs.append(ctx.backup().backup_dir) or _stop())
            except _Preempted:
                pass
            dirs.append(ctx.backup().backup_dir)  # the outer trainer's again
        _stop()

    with pytest.raises(_Preempted):
        ctx.cached_model(key, train, depends_on={"epochs": ctx.settings.get("cdvae_epochs")}
                         if key == "dep" else None)
    return dirs


def _stop():
    raise _Preempted


def test_a_backup_made_under_other_settings_is_not_resumed(tmp_path):
    a, = _backup_dirs(Context("quick", str(tmp_path), {"cdvae_epochs": 3}), "m")
    b, = _backup_dirs(Context("quick", str(tmp_path), {"cdvae_epochs": 4}), "m")
    c, = _backup_dirs(Context("quick", str(tmp_path), {"cdvae_epochs": 3, "verbose": 2}), "m")
    assert a != b and a == c
    assert os.path.dirname(a) == os.path.join(str(tmp_path), "cache", "backup")
    # a trainer that declares what it depends on ignores every other setting
    d, = _backup_dirs(Context("quick", str(tmp_path), {"cdvae_epochs": 3, "latent_dim": 8}), "dep")
    e, = _backup_dirs(Context("quick", str(tmp_path), {"cdvae_epochs": 3, "latent_dim": 9}), "dep")
    assert d == e and os.path.basename(d).startswith("dep-")


def test_backup_names_the_model_being_trained_its_stage_and_nested_trainers(tmp_path):
    ctx = Context("quick", str(tmp_path))
    whole, stage, inner, outer_again = _backup_dirs(ctx, "at", stages=(None, "warmup"), inner="clf")
    names = [os.path.basename(d).rsplit("-", 1)[0] for d in (whole, stage, inner, outer_again)]
    assert names == ["at", "at__warmup", "clf", "at"]
    with pytest.raises(RuntimeError, match="inside a cached_model trainer"):
        ctx.backup()  # outside every trainer: no model owns the folder


def test_the_combo_vae_resumes_with_both_optimizers_state(tmp_path, monkeypatch):
    """FM-Defense's combo-VAE has a second (TC discriminator) optimizer: a resumed run
    restores both step counts, so the discriminator does not restart its Adam moments."""
    from tfdefense.experiments import fm_models as fm

    tiny = {"fm_train_images": 64, "fm_dgmm_epochs": 1, "fm_vae_epochs": 3,
            "fm_discriminator_units": 8, "verbose": 0, "fm_verbose": 0}
    original_fit = keras.Model.fit

    def stop_vae_after_two(model, *args, callbacks=None, **kwargs):
        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if type(model).__name__ == "ComboVAE" and epoch == 1:
                    raise _Preempted

        return original_fit(model, *args, callbacks=[*(callbacks or []), Stop()], **kwargs)

    monkeypatch.setattr(keras.Model, "fit", stop_vae_after_two)
    ctx = Context("quick", str(tmp_path), tiny)
    with pytest.raises(_Preempted), ctx.on_dataset("mnist"):
        fm.combo_vae(ctx)
    epochs_run = []

    def watch(model, *args, callbacks=None, **kwargs):
        class Watch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                epochs_run.append((type(model).__name__, epoch))

        return original_fit(model, *args, callbacks=[*(callbacks or []), Watch()], **kwargs)

    monkeypatch.setattr(keras.Model, "fit", watch)
    ctx = Context("quick", str(tmp_path), tiny)
    with ctx.on_dataset("mnist"):
        vae = fm.combo_vae(ctx)
    assert epochs_run == [("ComboVAE", 2)]  # the DGMM was cached, the VAE's epochs 0-1 restored
    steps = 3 * 1  # 3 epochs of one 64-image batch; the third alone would count 1
    assert int(vae.optimizer.iterations) == steps
    assert int(vae.discriminator_optimizer.iterations) == steps


def test_preset_setting_reads_the_run_then_the_preset_then_the_fallback(tmp_path):
    from tfdefense.experiments.context import preset_setting

    table = {"quick": {"steps": 2, "images": 8}, "paper": {"steps": 100, "images": 1000}}
    quick = Context("quick", str(tmp_path), {"images": 3})
    assert preset_setting(quick, table, "images") == 3  # the run's override
    assert preset_setting(quick, table, "steps") == 2  # the preset's value
    imagenet = Context("paper_imagenet", str(tmp_path))
    assert preset_setting(imagenet, table, "steps") == 100  # no such preset: paper's
    assert preset_setting(imagenet, {"quick": {"steps": 2}}, "steps", fallback="quick") == 2
    with pytest.raises(ValueError, match=r"unknown key 'epochs'; expected one of \['images', 'steps'\]"):
        preset_setting(quick, table, "epochs")


def test_a_change_of_the_ported_nets_configuration_invalidates_cdvae_caches_only(tmp_path,
                                                                                 monkeypatch):
    """A model cached before the official BatchNorm epsilon (1e-5) replaced Keras' 1e-3 must be
    retrained, not loaded with its old configuration; FM-Defense's nets did not change."""
    import importlib

    cdvae_nets = importlib.import_module("tfdefense.nets.cdvae_nets")
    ctx = Context("quick", str(tmp_path), {})
    with ctx.on_dataset("cifar10"):
        cdvae_before = ctx.fingerprint()
    with ctx.on_dataset("mnist"):
        fm_before = ctx.fingerprint()
    monkeypatch.setattr(cdvae_nets, "BN_EPSILON", 1e-3)
    with ctx.on_dataset("cifar10"):
        assert ctx.fingerprint() != cdvae_before
    with ctx.on_dataset("mnist"):
        assert ctx.fingerprint() == fm_before
        assert "ported_nets" not in fm_before
