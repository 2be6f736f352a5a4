"""Context caches: reused under the same settings, recomputed (never silently reused) under others."""

import os

import keras
import numpy as np

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
