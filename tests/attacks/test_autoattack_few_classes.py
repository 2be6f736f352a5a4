"""AutoAttack and its components on 2 and 3 classes (a binary attribute, say).

The targeted DLR loss (Croce & Hein 2020, Eq. 4) reads the 4th largest logit and
the DLR loss (Eq. 3) the 3rd, so on fewer classes APGD runs the targeted
cross-entropy −CE(z, t) instead (``losses.apgd_objective``) and APGD-T / FAB-T
run at most classes − 1 targets. Checked here against linear models, whose
minimal Linf distance to the decision boundary is closed-form: for logits
z = Wx + b and label y, min_{j≠y} (z_y − z_j) / ‖w_y − w_j‖₁ (for 2 classes
|w·x + b| / ‖w‖₁ with w = w_1 − w_0), as long as the box [0, 1] does not bind
(the points sit in [0.2, 0.8], the budgets stay below 0.2). Every test takes
under a few seconds on one CPU thread.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import APGD, FAB, AutoAttack, Square, get_attack
from tfdefense.attacks.apgd import APGDTargeted
from tfdefense.attacks.autoattack import OBJECTIVE_TEXT
from tfdefense.attacks.losses import (
    MIN_CLASSES,
    apgd_loss,
    apgd_objective,
    cross_entropy,
    dlr,
    dlr_targeted,
)

SHAPE = (4, 4, 1)  # 16 pixels: random points land at distances comparable to the budgets
MID_EPS = 0.05  # points are kept at least 25% away from it on either side
BUDGETS = dict(steps=20, queries=100)  # every version, shortened; linear models need no more


def linear(weights: np.ndarray, bias: np.ndarray) -> keras.Model:
    """The linear classifier z = W^T flatten(x) + b, W of shape (16, C)."""
    inputs = keras.Input(SHAPE)
    dense = keras.layers.Dense(weights.shape[1])
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([weights.astype("float32"), bias.astype("float32")])
    return model


def boundary_distance(weights: np.ndarray, bias: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Minimal Linf distance of each point to another class's region (box not binding)."""
    flat = x.reshape(len(x), -1).astype("float64")
    z = flat @ weights + bias
    y = np.argmax(z, 1)
    out = np.full(len(x), np.inf)
    for j in range(weights.shape[1]):
        other = y != j
        rows = np.flatnonzero(other)
        gap = (z[rows, y[rows]] - z[rows, j]) / np.abs(weights[:, y[rows]] - weights[:, [j]]).sum(0)
        out[rows] = np.minimum(out[rows], gap)
    return out


