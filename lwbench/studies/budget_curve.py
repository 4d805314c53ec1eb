"""The budget curve: every budgeted method's N@20 and R@20 from 1% to 10% of the full N x 128 table,
with the unbudgeted full-size UD model (``ud`` at 128 dimensions) as the reference line; ``budget-curve``
counts the budget in Table-3 parameters, ``budget-curve-storage`` in stored bytes (1% is then 1% of the
full float32 table's bytes, docs/protocol.md §5.2), so the two show how the curves move between equal float
counts and equal memory.

Cells are built only when planning: the grid and the method registry import torch, so they are imported
inside :func:`_cells`, never by building the report.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pandas as pd

from lwbench.budget import STORAGE, TABLE3
from lwbench.reports import figures, summaries
from lwbench.reports.targets import Outputs, Target, TargetError, register_target

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "budget-curve"
NAMES = {TABLE3: NAME, STORAGE: f"{NAME}-storage"}
AXIS = {TABLE3: "budget (% of the full N × 128 table)",
        STORAGE: "budget (% of the full N × 128 float32 table's bytes)"}
BUDGET_PERCENTS = [1, 2, 3, 5, 7.5, 10]
DATASETS = ("gowalla", "yelp2020", "amazon-book")
REFERENCE = "ud"   # the unbudgeted full table, drawn as a line
METRICS = ["ndcg@20", "recall@20"]


def _cells(accounting, datasets, methods):
    from lwbench.grid.plan import Cell, comparison_cell
    from lwbench.registry import get_method
    budgeted = [m for m in methods if get_method(m).budgeted]
    if not budgeted:
        raise TargetError(f"{NAMES[accounting]} needs at least one budgeted method; registered: {', '.join(methods)}")
    cells = []
    for d in datasets:
        cells += [comparison_cell(d, m, f"{pct}%", {}, {"budget_pct": pct, "reference": False}, accounting=accounting)
                  for m in budgeted for pct in BUDGET_PERCENTS]
        if REFERENCE in methods:
            cells.append(Cell(d, REFERENCE, "none", {REFERENCE: {"dim": 128}}, {"reference": True}))
    return cells


def _build(accounting, pts, out, manifest, alternative) -> Outputs:
    is_reference = pts["reference"] == True  # noqa: E712
    summary = summaries.summarize(pts[~is_reference], ["dataset", "method", "budget_pct"], METRICS)
    references = summaries.summarize(pts[is_reference], ["dataset", "label"], METRICS).rename(columns={"label": "method"})
    name = NAMES[accounting]
    tables = summaries.versus_best_table(
        name, f"N@20 and R@20 against the {AXIS[accounting]}", pts, ["dataset", "budget_pct"], METRICS, out,
        notes=[f"Not run (cannot fit the budget): {d}" for d in manifest.get("dropped", [])])
    return Outputs(tables, {name: budget_curves(summary, references, xlabel=AXIS[accounting])})


def budget_curves(summary: pd.DataFrame, references: pd.DataFrame, metric: str = "ndcg@20",
                  xlabel: str = AXIS[TABLE3]) -> Figure:
    """Every budgeted method's metric against the budget (% of the full N x 128 table), one panel per
    dataset, with the unbudgeted references as horizontal lines."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    figure, axes = figures.new_figure(1, len(datasets), width=4.5, height=3.4)
    for ax, dataset in zip(axes[0], datasets):
        block = summary[summary["dataset"] == dataset]
        for method, group in block.groupby("method", sort=False):
            figures.mean_std_line(ax, group, "budget_pct", metric, label=method)
        for _, ref in references[references["dataset"] == dataset].iterrows():
            ax.axhline(ref[f"{metric}:mean"], color="gray", linestyle="--", linewidth=1)
            ax.annotate(f"{ref['method']} (unbudgeted)", (1, ref[f"{metric}:mean"]), xycoords=("axes fraction", "data"),
                        ha="right", va="bottom", fontsize="x-small", color="gray")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(summaries.metric_label(metric))
        ax.set_title(dataset)
        ax.legend(fontsize="x-small")
    return figure


register_target(Target(NAME, "every method's N@20 from 1% to 10% of the full table", DATASETS, (),
                       functools.partial(_cells, TABLE3), functools.partial(_build, TABLE3)))
register_target(Target(NAMES[STORAGE], "the budget curve with budgets in stored bytes", DATASETS, (),
                       functools.partial(_cells, STORAGE), functools.partial(_build, STORAGE)))
