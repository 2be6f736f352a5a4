"""The command line: `tfdefense train cdvae` writes its artifacts; bad arguments fail clearly."""

import json
import os

import pytest

from tfdefense.cli import main


def test_train_cdvae_writes_model_history_metrics_and_figures(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "cdvae", "--dataset", "mnist_5k", "--epochs", "1", "--train-limit", "128",
                 "--latent-dim", "8", "--width", "8", "--out", str(out)])
    assert code == 0
    for name in ("cdvae.keras", "history.json", "metrics.json", "decomposition.png",
                 "training_curves.png"):
        assert (out / name).stat().st_size > 0, name
    history = json.loads((out / "history.json").read_text())
    assert {"loss", "reconstruction", "kl", "ce", "accuracy", "reconstruction_accuracy",
            "val_loss"} <= set(history)
    stdout = capsys.readouterr().out  # the progress bar comes first, the JSON summary last
    printed = json.loads(stdout[stdout.rindex("\n{") + 1 :])
    assert printed["test"]["accuracy"] >= 0.0
    assert not os.path.exists(out / "backup"), "BackupAndRestore should clean up after a finished run"


def test_unknown_dataset_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    code = main(["train", "cdvae", "--dataset", "svhn", "--epochs", "1", "--out", str(tmp_path)])
    assert code == 2
    assert "unknown dataset 'svhn'" in capsys.readouterr().err


def test_bad_epochs_are_rejected(tmp_path, capsys):
    assert main(["train", "cdvae", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert "epochs" in capsys.readouterr().err


def test_unknown_model_is_rejected_by_argparse():
    with pytest.raises(SystemExit):
        main(["train", "gan"])
