"""Bad parameters and bad inputs raise ValueError naming the parameter; configs round-trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import available_attacks, get_attack
from tfdefense.nets import small_cnn


@pytest.fixture(scope="module")
def model():
    return small_cnn((28, 28, 1), 10, width=4, dense_units=8)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")


def test_unknown_attack_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="pgd_linf"):
        get_attack("pgd_inf")


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("pgd_linf", {"eps": 0.0}, "eps"),
        ("pgd_linf", {"eps": -0.1}, "eps"),
        ("pgd_linf", {"eps": 1.5}, "eps"),
        ("fgsm", {"eps": float("nan")}, "eps"),
        ("pgd_linf", {"steps": 0}, "steps"),
        ("pgd_linf", {"steps": 2.5}, "steps"),
        ("pgd_linf", {"step_size": 0.0}, "step_size"),
        ("fgsm", {"norm": "l1"}, "norm"),
        ("pgd", {"norm": "linf2"}, "norm"),
        ("spsa", {"norm": "l2"}, "norm"),
        ("cw_l2", {"norm": "linf"}, "norm"),
        ("pgd_linf", {"norm": "l2"}, "norm"),
        ("pgd_linf", {"backend": "torch"}, "backend"),
        ("cw_linf", {"backend": "cleverhans"}, "backend"),
        ("cw_linf", {"kappa": 0.0}, "kappa"),
        ("pgd_linf", {"targeted": "yes"}, "targeted"),
        ("pgd_linf", {"batch_size": 0}, "batch_size"),
        ("pgd_linf", {"seed": 1.5}, "seed"),
        ("pgd_linf", {"model": 3}, "model"),
        ("spsa", {"samples": 3}, "samples"),
        ("spsa", {"delta": 0.0}, "delta"),
        ("stadv", {"bound": 0.0}, "bound"),
        ("stadv", {"learning_rate": -1.0}, "learning_rate"),
        ("deepfool", {"candidates": 1}, "candidates"),
        ("deepfool", {"overshoot": -0.1}, "overshoot"),
        ("cw_l2", {"binary_search_steps": 0}, "binary_search_steps"),
        ("mim", {"decay": -1.0}, "decay"),
        ("deepfool", {"steps": 0}, "steps"),
    ],
)
def test_bad_parameter_raises_value_error_naming_it(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_attack(name, **params)


def test_l2_eps_above_the_data_range_is_rejected_at_generate(model, x):
    with pytest.raises(ValueError, match="eps"):
        get_attack("pgd_l2", model=model, eps=29.0).generate(x)  # sqrt(784) = 28


def test_images_outside_unit_range_are_rejected(model, x):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        get_attack("fgsm", model=model).generate(x * 255)


def test_images_of_wrong_rank_are_rejected(model, x):
    with pytest.raises(ValueError, match="rank 4"):
        get_attack("fgsm", model=model).generate(x[0])


def test_targeted_attack_without_labels_is_rejected(model, x):
    with pytest.raises(ValueError, match="y: targeted"):
        get_attack("pgd_linf", model=model, targeted=True).generate(x)


def test_labels_of_wrong_length_are_rejected(model, x):
    with pytest.raises(ValueError, match="3 labels"):
        get_attack("fgsm", model=model).generate(x, np.array([1, 2]))


def test_missing_model_is_rejected(x):
    with pytest.raises(ValueError, match="model"):
        get_attack("fgsm").generate(x)


def test_model_with_wrong_output_shape_is_rejected(x):
    with pytest.raises(ValueError, match="logits of shape"):
        get_attack("fgsm", model=lambda t: tf.reshape(t, [-1, 784])[:, :1]).generate(x)
    with pytest.raises(ValueError, match="logits of shape"):
        get_attack("fgsm", model=lambda t: t).generate(x)


def test_model_returning_probabilities_is_rejected(model, x):
    with pytest.raises(ValueError, match="probabilities"):
        get_attack("fgsm", model=lambda t: tf.nn.softmax(model(t))).generate(x)


def test_non_differentiable_model_points_to_bpda(model, x):
    quantized = lambda t: model(tf.round(t * 4) / 4)  # noqa: E731
    with pytest.raises(ValueError, match="bpda"):
        get_attack("fgsm", model=quantized).generate(x)


@pytest.mark.parametrize("name", available_attacks())
def test_config_round_trips_through_keras_serialization(name):
    attack = get_attack(name, steps=3) if name not in ("fgsm",) else get_attack(name)
    config = attack.get_config()
    again = type(attack).from_config(config)
    assert again.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(attack))
    assert type(restored) is type(attack) and restored.get_config() == config
