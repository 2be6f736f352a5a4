"""Presets, AdversarialSet caching/resume/invalidation, and evaluate_robustness."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import (
    AdversarialSet,
    evaluate_robustness,
    get_attack,
    get_preset,
    model_fingerprint,
    preset_params,
)
from tfdefense.attacks.base import Attack
from tfdefense.attacks.robustness import defense_weights_fingerprint
from tfdefense.defend.base import REJECTED, Defense
from tfdefense.nets import small_cnn


# -- presets ------------------------------------------------------------------
def test_presets_carry_the_papers_settings():
    det = preset_params("cdvae_detection")
    assert det["pgd_linf"][1] == {"eps": 8 / 255, "steps": 5}
    assert det["pgd_l2"][1]["eps"] == 1.0
    attacks = get_preset("cdvae_detection")
    assert attacks["pgd_linf"].step == pytest.approx(8 / 255 / np.sqrt(5))
    assert attacks["pgd_linf"].rand_init and not attacks["bim"].rand_init
    defense = get_preset("cdvae_defense")
    assert defense["pgd_l2"].steps == 100 and defense["stadv"].bound == 0.05
    fm = get_preset("fm_defense")
    assert fm["fgsm"].eps == 0.3 and fm["deepfool_linf"].norm == "linf"
    assert fm["cw_l2"].binary_search_steps == 9 and fm["cw_l2"].steps == 10000


def test_mnist_presets_scale_the_budgets_and_quick_cuts_steps():
    mnist = get_preset("cdvae_defense", data="mnist", quick=True)
    assert mnist["pgd_linf"].eps == 0.3 and mnist["pgd_l2"].eps == 2.0
    assert mnist["pgd_linf"].steps == 20 and mnist["stadv"].bound == 0.05


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "madry"}, "preset"), ({"name": "fm_defense", "data": "svhn"}, "data"),
    ({"name": "fm_defense", "quick": 1}, "quick"),
])
def test_bad_preset_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_preset(**kwargs)


# -- AdversarialSet -------------------------------------------------------------
class CountingFGSM(Attack):
    """FGSM through the real attack, counting batches; can crash at a chosen batch."""

    name = "fgsm"
    params = ("eps",)

    def __init__(self, model=None, *, eps=0.2, crash_at=None, **kwargs):
        super().__init__(model, **kwargs)
        self.eps, self.crash_at, self.calls = eps, crash_at, []
        self._inner = get_attack("fgsm", eps=eps)
        self._check_params()

    def _attack_batch(self, model, x, y, seed):
        index = int(seed[1])
        if index == self.crash_at:
            raise RuntimeError("simulated crash")
        self.calls.append(index)
        return self._inner._attack_batch(model, x, y, seed)


@pytest.fixture(scope="module")
def small():
    keras.utils.set_random_seed(1)
    model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    x = np.random.default_rng(0).uniform(size=(10, 28, 28, 1)).astype("float32")
    return model, x, np.arange(10) % 10


def test_cached_set_is_reused_without_recomputing(small, tmp_path):
    model, x, y = small
    first = AdversarialSet.create(CountingFGSM(batch_size=4), model, x, y, path=tmp_path)
    attack = CountingFGSM(batch_size=4)
    again = AdversarialSet.create(attack, model, x, y, path=tmp_path)
    assert attack.calls == [] and again.reused and not first.reused
    np.testing.assert_array_equal(first.x_adv, again.x_adv)
    loaded = AdversarialSet.load(tmp_path)
    np.testing.assert_array_equal(loaded.x_adv, first.x_adv)
    assert loaded.params["eps"] == 0.2 and loaded.attack == "fgsm"
    assert json.loads((tmp_path / "meta.json").read_text())["model_fingerprint"] == (
        model_fingerprint(model))


@pytest.mark.parametrize("change", ["params", "weights", "data", "labels"])
def test_cached_set_is_recomputed_when_anything_differs(small, tmp_path, change):
    model, x, y = small
    AdversarialSet.create(CountingFGSM(batch_size=4), model, x, y, path=tmp_path)
    attack = CountingFGSM(batch_size=4, eps=0.1 if change == "params" else 0.2)
    other_model = model
    if change == "weights":
        other_model = keras.models.clone_model(model)
        other_model.set_weights([w + 0.01 for w in model.get_weights()])
    xs = x[1:] if change == "data" else x
    ys = (y[1:] if change == "data" else (y + 1) % 10 if change == "labels" else y)
    result = AdversarialSet.create(attack, other_model, xs, ys, path=tmp_path)
    assert not result.reused and attack.calls == list(range(3))
    expected = get_attack("fgsm", eps=attack.eps).generate(xs, ys, model=other_model)
    np.testing.assert_allclose(result.x_adv, expected, atol=1e-6)


def test_a_crash_loses_at_most_the_batch_in_flight(small, tmp_path):
    model, x, y = small
    with pytest.raises(RuntimeError, match="simulated"):
        AdversarialSet.create(CountingFGSM(batch_size=4, crash_at=2), model, x, y, path=tmp_path)
    assert sorted(p.name for p in tmp_path.glob("batch_*.npz")) == [
        "batch_00000.npz", "batch_00001.npz"]
    with pytest.raises(ValueError, match="incomplete"):
        AdversarialSet.load(tmp_path)
    resumed = CountingFGSM(batch_size=4)
    result = AdversarialSet.create(resumed, model, x, y, path=tmp_path)
    assert resumed.calls == [2] and result.batches_computed == 1
    fresh = get_attack("fgsm", eps=0.2).generate(x, y, model=model)
    np.testing.assert_allclose(result.x_adv, fresh, atol=1e-6)


def test_plain_functions_need_an_explicit_fingerprint(small, tmp_path):
    model, x, y = small
    fn = lambda t: model(t)  # noqa: E731
    with pytest.raises(ValueError, match="fingerprint"):
        AdversarialSet.create(get_attack("fgsm"), fn, x, y, path=tmp_path)
    fp = model_fingerprint(model)
    assert AdversarialSet.create(get_attack("fgsm"), fn, x, y, path=tmp_path, fingerprint=fp)


# -- evaluate_robustness ------------------------------------------------------
def test_evaluate_robustness_reports_accuracy_norms_and_time(trained, tmp_path):
    model, x, y, clean = trained
    attacks = [get_attack("fgsm", eps=0.3), get_attack("pgd_linf", eps=0.3, steps=10,
                                                       step_size=0.05)]
    ds = tf.data.Dataset.from_tensor_slices((x[:50], y[:50]))
    result = evaluate_robustness(model, ds, attacks, verbose=False)
    assert result.n == 50 and result.clean_accuracy > 0.9
    fgsm, pgd = result.rows
    assert pgd.accuracy < 0.1 and pgd.accuracy <= fgsm.accuracy < result.clean_accuracy
    assert pgd.success_rate > 0.9 and 0.29 < pgd.linf_max <= 0.3 + 1e-6
    assert pgd.l2_mean > 0 and pgd.seconds > 0
    assert result.worst_case_accuracy <= min(fgsm.accuracy, pgd.accuracy)
    table = result.to_markdown()
    assert "| pgd_linf |" in table and "worst case" in table
    assert json.loads(result.to_json(tmp_path / "r.json"))["rows"][1]["label"] == "pgd_linf"


def _reject_unsure(model):
    """A Defense around ``model`` that rejects where its top probability is below 0.9."""

    class RejectUnsure(Defense):
        input_shape = (28, 28, 1)
        detects = True

        def logits(self, images):
            return model(images)

        def detection_margin(self, images):
            return 0.9 - tf.reduce_max(tf.nn.softmax(model(images)), axis=-1)

        def defend(self, images):
            labels = tf.argmax(model(images), axis=-1, output_type=tf.int64)
            rejected = self.detection_margin(images) > 0
            return (tf.where(rejected, tf.constant(REJECTED, tf.int64), labels),
                    tf.cast(tf.where(rejected, 2, 0), tf.int32))

        def components(self):
            return {"classifier": model}

        def get_config(self):
            return {}

        @classmethod
        def from_parts(cls, config, components, state):
            raise NotImplementedError

    return RejectUnsure()


def test_evaluate_robustness_scores_a_rejecting_defense_through_an_attack_model(trained):
    model, x, y, _ = trained
    result = evaluate_robustness(_reject_unsure(model), (x[:40], y[:40]), "fgsm",
                                 attack_model=model, verbose=False)
    row = result.rows[0]
    assert row.defense_accuracy >= row.accuracy and row.rejection_rate > 0
    assert row.defense_accuracy == pytest.approx(row.accuracy + row.rejection_rate)


def test_evaluate_robustness_with_cache_reuses_the_examples(trained, tmp_path):
    model, x, y, _ = trained
    args = (model, (x[:20], y[:20]), {"f": get_attack("fgsm", eps=0.2)})
    first = evaluate_robustness(*args, cache_dir=tmp_path, verbose=False)
    assert (tmp_path / "f" / "meta.json").exists()
    second = evaluate_robustness(*args, cache_dir=tmp_path, verbose=False)
    assert first.rows[0].accuracy == second.rows[0].accuracy


@pytest.mark.parametrize("kwargs, match", [
    ({"predict": 3}, "predict"),
    ({"attacks": "no_such"}, "attack"),
    ({"attacks": []}, "attacks"),
    ({"dataset": [1, 2, 3]}, "dataset"),
    ({"max_examples": 0}, "max_examples"),
])
def test_evaluate_robustness_rejects_bad_arguments(small, kwargs, match):
    model, x, y = small
    args = {"predict": model, "dataset": (x, y), "attacks": "fgsm", "verbose": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate_robustness(**args)


def test_a_defense_without_attack_model_is_attacked_through_its_logits(trained, tmp_path):
    model, x, y, _ = trained
    defense = _reject_unsure(model)
    own = evaluate_robustness(defense, (x[:40], y[:40]), "fgsm", verbose=False)
    given = evaluate_robustness(defense, (x[:40], y[:40]), "fgsm", attack_model=model,
                                verbose=False)
    assert own.rows[0].accuracy == given.rows[0].accuracy
    assert own.rows[0].rejection_rate == given.rows[0].rejection_rate
    # the cache fingerprints a defense by its components' weights, its state and its config
    cached = evaluate_robustness(defense, (x[:10], y[:10]), "fgsm", cache_dir=tmp_path,
                                 verbose=False)
    meta = json.loads((tmp_path / "fgsm" / "meta.json").read_text())
    assert meta["model_fingerprint"] == defense_weights_fingerprint(defense)
    assert cached.rows[0].accuracy == evaluate_robustness(
        defense, (x[:10], y[:10]), "fgsm", verbose=False).rows[0].accuracy


def _tiny_autoattack(eps=0.3):
    from tfdefense.attacks import AutoAttack

    return AutoAttack(eps=eps, version="quick", steps=3, n_target_classes=1, queries=20, seed=0)


def test_a_greybox_autoattack_is_judged_by_the_attack_model_and_read_by_the_defense(trained):
    model, x, y, _ = trained
    defense = _reject_unsure(model)
    xs, ys = x[:12], y[:12]
    result = evaluate_robustness(defense, (xs, ys), {"aa": _tiny_autoattack()},
                                 attack_model=model, verbose=False)
    by_model = _tiny_autoattack().run(xs, ys, model=model, verbose=False)
    by_defense = _tiny_autoattack().run(xs, ys, model=model, labels_of=defense.predict,
                                        verbose=False)
    # the defense rejects unsure points, which a defense-judged run keeps attacking
    assert not np.array_equal(by_model.x_adv, by_defense.x_adv)
    (row,) = result.rows  # one row: the defense reading the attacker's examples
    assert row.labels == defense.predict(by_model.x_adv).tolist()
    assert row.decisions == defense.predict_with_decisions(by_model.x_adv)[1].tolist()
    assert row.accuracy == np.mean(defense.predict(by_model.x_adv) == ys)


def test_a_cached_autoattack_run_is_reused_whole_and_rerun_when_its_budget_changes(
        trained, tmp_path, monkeypatch):
    from tfdefense.attacks import AutoAttack

    model, x, y, _ = trained
    data = (x[:12], y[:12])
    first = evaluate_robustness(model, data, {"aa": _tiny_autoattack()}, cache_dir=tmp_path,
                                verbose=False)
    assert (tmp_path / "aa" / "run.npz").exists()

    def no_run(*args, **kwargs):
        raise AssertionError("AutoAttack ran although its cached run matches")

    monkeypatch.setattr(AutoAttack, "run", no_run)
    again = evaluate_robustness(model, data, {"aa": _tiny_autoattack()}, cache_dir=tmp_path,
                                verbose=False)
    assert [(r.label, r.accuracy, r.labels) for r in again.rows] == [
        (r.label, r.accuracy, r.labels) for r in first.rows]
    assert again.gradient_masking_flags == first.gradient_masking_flags
    assert again.autoattack_tables == first.autoattack_tables
    with pytest.raises(AssertionError, match="cached run matches"):
        evaluate_robustness(model, data, {"aa": _tiny_autoattack(eps=0.2)}, cache_dir=tmp_path,
                            verbose=False)