def problem(num_classes: int, n: int = 12, seed: int = 0):
    """A random linear model of ``num_classes`` classes (for 2: logits [0, w·x + b]) and ``n``
    points in [0.2, 0.8] with their closed-form distances, half below MID_EPS / 1.25 and half
    above 1.25 MID_EPS (all in [0.01, 0.12])."""
    rng = np.random.default_rng(seed)
    dim = int(np.prod(SHAPE))
    if num_classes == 2:
        w = rng.normal(size=dim)
        weights = np.stack([np.zeros(dim), w], 1)
    else:
        weights = rng.normal(size=(dim, num_classes))
    bias = -0.5 * weights.sum(0)  # every class ties at the image x = 0.5
    x = (0.5 + 0.3 * rng.uniform(-1.0, 1.0, size=(4000, *SHAPE))).astype("float32")
    d = boundary_distance(weights, bias, x)
    near = np.flatnonzero((d > 0.01) & (d < MID_EPS / 1.25))[: n // 2]
    far = np.flatnonzero((d > 1.25 * MID_EPS) & (d < 0.12))[: n - n // 2]
    keep = np.concatenate([near, far])
    assert len(keep) == n
    x = x[keep]
    y = np.argmax(x.reshape(n, -1) @ weights + bias, 1).astype(np.int64)
    if num_classes == 2:  # the brief's closed form for two classes
        np.testing.assert_allclose(d[keep], np.abs(x.reshape(n, -1) @ w + bias[1]) / np.abs(w).sum(),
                                   rtol=1e-5)
    return linear(weights, bias), x, y, d[keep]


@pytest.fixture(scope="module", params=[2, 3], ids=["2classes", "3classes"])
def linear_problem(request):
    return request.param, *problem(request.param)


def _fooled(model, x_adv, y) -> np.ndarray:
    return np.argmax(np.asarray(model(tf.constant(x_adv))), 1) != y


def _linf(x_adv, x) -> np.ndarray:
    return np.abs(x_adv - x).reshape(len(x), -1).max(1)


# -- the objectives ----------------------------------------------------------------
def test_objective_per_number_of_classes_is_the_documented_one():
    assert MIN_CLASSES == {"ce": 2, "ce_targeted": 2, "dlr": 3, "dlr_targeted": 4}
    expected = {  # classes -> (ce, dlr, dlr_targeted)
        2: ("ce", "ce_targeted", "ce_targeted"),
        3: ("ce", "dlr", "ce_targeted"),
        4: ("ce", "dlr", "dlr_targeted"),
        10: ("ce", "dlr", "dlr_targeted"),
    }
    for classes, losses in expected.items():
        assert tuple(apgd_objective(k, classes) for k in ("ce", "dlr", "dlr_targeted")) == losses
        assert APGD(loss="dlr").loss_for(classes) == losses[1]
        assert APGDTargeted().loss_for(classes) == losses[2]
        assert FAB().loss_for(classes) == "logit_difference"
        assert Square().loss_for(classes) == "margin"
    # the ensemble: the paper's objectives from 4 classes on, the fallback below
    assert AutoAttack().objectives(2) == {"apgd_ce": "ce", "apgd_t": "ce_targeted",
                                          "fab_t": "logit_difference", "square": "margin"}
    assert AutoAttack().objectives(3)["apgd_t"] == "ce_targeted"
    assert AutoAttack().objectives(4)["apgd_t"] == "dlr_targeted"
    assert AutoAttack(version="rand").objectives(2) == {"apgd_ce": "ce", "apgd_dlr": "ce_targeted"}
    assert AutoAttack(version="rand").objectives(3) == {"apgd_ce": "ce", "apgd_dlr": "dlr"}
    assert set(AutoAttack().objectives(2).values()) <= set(OBJECTIVE_TEXT)


def test_fallback_loss_matches_hand_values():
    logits = tf.constant([[2.0, 0.0], [0.5, 1.5]])
    y, t = tf.constant([0, 1]), tf.constant([1, 0])
    # −CE(z, t) = z_t − log Σ exp z: −log(1 + e^2) and 0.5 − log(e^0.5 + e^1.5) = −log(1 + e)
    value = apgd_loss("ce_targeted", logits, y, t).numpy()
    np.testing.assert_allclose(value, [-np.log1p(np.e**2), -np.log1p(np.e)], rtol=1e-6)
    np.testing.assert_allclose(value, cross_entropy(logits, t, targeted=True).numpy())
    # CE(z, y) = log(1 + e^{z_t − z_y}) on two classes
    np.testing.assert_allclose(apgd_loss("ce", logits, y).numpy(),
                               [np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))], rtol=1e-6)
    with pytest.raises(ValueError, match="target"):
        apgd_loss("ce_targeted", logits, y)
    with pytest.raises(ValueError, match="loss"):
        apgd_loss("hinge", logits, y)


def test_dlr_losses_by_hand_and_refused_on_too_few_classes():
    three = tf.constant([[3.0, 1.0, 0.0]])
    # Eq. 3 on 3 classes: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)
    assert float(dlr(three, tf.constant([0]))[0]) == pytest.approx(-2.0 / 3.0)
    assert float(dlr(three, tf.constant([2]))[0]) == pytest.approx(3.0 / 3.0)
    four = tf.constant([[3.0, 1.0, 0.0, -2.0]])
    # Eq. 4 on 4 classes: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2) = −(3 − 1) / (3 + 1)
    assert float(dlr_targeted(four, tf.constant([0]), tf.constant([1]))[0]) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="DLR loss needs at least 3 classes, got 2"):
        dlr(tf.constant([[1.0, 0.0]]), tf.constant([0]))
    with pytest.raises(ValueError, match="targeted DLR loss needs at least 4 classes, got 3"):
        dlr_targeted(three, tf.constant([0]), tf.constant([1]))
    with pytest.raises(ValueError, match="num_classes"):
        apgd_objective("dlr", 1)


