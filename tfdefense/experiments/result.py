"""What every experiment returns: a ``Result`` (data, a Markdown table, figures).

Experiments put the paper's number beside ours in the same table (a
``paper`` column or a "(paper X)" cell via ``beside_paper``); a reproduction on
small data never replaces the paper's figures, it stands next to them.

Example:
    >>> from tfdefense.experiments.result import Result, beside_paper
    >>> r = Result("demo", "Demo table", preset="quick", dataset="mnist_5k",
    ...            columns=["attack", "accuracy"],
    ...            rows=[{"attack": "FGSM", "accuracy": beside_paper(91.23, 99.8)}])
    >>> print(r.to_markdown().splitlines()[-1])
    | FGSM | 91.23 (paper 99.80) |
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: floats rounded, None/NaN as '–'."""
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def beside_paper(ours: float | None, paper: float | str | None, digits: int = 2) -> str:
    """'ours (paper X)': our measurement with the paper's number beside it."""
    if paper is None or paper == "":
        return fmt(ours, digits)
    return f"{fmt(ours, digits)} (paper {fmt(paper, digits)})"


@dataclass
class Result:
    """One paper table or figure, reproduced.

    Attributes:
        name: registry name (``cdvae_table4``).
        title: heading in the report.
        preset: ``quick`` or ``paper``.
        dataset: the data it ran on.
        columns: table column order.
        rows: table rows (column -> value or formatted cell).
        notes: what differs from the paper and why; settings used.
        figures: figure name -> PNG path.
        measurements: raw numbers for results.json (not shown in the table).
        seconds: wall-clock time the experiment took.
    """

    name: str
    title: str
    preset: str
    dataset: str
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None

    def to_markdown(self) -> str:
        lines = [f"## {self.title}", "",
                 f"*Experiment `{self.name}`, preset `{self.preset}`, data `{self.dataset}`"
                 + (f", {self.seconds:.0f} s*" if self.seconds is not None else "*"), ""]
        if self.columns and self.rows:
            lines.append("| " + " | ".join(self.columns) + " |")
            lines.append("|" + "---|" * len(self.columns))
            for row in self.rows:
                lines.append("| " + " | ".join(fmt(row.get(c)) for c in self.columns) + " |")
            lines.append("")
        for note in self.notes:
            lines.append(f"- {note}")
        if self.notes:
            lines.append("")
        for label, path in self.figures.items():
            lines.append(f"![{label}]({path})")
        return "\n".join(lines).rstrip() + "\n"

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=_jsonable))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
