"""BPDA and EOT give usable gradients through non-differentiable and stochastic steps."""

import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import bpda, eot, get_attack


def _quantize(x):
    return tf.round(x * 3) / 3  # a crude "purifier": no gradient at all


def test_bpda_forward_is_exact_and_backward_is_the_classifiers_gradient(trained):
    model, x, y, _ = trained
    x = tf.constant(x[:8])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        plain = tf.reduce_sum(model(_quantize(x)))
        wrapped = tf.reduce_sum(model(bpda(_quantize)(x)))
    assert tape.gradient(plain, x) is None  # gradient masking without BPDA
    q = tf.constant(_quantize(x))
    with tf.GradientTape() as tape2:
        tape2.watch(q)
        at_q = tf.reduce_sum(model(q))
    np.testing.assert_allclose(float(wrapped), float(plain), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(wrapped, x), tape2.gradient(at_q, q), atol=1e-6)


def test_bpda_uses_the_given_approximation():
    f = bpda(lambda t: tf.round(t), approximation=lambda t: 3.0 * t)
    x = tf.constant([[0.4, 0.7]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = f(x)
    np.testing.assert_array_equal(out, [[0.0, 1.0]])
    np.testing.assert_allclose(tape.gradient(out, x), [[3.0, 3.0]])


def test_pgd_with_bpda_breaks_a_quantizing_defense_that_masks_gradients(trained, accuracy):
    model, x, y, clean = trained
    defended = lambda t: model(_quantize(t))  # noqa: E731
    assert accuracy(defended, x, y) > 0.8
    with pytest.raises(ValueError, match="bpda"):
        get_attack("pgd_linf", model=defended, eps=0.3).generate(x[:4], y[:4])
    adaptive = lambda t: model(bpda(_quantize)(t))  # noqa: E731
    attack = get_attack("pgd_linf", model=adaptive, eps=0.3, steps=20, step_size=0.03)
    x_adv = attack.generate(x, y)
    assert accuracy(defended, x_adv, y) < 0.3


def _noisy(model):
    def fn(t):  # a randomized defense: Gaussian noise before the classifier
        return model(t + tf.random.normal(tf.shape(t), stddev=0.3))

    return fn


def test_eot_gradient_is_closer_to_the_expected_gradient_than_one_sample(trained):
    model, x, y, _ = trained
    x = tf.constant(x[:4])
    tf.random.set_seed(0)

    def grad_of(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_sum(tf.nn.log_softmax(fn(x))[:, 3])
        return tape.gradient(value, x).numpy()

    reference = grad_of(eot(_noisy(model), n=400, average="logits"))
    single = [grad_of(_noisy(model)) for _ in range(3)]
    averaged = [grad_of(eot(_noisy(model), n=40, average="logits")) for _ in range(3)]
    err = lambda g: np.linalg.norm(g - reference) / np.linalg.norm(reference)  # noqa: E731
    assert max(err(g) for g in averaged) < min(err(g) for g in single)
    assert np.all(np.isfinite(reference)) and np.abs(reference).sum() > 0


def test_eot_returns_logits_of_the_expected_prediction_per_image(trained):
    model, x, _, _ = trained
    out = eot(_noisy(model), n=5)(tf.constant(x[:6]))
    assert out.shape == (6, 10)
    np.testing.assert_allclose(tf.reduce_sum(tf.exp(out), 1), np.ones(6), rtol=1e-5)


def test_pgd_with_eot_breaks_a_randomized_defense(trained, accuracy):
    model, x, y, _ = trained
    x, y = x[:40], y[:40]
    tf.random.set_seed(0)
    defended = _noisy(model)
    assert accuracy(defended, x, y) > 0.7
    attack = get_attack("pgd_linf", model=eot(defended, n=8), eps=0.3, steps=10, step_size=0.05)
    x_adv = attack.generate(x, y)
    assert accuracy(defended, x_adv, y) < 0.3


@pytest.mark.parametrize("bad", [{"n": 0}, {"average": "median"}, {"fn": 3}])
def test_eot_rejects_bad_arguments(bad):
    args = {"fn": lambda t: t, "n": 2, "average": "probs", **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        eot(**args)


def test_bpda_rejects_non_callables():
    with pytest.raises(ValueError, match="fn"):
        bpda(None)
    with pytest.raises(ValueError, match="approximation"):
        bpda(lambda t: t, approximation=2)
