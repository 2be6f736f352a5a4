"""Attack strength against a known answer: a linear classifier on 2x2x1 images.

The model is logits = [0, f(x)] with f(x) = w·x + b, w = (1, -2, 0.5, 1.5) (row-major over the
2x2 image) and b = -w·(0.5, 0.5, 0.5, 0.5) = -0.5, so it predicts class 1 where f > 0. The
smallest perturbation that changes its answer is closed-form (Hölder's inequality, the box
[0, 1] aside): d∞ = |f(x)| / ‖w‖₁ = |f(x)| / 5 in ℓ∞ (δ = -sign(f)·d∞·sign(w)) and
d₂ = |f(x)| / ‖w‖₂ = |f(x)| / √7.5 in ℓ2 (δ = -f·w / ‖w‖₂²).

Every test point is x = 0.5 + a·sign(w) + r with w·r = 0 (r a small offset along the boundary,
so the points do not all lie on one line), hence f(x) = a·‖w‖₁ = 5a, d∞ = |a| and
d₂ = 5|a|/√7.5 = 1.8257·|a|. With a in ±{0.02, 0.05, 0.08, 0.09} (inside: d∞ <= 0.9·EPS) and
±{0.105, 0.12, 0.15} (outside: d∞ >= 1.05·EPS), EPS = 0.1 in ℓ∞, and the ℓ2 budget
EPS_L2 = EPS·‖w‖₁/‖w‖₂ = 0.5/√7.5 = 0.18257, the same points are inside and outside in both
norms (d₂/EPS_L2 = d∞/EPS). Pixels stay in [0.32, 0.65], so neither an eps ball nor an optimal
perturbation (per pixel at most 1.03·0.15 in ℓ∞, |f|·2/7.5 <= 0.2 in ℓ2) reaches the box:
the closed forms are exact here (checked by ``test_the_closed_form_is_exact_on_these_points``).

What is checked, and why each can fail:

1. Bounded attacks (PGD ℓ∞/ℓ2, C&W-ℓ∞ margin PGD, APGD ℓ∞/ℓ2): on a 2-class linear model
   every ascent direction they take is ±w (sign or normalized), so with enough steps they
   reach the best point of the ball; they must break exactly the inside points, and must not
   break an outside point (at 1.05·EPS: a ball 5% too large breaks it).
2. Minimal-perturbation attacks (DeepFool ℓ∞/ℓ2, FAB-T ℓ∞/ℓ2, C&W-ℓ2) return a perturbation
   within a stated factor of d∞ / d₂ and never below it (impossible: a measurement bug).
3. The same model with its gradient masked (stop_gradient, forward pass unchanged): APGD and
   FAB-T get a zero gradient and fail, AutoAttack's gradient-free Square breaks the inside
   points, and ``evaluate_robustness`` raises the gradient-masking flag; on the unmasked
   model APGD-CE breaks them first and the flag stays down.

Cost: about 10 s of CPU (graph tracing dominates); the C&W-ℓ2 check with 9 x 1,000 Adam steps
(about 11 s compiled, 25 s through Foolbox) is ``slow``.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import AutoAttack, evaluate_robustness, get_attack

W = np.array([1.0, -2.0, 0.5, 1.5], np.float32)
B = -0.5  # -w·(0.5, 0.5, 0.5, 0.5) = -0.5 * (1 - 2 + 0.5 + 1.5)
W_L1 = 5.0  # 1 + 2 + 0.5 + 1.5
W_L2 = float(np.sqrt(7.5))  # sqrt(1 + 4 + 0.25 + 2.25) = 2.7386

EPS = 0.1
EPS_L2 = EPS * W_L1 / W_L2  # 0.18257: the same points inside and outside as in ℓ∞
#: a: signed ℓ∞ distance to the boundary (f = 5a); 5 inside (|a| <= 0.9·EPS), 4 outside (>= 1.05·EPS)
A = np.array([0.02, -0.05, 0.08, -0.09, 0.09, -0.105, 0.105, -0.12, 0.15], np.float32)
INSIDE = np.array([True] * 5 + [False] * 4)  # |a| <= 0.9·EPS for the first five
#: offsets along the boundary: w·r = 0 for each (e.g. 1·0.04 - 2·0.02 = 0)
R = np.array([[0.04, 0.02, 0.0, 0.0], [0.0, 0.03, 0.0, 0.04], [0.03, 0.0, 0.0, -0.02],
              [0.0, 0.0, 0.06, -0.02], [-0.04, -0.02, 0.0, 0.0], [0.0, -0.03, 0.0, -0.04],
              [-0.03, 0.0, 0.0, 0.02], [0.0, 0.0, -0.06, 0.02], [0.0, 0.0, 0.0, 0.0]], np.float32)
X = (0.5 + A[:, None] * np.sign(W) + R).reshape(-1, 2, 2, 1).astype(np.float32)
Y = (A > 0).astype(np.int64)  # the clean prediction: class 1 where f = 5a > 0
D_LINF = np.abs(A).astype(np.float64)  # d∞ = |f| / ‖w‖₁ = |a|
D_L2 = D_LINF * W_L1 / W_L2  # d₂ = |f| / ‖w‖₂ = 5|a| / √7.5

_W_COL = tf.constant(W.reshape(4, 1))


def linear(images):
    """logits [0, w·x + b] of 2x2x1 images."""
    f = tf.reshape(images, (-1, 4)) @ _W_COL + B
    return tf.concat([tf.zeros_like(f), f], axis=1)


def masked(images):
    """``linear``'s forward pass with an exactly zero gradient (connected, so not None)."""
    images = tf.convert_to_tensor(images)
    return linear(tf.stop_gradient(images)) + 0.0 * tf.reduce_sum(images, axis=[1, 2, 3])[:, None]


