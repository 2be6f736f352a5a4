"""The compiled C&W-L2 (``backend="compiled"``) is Foolbox's ``L2CarliniWagnerAttack``.

Faithfulness: on the same small CNN (fixed random weights) and mnist_5k images, both
backends fool the same images and return the same examples. The largest difference
measured (16 images, 2-3 searches x 20-30 steps, abort-early on and off, confidence 0 and
0.5, with and without eps; and 32 images of a trained CNN at 5 x 100 steps): 0, bit for
bit (``cw_l2.eager_square`` keeps the one op Grappler would round differently); the
tolerance is 1e-6. Hand cases on a linear model check the arithmetic without Foolbox:
the first Adam step (``lr * sign(gradient)`` in the tanh space) and Foolbox's zero image
for what was never fooled.
"""

import numpy as np
import pytest
import tensorflow as tf
from minimization_case import fooled, small_cnn_case

from tfdefense.attacks import get_attack
from tfdefense.attacks.cw_l2 import to_attack_space, to_model_space

TOL = 1e-6  # measured: 0 (bit for bit)


@pytest.fixture(scope="module")
def setup():
    return small_cnn_case()



def _both(model, x, y, **params):
    return [get_attack("cw_l2", backend=b, batch_size=8, **params).generate(x, y, model=model)
            for b in ("foolbox", "compiled")]


@pytest.mark.parametrize("params", [
    {"binary_search_steps": 2, "steps": 20, "step_size": 0.05, "initial_const": 1.0},
    {"binary_search_steps": 3, "steps": 20, "step_size": 0.05, "initial_const": 1.0,
     "abort_early": False},
    {"binary_search_steps": 3, "steps": 30, "initial_const": 1e-2, "confidence": 0.5},
    {"binary_search_steps": 2, "steps": 20, "step_size": 0.05, "initial_const": 1.0, "eps": 0.3},
], ids=["abort_early", "no_abort", "confidence_and_x10_search", "eps"])
def test_compiled_cw_l2_fools_the_same_images_as_foolbox_with_the_same_examples(setup, params):
    model, x, y = setup
    theirs, ours = _both(model, x, y, **params)
    np.testing.assert_array_equal(fooled(model, ours, y), fooled(model, theirs, y))
    assert 0 < fooled(model, ours, y).sum()  # the comparison covers successes
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)


def test_abort_early_changes_the_result_in_the_compared_setting(setup):
    # the abort-early comparison above is not vacuous: the rule fires in it
    model, x, y = setup
    common = {"binary_search_steps": 2, "steps": 20, "step_size": 0.05, "initial_const": 1.0,
              "batch_size": 8}
    on = get_attack("cw_l2", **common).generate(x, y, model=model)
    off = get_attack("cw_l2", abort_early=False, **common).generate(x, y, model=model)
    assert np.abs(on - off).max() > 1e-3


W = np.array([1.0, -2.0, 0.5, 1.5], np.float32)
_W_COL = tf.constant(W.reshape(4, 1))


def linear(images):
    """logits [0, w·x + b] of 2x2x1 images, b putting the boundary through 0.5."""
    f = tf.reshape(images, (-1, 4)) @ _W_COL - 0.5 * float(W.sum())
    return tf.concat([tf.zeros_like(f), f], axis=1)


def test_the_first_adam_step_moves_lr_along_the_gradient_sign_in_tanh_space():
    # Adam's first step is lr * m_hat / (sqrt(v_hat) + 1e-8) = lr * g / (|g| + 1e-8), i.e.
    # lr * sign(g) up to 1e-8 / |g|; the margin's gradient in w = atanh(2x - 1) has the sign
    # of sign(f) * w. Two steps of one search: step 0 tracks the clean image (not fooled),
    # step 1 the image one Adam step away, which crosses (|f| = 0.01 < lr * ||w||_1 / 2).
    lr = 0.01
    f = np.array([0.01, -0.01], np.float32)  # class 1, class 0
    x = (0.5 + f[:, None] * W / float(W @ W)).reshape(2, 2, 2, 1).astype(np.float32)
    y = np.array([1, 0])
    x_adv = get_attack("cw_l2", binary_search_steps=1, steps=2, step_size=lr, initial_const=1.0,
                       abort_early=False).generate(x, y, model=linear)
    w0 = np.arctanh((x.reshape(2, 4).astype(np.float64) - 0.5) / 0.5 * 0.999999)
    expected = np.tanh(w0 - lr * np.sign(f)[:, None] * np.sign(W)) * 0.5 + 0.5
    np.testing.assert_allclose(x_adv.reshape(2, 4), expected, atol=1e-6)
    assert np.all(fooled(linear, x_adv, y))


def test_an_image_never_fooled_comes_back_as_the_zero_image_as_in_foolbox():
    # one step tracks only the clean image itself: nothing is fooled, so Foolbox's start value
    x = np.full((2, 2, 2, 1), 0.5, np.float32) + np.array([0.1, -0.1], np.float32)[:, None, None,
                                                                                     None]
    y = np.argmax(np.asarray(linear(x)), 1)
    attack = get_attack("cw_l2", binary_search_steps=1, steps=1)
    np.testing.assert_array_equal(attack.generate(x, y, model=linear), np.zeros_like(x))


def test_ten_binary_searches_repeat_the_last_at_the_upper_bound_as_foolbox_does():
    # with >= 10 searches Foolbox sets c = min(upper bound, 1e10) for the last one; c starts
    # at 1e-3 and is multiplied by 10 until the first success, then bisected
    rng = np.random.default_rng(1)
    x = rng.uniform(0.3, 0.7, size=(6, 2, 2, 1)).astype(np.float32)
    y = np.argmax(np.asarray(linear(x)), 1)
    theirs, ours = _both(linear, x, y, binary_search_steps=10, steps=5, step_size=0.05)
    np.testing.assert_array_equal(fooled(linear, ours, y), fooled(linear, theirs, y))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOL)


def test_the_tanh_round_trip_gives_back_the_image_up_to_foolboxs_squeeze():
    # Foolbox scales [-1, 1] by 0.999999 before atanh, so the round trip moves a pixel by at
    # most 0.5e-6 (at 0 and 1), and 0.5 is the origin of the attack space
    x = tf.constant([0.0, 0.25, 0.5, 1.0])
    back = to_model_space(to_attack_space(x)).numpy()
    np.testing.assert_allclose(back, x.numpy(), atol=1e-6)
    assert to_attack_space(x).numpy()[2] == 0.0


def test_one_trace_serves_every_batch_size(setup):
    model, x, y = setup
    attack = get_attack("cw_l2", binary_search_steps=1, steps=2, batch_size=5)
    attack.generate(x[:12], y[:12], model=model)  # batches of 5, 5 and 2
    traced = attack._compiled[(id(model), tuple(x.shape[1:]))][1]
    assert traced.experimental_get_tracing_count() == 1


def test_the_backend_is_a_parameter_and_an_unknown_one_is_rejected():
    assert get_attack("cw_l2").get_config()["backend"] == "compiled"
    assert get_attack("cw_l2", backend="foolbox").replication_mode() is None
    assert get_attack("cw_l2").replication_mode() == "batches"
    with pytest.raises(ValueError, match="backend"):
        get_attack("cw_l2", backend="cleverhans")
