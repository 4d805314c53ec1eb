"""Plotting primitives for the figures of the reproduction targets, drawn from summaries
(:func:`lwbench.reports.summaries.summarize`: ``<metric>:mean`` and ``<metric>:std`` columns).

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly, never through
pyplot, so no display is needed and the global matplotlib backend of the caller is left alone.
Each figure is written as PNG and PDF.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lwbench.reports.summaries import metric_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def math_label(symbol: str) -> str:
    """``d^r`` -> ``$d^{r}$``, ``w_cr`` -> ``$w_{cr}$`` (matplotlib mathtext); other text unchanged."""
    match = re.fullmatch(r"(\w+)([_^])(\w+)", symbol)
    return f"${match[1]}{match[2]}{{{match[3]}}}$" if match else symbol


def new_figure(n_rows: int, n_cols: int, width: float = 3.2, height: float = 2.6) -> tuple[Figure, np.ndarray]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg   # here: matplotlib costs a command ~0.5 s to import
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * n_cols, height * n_rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_2d(figure.subplots(n_rows, n_cols, squeeze=False))
    return figure, axes


def save(figure: Figure, folder: Path, name: str) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=150)
    return paths


def mean_std_line(ax, frame: pd.DataFrame, x: str, metric: str, **style) -> None:
    """``<metric>:mean`` against column ``x`` (sorted), with ``<metric>:std`` as error bars."""
    frame = frame.sort_values(x)
    ax.errorbar(frame[x].astype(float), frame[f"{metric}:mean"], yerr=np.nan_to_num(frame[f"{metric}:std"]),
                capsize=2, **{"marker": "o", **style})


def grouped_bars(summary: pd.DataFrame, metrics: list[str], cases: list[str], *, reference: pd.DataFrame,
                 reference_label: str, case_key: str = "case") -> Figure:
    """Per dataset, grouped bars (one group per metric, one bar per case) with a reference (e.g. a
    baseline or an earlier checkpoint, one row per dataset) as a dashed line over each group."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    figure, axes = new_figure(1, len(datasets), width=5.0, height=3.0)
    width = 0.8 / len(cases)
    for ax, dataset in zip(axes[0], datasets):
        block = summary[summary["dataset"] == dataset]
        for i, case in enumerate(cases):
            row = block[block[case_key] == case]
            means = [row[f"{m}:mean"].iloc[0] if len(row) else np.nan for m in metrics]
            stds = [row[f"{m}:std"].iloc[0] if len(row) else np.nan for m in metrics]
            positions = np.arange(len(metrics)) - 0.4 + width * (i + 0.5)
            ax.bar(positions, means, width, yerr=np.nan_to_num(stds), label=case, capsize=2)
        ref = reference[reference["dataset"] == dataset]
        for j, metric in enumerate(metrics):
            if len(ref):
                ax.hlines(ref[f"{metric}:mean"].iloc[0], j - 0.45, j + 0.45, colors="black", linestyles="--",
                          label=reference_label if j == 0 else None)
        ax.set_xticks(range(len(metrics)), [metric_label(m) for m in metrics])
        ax.set_title(dataset)
        ax.legend(fontsize="x-small", ncols=2)
    return figure


def sweep_lines(summary: pd.DataFrame, factors: list[str], metrics: list[str], *, factor_key: str = "factor",
                value_key: str = "value") -> Figure:
    """One-factor-at-a-time sweeps: one panel per dataset and factor, the metrics against the factor's
    value; panels are labelled (a-1), (a-2), ... row by row."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    figure, axes = new_figure(len(datasets), len(factors))
    for r, dataset in enumerate(datasets):
        for c, factor in enumerate(factors):
            ax = axes[r, c]
            block = summary[(summary["dataset"] == dataset) & (summary[factor_key] == factor)]
            for metric in metrics:
                mean_std_line(ax, block, value_key, metric, label=metric_label(metric))
            ax.set_xlabel(math_label(factor))
            ax.set_title(f"{dataset} ({chr(ord('a') + r)}-{c + 1})", fontsize="small")
            if c == 0:
                ax.legend(fontsize="x-small")
    return figure
