"""The attack / evaluate subcommands run end to end on a saved tiny model."""

import argparse
import json

import numpy as np
import pytest

from tfdefense.attacks.commands import add_attack_parser, add_evaluate_parser


@pytest.fixture(scope="module")
def saved(tmp_path_factory, trained):
    path = tmp_path_factory.mktemp("cmd") / "clf.keras"
    trained[0].save(path)
    return path


def _parse(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_attack_parser(sub)
    add_evaluate_parser(sub)
    return parser.parse_args(argv)


def test_attack_command_writes_adversarial_examples_within_eps(saved, tmp_path, capsys):
    out = tmp_path / "adv.npz"
    args = _parse(["attack", "--model", str(saved), "--attack", "pgd_linf", "--eps", "0.3",
                   "--steps", "10", "--param", "step_size=0.05", "--limit", "16",
                   "--out", str(out)])
    assert args.func(args) == 0
    with np.load(out) as f:
        assert f["x_adv"].shape == (16, 28, 28, 1)
        assert np.abs(f["x_adv"] - f["x"]).max() <= 0.3 + 1e-6
        assert json.loads(str(f["params"]))["steps"] == 10 and str(f["attack"]) == "pgd_linf"
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["accuracy_under_attack"] < 0.3


def test_evaluate_command_prints_a_table_and_writes_json(saved, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = _parse(["evaluate", "--model", str(saved), "--attacks", "fgsm", "--limit", "16",
                   "--out", str(out)])
    assert args.func(args) == 0
    assert "| fgsm |" in capsys.readouterr().out
    assert json.loads(out.read_text())["n"] == 16


def test_bad_param_syntax_and_missing_model_are_value_errors(saved, tmp_path):
    args = _parse(["attack", "--model", str(saved), "--param", "kappa", "--out", "x.npz"])
    with pytest.raises(ValueError, match="--param"):
        args.func(args)
    args = _parse(["attack", "--model", str(tmp_path / "nope.keras"), "--out", "x.npz"])
    with pytest.raises(ValueError, match="--model"):
        args.func(args)
