"""Every attacks module's docstring example runs."""

import doctest
import importlib

import pytest

MODULES = [
    "tfdefense.attacks",
    "tfdefense.attacks.base",
    "tfdefense.attacks.losses",
    "tfdefense.attacks.iterative",
    "tfdefense.attacks.cw_linf",
    "tfdefense.attacks.spsa",
    "tfdefense.attacks.stadv",
    "tfdefense.attacks.foolbox_attacks",
    "tfdefense.attacks.adaptive",
    "tfdefense.attacks.presets",
    "tfdefense.attacks.adversarial_set",
    "tfdefense.attacks.robustness",
    "tfdefense.attacks.commands",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_example_runs(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
