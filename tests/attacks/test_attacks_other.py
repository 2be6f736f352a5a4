"""SPSA, StAdv and the Foolbox attacks on a trained small MNIST CNN."""

import numpy as np
import pytest

from tfdefense.attacks import get_attack
from tfdefense.attacks.stadv import flow_loss, warp


def test_spsa_without_gradients_drops_accuracy_within_linf_budget(trained, accuracy):
    model, x, y, clean = trained
    x, y = x[:24], y[:24]
    attack = get_attack("spsa", model=model, eps=0.3, steps=30, samples=32, learning_rate=0.03)
    x_adv = attack.generate(x, y)
    assert accuracy(model, x_adv, y) < clean - 0.4
    assert np.abs(x_adv - x).max() <= 0.3 + 1e-6
    np.testing.assert_array_equal(x_adv, attack.generate(x, y))


def test_warp_with_zero_flow_is_identity_and_shifts_by_a_pixel():
    x = np.random.default_rng(0).uniform(size=(2, 5, 7, 3)).astype("float32")
    flow = np.zeros((2, 5, 7, 2), "float32")
    np.testing.assert_allclose(warp(x, flow), x, atol=1e-6)
    flow[..., 1] = 2.0 / (7 - 1)  # one pixel to the right, in normalized units
    np.testing.assert_allclose(np.asarray(warp(x, flow))[:, :, :-1], x[:, :, 1:], atol=1e-5)


def test_flow_loss_is_zero_for_constant_flow_and_positive_otherwise():
    flat = np.full((1, 4, 4, 2), 0.3, "float32")
    assert float(flow_loss(flat, eps=0.0)[0]) == pytest.approx(0.0, abs=1e-6)
    bumpy = flat.copy()
    bumpy[0, 1, 1, 0] = 0.0
    assert float(flow_loss(bumpy, eps=0.0)[0]) == pytest.approx(4 * 0.3, rel=1e-5)


def test_stadv_drops_accuracy_with_flow_inside_the_bound(trained, accuracy):
    model, x, y, clean = trained
    x, y = x[:40], y[:40]
    x_adv = get_attack("stadv", model=model, bound=0.1, steps=40, learning_rate=0.01).generate(x, y)
    assert accuracy(model, x_adv, y) < clean - 0.4
    # a flow bounded by 0.1 normalized = 1.35 px keeps every pixel within the range of its
    # 5x5 neighbourhood in the clean image
    from scipy.ndimage import maximum_filter, minimum_filter

    hi = maximum_filter(x, size=(1, 5, 5, 1))
    lo = minimum_filter(x, size=(1, 5, 5, 1))
    assert np.all(x_adv <= hi + 1e-5) and np.all(x_adv >= lo - 1e-5)


@pytest.mark.parametrize("name, norm", [("deepfool_linf", "linf"), ("deepfool_l2", "l2")])
def test_foolbox_deepfool_fools_nearly_every_image(trained, accuracy, name, norm):
    model, x, y, clean = trained
    x, y = x[:40], y[:40]
    x_adv = get_attack(name, model=model).generate(x, y)
    assert accuracy(model, x_adv, y) < 0.2 < clean
    eps = {"linf": 0.05, "l2": 1.0}[norm]
    x_cap = get_attack(name, model=model, eps=eps).generate(x, y)
    dist = np.abs(x_cap - x).reshape(40, -1).max(1) if norm == "linf" else np.sqrt(
        ((x_cap - x) ** 2).reshape(40, -1).sum(1))
    assert dist.max() <= eps + 1e-4


def test_foolbox_cw_l2_fools_with_small_l2(trained, accuracy):
    model, x, y, clean = trained
    x, y = x[:16], y[:16]
    attack = get_attack("cw_l2", model=model, binary_search_steps=4, steps=60, step_size=0.05,
                        initial_const=1.0)
    x_adv = attack.generate(x, y)
    assert accuracy(model, x_adv, y) < clean - 0.5
    l2 = np.sqrt(((x_adv - x) ** 2).reshape(16, -1).sum(1))
    assert np.median(l2) < 3.0


def test_deepfool_runs_on_a_two_class_model_despite_ten_candidates():
    from tfdefense.nets import small_cnn

    model = small_cnn((28, 28, 1), 2, width=4, dense_units=8)
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    x_adv = get_attack("deepfool_linf", model=model, steps=5).generate(x)
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
