"""Plotting primitives for the figures of the reproduction targets, drawn from summaries
(:func:`lwbench.reports.summaries.summarize`: ``<metric>:mean``, ``<metric>:std`` and, where known,
``<metric>:ci_low`` / ``<metric>:ci_high`` columns).

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly, never through
pyplot, so no display is needed and the global matplotlib backend of the caller is left alone.
Each figure is written as PNG (at least 1,200 px wide) and PDF.

Every figure is drawn for a reader without the code: axes name the split and the metric ("test
NDCG@20", :func:`metric_axis_label`), legends name what they show, each method keeps one colour and
marker in every figure (:func:`method_style`, from a colour-blind-safe palette), error bars show the
confidence interval of every point (across seeds, or across test users for a single seed), and panels of
one metric that are compared share their y limits (:func:`share_y`). A ``--quick`` figure is stamped
as a smoke run (:func:`stamp_smoke_run`).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lwbench.reports.summaries import display_value, metric_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# seaborn's "colorblind" palette (distinguishable under the common colour-vision deficiencies), written out so
# that no plotting library beyond matplotlib is needed; its pale yellow is replaced by black and its pale pink
# by Paul Tol's wine (from his colour-blind-safe "muted" scheme): both pale ones vanish on white as a hollow
# marker or a thin error bar.
PALETTE = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#882255", "#949494", "#000000",
           "#56b4e9")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
SMOKE_STAMP = "smoke run — numbers mean nothing"
MIN_WIDTH_PX = 1200
DPI = 150


def method_style(label: str, fixed: tuple[str, ...] = ()) -> dict:
    """Colour and marker of a method (by its label, case-insensitive), the same in every figure. ``fixed``: the
    labels a study draws (lower case) in the order that gives each its own slot, so that its methods never share
    a colour; any other label (a plugin) gets a stable slot from a hash of its name."""
    name = label.lower()
    if name in fixed:
        slot = fixed.index(name) % len(PALETTE)
    else:
        slot = int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(PALETTE)
    return {"color": PALETTE[slot], "marker": MARKERS[slot]}


def series_style(index: int) -> dict:
    """Colour and marker of the ``index``-th series of a figure whose series are not methods (e.g. ablations)."""
    return {"color": PALETTE[index % len(PALETTE)], "marker": MARKERS[index % len(MARKERS)]}


def metric_axis_label(metric: str, split: str = "test") -> str:
    """``ndcg@20`` -> ``test NDCG@20``: the split and the metric, as an axis says them."""
    name, k = metric.split("@")
    return f"{split} {dict(ndcg='NDCG', recall='Recall').get(name, name)}@{k}"


def share_y(axes: list[Axes]) -> None:
    """One y range for panels that are compared (the union of their data ranges), never below 0: no metric
    is, though an interval of two seeds, or the autoscale of a panel of zeros (a one-epoch smoke run), can be."""
    if not axes:
        return
    low = max(0.0, min(ax.get_ylim()[0] for ax in axes))
    high = max(ax.get_ylim()[1] for ax in axes)
    for ax in axes:
        ax.set_ylim(low, high)


def stamp_smoke_run(figure: Figure) -> None:
    """Mark a figure of a ``--quick`` run inside the image, where no caption can get lost."""
    figure.text(0.5, 0.5, SMOKE_STAMP, ha="center", va="center", rotation=20, fontsize=28, color="#d55e00",
                alpha=0.35, zorder=100)


def error_bars(frame: pd.DataFrame, metric: str) -> np.ndarray:
    """Asymmetric error bars (2 x n) from the CI columns where a point has one, else ± the std over seeds,
    else none."""
    mean = frame[f"{metric}:mean"].to_numpy(dtype=float)
    std = np.nan_to_num(frame[f"{metric}:std"].to_numpy(dtype=float)) if f"{metric}:std" in frame else 0 * mean
    if f"{metric}:ci_low" in frame:
        low, high = frame[f"{metric}:ci_low"].to_numpy(dtype=float), frame[f"{metric}:ci_high"].to_numpy(dtype=float)
        has = ~np.isnan(low)
        return np.vstack([np.where(has, mean - low, std), np.where(has, high - mean, std)])
    return np.vstack([std, std])


def math_label(text: str) -> str:
    """Every symbol with a sub- or superscript in ``text`` as matplotlib mathtext: ``d^r`` -> ``$d^{r}$``,
    ``random E^r selection`` -> ``random $E^{r}$ selection``, ``w_cr`` -> ``$w_{cr}$``; other words unchanged."""
    return re.sub(r"\b([A-Za-z]+)([_^])([A-Za-z0-9]+)\b", r"$\1\2{\3}$", text)


def new_figure(n_rows: int, n_cols: int, width: float = 3.2, height: float = 2.6) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure of ``n_rows x n_cols`` panels, at least :data:`MIN_WIDTH_PX` wide."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: matplotlib costs a command ~0.5 s to import
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(width * n_cols, MIN_WIDTH_PX / DPI), height * n_rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_2d(figure.subplots(n_rows, n_cols, squeeze=False))
    for ax in axes.flat:
        ax.grid(True, axis="y", linewidth=0.5, alpha=0.4)
    return figure, axes


def save(figure: Figure, folder: Path, name: str) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    for path in paths:
        # No creation date in the PDF: the same records give the same bytes, as the tables do.
        figure.savefig(path, dpi=DPI, metadata={"CreationDate": None} if path.suffix == ".pdf" else None)
    return paths


def mean_std_line(ax, frame: pd.DataFrame, x: str, metric: str, **style) -> None:
    """``<metric>:mean`` against column ``x`` (sorted), with the point's CI (or ± std) as error bars."""
    frame = frame.sort_values(x)
    ax.errorbar(frame[x].astype(float), frame[f"{metric}:mean"], yerr=error_bars(frame, metric),
                capsize=3, **{"marker": "o", **style})


