"""The budget curve: every budgeted method's N@20 and R@20 at 1%, 2.5%, the 500-bucket budget, 6% and 10% of the
full N x 128 table (five budgets, so that a method too large for 1%, as LEGCF, C2F and QR are on Last.fm, still
has four points; 2.5% rather than 2% because C2F's smallest configuration stores 2.04% of the full table's
bytes), with the unbudgeted full-size UD models (``ud`` at 128 and 64 dimensions) as reference
lines; ``budget-curve`` counts the budget in Table-3 parameters, ``budget-curve-storage`` in stored bytes
(1% is then 1% of the full float32 table's bytes, docs/protocol.md §5.2), so the two show how the curves
move between equal float counts and equal memory.

The 500-bucket points and the references are the very cells of ``table3`` (and ``table3-storage``), built by
that target's own cell function with only this target's coordinates added, so a folder that holds Table 3
reuses those runs (C2F with its ``comparison_options`` and the logged per-dataset and per-seed settings,
UD-128 and UD-64 in the table's accounting); the other budgets are the same cells at another budget, so each
method's curve is one configuration. A point's position on the budget axis is read from its record (the
budget's limit over the full table of that dataset, :func:`lwbench.budget.parse_budget` of ``100%``), since
500 buckets is a different share of every dataset.

Cells are built only when planning: the method registry imports torch, so it is imported inside
:func:`_cells`, never by building the report.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING

import pandas as pd

from lwbench.budget import STORAGE, TABLE3, parse_budget
from lwbench.reports import figures, summaries
from lwbench.reports.cell import Cell
from lwbench.reports.targets import Outputs, Target, TargetError, get_target, output_name, register_target

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "budget-curve"
NAMES = {TABLE3: NAME, STORAGE: f"{NAME}-storage"}
AXIS = {TABLE3: "budget (% of the full N × 128 table)",
        STORAGE: "budget (% of the full N × 128 float32 table's bytes)"}
BUDGETS = ("1%", "2.5%", "500buckets", "6%", "10%")
DATASETS = ("gowalla", "yelp2020", "amazon-book")
REFERENCE = "ud"   # table3's unbudgeted rows (UD-128 and UD-64), drawn as reference lines
TABLE3_TARGETS = {TABLE3: "table3", STORAGE: "table3-storage"}   # whose cells the curve's are
METRICS = ["ndcg@20", "recall@20"]
# The built-in methods' labels in the order of their colour and marker slots: each keeps its own in both curves.
METHOD_ORDER = ("ud-128", "ud-64", "qr", "pep", "cerp", "magprune", "dpq", "mgqe", "legcf", "c2f")
# Points of one budget are spread sideways by this many decades of the log axis per method (8 methods span
# 0.07, half the gap between the 500-bucket budget and 6% of the parameters), so that their error bars do not
# hide each other; less where budgets sit closer (:func:`dodge_decades`).
DODGE_DECADES = 0.01
BUDGET_COLUMN = "budget (%)"   # the table's name for a point's position on the budget axis
UNDER_BUDGET_LEGEND = (f"hollow: stores under {100 * summaries.MIN_BUDGET_FRACTION:.0f}%\nof its budget "
                       f"({summaries.UNDER_BUDGET_FLAG} in the table)")


def _cells(accounting, datasets, methods):
    """Table 3's cells (of ``table3`` or ``table3-storage``), each budgeted one at every budget of the curve and
    each reference once, with only the curve's coordinates added."""
    from lwbench.registry import get_method
    budgeted = [m for m in methods if get_method(m).budgeted]
    if not budgeted:
        raise TargetError(f"{NAMES[accounting]} needs at least one budgeted method; registered: {', '.join(methods)}")
    table3_cells = get_target(TABLE3_TARGETS[accounting]).cells
    cells: list[Cell] = []
    for d in datasets:
        own = table3_cells([d], methods)
        cells += [dataclasses.replace(c, budget=budget, coords={**c.coords, "budget": budget, "reference": False})
                  for c in own if c.method in budgeted for budget in BUDGETS]
        cells += [dataclasses.replace(c, coords={**c.coords, "reference": True}) for c in own if c.method == REFERENCE]
    return cells