def test_two_class_fallback_keeps_its_gradient_where_cross_entropy_saturates():
    # logits scaled by 1e4: CE's gradient p_t·∇(z_t − z_y) underflows to exactly 0 in float32,
    # the targeted CE's p_y·∇(z_t − z_y) does not, so APGD-DLR (its 2-class fallback) still
    # finds the boundary APGD-CE cannot see
    model, x, y, d = problem(2, seed=1)
    w, b = model.layers[-1].get_weights()
    sharp = linear(1e4 * w, 1e4 * b)
    eps = 0.13  # above every distance
    ce = _fooled(sharp, APGD(eps=eps, steps=10).generate(x, y, model=sharp), y)
    fallback = _fooled(sharp, APGD(eps=eps, steps=10, loss="dlr").generate(x, y, model=sharp), y)
    assert fallback.all() and ce.mean() < 0.5, (fallback, ce)


# -- the ensemble against the closed form -------------------------------------------
@pytest.mark.parametrize("version", ["standard", "quick", "rand"])
def test_autoattack_fools_exactly_the_points_closer_than_eps(linear_problem, version):
    classes, model, x, y, d = linear_problem
    aa = AutoAttack(eps=MID_EPS, version=version, seed=1, **BUDGETS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the version's targets are capped without a word
        run = aa.run(x, y, model=model)
    fooled = run.pred_after[-1] != y
    np.testing.assert_array_equal(fooled, d < MID_EPS)  # half below, half above, none lost
    assert (_linf(run.x_adv, x) <= MID_EPS * (1 + 1e-5)).all()
    # the run says which objectives ran, and how many targets
    assert run.num_classes == classes
    if version == "rand":
        assert run.objectives["apgd_dlr"] == ("ce_targeted" if classes == 2 else "dlr")
        assert run.targets == {}
    else:
        assert run.objectives["apgd_t"] == "ce_targeted"
        assert run.targets == {"apgd_t": classes - 1, "fab_t": classes - 1}
        assert "targeted cross-entropy" in run.to_markdown()
        assert "needs at least 4 classes" in run.objectives_text()
    assert set(run.fallbacks) == ({"apgd_dlr"} if version == "rand" and classes == 2
                                  else set() if version == "rand" else {"apgd_t"})


def test_autoattack_with_eps_above_every_distance_fools_all_and_below_fools_none(linear_problem):
    classes, model, x, y, d = linear_problem
    above = AutoAttack(eps=1.1 * d.max(), version="standard", **BUDGETS).run(x, y, model=model)
    assert (above.pred_after[-1] != y).all()
    below = AutoAttack(eps=0.9 * d.min(), version="standard", **BUDGETS).run(x, y, model=model)
    assert (below.pred_after[-1] == y).all() and (below.broken_by == -1).all()


@pytest.mark.parametrize("name", ["apgd_ce", "apgd_t", "apgd_dlr", "fab_t"])
def test_each_gradient_component_alone_fools_every_point_closer_than_eps(linear_problem, name):
    classes, model, x, y, d = linear_problem
    attack = get_attack(name, eps=MID_EPS, steps=20)
    x_adv = attack.generate(x, y, model=model)
    np.testing.assert_array_equal(_fooled(model, x_adv, y), d < MID_EPS)


# -- budgets, box, targets ---------------------------------------------------------
COMPONENTS = {
    "apgd_ce": lambda eps, norm: APGD(eps=eps, norm=norm, steps=5),
    "apgd_dlr": lambda eps, norm: APGD(eps=eps, norm=norm, steps=5, loss="dlr"),
    "apgd_t": lambda eps, norm: APGDTargeted(eps=eps, norm=norm, steps=5),
    "fab_t": lambda eps, norm: FAB(eps=eps, norm=norm, steps=5),
    "square": lambda eps, norm: Square(eps=eps, norm=norm, steps=30),
    "autoattack": lambda eps, norm: AutoAttack(eps=eps, norm=norm, version="quick", steps=5,
                                               queries=30),
}


@pytest.fixture(scope="module", params=[2, 3], ids=["2classes", "3classes"])
def box_problem(request):
    """A tiny untrained non-linear model and 24 images with pixels at and next to the box's
    bounds, labelled with the model's predictions.

    An attack returns a perturbation only for the points it fools, so only those check its
    budget: the images are every 10th of the 240 with the smallest margins among 500, at
    distances from ~0 to past the budgets, so every component fools some within its budget,
    and one that accepted points beyond it would return some (FAB scoring within 1.5 eps,
    APGD without its projection or Square 20% over eps fail these tests, on 2 and 3 classes).
    One ReLU layer: the gradient changes with the point as a CNN's does, and the graphs
    trace in about 2/3 of small_cnn's time (these 20 tests are mostly tracing).
    """
    classes = request.param
    keras.utils.set_random_seed(classes)  # the weights must not depend on the tests run before
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(classes)(hidden))
    rng = np.random.default_rng(classes)
    candidates = rng.choice([0.0, 0.02, 0.5, 0.98, 1.0], size=(500, 8, 8, 1)).astype("float32")
    top2 = np.sort(np.asarray(model(candidates)), 1)[:, -2:]
    x = candidates[np.argsort(top2[:, 1] - top2[:, 0])[:240:10]]
    return model, x, np.argmax(np.asarray(model(x)), 1)


