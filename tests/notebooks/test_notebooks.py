"""Notebooks run top to bottom on tiny settings (their cells read TFDEFENSE_NB_* variables).

Each notebook gets the shared ``TINY`` settings plus its own knobs, and its printed output is
checked for the figures it exists to show.
"""

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
TINY = {"TFDEFENSE_NB_EPOCHS": "1", "TFDEFENSE_NB_TRAIN_LIMIT": "128", "TFDEFENSE_NB_LATENT_DIM": "8"}
#: per notebook: settings on top of TINY (each about a minute or less on an idle 2-core CPU)
SETTINGS = {
    "01_cdvae_quickstart.ipynb": {},
    # D̂ and D(R(x)) must classify some images right for PGD to leave examples to detect
    "03_detection.ipynb": {
        "TFDEFENSE_NB_TRAIN_LIMIT": "512",
        "TFDEFENSE_NB_ATTACK_IMAGES": "120",
        "TFDEFENSE_NB_ATTACK_STEPS": "3",
        "TFDEFENSE_NB_DETECT_TRAIN": "150",
        "TFDEFENSE_NB_LID_K": "10,20",
        "TFDEFENSE_NB_MD_MAGNITUDES": "0.002",
    },
    "04_tuning_gamma.ipynb": {
        "TFDEFENSE_NB_TRAIN_LIMIT": "256",
        "TFDEFENSE_NB_GAMMAS": "2e-3,2",
        "TFDEFENSE_NB_TRIALS": "1",
        "TFDEFENSE_NB_EVAL": "64",
        "TFDEFENSE_NB_ATTACK_STEPS": "3",
    },
    "05_adversarial_training.ipynb": {
        "TFDEFENSE_NB_AT_EPOCHS": "1",
        "TFDEFENSE_NB_TRAIN_LIMIT": "256",
        "TFDEFENSE_NB_TRAIN_STEPS": "2",
        "TFDEFENSE_NB_ATTACK_IMAGES": "32",
        "TFDEFENSE_NB_ATTACK_STEPS": "4",
    },
    "07_serving.ipynb": {
        "TFDEFENSE_NB_TRAIN_LIMIT": "256",
        "TFDEFENSE_NB_ATTACK_IMAGES": "48",
        "TFDEFENSE_NB_ATTACK_STEPS": "2",
    },
}


def _value(text: str, prefix: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return float(line[len(prefix) :].split()[0])


def _percent_row(text: str, name: str) -> list[float]:
    """The numbers of the Markdown row ``| name | ... |``, all checked to be percentages."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
    values = [float(v) for v in re.findall(r"-?\d+\.\d+", line[len(name) + 3 :])]
    assert values and all(0.0 <= v <= 100.0 for v in values), line
    return values


def _check_01(text, images):
    assert "max |G(x) + R(x) - x| =" in text
    assert "reloaded from" in text
    # the fit's TensorBoard callbacks wrote event files (train and validation scalars, the grid)
    log_dir = Path(os.environ["TFDEFENSE_NB_LOG_DIR"])
    assert f"TensorBoard logs in {log_dir}" in text
    assert list(log_dir.rglob("events.out.tfevents.*"))


def _check_03(text, images):
    assert "PGD-Linf detection, TNR at 95% TPR / ROC AUC (%)" in text
    for name in ("KD", "LID", "MD", "KD (R(x))", "LID (R(x))", "MD (R(x))"):
        assert len(_percent_row(text, name)) == 4  # ours TNR / AUC, paper TNR / AUC
    assert "LID: selected" in text and "LID (R(x)): selected" in text  # the k grid was used
    assert images, "the ROC curves were not drawn"


def _check_04(text, images):
    for gamma in ("0.002", "2"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {gamma} |"))
        assert len(re.findall(r"-?\d+\.\d+", row[len(gamma) + 4 :])) == 5, row  # after the γ cell
    assert _value(text, "best γ by D's accuracy on R(x): ") in (0.002, 2.0)
    assert _value(text, "best γ by accuracy + reconstruction: ") in (0.002, 2.0)
    assert len(re.findall(r"^β = \d\.\d+: D̂\(G\(x′\)\)", text, flags=re.M)) == 1  # one trial
    best_beta = float(re.search(r"best β at γ = \S+: (\d+\.\d+)", text).group(1))
    assert 0.02 <= best_beta <= 2.0
    assert images, "the Fig 4 analog was not drawn"


def _check_05(text, images):
    for name in ("undefended classifier D̂(x)", "CD-VAE + D_G(G(x)), before AT", "CD-VAE-AT D_G(G(x))"):
        assert len(_percent_row(text, name)) == 2  # clean, PGD-Linf
    assert "'in_margin':" in text and "'val_adversarial_accuracy':" in text
    assert len(images) >= 2, "the tracker curves or the x / x' / G / R figure were not drawn"


def _check_07(text, images):
    assert "signatures: ['decompose', 'serving_default']" in text
    assert "signatures: ['defend', 'detect', 'serving_default']" in text
    assert _value(text, "max |SavedModel logits - Keras logits| = ") < 1e-4
    assert _value(text, "max |G(x) + R(x) - x| = ") < 1e-5
    assert _value(text, "max |served detect score - LogisticDetector.detect probability| = ") < 1e-4
    assert re.search(r"defend on PGD-Linf: rejected \d+ of 24", text)
    assert 'answer: {"predictions": [{' in text and '"decision_name": ' in text
    assert "columnar detect answer: {" in text
    assert "refused:" in text and "expected pixel values in [0, 1]" in text


CHECKS = {
    "01_cdvae_quickstart.ipynb": _check_01,
    "03_detection.ipynb": _check_03,
    "04_tuning_gamma.ipynb": _check_04,
    "05_adversarial_training.ipynb": _check_05,
    "07_serving.ipynb": _check_07,
}


# Every walkthrough (20-50 s each) runs with the slow tests, which CI runs after the default suite,
# so the default suite keeps its 20-minute budget on a slow host
_PARAMS = [pytest.param(n, marks=pytest.mark.slow) for n in SETTINGS]


@pytest.mark.parametrize("name", _PARAMS)
def test_notebook_executes_without_error(name, monkeypatch, tmp_path):
    for key, value in {**TINY, **SETTINGS[name]}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TFDEFENSE_NB_LOG_DIR", str(tmp_path / "tensorboard"))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{name} is stored with outputs; clear them before committing"
    )
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    CHECKS[name](text, images)
    assert os.environ["TFDEFENSE_NB_EPOCHS"] == "1"
