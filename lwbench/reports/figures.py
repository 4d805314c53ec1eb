"""Figures of the reproduction targets, drawn from summaries (:func:`lwbench.reports.summaries.summarize`).

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly, never through
pyplot, so no display is needed and the global matplotlib backend of the caller is left alone.
Each figure is written as PNG and PDF.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lwbench.reports.summaries import metric_label

FIGURE_METRICS = ("ndcg@5", "ndcg@20", "recall@5", "recall@20")   # methods.md 11: the authors' 4 panels


def math_label(symbol: str) -> str:
    """``d^r`` -> ``$d^{r}$``, ``w_cr`` -> ``$w_{cr}$`` (matplotlib mathtext); other text unchanged."""
    match = re.fullmatch(r"(\w+)([_^])(\w+)", symbol)
    return f"${match[1]}{match[2]}{{{match[3]}}}$" if match else symbol


def new_figure(n_rows: int, n_cols: int, width: float = 3.2, height: float = 2.6) -> tuple[Figure, np.ndarray]:
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


def ablation_bars(summary: pd.DataFrame, reference: pd.DataFrame, cases: list[str], *, case_key: str = "case",
                  reference_label: str = "LEGCF (coarse)") -> Figure:
    """Figure 4: per dataset, grouped bars (one group per metric, one bar per case) with the coarse
    checkpoint as a reference line over each group."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    figure, axes = new_figure(1, len(datasets), width=5.0, height=3.0)
    width = 0.8 / len(cases)
    for ax, dataset in zip(axes[0], datasets):
        block = summary[summary["dataset"] == dataset]
        for i, case in enumerate(cases):
            row = block[block[case_key] == case]
            means = [row[f"{m}:mean"].iloc[0] if len(row) else np.nan for m in FIGURE_METRICS]
            stds = [row[f"{m}:std"].iloc[0] if len(row) else np.nan for m in FIGURE_METRICS]
            positions = np.arange(len(FIGURE_METRICS)) - 0.4 + width * (i + 0.5)
            ax.bar(positions, means, width, yerr=np.nan_to_num(stds), label=case, capsize=2)
        ref = reference[reference["dataset"] == dataset]
        for j, metric in enumerate(FIGURE_METRICS):
            if len(ref):
                ax.hlines(ref[f"{metric}:mean"].iloc[0], j - 0.45, j + 0.45, colors="black", linestyles="--",
                          label=reference_label if j == 0 else None)
        ax.set_xticks(range(len(FIGURE_METRICS)), [metric_label(m) for m in FIGURE_METRICS])
        ax.set_title(dataset)
        ax.legend(fontsize="x-small", ncols=2)
    return figure


def sweep_lines(summary: pd.DataFrame, factors: list[str], *, factor_key: str = "factor",
                value_key: str = "value") -> Figure:
    """Figure 5: one panel per dataset and factor, the 4 metrics against the factor's value."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    figure, axes = new_figure(len(datasets), len(factors))
    for r, dataset in enumerate(datasets):
        for c, factor in enumerate(factors):
            ax = axes[r, c]
            block = summary[(summary["dataset"] == dataset) & (summary[factor_key] == factor)]
            block = block.sort_values(value_key)
            for metric in FIGURE_METRICS:
                ax.errorbar(block[value_key].astype(float), block[f"{metric}:mean"],
                            yerr=np.nan_to_num(block[f"{metric}:std"]), marker="o", capsize=2,
                            label=metric_label(metric))
            ax.set_xlabel(math_label(factor))
            ax.set_title(f"{dataset} ({chr(ord('a') + r)}-{c + 1})", fontsize="small")
            if c == 0:
                ax.legend(fontsize="x-small")
    return figure


def ratio_curves(fixed_coarse: pd.DataFrame, fixed_total: pd.DataFrame, before: pd.DataFrame) -> Figure:
    """Figure 6: row (a) the metrics against ρ = m^r / m^c at fixed m^c; row (b) before and after the
    fine stage against m^r at fixed m^c + m^r, one row pair per dataset."""
    datasets = list(dict.fromkeys(pd.concat([fixed_coarse["dataset"], fixed_total["dataset"]])))
    figure, axes = new_figure(2 * len(datasets), len(FIGURE_METRICS))
    for d, dataset in enumerate(datasets):
        a = fixed_coarse[fixed_coarse["dataset"] == dataset].sort_values("rho")
        b = fixed_total[fixed_total["dataset"] == dataset].sort_values("fine")
        pre = before[before["dataset"] == dataset].sort_values("fine")
        for c, metric in enumerate(FIGURE_METRICS):
            top, bottom = axes[2 * d, c], axes[2 * d + 1, c]
            top.errorbar(a["rho"].astype(float), a[f"{metric}:mean"], yerr=np.nan_to_num(a[f"{metric}:std"]),
                         marker="o", capsize=2)
            top.set_xlabel(r"$\rho = m^r / m^c$ (fixed $m^c$)")
            top.set_title(f"{dataset} (a) {metric_label(metric)}", fontsize="small")
            bottom.errorbar(pre["fine"].astype(float), pre[f"{metric}:mean"], yerr=np.nan_to_num(pre[f"{metric}:std"]),
                            marker="s", linestyle="--", capsize=2, label="before fine stage")
            bottom.errorbar(b["fine"].astype(float), b[f"{metric}:mean"], yerr=np.nan_to_num(b[f"{metric}:std"]),
                            marker="o", capsize=2, label="after fine stage")
            bottom.set_xlabel(r"$m^r$ ($m^c + m^r$ fixed)")
            bottom.set_title(f"{dataset} (b) {metric_label(metric)}", fontsize="small")
            if c == 0:
                bottom.legend(fontsize="x-small")
    return figure


def budget_curves(summary: pd.DataFrame, references: pd.DataFrame, metric: str = "ndcg@20") -> Figure:
    """Every budgeted method's metric against the budget (% of the full N x 128 table), one panel per
    dataset, with unbudgeted references (UD) as horizontal lines."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    figure, axes = new_figure(1, len(datasets), width=4.5, height=3.4)
    for ax, dataset in zip(axes[0], datasets):
        block = summary[summary["dataset"] == dataset]
        for method, group in block.groupby("method", sort=False):
            group = group.sort_values("budget_pct")
            ax.errorbar(group["budget_pct"].astype(float), group[f"{metric}:mean"],
                        yerr=np.nan_to_num(group[f"{metric}:std"]), marker="o", capsize=2, label=method)
        for _, ref in references[references["dataset"] == dataset].iterrows():
            ax.axhline(ref[f"{metric}:mean"], color="gray", linestyle="--", linewidth=1)
            ax.annotate(f"{ref['method']} (unbudgeted)", (1, ref[f"{metric}:mean"]), xycoords=("axes fraction", "data"),
                        ha="right", va="bottom", fontsize="x-small", color="gray")
        ax.set_xlabel("budget (% of the full N × 128 table)")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(dataset)
        ax.legend(fontsize="x-small")
    return figure
