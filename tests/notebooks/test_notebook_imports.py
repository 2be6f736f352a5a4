"""Notebooks are examples of the library: their code imports nothing from the experiments
(issue 16 item 5), whose tables and settings are the reproduction's, not a public API."""

import re
from pathlib import Path

import nbformat

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
EXPERIMENTS = re.compile(r"^\s*(from\s+tfdefense(\.experiments\b|\s+import\s+.*\bexperiments\b)"
                         r"|import\s+tfdefense\.experiments\b)", re.M)


def test_the_pattern_catches_every_way_of_importing_the_experiments():
    for line in ("from tfdefense.experiments.cdvae_detection import PAPER_TABLE4",
                 "from tfdefense import data, experiments", "import tfdefense.experiments as ex"):
        assert EXPERIMENTS.search(line), line
    assert not EXPERIMENTS.search("from tfdefense.detect import metrics  # not experiments")


def test_no_notebook_imports_the_experiments():
    assert NOTEBOOKS
    offenders = [(nb.name, i) for nb in NOTEBOOKS
                 for i, cell in enumerate(nbformat.read(nb, as_version=4).cells)
                 if cell.cell_type == "code" and EXPERIMENTS.search(cell.source)]
    assert offenders == []
