"""Notebooks run top to bottom on tiny settings (their cells read TFDEFENSE_NB_* variables)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
TINY = {"TFDEFENSE_NB_EPOCHS": "1", "TFDEFENSE_NB_TRAIN_LIMIT": "128", "TFDEFENSE_NB_LATENT_DIM": "8"}


@pytest.mark.parametrize("name", ["01_cdvae_quickstart.ipynb"])
def test_notebook_executes_without_error(name, monkeypatch):
    for key, value in TINY.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "max |G(x) + R(x) - x| =" in outputs
    assert "reloaded from" in outputs
    assert os.environ["TFDEFENSE_NB_EPOCHS"] == "1"
