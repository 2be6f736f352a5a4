"""Gradient attacks on a trained small MNIST CNN: strength, budgets, seeds, cleverhans agreement."""

import numpy as np
import pytest

from tfdefense.attacks import get_attack


def _linf(a, b):
    return np.abs(a - b).reshape(len(a), -1).max(1)


def _l2(a, b):
    return np.sqrt(((a - b) ** 2).reshape(len(a), -1).sum(1))


def test_pgd_linf_at_eps_03_leaves_under_10_percent_accuracy(trained, accuracy):
    model, x, y, clean = trained
    x_adv = get_attack("pgd_linf", model=model, eps=0.3, steps=20, step_size=0.03).generate(x, y)
    assert accuracy(model, x_adv, y) < 0.10 < clean
    assert _linf(x_adv, x).max() <= 0.3 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize(
    "name, params, norm, eps",
    [
        ("fgsm", {"eps": 0.3}, "linf", 0.3),
        ("bim", {"eps": 0.3, "steps": 10}, "linf", 0.3),
        ("mim", {"eps": 0.3, "steps": 10}, "linf", 0.3),
        ("pgd_l2", {"eps": 2.5, "steps": 20}, "l2", 2.5),
        ("cw_linf", {"eps": 0.3, "steps": 20}, "linf", 0.3),
        ("cw_pgd_l2", {"eps": 2.5, "steps": 20}, "l2", 2.5),
    ],
)
def test_gradient_attack_drops_accuracy_within_budget(trained, accuracy, name, params, norm, eps):
    model, x, y, clean = trained
    x_adv = get_attack(name, model=model, **params).generate(x, y)
    acc = accuracy(model, x_adv, y)
    assert acc < clean - 0.5, f"{name}: accuracy {acc} vs clean {clean}"
    dist = _linf(x_adv, x) if norm == "linf" else _l2(x_adv, x)
    assert dist.max() <= eps + (1e-6 if norm == "linf" else 1e-4)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_same_seed_repeats_exactly_and_other_seed_differs(trained):
    model, x, y, _ = trained
    x, y = x[:20], y[:20]
    make = lambda seed: get_attack("pgd_linf", model=model, eps=0.3, steps=3, seed=seed)  # noqa: E731
    a, b, c = make(1).generate(x, y), make(1).generate(x, y), make(2).generate(x, y)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.01


def test_batches_use_their_own_seed_so_batch_size_does_not_change_a_batch(trained):
    model, x, y, _ = trained
    x, y = x[:20], y[:20]
    whole = get_attack("pgd_linf", model=model, eps=0.3, steps=2, batch_size=10).generate(x, y)
    half = get_attack("pgd_linf", model=model, eps=0.3, steps=2, batch_size=10).generate(
        x[:10], y[:10]
    )
    np.testing.assert_allclose(whole[:10], half, atol=1e-6)


@pytest.mark.parametrize(
    "name, params",
    [
        ("fgsm", {"eps": 0.2}),
        ("fgsm", {"eps": 1.5, "norm": "l2"}),
        ("bim", {"eps": 0.2, "steps": 4, "step_size": 0.05}),
        ("pgd", {"eps": 1.5, "steps": 4, "norm": "l2", "rand_init": False}),
        ("mim", {"eps": 0.2, "steps": 4, "step_size": 0.05}),
    ],
)
def test_compiled_backend_matches_cleverhans(trained, name, params):
    model, x, y, _ = trained
    x, y = x[:32], y[:32]
    ours = get_attack(name, model=model, **params).generate(x, y)
    ref = get_attack(name, model=model, backend="cleverhans", **params).generate(x, y)
    close = np.isclose(ours, ref, atol=1e-4)
    # a sign step can flip where a gradient is ~0 in float32; everything else agrees
    assert close.mean() > 0.995, f"{name}: {1 - close.mean():.4%} of pixels differ"


def test_targeted_pgd_reaches_the_target_class(trained):
    model, x, y, _ = trained
    target = (y[:30] + 1) % 10
    attack = get_attack("pgd_linf", model=model, eps=0.3, steps=20, step_size=0.03, targeted=True)
    x_adv = attack.generate(x[:30], target)
    hit = np.mean(np.argmax(np.asarray(model(x_adv)), 1) == target)
    assert hit > 0.8


def test_default_labels_are_the_models_predictions(trained):
    model, x, y, _ = trained
    attack = get_attack("fgsm", model=model, eps=0.1)
    pred = np.argmax(np.asarray(model(x[:16])), 1)
    np.testing.assert_array_equal(attack.generate(x[:16]), attack.generate(x[:16], pred))


def test_early_stop_keeps_budget_and_fools_at_least_as_many(trained, accuracy):
    model, x, y, _ = trained
    common = {"model": model, "eps": 0.15, "steps": 10, "step_size": 0.03}
    plain = get_attack("pgd_linf", **common).generate(x, y)
    early = get_attack("pgd_linf", early_stop=True, **common).generate(x, y)
    assert accuracy(model, early, y) <= accuracy(model, plain, y)
    assert np.abs(early - x).max() <= 0.15 + 1e-6 and early.min() >= 0 and early.max() <= 1
    same_seed = get_attack("pgd_linf", early_stop=True, **common).generate(x, y)
    np.testing.assert_array_equal(early, same_seed)
