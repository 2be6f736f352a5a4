"""The compiled DeepFool (``backend="compiled"``) is Foolbox's ``LinfDeepFoolAttack`` /
``L2DeepFoolAttack``.

Faithfulness: on the same small CNN (fixed random weights) and mnist_5k images, both
backends fool the same images and return the same examples. The largest difference
measured (16 images in batches of 8, 50 steps, 10 or 4 candidates, Linf and L2, with and
without eps): 0, bit for bit (a ``batch_jacobian`` instead of the per-candidate backward
passes rounded differently: up to 7.2e-6); the tolerance is 1e-6. Hand cases on a linear model check the
arithmetic without Foolbox: one step of ``(1 + overshoot) * (d + 1e-4)`` to the boundary,
and an image already misclassified stays where it is.
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from minimization_case import fooled, small_cnn_case

from tfdefense.attacks import get_attack
from tfdefense.attacks.deepfool import candidate_classes
from tfdefense.nets import small_cnn

TOL = 1e-6  # measured: 0 (bit for bit)


@pytest.fixture(scope="module")
def setup():
    return small_cnn_case()



@pytest.mark.parametrize("name, params", [
    ("deepfool_linf", {}), ("deepfool_l2", {}), ("deepfool_linf", {"eps": 0.05}),
    ("deepfool_l2", {"eps": 0.3, "candidates": 4, "overshoot": 0.1}),
])
def test_compiled_deepfool_fools_the_same_images_as_foolbox_with_the_same_examples(
        setup, name, params):
    model, x, y = setup
    theirs, ours = (get_attack(name, backend=b, batch_size=8, **params).generate(x, y, model=model)
                    for b in ("foolbox", "compiled"))
    np.testing.assert_array_equal(fooled(model, ours, y), fooled(model, theirs, y))
    assert 0 < fooled(model, ours, y).sum()  # the comparison covers successes
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)


W = np.array([1.0, -2.0, 0.5, 1.5], np.float32)
_W_COL = tf.constant(W.reshape(4, 1))


def linear(images):
    """logits [0, w·(x - 0.5)] of 2x2x1 images."""
    f = tf.reshape(images, (-1, 4)) @ _W_COL - 0.5 * float(W.sum())
    return tf.concat([tf.zeros_like(f), f], axis=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_one_step_lands_overshoot_past_the_linear_boundary(norm):
    # the distance to w·(x - 0.5) = 0 is d = |f| / ||w||_q (q = 1 for Linf, 2 for L2); DeepFool
    # steps (1 + overshoot) * (d + 1e-4) along -sign(f)·sign(w) (Linf) or -sign(f)·w/||w||_2 (L2)
    f = np.array([0.05, -0.02, 0.1], np.float64)
    x = (0.5 + f[:, None] * W / float(W @ W)).astype(np.float32).reshape(3, 2, 2, 1)
    f = x.reshape(3, 4).astype(np.float64) @ W - 0.5 * W.sum()  # as stored in float32
    y = (f > 0).astype(np.int64)
    x_adv = get_attack(f"deepfool_{norm}", overshoot=0.02).generate(x, y, model=linear)
    if norm == "linf":
        d, direction = np.abs(f) / np.abs(W).sum(), np.sign(W)
    else:
        d, direction = np.abs(f) / np.linalg.norm(W), W / np.linalg.norm(W)
    expected = x.reshape(3, 4) - (1.02 * (d + 1e-4) * np.sign(f))[:, None] * direction
    np.testing.assert_allclose(x_adv.reshape(3, 4), expected, atol=1e-6)


def test_an_image_already_misclassified_is_not_moved():
    x = np.full((2, 2, 2, 1), 0.5, np.float32) + np.array([0.02, 0.03], np.float32)[:, None, None,
                                                                                      None]
    y = np.array([1, 0])  # the second is class 1 already: misclassified w.r.t. its label
    x_adv = get_attack("deepfool_linf").generate(x, y, model=linear)
    np.testing.assert_array_equal(x_adv[1], x[1])
    assert fooled(linear, x_adv[:1], y[:1]).all()


def test_candidates_are_the_top_classes_highest_first_capped_at_the_classes():
    logits = tf.constant([[0.1, 3.0, -1.0, 2.0]])
    np.testing.assert_array_equal(candidate_classes(logits, 3).numpy(), [[1, 3, 0]])
    two = small_cnn((28, 28, 1), 2, width=4, dense_units=8)
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    assert get_attack("deepfool_l2", steps=3).generate(x, model=two).shape == x.shape


def test_one_trace_serves_every_batch_size(setup):
    model, x, y = setup
    attack = get_attack("deepfool_linf", steps=3, batch_size=5)
    attack.generate(x[:12], y[:12], model=model)  # batches of 5, 5 and 2
    traced = attack._compiled[(id(model), tuple(x.shape[1:]))][1]
    assert traced.experimental_get_tracing_count() == 1


def test_the_compiled_backend_runs_over_a_strategy_without_the_one_device_fallback(setup):
    model, x, y = setup
    attack = get_attack("deepfool_linf", steps=5, batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spread = attack.generate(x, y, model=model,
                                 strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    np.testing.assert_allclose(spread, attack.generate(x, y, model=model), atol=1e-6)


def test_the_foolbox_backend_still_warns_it_runs_on_one_device(setup):
    model, x, y = setup
    attack = get_attack("deepfool_linf", steps=2, batch_size=8, backend="foolbox")
    with pytest.warns(UserWarning, match="on one device"):
        attack.generate(x[:4], y[:4], model=model,
                        strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
