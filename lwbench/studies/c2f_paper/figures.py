"""The C2F paper's figure metrics and its Figure 6 (coarse/fine ratios); Figures 4 and 5 are drawn
with the generic primitives of :mod:`lwbench.reports.figures`."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from lwbench.reports.figures import mean_std_line, metric_axis_label, new_figure, series_style, share_y
from lwbench.reports.summaries import metric_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_METRICS = ("ndcg@5", "ndcg@20", "recall@5", "recall@20")   # docs/protocol.md §10: the authors' 4 panels


def ratio_curves(fixed_coarse: pd.DataFrame, fixed_total: pd.DataFrame, before: pd.DataFrame) -> Figure:
    """Figure 6: row (a) the metrics against ρ = m^r / m^c at fixed m^c; row (b) before and after the
    fine stage against m^r at fixed m^c + m^r, one row pair per dataset. The (a) and (b) panels of one
    metric share their y limits, so the two studies read on one scale."""
    datasets = list(dict.fromkeys(pd.concat([fixed_coarse["dataset"], fixed_total["dataset"]])))
    figure, axes = new_figure(2 * len(datasets), len(FIGURE_METRICS))
    after_style, before_style = series_style(0), series_style(1)
    for d, dataset in enumerate(datasets):
        a = fixed_coarse[fixed_coarse["dataset"] == dataset]
        b = fixed_total[fixed_total["dataset"] == dataset]
        pre = before[before["dataset"] == dataset]
        for c, metric in enumerate(FIGURE_METRICS):
            top, bottom = axes[2 * d, c], axes[2 * d + 1, c]
            mean_std_line(top, a, "rho", metric, label="after fine stage", **after_style)
            top.set_xlabel(r"$\rho = m^r / m^c$ ($m^c$ = 100)")
            top.set_title(f"{dataset} (a): {metric_label(metric)}", fontsize="small")
            mean_std_line(bottom, pre, "fine", metric, linestyle="--", label="before fine stage (coarse stage)",
                          **before_style)
            mean_std_line(bottom, b, "fine", metric, label="after fine stage", **after_style)
            bottom.set_xlabel(r"$m^r$ ($m^c + m^r$ = 200)")
            bottom.set_title(f"{dataset} (b): {metric_label(metric)}", fontsize="small")
            for ax in (top, bottom):
                ax.set_ylabel(metric_axis_label(metric))
            share_y([top, bottom])
    handles, names = axes[min(1, len(axes) - 1), 0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside lower center", ncols=2, fontsize="small")
    return figure