def distance(x_adv: np.ndarray, norm: str) -> np.ndarray:
    delta = (np.asarray(x_adv, np.float64) - X).reshape(len(X), -1)
    return np.abs(delta).max(1) if norm == "linf" else np.sqrt((delta**2).sum(1))


def fooled(x_adv: np.ndarray) -> np.ndarray:
    return np.argmax(np.asarray(linear(tf.constant(x_adv))), 1) != Y


def test_the_closed_form_is_exact_on_these_points():
    np.testing.assert_array_equal(np.argmax(np.asarray(linear(X)), 1), Y)
    f = X.reshape(-1, 4).astype(np.float64) @ W + B
    np.testing.assert_allclose(f, 5.0 * A, atol=1e-6)  # w·r = 0 for every offset
    # the optimal perturbations, scaled by 1.03 (the largest overshoot below), cross the
    # boundary and stay inside the box, so the box never binds
    for delta in (-np.sign(f)[:, None] * D_LINF[:, None] * np.sign(W),  # ℓ∞: every pixel by d∞
                  -f[:, None] * W / W_L2**2):  # ℓ2: along -w
        moved = X.reshape(-1, 4) + 1.03 * delta
        assert np.all((moved > 0) & (moved < 1))
        assert np.all(np.sign(moved @ W + B) == -np.sign(f))
    assert X.min() >= 0.32 - 1e-6 and X.max() <= 0.65 + 1e-6  # ± EPS_L2 (per pixel) stays in (0, 1)
    assert np.all(D_LINF[INSIDE] <= 0.9 * EPS + 1e-7)
    assert np.all(D_LINF[~INSIDE] >= 1.05 * EPS - 1e-7)


@pytest.fixture(scope="module")
def autoattack():
    """AutoAttack quick, shortened: 10 steps, 100 Square queries, the one target class a
    2-class model has. On 2x2 images Square's window is one pixel; it keeps a pixel's ±eps
    flip when the margin drops, so it reaches the optimal vertex -sign(f·w)·eps once each
    pixel was drawn with the right sign (about 17 queries expected: 8·(1 + 1/2 + 1/3 + 1/4)),
    and then breaks every inside point."""
    return AutoAttack(eps=EPS, version="quick", steps=10, n_target_classes=1, queries=100, seed=0)


