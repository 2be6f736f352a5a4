"""Every number in docs/quick_report/report.md's result tables is the measurement it renders.

Each table of report.md is parsed as a reader sees it; for every cell the numbers before
"(paper ...)" (ours) are compared with the raw values in results.json's ``measurements``
for that row and column, within half a unit of the last printed digit. The mapping from
(row, column) to the measurement key is written out below per experiment, so a cell that
printed the paper's number, another row's value or a stale one fails. Cells with no
measurement behind them (the paper's own columns, rows that need ImageNet or a GPU, text)
are listed with the reason (``UNMEASURED``) and checked to hold no number of ours.
``test_swapping_ours_and_the_papers_number_fails`` shows the check catches a swap.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tfdefense.experiments.result import fmt

REPORT = Path(__file__).resolve().parents[1] / "docs" / "quick_report"
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
NO_VALUE = "–"

#: why a cell has no measurement to compare with
PAPER_COLUMN = "the paper's number (a column of the paper's values)"
NEEDS_DATA = "paper only: needs restricted ImageNet and a GPU (no run here)"
NOT_RUN = "not run on greyscale data (ReColor)"
CLAIM = "the authors' claim, text"
UNMEASURED = {PAPER_COLUMN, NEEDS_DATA, NOT_RUN, CLAIM}


def pct(value):
    return None if value is None else 100.0 * value


# ------------------------------------------------------------------ report.md, parsed
def report_tables(text: str) -> dict[str, list[list[str]]]:
    """'## title' -> the first table under it, as rows of cells (header first)."""
    tables, title, rows = {}, None, None
    for line in text.splitlines():
        if line.startswith("## "):
            title, rows = line[3:].strip(), None
        elif line.startswith("|") and title is not None and title not in tables:
            if rows is None:
                rows = []
            if not re.fullmatch(r"\|(---\|)+", line.strip()):
                rows.append([c.strip() for c in line.strip()[1:-1].split("|")])
        elif rows is not None and title not in tables:
            tables[title] = rows
    if rows is not None and title not in tables:
        tables[title] = rows
    return tables


def ours(cell: str) -> list[tuple[float, int]]:
    """(value, decimals) of the numbers a cell prints as ours: before '(paper' and before
    a ';' note (Table 7's 'unseen mean' cells name ℓ2 after one)."""
    text = cell.split("(paper")[0].split(";")[0]
    out = []
    for m in NUMBER.finditer(text):
        token = m.group()
        decimals = len(token.split(".")[1].split("e")[0]) if "." in token else 0
        out.append((float(token), decimals))
    return out


# ----------------------------------------------------- expected values, per experiment
# Each function maps (results.json row, column) to the measured values the cell shows, a
# reason from UNMEASURED, or None for a label column.
Expected = list | str | None


def cdvae_table1(m, row, col):
    if col == "pair":
        return None
    if col.startswith("paper"):
        return PAPER_COLUMN
    if "restricted ImageNet" in row["pair"]:
        return NEEDS_DATA
    part = m["G" if row["pair"].startswith("G(x)") else "R"]
    if col == "cosine similarity":
        return [part["cosine_mean"], part["cosine_std"]]
    return [part["frechet"]]


def cdvae_table2(m, row, col):
    if col == "part":
        return None
    if col.startswith("paper"):
        return PAPER_COLUMN
    if "restricted ImageNet" in row["part"]:
        return NEEDS_DATA
    norm = {"ℓ1": "l1", "ℓ2": "l2", "ℓ∞": "linf"}[col]
    return [m[row["part"]][norm]["mean"], m[row["part"]][norm]["std"]]


def cdvae_fig3_pearson(m, row, col):
    if col == "statistic":
        return None
    if col == "paper":
        return PAPER_COLUMN
    stat = row["statistic"]
    return {"active latent dimensions": [m["active"], m["latent_dim"]],
            "Pearson r, min": [min(m["r"])], "Pearson r, median": [float(np.median(m["r"]))],
            "Pearson r, max": [max(m["r"])], "largest p-value": [max(m["p"])]}[stat]


TRAIN_TEST = "train \\ test"


def cdvae_table3(m, row, col):
    if col == TRAIN_TEST:
        return None
    if "restricted ImageNet" in row[TRAIN_TEST]:
        return NEEDS_DATA
    return [m[f"{row[TRAIN_TEST]}->{col}"]["top1"]]


TABLE4_ATTACKS = {"FGSM": "fgsm", "BIM": "bim", "C&W": "cw_linf", "PGD-Linf": "pgd_linf",
                  "PGD-L2": "pgd_l2"}


def cdvae_table4(m, row, col):
    if col == "method":
        return None
    if "restricted ImageNet" in row["method"]:
        return NEEDS_DATA
    cell = m[row["method"]][TABLE4_ATTACKS[col]]["metrics"]
    return [pct(cell["tnr_at_tpr95"]), pct(cell["auc"])]


def cdvae_table5(m, row, col):
    return None if col == "method" else NEEDS_DATA


TABLE6_ATTACKS = {"clean": "clean", "PGD-Linf": "pgd_linf", "PGD-L2": "pgd_l2",
                  "C&W-Linf": "cw_linf", "C&W-L2": "cw_l2", "StAdv": "stadv",
                  "AutoAttack-Linf": "aa_linf", "worst-case Linf": "worst_linf"}


def cdvae_table6(m, row, col):
    if col == "defense":
        return None
    if "restricted ImageNet" in row["defense"]:
        return NEEDS_DATA
    return [m[row["defense"]].get(TABLE6_ATTACKS[col])]


FIG4_GAMMA = {"classification D(R(x))": "val_accuracy",
              "reconstruction": "val_reconstruction_accuracy", "D̂ on G(x)": "val_g_accuracy",
              "defense D̂ on G(x′)": "val_defense_accuracy",
              "detection AUC (MD on R(x))": "val_detection_auc"}


def cdvae_fig4_gamma(m, row, col):
    if col == "γ":
        return None
    trial = next(t for t in m["trials"] if f"{t['gamma']:g}" == row["γ"])
    return [pct(trial[FIG4_GAMMA[col]])]


TABLE7_EVALUATIONS = (("white-box", "white_box"), ("adaptive", "adaptive"), ("SPSA", "spsa"),
                      ("AutoAttack (quick", "autoattack"), ("G samples z (official", "sampling"),
                      ("G samples z: AutoAttack", "autoattack_sampling"))
TABLE7_ATTACKS = {"clean": "clean", "unseen mean": "unseen", "PGD-ℓ∞": "pgd_linf",
                  "PGD-ℓ2": "pgd_l2", "C&W-ℓ∞": "cw_linf", "JPEG-ℓ∞": "jpeg_linf",
                  "StAdv": "stadv", "AutoAttack-ℓ∞": "aa_linf", "AutoAttack-ℓ2": "aa_l2"}


def cdvae_table7(m, row, col):
    if col in ("defense", "evaluation"):
        return None
    if col == "ReColor":
        return NOT_RUN
    key = next(k for prefix, k in TABLE7_EVALUATIONS if row["evaluation"].startswith(prefix))
    cell = m[row["defense"]][key]
    if key == "spsa" and col == "C&W-ℓ∞":
        return [cell["gradient"], cell["spsa"]]  # "grad / SPSA"
    if key == "sampling" and col == "PGD-ℓ∞":
        return [cell["pgd_linf"], cell["pgd_linf_eot"]]  # "without / with EOT-8"
    return [cell.get(TABLE7_ATTACKS[col])]


FM_DEFENSES = {"no defense": "none", "FM-Defense": "fm", "FM-Defense (ADV only)": "fm_adv",
               "MagNet": "magnet", "Defense-GAN": "dgan"}


def fm_table2(m, row, col):
    if col == "attack":
        return None
    return [pct(m[row["attack"]].get(FM_DEFENSES[col]))]


FIG4_COLUMNS = {"Adv": "adv", "Clean": "clean", "Overall": "overall",
                "evades (fools C, not flagged)": "evades"}


def fm_fig4(m, row, col, index):
    if col in ("attack", "detector"):
        return None
    point = m["points"][index]
    assert point["detector"] == row["detector"], (index, point["detector"], row["detector"])
    return [pct(point[FIG4_COLUMNS[col]])]


def cdvae_mixup_ablation(m, row, col):
    if col == "mixup α":
        return None
    run = [r for r in m["per_alpha"] if f"{r['alpha']:g}" == row["mixup α"]]
    if not run:
        return CLAIM
    run = run[0]
    if col.startswith("AUC "):
        return [run["detection_auc_mean"][col[len("AUC "):]]]
    part = "G" if "G" in col else "R"
    return {"D(R(x)) accuracy": [run["d_r_accuracy"]],
            "reconstruction accuracy": [run["reconstruction_accuracy"]],
            f"cosine {part}(x) vs {part}(x′)": [run[part]["cosine_mean"], run[part]["cosine_std"]],
            f"Fréchet {part}": [run[part]["frechet"]],
            "grey-box clean": [run["greybox"]["clean"]],
            "grey-box PGD-Linf": [run["greybox"]["pgd_linf"]]}[col]


#: certified_l2's model rows, by their letter, and the measurement key of each
CERTIFIED_MODELS = {"(a)": "plain", "(b)": "noise", "(c)": "g", "(d)": "g_stab"}


def certified_l2(m, row, col):
    if col in ("σ", "model"):
        return None
    if col == "paper":
        return PAPER_COLUMN
    cell = m["cells"][f"{CERTIFIED_MODELS[row['model'][:3]]}/sigma{row['σ']}"]
    if col == "abstained":
        return [cell["abstained"]]
    return [cell["certified_accuracy"][f"{float(col[len('r = '):]):g}"]]


EXPECTED: dict[str, Callable] = {f.__name__: f for f in (
    cdvae_table1, cdvae_table2, cdvae_fig3_pearson, cdvae_table3, cdvae_table4, cdvae_table5,
    cdvae_table6, cdvae_fig4_gamma, cdvae_table7, fm_table2, fm_fig4, cdvae_mixup_ablation,
    certified_l2)}


# ----------------------------------------------------------------------- the check
def check_report(text: str, results: dict) -> tuple[list[str], list[tuple[str, str, str, str]]]:
    """(mismatches, unmeasured cells) of report.md's tables against results.json."""
    tables = report_tables(text)
    mismatches, unmeasured = [], []
    for exp in results["experiments"]:
        if not exp["columns"] or not exp["rows"]:
            continue
        expected_of = EXPECTED[exp["name"]]
        table = tables[exp["title"]]
        assert table[0] == exp["columns"], (exp["name"], table[0])
        assert len(table) - 1 == len(exp["rows"]), exp["name"]
        for i, (cells, row) in enumerate(zip(table[1:], exp["rows"], strict=True)):
            label = row.get(exp["columns"][0])
            for col, cell in zip(exp["columns"], cells, strict=True):
                args = (exp["measurements"], row, col) + ((i,) if exp["name"] == "fm_fig4" else ())
                expected = expected_of(*args)
                where = f"{exp['name']}: [{label}] {col} = {cell!r}"
                if expected is None:  # a label column: it must be the row's label
                    if cell != fmt(row.get(col)):
                        mismatches.append(f"{where}: label, results.json has {row.get(col)!r}")
                    continue
                if isinstance(expected, str):
                    unmeasured.append((exp["name"], label, col, expected))
                    if ours(cell) and expected != PAPER_COLUMN:
                        mismatches.append(f"{where}: prints a number of ours, none measured")
                    continue
                printed = ours(cell)
                if all(v is None for v in expected):
                    if cell.split("(paper")[0].strip() != NO_VALUE:
                        mismatches.append(f"{where}: no measurement, expected '{NO_VALUE}'")
                    continue
                if len(printed) != len(expected):
                    mismatches.append(f"{where}: {len(printed)} numbers, {len(expected)} measured")
                    continue
                for (value, decimals), truth in zip(printed, expected, strict=True):
                    tolerance = max(0.5 * 10.0 ** -decimals, 1e-9 * abs(truth)) * (1 + 1e-9)
                    if abs(value - truth) > tolerance:
                        mismatches.append(f"{where}: printed {value}, measured {truth}")
    return mismatches, unmeasured


@pytest.fixture(scope="module")
def results():
    return json.loads((REPORT / "results.json").read_text())


@pytest.fixture(scope="module")
def report_text():
    return (REPORT / "report.md").read_text()


def test_every_table_with_rows_has_a_cell_mapping(results):
    tabled = {e["name"] for e in results["experiments"] if e["columns"] and e["rows"]}
    assert tabled == set(EXPECTED), "map the new table's cells to its measurements here"


def test_every_report_cell_is_its_measurement(report_text, results):
    mismatches, unmeasured = check_report(report_text, results)
    assert mismatches == []
    assert {reason for *_, reason in unmeasured} <= UNMEASURED
    checked = sum(len(e["rows"]) * len(e["columns"]) for e in results["experiments"])
    assert len(unmeasured) < checked / 2  # most cells are compared, not excused


# one cell per table that prints ours beside the paper's: swapping the two must fail
#: the tables whose first swappable cell (ours and the paper's both numbers, and different) is
#: swapped; the cell is read from the kept report, so a regenerated report needs no edit here
SWAPS = ["cdvae_table3", "cdvae_table4", "cdvae_table6", "cdvae_table7", "fm_table2", "fm_fig4"]
_NUMBERS = r"\d+(?:\.\d+)?(?: / \d+(?:\.\d+)?)?"
_SWAPPABLE = re.compile(rf"\| (?P<cell>(?P<ours>{_NUMBERS}) \(paper (?P<paper>{_NUMBERS})\)) \|")


def first_swappable_cell(report_text: str, title: str) -> str:
    """The first cell of the table titled ``title`` that reads "ours (paper theirs)" with two
    different numbers (or pairs) of the same count."""
    start = report_text.index(f"## {title}")
    end = report_text.find("\n## ", start + 1)
    section = report_text[start: end if end > 0 else len(report_text)]
    for m in _SWAPPABLE.finditer(section):
        if m["ours"] != m["paper"] and m["ours"].count("/") == m["paper"].count("/"):
            return m["cell"]
    raise AssertionError(f"no swappable cell in {title!r}")


def swapped(cell: str) -> str:
    ours_text, paper = cell.split(" (paper ")
    return f"{paper[:-1]} (paper {ours_text})"


@pytest.mark.parametrize("name", SWAPS)
def test_swapping_ours_and_the_papers_number_fails(report_text, results, name):
    title = next(e["title"] for e in results["experiments"] if e["name"] == name)
    cell = first_swappable_cell(report_text, title)
    start = report_text.index(f"## {title}")
    at = report_text.index(f"| {cell} |", start)  # the first such cell in that table
    text = report_text[:at] + f"| {swapped(cell)} |" + report_text[at + len(cell) + 4:]
    mismatches, _ = check_report(text, results)
    # one mismatch per number of the cell (Table 4's cells hold two), all in that cell
    assert len(mismatches) == len(ours(cell)), mismatches
    assert all(m.startswith(name) and repr(swapped(cell)) in m for m in mismatches), mismatches


def test_a_stale_measurement_fails(report_text, results):
    """The other direction: results.json changed (0.5775 -> 0.5825), the table did not."""
    changed = json.loads(json.dumps(results))
    fm = next(e for e in changed["experiments"] if e["name"] == "fm_table2")
    fm["measurements"]["FGSM ε=0.3 (paper protocol)"]["fm"] = 0.5825
    mismatches, _ = check_report(report_text, changed)
    assert len(mismatches) == 1 and "57.75" in mismatches[0], mismatches