# Square's L2 start (25 blocks) takes ~5 s to trace; its budget is class-independent and
# checked in test_autoattack.py, so L2 runs the components whose objective depends on C
@pytest.mark.parametrize("norm, eps, name", [
    *(("linf", 0.1, name) for name in COMPONENTS),
    *(("l2", 0.5, name) for name in ("apgd_ce", "apgd_dlr", "apgd_t", "fab_t")),
])
def test_every_component_stays_in_its_budget_and_the_box(box_problem, norm, eps, name):
    model, x, y = box_problem
    x_adv = COMPONENTS[name](eps, norm).generate(x, y, model=model)
    delta = (x_adv - x).reshape(len(x), -1).astype("float64")
    size = np.abs(delta).max(1) if norm == "linf" else np.sqrt((delta**2).sum(1))
    assert size.max() <= eps * (1 + 1e-4), size.max()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert (size > 0).any(), "no point was fooled, so no perturbation was checked"


def test_targets_are_capped_at_classes_minus_one():
    assert [APGDTargeted().targets_for(c) for c in (2, 3, 4, 10, 100)] == [1, 2, 3, 9, 9]
    assert [FAB(n_target_classes=4).targets_for(c) for c in (2, 3, 10)] == [1, 2, 4]
    assert APGD().targets_for(2) == 0 and Square().targets_for(2) == 0
    assert AutoAttack().targets(2) == {"apgd_t": 1, "fab_t": 1}
    assert AutoAttack(version="quick").targets(3) == {"apgd_t": 2, "fab_t": 2}
    assert AutoAttack(version="quick").targets(10) == {"apgd_t": 3, "fab_t": 3}


@pytest.mark.parametrize("attack", [
    lambda: AutoAttack(n_target_classes=3, version="quick", steps=2, queries=5),
    lambda: APGDTargeted(n_target_classes=2, steps=2),
    lambda: FAB(n_target_classes=5, steps=2),
])
def test_an_explicit_target_count_above_classes_minus_one_is_capped_with_a_warning(attack):
    model, x, y, _ = problem(2, n=4)
    with pytest.warns(UserWarning, match="n_target_classes.*2 classes, so at most 1; running 1"):
        attack().generate(x, y, model=model)


@pytest.mark.parametrize("attack", [
    lambda: AutoAttack(version="quick", steps=2, queries=5),
    lambda: AutoAttack(n_target_classes=1, version="quick", steps=2, queries=5),
    lambda: APGDTargeted(steps=2),
    lambda: FAB(steps=2),
])
def test_the_default_target_count_is_capped_without_a_warning(attack):
    model, x, y, _ = problem(2, n=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attack().generate(x, y, model=model)


def test_apgd_t_on_two_classes_targets_the_other_class():
    # one target per point, the other class: the fallback's objective is log p_t, so each APGD
    # step moves the image straight along sign(w_t − w_y), the Linf-optimal direction
    model, x, y, d = problem(2, n=4)
    x_adv = APGDTargeted(eps=float(d.max()) * 1.01, steps=1).generate(x, y, model=model)
    w, _ = model.layers[-1].get_weights()
    direction = np.sign(w[:, 1] - w[:, 0])
    step = (x_adv - x).reshape(len(x), -1)
    for i in range(len(x)):
        toward = direction if y[i] == 0 else -direction
        assert (np.sign(step[i]) == toward).all(), i


@pytest.mark.parametrize("name, params", [
    ("apgd_t", {"n_target_classes": 0}),
    ("apgd_t", {"n_target_classes": -2}),
    ("apgd_t", {"n_target_classes": 1.5}),
    ("fab_t", {"n_target_classes": 0}),
    ("fab_t", {"n_target_classes": "all"}),
    ("autoattack", {"n_target_classes": 0}),
    ("autoattack", {"n_target_classes": True}),
])
def test_invalid_target_counts_still_raise_value_error_naming_them(name, params):
    with pytest.raises(ValueError, match="n_target_classes"):
        get_attack(name, **params)
