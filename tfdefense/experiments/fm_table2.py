"""FM-Defense Table II on mnist_5k (work in progress)."""

from __future__ import annotations

from tfdefense.experiments.registry import register
from tfdefense.experiments.result import Result


@register("fm_table2", order=80)
def table2(ctx) -> Result:
    raise NotImplementedError("fm_table2: in progress")
