"""AutoAttack and its parts: APGD's schedule, APGD vs PGD, Square without gradients,
the masking flag, the ensemble's worst case, FAB's projection, bad parameters.

Uses the session's tiny trained MNIST CNN (``trained`` in conftest) on at most 100
test points and few iterations. Tracing an attack's graph (about half a CPU second per
attack, model and batch shape) costs more than running it here, so the tests on the trained
model share one shortened AutoAttack (``quick_aa``) and one gradient-masked copy of the model
(``masked``): each component's graph on each model is traced once or twice (a second time
with the batch dimension relaxed) for the whole module, not once per test.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import APGD, FAB, AutoAttack, Square, evaluate_robustness, get_attack
from tfdefense.attacks.apgd import apgd_run, checkpoints, dlr, dlr_targeted
from tfdefense.attacks.fab import project_hyperplane
from tfdefense.attacks.presets import get_preset

EPS = 0.15  # MNIST Linf budget at which the tiny model is neither robust nor trivially broken
N = 50  # test points of the ensemble and masking tests (100% clean; ~10% robust at EPS)


def _acc(model, x, y) -> float:
    return float(np.mean(np.argmax(np.asarray(model(tf.constant(x))), 1) == y))


def _masked(model):
    """Same forward pass, gradient exactly zero (connected, so not None)."""

    def fn(x):
        x = tf.convert_to_tensor(x)
        return model(tf.stop_gradient(x)) + 0.0 * tf.reduce_sum(x, axis=[1, 2, 3])[:, None]

    return fn


@pytest.fixture(scope="module")
def masked(trained):
    """The trained model with its gradient masked (one function object: its graphs are shared)."""
    return _masked(trained[0])


@pytest.fixture(scope="module")
def quick_aa():
    """AutoAttack quick, shortened: APGD-CE, APGD-T and FAB-T with 10 steps and 2 targets,
    Square with 300 queries. One instance for the module, so the tests that run it or its
    components on the trained model (or ``masked``) reuse the graphs traced by the first."""
    return AutoAttack(eps=EPS, version="quick", steps=10, n_target_classes=2, queries=300, seed=3)


# -- APGD --------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [5, 10, 20, 37, 100, 250])
def test_checkpoints_follow_the_papers_formula(steps):
    # Croce & Hein 2020 §3.2: p0 = 0, p1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06),
    # w_j = ceil(p_j * N); computed here in floats rounded to the paper's two decimals
    p_prev, p, expected = 0.0, 0.22, []
    while p <= 1.0 + 1e-9:
        w = math.ceil(round(p * steps, 6))
        if w >= 1 and (not expected or w > expected[-1]):
            expected.append(w)
        p_prev, p = p, round(p + max(p - p_prev - 0.03, 0.06), 2)
    assert checkpoints(steps) == expected
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_step_size_halves_at_every_checkpoint_when_the_loss_never_rises():
    # constant logits: the objective never increases, so condition (1) halves at each checkpoint
    x = tf.constant(np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32"))
    y = tf.constant([0, 1, 2], tf.int64)

    def flat(images):
        return tf.ones([tf.shape(images)[0], 10]) + 0.0 * tf.reduce_sum(images)

    steps, eps = 40, 0.1
    _, _, history = apgd_run(flat, x, y, None, tf.range(3, dtype=tf.int64), tf.constant([1, 2]),
                             eps=eps, norm="linf", steps=steps, loss="ce", trace=True)
    ws = checkpoints(steps)
    expected = [2 * eps * 0.5 ** sum(w <= i for w in ws) for i in range(steps)]
    np.testing.assert_allclose(history.numpy()[:, 0], expected, rtol=1e-6)


def test_step_size_changes_only_at_checkpoints_and_only_by_halving(trained):
    model, x, y, _ = trained
    steps = 30
    _, _, history = apgd_run(model, tf.constant(x[:32]), tf.constant(y[:32]), None,
                             tf.range(32, dtype=tf.int64), tf.constant([0, 0]), eps=EPS,
                             norm="linf", steps=steps, loss="ce", trace=True)
    h = history.numpy()
    np.testing.assert_allclose(h[0], 2 * EPS, rtol=1e-6)
    ratio = h[1:] / h[:-1]
    ws = set(checkpoints(steps))
    for i in range(1, steps):  # h[i] is the step of iteration i; a halving lands after iterate w
        allowed = {1.0, 0.5} if i in ws else {1.0}
        assert set(np.round(ratio[i - 1], 6)) <= allowed, (i, set(ratio[i - 1]))


def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_budget(trained, quick_aa):
    model, x, y, clean = trained
    apgd = quick_aa.components()["apgd_ce"]  # APGD-CE, 1 restart (graph shared with other tests)
    steps = apgd.steps
    assert (steps, apgd.restarts, apgd.loss, apgd.eps) == (10, 1, "ce", EPS)
    pgd = get_attack("pgd_linf", eps=EPS, steps=steps, step_size=EPS / 4, seed=0)
    acc_pgd = _acc(model, pgd.generate(x, y, model=model), y)
    acc_apgd = _acc(model, apgd.generate(x, y, model=model), y)
    assert acc_pgd < clean - 0.3, "the budget should matter for this model"
    assert acc_apgd <= acc_pgd, (acc_apgd, acc_pgd)


def test_dlr_losses_match_hand_values():
    logits = tf.constant([[3.0, 1.0, 0.0, -1.0]])
    assert float(dlr(logits, tf.constant([0]))[0]) == pytest.approx(-2.0 / 3.0)
    assert float(dlr(logits, tf.constant([1]))[0]) == pytest.approx(2.0 / 3.0)
    value = dlr_targeted(logits, tf.constant([0]), tf.constant([1]))
    assert float(value[0]) == pytest.approx(-2.0 / 3.5)


# -- budgets and determinism ----------------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_every_component_stays_in_its_budget_and_repeats_for_a_seed(trained, quick_aa, norm):
    model, x, y, _ = trained
    x, y = x[:16], y[:16]
    if norm == "linf":  # the shared ensemble's gradient components (graphs traced once) and
        eps = EPS  # a Square of 30 queries (the shared one's 300 would cost more than a trace)
        components = quick_aa.components()
        attacks = [components["apgd_ce"], APGD(eps=eps, steps=10, loss="dlr"), components["apgd_t"],
                   components["fab_t"], Square(eps=eps, steps=30)]
    else:
        eps = 1.0
        attacks = [APGD(eps=eps, norm=norm, steps=5), APGD(eps=eps, norm=norm, steps=5, loss="dlr"),
                   get_attack("apgd_t", eps=eps, norm=norm, steps=5, n_target_classes=2),
                   FAB(eps=eps, norm=norm, steps=5, n_target_classes=2),
                   Square(eps=eps, norm=norm, steps=30)]
    assert [a.norm for a in attacks] == [norm] * 5 and {a.eps for a in attacks} == {eps}
    for attack in attacks:
        x_adv = attack.generate(x, y, model=model)
        d = (x_adv - x).reshape(len(x), -1)
        size = np.abs(d).max(1) if norm == "linf" else np.sqrt((d.astype("float64") ** 2).sum(1))
        assert size.max() <= eps * (1 + 1e-4), (attack.label, size.max())
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        np.testing.assert_array_equal(x_adv, attack.generate(x, y, model=model), attack.label)


def test_a_points_example_does_not_depend_on_its_batch(trained, quick_aa):
    model, x, y, _ = trained
    for attack in (quick_aa.components()["apgd_ce"], Square(eps=EPS, steps=20)):
        a = attack.attack_points(model, x[:16], y[:16], np.arange(16))
        b = attack.attack_points(model, x[8:24], y[8:24], np.arange(8, 24))
        np.testing.assert_array_equal(a[8:], b[:8], attack.label)


# -- Square and gradient masking ---------------------------------------------------
def test_square_breaks_a_model_without_usable_gradients_and_apgd_does_not(trained, masked,
                                                                          quick_aa):
    model, x, y, _ = trained
    x, y = x[:N], y[:N]
    clean = _acc(model, x, y)
    square, apgd = quick_aa.components()["square"], quick_aa.components()["apgd_ce"]
    assert (square.steps, apgd.steps) == (300, 10)
    acc_square = _acc(model, square.generate(x, y, model=masked), y)
    acc_apgd = _acc(model, apgd.generate(x, y, model=masked), y)
    # masked has model's forward pass, so Square's drop is also its drop on the undefended model
    assert acc_square < clean - 0.2, (acc_square, clean)
    assert acc_apgd >= clean - 0.05, (acc_apgd, clean)


def test_autoattack_flags_gradient_masking_only_where_it_is(trained, masked, quick_aa):
    model, x, y, _ = trained
    x, y = x[:N], y[:N]
    run = quick_aa.run(x, y, model=masked)
    assert run.gradient_masking and run.square_only >= 10
    assert "Gradient masking suspected" in run.to_markdown()
    plain = quick_aa.run(x, y, model=model)
    assert plain.square_only <= 2, plain.to_markdown()  # Square adds (almost) nothing here


def test_gradient_attacks_refuse_a_model_without_gradients(trained):
    model, x, y, _ = trained

    def detached(images):
        return model(tf.stop_gradient(images))

    for attack in (APGD(eps=EPS, steps=2), FAB(eps=EPS, steps=2, n_target_classes=1)):
        with pytest.raises(ValueError, match="no gradient"):
            attack.generate(x[:4], y[:4], model=detached)
    Square(eps=EPS, steps=3).generate(x[:4], y[:4], model=detached)  # gradient-free: fine


# -- the ensemble --------------------------------------------------------------------
def test_ensemble_worst_case_is_never_above_a_single_attack(trained, quick_aa):
    model, x, y, _ = trained
    x, y = x[:N], y[:N]
    clean = _acc(model, x, y)
    aa = quick_aa
    alone = aa.components()  # the very components, run alone (their graphs are already traced)
    result = evaluate_robustness(model, (x, y), {"aa": aa, **alone}, verbose=False)
    rows = {r.label: r for r in result.rows}
    cumulative = [rows[f"aa/{name}"].accuracy for name in aa.components()]
    assert cumulative == sorted(cumulative, reverse=True)
    assert cumulative[0] < clean
    ensemble = rows["aa"].accuracy
    assert ensemble == cumulative[-1]
    for name in alone:
        assert ensemble <= rows[name].accuracy, (name, ensemble, rows[name].accuracy)
    assert result.worst_case_accuracy <= ensemble
    assert result.gradient_masking is False
    assert "| aa/apgd_ce (cum.) |" in result.to_markdown()


def test_rand_version_runs_eot_on_a_stochastic_model(trained):
    model, x, y, clean = trained

    def noisy(images):
        return model(images + 0.05 * tf.random.normal(tf.shape(images)))

    aa = AutoAttack(eps=EPS, version="rand", steps=5, eot_iter=4)
    assert list(aa.components()) == ["apgd_ce", "apgd_dlr"]
    assert aa.components()["apgd_ce"].eot_iter == 4
    run = aa.run(x[:40], y[:40], model=noisy)
    assert run.robust_accuracy < clean - 0.2 and run.gradient_masking is None


def test_presets_build_the_standard_versions():
    assert get_preset("autoattack", data="mnist")["autoattack"].get_config()["eps"] == 0.3
    quick = get_preset("autoattack_quick")["autoattack"]
    assert quick.version == "quick" and quick.eps == pytest.approx(8 / 255)
    l2 = get_preset("autoattack_l2", data="mnist", quick=True)["autoattack"]
    assert (l2.norm, l2.eps, l2.version) == ("l2", 2.0, "quick")
    standard = AutoAttack()
    c = standard.components()
    assert (c["apgd_ce"].steps, c["apgd_t"].n_target_classes, c["fab_t"].steps,
            c["square"].steps) == (100, 9, 100, 5000)
    standard.steps = 7  # experiments shorten attacks by setting .steps: components follow
    assert {a.steps for n, a in standard.components().items() if n != "square"} == {7}
    standard.steps = 0
    with pytest.raises(ValueError, match="steps"):
        standard.components()


# -- FAB's projection -----------------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_projection_is_the_minimal_norm_point_on_the_hyperplane_in_the_box(norm):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(1)
    dim = 6
    checked = 0
    for _ in range(12):
        t = rng.uniform(size=(1, dim)).astype("float32")
        w = rng.normal(size=(1, dim)).astype("float32")
        c = np.float32(rng.normal() * 0.5)
        d = project_hyperplane(tf.constant(t), tf.constant(w), tf.constant([c]), norm).numpy()[0]
        bounds = [(-t[0, i], 1 - t[0, i]) for i in range(dim)]
        if norm == "linf":  # min s  s.t.  -s <= d_i <= s, w.d = c, box
            a_ub = np.vstack([np.c_[np.eye(dim), -np.ones(dim)], np.c_[-np.eye(dim), -np.ones(dim)]])
            res = scipy_optimize.linprog(np.r_[np.zeros(dim), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * dim),
                                         A_eq=[np.r_[w[0], 0.0]], b_eq=[c], bounds=[*bounds, (0, None)])
            if not res.success:
                continue
            best, got = res.x[-1], np.abs(d).max()
        else:
            on_plane = {"type": "eq", "fun": lambda z, w=w, c=c: w[0] @ z - c}
            res = scipy_optimize.minimize(lambda z: (z**2).sum(), np.zeros(dim), bounds=bounds,
                                          constraints=[on_plane])
            if not (res.success and abs(w[0] @ res.x - c) < 1e-6):
                continue
            best, got = np.sqrt((res.x**2).sum()), np.sqrt((d**2).sum())
        assert float(w[0] @ d) == pytest.approx(float(c), abs=1e-5)
        assert np.all(t[0] + d >= -1e-6) and np.all(t[0] + d <= 1 + 1e-6)
        assert got == pytest.approx(best, rel=1e-4, abs=1e-6)
        checked += 1
    assert checked >= 6


# -- bad parameters ----------------------------------------------------------------
@pytest.mark.parametrize(
    "name, params, match",
    [
        ("apgd_ce", {"eps": 0.0}, "eps"),
        ("apgd_ce", {"eps": -0.1}, "eps"),
        ("apgd_ce", {"norm": "l1"}, "norm"),
        ("apgd", {"loss": "hinge"}, "loss"),
        ("apgd_ce", {"rho": 0.0}, "rho"),
        ("apgd_ce", {"momentum": 1.5}, "momentum"),
        ("apgd_ce", {"restarts": 0}, "restarts"),
        ("apgd_ce", {"eot_iter": 0}, "eot_iter"),
        ("apgd_t", {"n_target_classes": 0}, "n_target_classes"),
        ("apgd_t", {"loss": "ce"}, "loss"),
        ("fab_t", {"eps": 0.0}, "eps"),
        ("fab_t", {"norm": "l1"}, "norm"),
        ("fab_t", {"eta": 0.5}, "eta"),
        ("fab_t", {"beta": 1.0}, "beta"),
        ("square", {"eps": -1.0}, "eps"),
        ("square", {"p_init": 0.0}, "p_init"),
        ("square", {"norm": "l0"}, "norm"),
        ("autoattack", {"version": "plus"}, "version"),
        ("autoattack", {"norm": "l1"}, "norm"),
        ("autoattack", {"eps": 0.0}, "eps"),
        ("autoattack", {"queries": 0}, "queries"),
        ("autoattack", {"steps": 0}, "steps"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_attack(name, **params)


@pytest.mark.parametrize("attack", [
    lambda: get_attack("apgd_t", n_target_classes=10, steps=2),
    lambda: get_attack("fab_t", n_target_classes=12, steps=2),
    lambda: AutoAttack(n_target_classes=10, version="quick", steps=2, queries=5),
])
def test_more_target_classes_than_the_model_has_are_capped_with_a_warning(trained, attack):
    model, x, y, _ = trained
    with pytest.warns(UserWarning, match="n_target_classes.*at most 9; running 9"):
        x_adv = attack().generate(x[:2], y[:2], model=model)
    assert x_adv.shape == x[:2].shape


@pytest.mark.parametrize("name", ["apgd", "fab", "square", "autoattack", "losses"])
def test_docstring_examples_run(name):
    import doctest
    import importlib

    module = importlib.import_module(f"tfdefense.attacks.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_fab_runs_on_rgb_nine_class_models_of_any_batch_size():
    # regression: the loop variable lost its static shape after one iteration (restricted ImageNet)
    from tfdefense.nets import small_cnn

    model = small_cnn((32, 32, 3), 9, width=4, dense_units=8)
    x = np.random.default_rng(0).uniform(size=(10, 32, 32, 3)).astype("float32")
    y = np.arange(10) % 9
    x_adv = get_attack("fab_t", model=model, eps=8 / 255, steps=3, n_target_classes=8).generate(x, y)
    assert x_adv.shape == x.shape and np.abs(x_adv - x).max() <= 8 / 255 + 1e-6
