"""The command line: `tfdefense train cdvae` writes its artifacts; bad arguments fail clearly."""

import json
import os
import subprocess
import sys
import time

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


@pytest.fixture(scope="module")
def saved_classifier(tmp_path_factory):
    import keras

    from tfdefense import data, nets

    keras.utils.set_random_seed(0)
    x, y = data.load_arrays("mnist_5k", "train")
    model = nets.small_cnn((28, 28, 1), 10, width=8, dense_units=32)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1500], y[:1500], epochs=2, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("clf") / "clf.keras"
    model.save(path)
    return path


def test_detect_fits_reports_and_saves_a_reloadable_detector(saved_classifier, tmp_path, capsys):
    import keras
    import numpy as np

    from tfdefense.detect import LogisticDetector

    out = tmp_path / "det.npz"
    code = main(["detect", "--model", str(saved_classifier), "--features", "mahalanobis",
                 "--attack", "fgsm", "--eps", "0.3", "--limit", "200", "--train-images", "300",
                 "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["fit_images"] >= 10 and printed["test_images"] >= 10
    assert printed["auc"] > 0.8  # FGSM at 0.3 on MNIST is easy to see in Mahalanobis space
    det = LogisticDetector.load(str(out), keras.saving.load_model(saved_classifier))
    assert det.score(np.zeros((2, 28, 28, 1), "float32")).shape == (2,)


def test_detect_with_a_foreign_adversarial_file_or_missing_model_fails_clearly(saved_classifier, tmp_path,
                                                                                capsys):
    import numpy as np

    np.savez(tmp_path / "adv.npz", x_adv=np.zeros((2, 28, 28, 1), "float32"))
    assert main(["detect", "--model", str(saved_classifier), "--adversarial", str(tmp_path / "adv.npz"),
                 "--out", str(tmp_path / "d.npz")]) == 2
    assert "lacks ['x', 'y']" in capsys.readouterr().err
    assert main(["detect", "--model", str(tmp_path / "none.keras"), "--out", str(tmp_path / "d.npz")]) == 2
    assert "no such file" in capsys.readouterr().err


def _python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)


def test_top_level_help_answers_in_under_two_seconds_with_no_tensorflow_log_lines():
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tfdefense.cli", "--help"], capture_output=True,
                          text=True, timeout=120)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # TensorFlow's start-up lines (oneDNN, cuda) go to stderr
    for command in ("train", "reproduce", "tune", "export", "attack", "evaluate", "detect"):
        assert command in proc.stdout
    assert seconds < 2.0, f"tfdefense --help took {seconds:.2f} s"


def test_a_commands_help_needs_no_tensorflow_either():
    """The command line defers registering the library (tfdefense.register_all) until a command
    runs, so a subcommand's help answers as fast as the top level's, without TensorFlow's lines."""
    for command in ("reproduce", "train"):  # (attack, evaluate, detect load their module)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "tfdefense.cli", command, "--help"],
                              capture_output=True, text=True, timeout=120)
        seconds = time.perf_counter() - start
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert "--out" in proc.stdout
        assert seconds < 2.0, f"tfdefense {command} --help took {seconds:.2f} s"


def test_a_lazy_command_is_defined_when_chosen_and_keeps_its_place_in_the_listing(capsys):
    from tfdefense.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["attack", "--model", "m.keras", "--limit", "3", "--out", "o"])
    assert args.command == "attack" and args.model == "m.keras" and args.limit == 3
    assert callable(args.func)
    listing = parser.format_help()
    assert listing.index("export") < listing.index("attack") < listing.index("evaluate")
    with pytest.raises(SystemExit) as exit_:
        main(["detect", "--help"])
    assert exit_.value.code == 0
    assert "--features" in capsys.readouterr().out


# ------------------------------------------------------------- evaluate --defense
def _tiny_defenses(folder):
    """A saved tiny ClassifierDefense and a saved tiny MagNet (untrained, thresholds fitted on
    ten mnist_5k validation images at a 10% rejection rate)."""
    import keras

    from tfdefense import data
    from tfdefense.baselines import MNIST_STRUCTURE_II, MagNet, magnet_autoencoder
    from tfdefense.defend import ClassifierDefense
    from tfdefense.nets import small_cnn

    keras.utils.set_random_seed(0)
    ClassifierDefense(small_cnn(width=4, dense_units=8)).save(str(folder / "classifier"))
    magnet = MagNet(small_cnn(width=4, dense_units=8), magnet_autoencoder(),
                    magnet_autoencoder(MNIST_STRUCTURE_II), rejection_rate=0.1)
    magnet.fit_thresholds(data.load_arrays("mnist_5k", "validation")[0][:10])
    magnet.save(str(folder / "magnet"))
    return folder / "classifier", folder / "magnet"


@pytest.mark.slow  # about 55 s: the quick adaptive preset on two defenses (4 images each)
def test_evaluate_a_saved_defense_prints_and_writes_the_adaptive_table_and_claims(tmp_path,
                                                                                    capsys):
    classifier, magnet = _tiny_defenses(tmp_path)
    for path, aware in ((classifier, False), (magnet, True)):
        out = tmp_path / f"eval_{path.name}"
        assert main(["evaluate", "--defense", str(path), "--images", "4", "--quick",
                     "--reported", "linf=0.5", "--out", str(out)]) == 0
        stdout = capsys.readouterr().out
        table = (out / "adaptive.md").read_text()
        claims = json.loads((out / "claim.json").read_text())
        assert table.strip() in stdout and json.dumps(claims, indent=1) in stdout
        assert "| **worst case (linf)** |" in table and "| **worst case (l2)** |" in table
        assert ("| detector_aware_pgd_linf | linf |" in table) == aware
        assert sorted(claims) == ["L2", "Linf"]
        linf = claims["Linf"]
        assert linf["threat_model"] == "Linf" and linf["eps"] == "0.3" and linf["n"] == 4
        assert linf["dataset"] == "mnist_5k" and linf["reported"] == "50.00"
        assert linf["autoattack_acc"] is not None and linf["worst_case_acc"] is not None
        assert ("detector_aware_cw_linf" in linf["attacks"]) == aware
        result = json.loads((out / "result.json").read_text())
        assert result["model"] == ("MagNet" if aware else "ClassifierDefense")
        assert len(result["robust"]["linf"]) == 4


def test_evaluate_refuses_a_folder_without_a_saved_defense(tmp_path, capsys):
    assert main(["evaluate", "--defense", str(tmp_path), "--images", "2"]) == 2
    assert "Defense.save" in capsys.readouterr().err