# -- 1. bounded attacks: break every point inside the ball, none outside ---------------------
BOUNDED = {
    # 5 steps of eps/√5 (the default step) cover 2.24·eps >= 2·eps, the longest way a pixel can
    # have to go from the random start to -sign(f·w_i)·eps; the sign step is ±sign(w) here
    "pgd_linf": dict(name="pgd_linf", eps=EPS, steps=5),
    # the C&W margin min(max_{j≠y} z_j − z_y, κ) has gradient ±w too (|f| <= 0.75 < κ = 10)
    "cw_linf": dict(name="cw_linf", eps=EPS, steps=5),
    # the AutoAttack components (the ``autoattack`` fixture's own: eps EPS, 10 steps, so their
    # graphs are reused by the AutoAttack tests below). APGD's first step is 2·eps: from any
    # start in the ball it lands on the optimal vertex; APGD-T on 2 classes runs −CE(z, t)
    # against the other class, gradient ±w again
    "apgd_ce_linf": "apgd_ce",
    "apgd_t_linf": "apgd_t",
    # FAB-T counts a point only within eps: it finds 1.0052·d∞ (see below), <= eps inside
    "fab_t_linf": "fab_t",
    # Square's one-pixel ±eps flips reach the optimal vertex (see the fixture)
    "square_linf": "square",
    # ℓ2: steps of eps/√10 along u = -sign(f)·w/‖w‖₂, each followed by the rescaling onto the
    # ball, turn the random start towards eps·u. Simulated (numpy, this update rule, 200,000
    # random starts and the start -eps·u): after 10 steps δ·u >= 0.984·eps from every start
    # (0.918 after 5), more than the 0.9·eps an inside point needs
    "pgd_l2": dict(name="pgd_l2", eps=EPS_L2, steps=10),
    # APGD starts on the sphere, δ0·u = c·eps, and steps 2·eps along u: after one step and the
    # rescaling δ·u = (c + 2)/√(5 + 4c)·eps >= 0.866·eps (c = −0.5); simulated as above (with
    # its momentum 0.75): >= 0.991·eps after two steps
    "apgd_ce_l2": dict(name="apgd_ce", eps=EPS_L2, steps=10, norm="l2"),
}


@pytest.mark.parametrize("key", list(BOUNDED))
def test_bounded_attack_breaks_exactly_the_points_inside_its_ball(key, autoattack):
    if isinstance(BOUNDED[key], str):
        attack = autoattack.components()[BOUNDED[key]]
        assert (attack.eps, attack.norm) == (EPS, "linf")
    else:
        params = dict(BOUNDED[key])
        attack = get_attack(params.pop("name"), **params, seed=1)
    x_adv = attack.generate(X, Y, model=linear)
    eps = attack.eps
    dist = distance(x_adv, attack.norm)
    assert np.all(dist <= eps * (1 + 1e-5)), (key, dist)  # the projection onto the ball
    # inside (d <= 0.9·eps): the best point of the ball crosses by >= 0.1·eps·‖w‖ in f;
    # outside (d >= 1.05·eps): no point of the ball crosses
    np.testing.assert_array_equal(fooled(x_adv), INSIDE, err_msg=f"{key}: distances {dist}")


# -- 2. minimal-perturbation attacks: within a stated factor of the optimum, never below -----
def _ratio(x_adv: np.ndarray, norm: str) -> np.ndarray:
    assert np.all(fooled(x_adv)), "a minimal-perturbation attack must cross the boundary"
    return distance(x_adv, norm) / (D_LINF if norm == "linf" else D_L2)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_deepfool_is_exact_up_to_its_overshoot(norm):
    x_adv = get_attack(f"deepfool_{norm}", overshoot=0.02).generate(X, Y, model=linear)
    ratio = _ratio(x_adv, norm)
    # Foolbox's DeepFool on a linear model: one step of length d + 1e-4 (its "numerical
    # stability" term) towards the hyperplane, scaled by 1 + overshoot: 1.02·(d + 1e-4), so the
    # ratio is 1.02·(1 + 1e-4/d), from 1.0251 (d∞ = 0.02) down to 1.0207 (d₂ = 0.274)
    d = D_LINF if norm == "linf" else D_L2
    np.testing.assert_allclose(ratio, 1.02 * (1 + 1e-4 / d), rtol=2e-5)
    assert np.all(ratio >= 1.0)


