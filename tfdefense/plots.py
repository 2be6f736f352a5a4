"""Matplotlib figures a person would rather look at than read.

Example:
    >>> import numpy as np, tempfile, os
    >>> from tfdefense.plots import decomposition_grid
    >>> x = np.random.rand(4, 28, 28, 1).astype("float32")
    >>> path = os.path.join(tempfile.mkdtemp(), "grid.png")
    >>> decomposition_grid(x, x * 0.5, x * 0.5, path) == path
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

# No matplotlib.use("Agg") here: forcing a backend at import switched off a notebook's inline
# plots. Headless machines get Agg from matplotlib's own fallback; figures are saved and closed.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def _show(ax, image: np.ndarray, stretch: bool) -> None:
    image = np.asarray(image, np.float32)
    if stretch:  # R(x) is signed: map each image's range onto [0, 1], as make_grid(normalize=True)
        lo, hi = float(image.min()), float(image.max())
        image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    image = np.clip(image, 0.0, 1.0)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])


def decomposition_grid(
    x: np.ndarray,
    g: np.ndarray,
    r: np.ndarray,
    path: str,
    n: int = 8,
    labels: Sequence[str] = ("x", "G(x)", "R(x) = x - G(x)"),
    title: str | None = None,
) -> str:
    """Rows x, G(x), R(x) (R stretched per image) for the first ``n`` images; returns ``path``."""
    rows = [np.asarray(a)[:n] for a in (x, g, r)]
    n = len(rows[0])
    fig, axes = plt.subplots(3, n, figsize=(1.2 * n + 1.0, 4.0), squeeze=False)
    for i, (row, label) in enumerate(zip(rows, labels)):
        for j in range(n):
            _show(axes[i][j], row[j], stretch=(i == 2))
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def training_curves(history: Mapping[str, Sequence[float]], path: str) -> str:
    """One panel per metric (train and ``val_`` side by side); returns ``path``."""
    keys = sorted(k for k in history if not k.startswith("val_"))
    cols = min(3, max(1, len(keys)))
    rows = int(np.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", label="train")
        if f"val_{key}" in history:
            ax.plot(range(1, len(history[f"val_{key}"]) + 1), history[f"val_{key}"], marker="s",
                    label="validation")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)
    return path


#: line styles of the detection-accuracy curves (FM-Defense Fig 4's legend); others: matplotlib's
CURVE_STYLES = {"Adv": {"color": "tab:red", "ls": "-"}, "Clean": {"color": "black", "ls": "-"},
                "Overall": {"color": "tab:blue", "ls": ":"}}


def curve_grid(panels: Sequence[Sequence[Mapping[str, Any]]], path: str,
               title: str | None = None, ylim: tuple[float, float] | None = (-0.02, 1.02)) -> str:
    """A grid of line plots, ``panels[row][col]`` one axis each; returns ``path``.

    A panel is a mapping with ``x`` (values, or labels shown as evenly spaced ticks when they
    are strings) and ``series`` (label -> y values, styled by ``CURVE_STYLES`` when the label
    is one of its keys), and optionally ``title``, ``xlabel``, ``ylabel``; an empty mapping
    leaves its cell blank. Rows may be shorter than the longest one.
    """
    rows = [list(r) for r in panels]
    cols = max((len(r) for r in rows), default=0)
    if not rows or cols == 0:
        raise ValueError("panels: expected at least one panel")
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.0 * cols, 2.5 * len(rows)),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(cols):
            ax = axes[i][j]
            panel = row[j] if j < len(row) else {}
            if not panel:
                ax.axis("off")
                continue
            x = list(panel["x"])
            labels = x if x and isinstance(x[0], str) else None
            xs = list(range(len(x))) if labels else x
            for label, ys in panel["series"].items():
                ax.plot(xs, ys, marker=".", label=label, **CURVE_STYLES.get(label, {}))
            if labels:
                ax.set_xticks(xs, labels, rotation=45, fontsize=6)
            ax.set_title(panel.get("title", ""), fontsize=8)
            ax.set_xlabel(panel.get("xlabel", ""), fontsize=7)
            ax.set_ylabel(panel.get("ylabel", ""), fontsize=7)
            ax.tick_params(labelsize=6)
            if ylim is not None:
                ax.set_ylim(*ylim)
    first = next(ax for ax in axes.ravel() if ax.axison)
    first.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def line_plot(x: Sequence[float], curves: Mapping[str, Sequence[float | None]], path: str, *,
              xlabel: str, title: str, ylabel: str = "%", log_x: bool = False,
              dashed: Sequence[str] = ()) -> str:
    """One line per curve against ``x`` (``None`` values leave gaps), saved to ``path``.

    ``dashed``: curve labels drawn dashed (e.g. AUCs beside accuracies); ``log_x`` puts x on
    a log scale, else the ticks are the x values. Returns ``path``.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "lines.png")
        >>> line_plot([0, 2], {"accuracy": [97.4, 95.8], "AUC": [None, 92.1]}, path,
        ...           xlabel="α", title="against α", dashed=["AUC"]) == path
        True
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in curves.items():
        ax.plot(x, [np.nan if v is None else v for v in values], marker="o",
                linestyle="--" if label in dashed else "-", label=label)
    if log_x:
        ax.set_xscale("log")
    else:
        ax.set_xticks(list(x))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def save_figure(fig: Figure, path: str) -> None:
    """Write ``fig`` to ``path`` at 110 dpi, creating its folder, and close it.

    Example:
        >>> import os, tempfile
        >>> import matplotlib.pyplot as plt
        >>> path = os.path.join(tempfile.mkdtemp(), "new_folder", "empty.png")
        >>> save_figure(plt.figure(), path)
        >>> os.path.isfile(path)
        True
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
