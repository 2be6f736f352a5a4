"""Attacks and evaluate_robustness over a tf.distribute strategy's replicas.

The two-replica runs need logical CPU devices, configured before TensorFlow starts, so they run
in a subprocess (``distributed_attacks_script.py``, as tests/test_distribute.py does for
training) and are slow tests; the checks that need no second device run here on a
``OneDeviceStrategy``, which goes through the same replicated code with one replica.
"""

import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.distribute import one_device_strategy

from tfdefense.attacks import base, evaluate_robustness, get_attack
from tfdefense.nets import small_cnn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(HERE, "distributed_attacks_script.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1",
       "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
ENV.pop("TF_NUM_INTRAOP_THREADS", None)


def _script(mode, tmp_path):
    out = tmp_path / f"{mode}.json"
    proc = subprocess.run([sys.executable, SCRIPT, mode, str(out)], env=ENV, cwd=ROOT,
                          timeout=1200, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory):
    """Every comparison of one device against a MirroredStrategy over 2 logical CPUs."""
    return _script("compare", tmp_path_factory.mktemp("distributed"))[0]


# -------------------------------------------------------- two logical CPU devices
@pytest.mark.slow
@pytest.mark.parametrize("label", ["pgd_linf", "pgd_l2_early_stop", "mim", "spsa"])
def test_batch_attacks_on_two_replicas_give_the_single_device_examples(two_replicas, label):
    # 11 points in batches of 4 (4, 4, 3): one step has a replica idle, the last batch is ragged
    assert two_replicas["replicas"] == 2
    case = two_replicas["cases"][label]
    assert case["shape_ok"]
    assert case["moved"] > 1e-3 and 0 < case["fooled"]  # a real attack, not the clean images
    assert case["max_diff"] <= 1e-6  # batch i draws from (seed, i) on whichever replica runs it


@pytest.mark.slow
@pytest.mark.parametrize("label", ["apgd_ce", "apgd_t", "square", "fab_t", "autoattack"])
def test_point_attacks_on_two_replicas_give_the_single_device_examples(two_replicas, label):
    # 8 and 3 points split over 2 replicas; restarts and targets on fewer points still
    case = two_replicas["cases"][label]
    assert case["shape_ok"]
    assert case["moved"] > 1e-3 and 0 < case["fooled"]
    # per-point draws: only float rounding of other batch compositions may differ
    assert case["max_diff"] <= 1e-5


@pytest.mark.slow
def test_some_points_survive_so_restarts_and_targets_ran_on_a_subset(two_replicas):
    cases = two_replicas["cases"]
    assert 0 < cases["apgd_ce"]["fooled"] < 1 and 0 < cases["autoattack"]["fooled"] < 1


@pytest.mark.slow
def test_autoattack_run_on_two_replicas_breaks_the_same_points_with_the_same_attack(two_replicas):
    run = two_replicas["autoattack_run"]
    assert run["max_diff"] <= 1e-5
    single, mirrored = run["broken_by"]
    assert single == mirrored
    assert -1 in single and len(set(single)) >= 3  # survivors, and points broken by 2+ components


@pytest.mark.slow
def test_evaluate_robustness_on_two_replicas_scores_the_same(two_replicas):
    single, mirrored, cached = two_replicas["evaluate"]
    assert single.keys() == mirrored.keys() and "autoattack/apgd_t" in single
    for key in single:
        np.testing.assert_allclose(mirrored[key], single[key], atol=1e-6, err_msg=key)
    # cached sets (PGD and APGD only), generated batch by batch over the replicas
    assert {"pgd_linf", "apgd_ce", "clean"} <= cached.keys()
    for key in ("pgd_linf", "apgd_ce", "clean"):
        np.testing.assert_allclose(cached[key], single[key], atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_a_current_strategy_is_used_and_mirrored_weights_give_the_same_examples(two_replicas):
    assert two_replicas["scoped"]["max_diff"] == 0.0
    assert two_replicas["scoped"]["runners"] == 1  # the replicated path ran, not the plain one
    assert max(two_replicas["mirrored_weights"].values()) <= 1e-5


def _placed(stdout, op):
    """Devices TensorFlow placed ``op`` nodes on (log_device_placement lines)."""
    return [line.rsplit(" ", 1)[-1] for line in stdout.splitlines() if f"({op}):" in line]


@pytest.mark.slow
def test_the_second_replica_does_its_share_on_its_own_device(tmp_path):
    result, proc = _script("placement", tmp_path)
    second = result["devices"][1]
    assert second.endswith("CPU:1")
    # PGD's random start (batches) and APGD's per-point hash (points) run on both devices,
    # and so do the gradient passes of both
    for op in ("StatelessRandomUniformV2", "BitwiseXor", "Conv2DBackpropInput"):
        devices = _placed(proc.stdout, op)
        assert second in devices and result["devices"][0] in devices, op


# ------------------------------------------------ one replica, in this process
@pytest.fixture(scope="module")
def tiny():
    # seeded: the weights otherwise follow whatever drew from Keras's global RNG before this
    # file in the worker, and some draws give a CNN whose gradient at these x is zero
    keras.utils.set_random_seed(3)
    model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    x = np.random.default_rng(1).uniform(size=(7, 28, 28, 1)).astype("float32")
    return model, x, np.argmax(np.asarray(model(x)), 1)


@pytest.fixture
def runs(monkeypatch):
    """Counts the strategy.run steps of the replicated path."""
    calls = []
    original = base.ReplicaRunner.run

    def run(self, jobs, rows):
        calls.append(len(jobs))
        yield from original(self, jobs, rows)

    monkeypatch.setattr(base.ReplicaRunner, "run", run)
    return calls


ATTACKS = {
    "pgd_linf": dict(eps=0.02, steps=2),
    "apgd_ce": dict(eps=0.01, steps=4, restarts=2),
    "autoattack": dict(eps=0.01, version="quick", steps=2, queries=4, n_target_classes=2),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_one_device_strategy_runs_replicated_and_gives_the_plain_examples(tiny, runs, name):
    model, x, y = tiny
    attack = get_attack(name, batch_size=3, seed=3, **ATTACKS[name])
    plain = attack.generate(x, y, model=model)
    assert not runs
    on_device = attack.generate(x, y, model=model, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert runs  # through strategy.run, not the plain loop
    np.testing.assert_allclose(on_device, plain, atol=1e-6)
    assert np.abs(plain - x).max() > 1e-3


@pytest.mark.parametrize("name", ["pgd_linf", "apgd_ce"])
def test_iter_batches_of_chosen_batches_matches_run_batch(tiny, name):
    model, x, y = tiny
    attack = get_attack(name, batch_size=3, seed=3, **ATTACKS[name])
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    got = list(attack.iter_batches(model, x, y, [2, 0], strategy=strategy))
    assert [i for i, _ in got] == [2, 0]
    np.testing.assert_allclose(got[0][1], attack.run_batch(model, x[6:], y[6:], 2), atol=1e-6)
    np.testing.assert_allclose(got[1][1], attack.run_batch(model, x[:3], y[:3], 0), atol=1e-6)
    with pytest.raises(ValueError, match="indices"):
        list(attack.iter_batches(model, x, y, [3]))


def test_generate_inside_strategy_run_raises(tiny):
    model, x, y = tiny
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    attack = get_attack("fgsm", eps=0.1)
    with pytest.raises(ValueError, match="outside strategy.run"):
        strategy.run(lambda: attack.generate(x, y, model=model))


def test_strategies_that_are_not_local_or_not_strategies_raise(tiny, monkeypatch):
    model, x, y = tiny
    attack = get_attack("fgsm", eps=0.1)
    with pytest.raises(ValueError, match="expected a tf.distribute.Strategy"):
        attack.generate(x, y, model=model, strategy="mirrored")
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    # a strategy with more replicas than devices here: the other replicas are other machines
    monkeypatch.setattr(one_device_strategy.OneDeviceExtended, "_num_replicas_in_sync",
                        property(lambda self: 2))
    with pytest.raises(ValueError, match="multi-worker strategies are not supported"):
        attack.generate(x, y, model=model, strategy=strategy)


def test_the_default_strategy_is_the_plain_path(tiny, runs):
    model, x, y = tiny
    get_attack("fgsm", eps=0.1).generate(x, y, model=model, strategy=tf.distribute.get_strategy())
    assert not runs


def test_library_attacks_warn_and_run_on_one_device(tiny, runs):
    model, x, y = tiny
    attack = get_attack("deepfool_linf", steps=2, batch_size=3, backend="foolbox")
    with pytest.warns(UserWarning, match="'deepfool_linf' runs eagerly .* on one device"):
        x_adv = attack.generate(x, y, model=model, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert not runs
    np.testing.assert_array_equal(x_adv, attack.generate(x, y, model=model))


def test_the_cleverhans_backend_warns(tiny):
    model, x, y = tiny
    attack = get_attack("fgsm", eps=0.1, backend="cleverhans")
    with pytest.warns(UserWarning, match="on one device"):
        attack.generate(x, y, model=model, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))


def test_evaluate_robustness_with_a_strategy_runs_cached_sets_replicated(tiny, tmp_path, runs):
    model, x, y = tiny
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    attack = get_attack("pgd_linf", eps=0.05, steps=2, batch_size=3, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "one device" fallback for a compiled attack
        cached = evaluate_robustness(model, (x, y), [attack], verbose=False, cache_dir=tmp_path,
                                     strategy=strategy)
    assert runs  # the cached set's batches went through strategy.run
    plain = evaluate_robustness(model, (x, y), [attack], verbose=False)
    assert cached.rows[0].accuracy == plain.rows[0].accuracy
    assert cached.rows[0].linf_max == pytest.approx(plain.rows[0].linf_max, abs=1e-6)
    assert plain.rows[0].accuracy < plain.clean_accuracy  # the attack did something