def test_deepfool_takes_the_nearest_of_several_boundaries():
    # 3 classes, logits [0, u1·x − 0.6, u2·x − 1.2], u1 = (1, 0, 0, 0), u2 = (1, 1, −1, 1):
    # class 0 keeps x while both are negative, so d∞ = min_j −z_j / ‖u_j‖₁ (the distance to a
    # union of half-spaces is the smallest of the distances), ‖u1‖₁ = 1, ‖u2‖₁ = 4.
    # x = 0.5: z = (0, −0.1, −0.2); class 1 is the runner-up but class 2 is nearer:
    #   d1 = 0.1, d2 = 0.2/4 = 0.05 -> 0.05, landing in class 2.
    # x = 0.5 + (0.07, 0, 0, 0): z = (0, −0.03, −0.13); d1 = 0.03, d2 = 0.0325 -> 0.03, class 1.
    u = tf.constant([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])

    def three(images):
        return tf.reshape(images, (-1, 4)) @ u + tf.constant([0.0, -0.6, -1.2])

    x = np.full((2, 2, 2, 1), 0.5, np.float32)
    x[1, 0, 0, 0] = 0.57
    x_adv = get_attack("deepfool_linf", overshoot=0.02).generate(x, np.zeros(2, np.int64),
                                                                  model=three)
    np.testing.assert_array_equal(np.argmax(np.asarray(three(x_adv)), 1), [2, 1])
    # one step of 1.02·(d + 1e-4), as above
    np.testing.assert_allclose(np.abs(x_adv - x).reshape(2, -1).max(1),
                               1.02 * (np.array([0.05, 0.03]) + 1e-4), rtol=1e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_reaches_the_optimum_within_half_a_percent(norm):
    # eps at the top of the range, so every point found counts (FAB returns x where it found
    # nothing within eps); 10 steps, overshoot η = 1.05, α_max = 0.1, β = 0.9 (paper, §3).
    # On a linear model the projection is exact (in units of d): step 1 lands at η = 1.05
    # (adversarial), β steps back to 0.945; step 2 mixes x1 + η·0.055 (weight 1 − α) with
    # x + η·1 (α = 0.055/1.055 = 0.0521): 1.00275·0.9479 + 1.05·0.0521 = 1.00521, the best
    # point (later steps settle at 1.0087 and do not improve it)
    eps = 1.0 if norm == "linf" else 2.0
    attack = get_attack("fab_t", eps=eps, norm=norm, steps=10, eta=1.05, beta=0.9,
                        alpha_max=0.1)
    ratio = _ratio(attack.generate(X, Y, model=linear), norm)
    assert np.all(ratio >= 1.0 - 1e-5), ratio  # below the optimum is impossible
    assert np.all(ratio <= 1.0053), ratio


@pytest.mark.slow
def test_carlini_wagner_l2_reaches_the_optimum_within_half_a_percent():
    # the library's (= the paper's) settings but 1,000 Adam steps per search instead of 10,000:
    # 9 binary searches over c from 1e-3, step 0.01, early abort, confidence 0. The hinge
    # max(f, 0) term makes the boundary point the minimizer once c·‖w‖₂/2 >= d₂; Adam then
    # hovers around it. Measured: ratios 1.0000-1.0023, 25 s (10,000 steps: 7 min, loaded machine)
    ratio = _ratio(get_attack("cw_l2", steps=1000).generate(X, Y, model=linear), "l2")
    assert np.all(ratio >= 1.0 - 1e-5), ratio
    assert np.all(ratio <= 1.005), ratio


def test_carlini_wagner_l2_in_few_steps_is_within_two_percent():
    # a shortened run: c starts at 1 (already above 2·d₂/‖w‖₂ <= 0.2, so every search
    # succeeds), 3 searches of 100 Adam steps. Measured: ratios 1.0001-1.0093
    attack = get_attack("cw_l2", binary_search_steps=3, steps=100, initial_const=1.0)
    ratio = _ratio(attack.generate(X, Y, model=linear), "l2")
    assert np.all(ratio >= 1.0 - 1e-5), ratio
    assert np.all(ratio <= 1.02), ratio


# -- 3. gradient masking: Square breaks what the gradient attacks cannot -----------------------
def _after(result, component: str) -> float:
    return next(r.accuracy for r in result.rows if r.label == f"autoattack/{component}")


def test_masked_gradients_raise_the_flag(autoattack):
    result = evaluate_robustness(masked, (X, Y), [autoattack], verbose=False)
    # a zero gradient: APGD's steps sign(0) = 0 and FAB's hyperplane projection (w = 0) stay
    # at their start; only APGD's random start could cross, which for the two points at
    # 0.9·eps needs w·δ < -0.9·eps·‖w‖₁ from a random δ, all but impossible
    fab = _after(result, "fab_t")
    assert fab >= 1.0 - 3 / 9, result.to_markdown()
    # Square breaks every inside point and, in the ball, no outside one: 4 of 9 stay
    assert _after(result, "square") == pytest.approx(4 / 9)
    np.testing.assert_array_equal(result.robust["linf"], ~INSIDE)
    assert fab - 4 / 9 >= 2 / 9  # the points Square alone broke
    assert result.gradient_masking is True
    assert result.gradient_masking_flags == {"autoattack": True}


def test_unmasked_gradients_do_not_raise_the_flag(autoattack):
    result = evaluate_robustness(linear, (X, Y), [autoattack], verbose=False)
    # APGD-CE alone breaks every inside point; nothing after it breaks an outside one
    for component in ("apgd_ce", "apgd_t", "fab_t", "square"):
        assert _after(result, component) == pytest.approx(4 / 9), component
    np.testing.assert_array_equal(result.robust["linf"], ~INSIDE)
    assert result.gradient_masking is False
    assert result.gradient_masking_flags == {"autoattack": False}
