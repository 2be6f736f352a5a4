"""How the library's modules import each other (issue 16 item 6).

The layers import one way: models, defenses and baselines do not import the attacks; the
perturbation core they share needs TensorFlow and the input checks only. ``import tfdefense``
imports every registering subpackage, the attacks included (their classes are
Keras-serializable), so the child process below runs as the ``tfdefense`` command does (a
script named ``tfdefense``), where the package defers that registration, and checks it did.

And no module imports another one's private (``_name``) names.
"""

import ast
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json
    import sys

    def library():
        return sorted(name for name in sys.modules if name.split(".")[0] == "tfdefense")

    import tfdefense

    deferred = "tfdefense.attacks" not in sys.modules
    import tfdefense.perturbation

    core = library()
    import tfdefense.baselines
    import tfdefense.defend
    import tfdefense.models

    print(json.dumps({"deferred": deferred, "core": core, "layers": library()}))
""")


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict:
    """What a fresh process holds after importing the core, then models, defend and baselines."""
    script = tmp_path_factory.mktemp("child") / "tfdefense"  # named as the console script
    script.write_text(CHILD)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["deferred"], "import tfdefense registered the library: the check below is void"
    return found


def test_the_perturbation_core_imports_only_tensorflow_and_the_input_checks(imported):
    assert imported["core"] == ["tfdefense", "tfdefense._version", "tfdefense.perturbation",
                                "tfdefense.validation"]


def test_models_defenses_and_baselines_import_without_the_attacks(imported):
    layers = imported["layers"]
    assert {"tfdefense.models", "tfdefense.defend", "tfdefense.baselines"} <= set(layers)
    assert [name for name in layers if name.startswith("tfdefense.attacks")] == []


@pytest.mark.parametrize("module, names", [
    ("tfdefense.attacks.iterative", ("steepest_step", "project", "random_start",
                                     "objective_gradient", "iterative_attack",
                                     "iterative_attack_early_stop")),
    ("tfdefense.attacks.losses", ("cross_entropy", "margin")),
    ("tfdefense.attacks.adaptive", ("bpda", "eot")),
    ("tfdefense.attacks", ("bpda", "eot")),
])
def test_the_attacks_keep_the_core_names_as_the_very_same_functions(module, names):
    from tfdefense import perturbation

    attacks_module = importlib.import_module(module)
    for name in names:
        assert getattr(attacks_module, name) is getattr(perturbation, name), f"{module}.{name}"


def test_no_module_imports_private_names_of_another():
    imported = []
    for path in sorted([*(ROOT / "tfdefense").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tfdefense"):
                imported += [f"{path.relative_to(ROOT)}: {node.module}.{alias.name}"
                             for alias in node.names
                             if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert imported == []