def budget_percent(record: dict | None, text: str) -> float:
    """Where a point sits on the budget axis: its budget's limit as a percentage of the full N x 128 table
    (of its float32 bytes under the storage accounting: ``100%`` in the budget's own accounting), read from
    the record; a point without a record falls back on a percentage budget's own text (else NaN)."""
    if record is not None and "stats" in record["config"].get("dataset", {}) and record["budget"].get("params"):
        stats = record["config"]["dataset"]["stats"]
        full = parse_budget("100%", stats["n_users"], stats["n_items"],
                            accounting=record["budget"].get("accounting") or TABLE3)
        return round(100 * record["budget"]["params"] / full, 2)
    return float(text[:-1]) if text.endswith("%") else math.nan


def _build(accounting, pts, out, manifest, alternative) -> Outputs:
    # Methods are named as Table 3 names them (``UD-128``, ``PEP``), whose cells these are at other budgets.
    pts = pts.assign(method=pts["method"].map(summaries.method_display_name),
                     label=pts["label"].map(summaries.method_display_name))
    is_reference = pts["reference"] == True  # noqa: E712
    pts = pts.assign(budget_pct=[budget_percent(r, b) for r, b in zip(pts["record"], pts["budget"])])
    budgeted = pts[~is_reference].sort_values("budget_pct", kind="stable")
    summary = summaries.summarize(budgeted, ["dataset", "method", "budget_pct"], METRICS, out=out)
    references = summaries.summarize(pts[is_reference], ["dataset", "label"], METRICS, out=out).rename(
        columns={"label": "method"})   # none in a grid restricted to budgeted methods (``--methods qr``)
    name = output_name(manifest, NAMES[accounting])
    # Budgets named otherwise than by a percentage (500buckets) keep their name beside their share of the table.
    names = {pct: text for pct, text in zip(budgeted["budget_pct"], budgeted["budget"])
             if math.isfinite(pct) and not text.endswith("%")}
    # The table's rows: each budget in increasing order, the unbudgeted reference last.
    ordered = pd.concat([budgeted.assign(budget_pct=[f"{pct:g}" + (f" ({names[pct]})" if pct in names else "")
                                                     for pct in budgeted["budget_pct"]]),
                         pts[is_reference].assign(budget_pct="unbudgeted")]).rename(
        columns={"budget_pct": BUDGET_COLUMN})
    ordered = ordered.sort_values("dataset", kind="stable", key=lambda d: d.map({v: i for i, v in
                                                                                enumerate(dict.fromkeys(d))}))
    tables = summaries.versus_best_table(
        name, f"N@20 and R@20 against the {AXIS[accounting]}", ordered, ["dataset", BUDGET_COLUMN], METRICS, out,
        notes=[f"Not run (cannot fit the budget): {d}" for d in manifest.get("dropped", [])]
        + summaries.ci_note(pd.concat([summary, references]), METRICS))
    return Outputs(tables, {name: budget_curves(summary, references, xlabel=AXIS[accounting], budget_names=names)})


def dodge_decades(budgets: list[float], methods: int) -> float:
    """How far apart, in decades of the log axis, the points of one budget sit: :data:`DODGE_DECADES`, less
    where all ``methods`` would then spread over more than half the narrowest gap between two ``budgets``, so
    that every point stays nearer its own budget's tick than the next one's (the 500-bucket budget is 4.94% of
    Last.fm's float32 bytes, 0.08 decades below 6%)."""
    ordered = sorted(budgets)
    gaps = [math.log10(b / a) for a, b in zip(ordered, ordered[1:]) if a > 0]
    if methods < 2 or not gaps:
        return DODGE_DECADES
    return min(DODGE_DECADES, 0.5 * min(gaps) / (methods - 1))


