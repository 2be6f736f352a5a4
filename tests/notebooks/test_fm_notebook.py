"""notebooks/06_fm_defense.ipynb runs top to bottom on tiny settings (TFDEFENSE_NB_* variables)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "06_fm_defense.ipynb"
TINY = {"TFDEFENSE_NB_EPOCHS": "1", "TFDEFENSE_NB_TRAIN_LIMIT": "300", "TFDEFENSE_NB_MORPHS": "4",
        "TFDEFENSE_NB_EVAL": "16"}


@pytest.mark.slow  # 25-40 s on 2 cores: with the other walkthroughs, after the default suite
def test_fm_notebook_executes(monkeypatch):
    for key, value in TINY.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "FM-Defense final accuracy (TP + TN + Recovered) / all:" in text
    assert "adaptive: FM-Defense final accuracy:" in text
    assert "validation false-positive rate:" in text