def case_points(summary: pd.DataFrame, metrics: list[str], cases: dict[str, str], *, reference: pd.DataFrame,
                reference_label: str, case_key: str = "case") -> Figure:
    """One panel per dataset and metric (each metric on its own y scale), one marker per case with its CI as
    error bars, and a reference (e.g. a baseline or an earlier checkpoint, one row per dataset) as a dashed
    line. ``cases``: the key of each case in ``summary[case_key]`` -> the name its legend shows.

    Markers, not bars: the cases differ by a few hundredths of a metric near 0.1, which bars show only on an
    axis cut above zero, where a bar's length no longer says its value. A marker's position does, on any axis,
    so the axis spans the cases, their intervals and the reference."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    figure, axes = new_figure(len(datasets), len(metrics), width=2.6, height=2.8)
    for r, dataset in enumerate(datasets):
        block = summary[summary["dataset"] == dataset]
        ref = reference[reference["dataset"] == dataset]
        for c, metric in enumerate(metrics):
            ax = axes[r, c]
            for i, (case, name) in enumerate(cases.items()):
                row = block[block[case_key] == case]
                if not len(row):
                    continue
                style = series_style(i)
                ax.errorbar([i], row[f"{metric}:mean"].to_numpy(dtype=float), yerr=error_bars(row, metric),
                            capsize=4, markersize=7, linestyle="none", label=math_label(name), **style)
            if len(ref):
                ax.axhline(ref[f"{metric}:mean"].iloc[0], color="black", linestyle="--", linewidth=1,
                           label=reference_label)
            ax.set_xlim(-0.6, len(cases) - 0.4)
            ax.margins(y=0.08)
            ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0]))   # no metric is below 0 (a t-interval of 2 seeds can be)
            ax.set_xticks(range(len(cases)), [case for case in cases], fontsize="small")
            ax.set_ylabel(metric_axis_label(metric))
            ax.set_title(f"{dataset}: {metric_label(metric)}", fontsize="small")
    handles, names = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside lower center", ncols=min(len(names), 3), fontsize="small")
    return figure


def sweep_lines(summary: pd.DataFrame, factors: list[str], metrics: list[str], *, factor_key: str = "factor",
                value_key: str = "value", reference: pd.DataFrame | None = None,
                reference_label: str = "") -> Figure:
    """One-factor-at-a-time sweeps: one row per dataset and metric, one column per factor; the panels of one
    metric share their y limits (the factors are compared on them). A factor's values sit evenly spaced in
    the order of ``summary``'s rows, each tick labelled with its value: on a linear axis a grid like 0.5, 1,
    3, 5, 10 would crowd its first values, and a value not run yet keeps its tick. ``reference`` (one row
    per dataset, e.g. the configuration every factor departs from): a dashed line in every panel, named in
    the legend."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    figure, axes = new_figure(len(datasets) * len(metrics), len(factors), width=3.0, height=2.3)
    for d, dataset in enumerate(datasets):
        ref = reference[reference["dataset"] == dataset] if reference is not None else summary.iloc[:0]
        for m, metric in enumerate(metrics):
            row = d * len(metrics) + m
            for c, factor in enumerate(factors):
                ax = axes[row, c]
                block = summary[(summary["dataset"] == dataset) & (summary[factor_key] == factor)]
                block = block.assign(position=np.arange(len(block)))
                mean_std_line(ax, block, "position", metric, label="one factor changed", **series_style(0))
                ax.set_xticks(block["position"], [display_value(v) for v in block[value_key]])
                if len(ref):
                    ax.axhline(ref[f"{metric}:mean"].iloc[0], color="black", linestyle="--", linewidth=1,
                               label=reference_label)
                ax.set_xlabel(math_label(factor))
                if c == 0:
                    ax.set_ylabel(metric_axis_label(metric))
                ax.set_title(f"{dataset}: {math_label(factor)}", fontsize="small")
            share_y(list(axes[row]))
    if reference is not None and len(reference):
        handles, names = axes[0, 0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside lower center", ncols=len(names), fontsize="small")
    return figure