def _legend_position(method: str) -> tuple[int, str]:
    """Built-in methods in :data:`METHOD_ORDER` (their legend order in every figure), other labels after them
    by name."""
    name = method.lower()
    return (METHOD_ORDER.index(name), "") if name in METHOD_ORDER else (len(METHOD_ORDER), name)


def budget_curves(summary: pd.DataFrame, references: pd.DataFrame, metrics: list[str] = METRICS,
                  xlabel: str = AXIS[TABLE3], budget_names: dict[float, str] | None = None) -> Figure:
    """Every budgeted method's metrics against the budget (% of the full N x 128 table): one row per
    metric, one column per dataset, each method in its own colour and marker with its CI as error bars
    (the methods of one budget spread a little sideways, :func:`dodge_decades`, ticks at the budgets themselves),
    the unbudgeted references as horizontal lines in their own colours. The budget axis is logarithmic,
    ticked at the budgets drawn (a budget in ``budget_names``, percentage -> name, is ticked with its name
    too: ``4.16%`` above ``(500buckets)``): they grow by factors (1%, 2.5%, 4.2%, 6%, 10%), which a linear
    axis would crowd into its left third. A point whose run stores under 95% of its budget (``under_budget``,
    flagged ``!`` in the table) is drawn hollow: it is not an equal-budget comparison, and the figure says so
    where a reader looks (e.g. DPQ's and MGQE's codes alone take most of 1% of Last.fm, and one more code bit
    overshoots it)."""
    from matplotlib.lines import Line2D  # here: matplotlib is imported only where a figure is drawn
    from matplotlib.ticker import NullLocator

    datasets = list(dict.fromkeys(summary["dataset"]))
    figure, axes = figures.new_figure(len(metrics), len(datasets), width=5.0, height=3.2)
    for r, metric in enumerate(metrics):
        for c, dataset in enumerate(datasets):
            ax = axes[r, c]
            block = summary[summary["dataset"] == dataset]
            methods = sorted(set(block["method"]), key=_legend_position)
            budgets = sorted(b for b in block["budget_pct"].astype(float).unique() if math.isfinite(b))
            dodge = dodge_decades(budgets, len(methods))
            for k, method in enumerate(methods):
                style = figures.method_style(method, METHOD_ORDER)
                group = block[block["method"] == method]
                shift = 10 ** (dodge * (k - (len(methods) - 1) / 2))
                group = group.assign(drawn_at=group["budget_pct"].astype(float) * shift)
                figures.mean_std_line(ax, group, "drawn_at", metric, label=method, **style)
                under = group[group["under_budget"]]
                if len(under):
                    ax.plot(under["drawn_at"], under[f"{metric}:mean"], linestyle="none",
                            marker=style["marker"], markersize=8, markerfacecolor="white",
                            markeredgecolor=style["color"], zorder=3, label="_under budget")
            for _, ref in references[references["dataset"] == dataset].iterrows():
                style = figures.method_style(ref["method"], METHOD_ORDER)
                ax.axhline(ref[f"{metric}:mean"], color=style["color"], linestyle="--", linewidth=1.2,
                           label=f"{ref['method']} (unbudgeted)")
            ax.set_xscale("log")
            ax.set_xticks(budgets, [f"{b:g}%" + (f"\n({budget_names[b]})" if b in (budget_names or {}) else "")
                                    for b in budgets])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel(f"{xlabel}, log scale")
            ax.set_ylabel(figures.metric_axis_label(metric))
            ax.set_title(dataset, fontsize="small")
    handles, names = axes[0, 0].get_legend_handles_labels()
    if summary["under_budget"].any():
        handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="black"))
        names.append(UNDER_BUDGET_LEGEND)
    figure.legend(handles, names, loc="outside right center", fontsize="small")
    return figure


register_target(Target(NAME, "every method's N@20 from 1% to 10% of the full table", DATASETS, (),
                       functools.partial(_cells, TABLE3), functools.partial(_build, TABLE3)))
register_target(Target(NAMES[STORAGE], "the budget curve with budgets in stored bytes", DATASETS, (),
                       functools.partial(_cells, STORAGE), functools.partial(_build, STORAGE)))
