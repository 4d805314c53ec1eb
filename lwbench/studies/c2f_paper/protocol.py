"""The paper's significance test for Table 4, and its p-values re-derived from the logged metrics
(``python -m lwbench.studies.c2f_paper``).

The paper's protocol (docs/protocol.md §11): ``scipy.stats.ttest_rel`` over the four cutoff values (@5, @10,
@20, @50) of one run against the baseline run. It is reproduced exactly, but it is not a test of
whether a method is better: the four values are not independent samples. Table 4's statistics table
adds the sound protocols of :mod:`lwbench.reports.stats` (across seeds, across users).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from lwbench.reports.stats import Comparison, format_p, paired_t
from lwbench.studies.c2f_paper import reference

PAPER_UNIT = "the 4 cutoffs @5/@10/@20/@50 of one run (the paper's protocol)"


def paper_protocol(run: Sequence[float], baseline: Sequence[float], *,
                   labels: tuple[str, str] = ("C2F", "LEGCF")) -> Comparison:
    """The paper's Table-4 test: ``ttest_rel`` over the cutoff values of one run against the baseline
    run (two-sided, scipy's default)."""
    return paired_t(run, baseline, unit=PAPER_UNIT, labels=labels)


def truncate(value: float, decimals: int) -> float:
    """Truncate (not round) toward zero, as the paper printed its p-values."""
    scale = 10**decimals
    return math.trunc(value * scale) / scale


def paper_protocol_check() -> pd.DataFrame:
    """The Table-4 p-values recomputed from the logged full-precision metrics (docs/protocol.md §10.10) with the
    paper's protocol, beside the printed (truncated) values of docs/protocol.md §11."""
    rows = []
    for dataset, runs in reference.C2F_LOGS.items():
        for seed in reference.TABLE4_SEEDS:
            row = {"dataset": dataset, "seed": seed}
            for metric, printed in zip(("ndcg", "recall"), reference.TABLE4_PVALUES[dataset][seed]):
                p = paper_protocol(runs[seed][metric], runs["coarse"][metric]).pvalue
                row[f"p({metric})"] = p
                row[f"paper p({metric})"] = printed
                row[f"{metric} matches"] = truncate(p, 5) == printed
            rows.append(row)
    return pd.DataFrame(rows)


def main() -> int:
    frame = paper_protocol_check()
    print("Table 4 p-values, recomputed with the paper's protocol: scipy.stats.ttest_rel over the 4 cutoffs "
          "@5/@10/@20/@50 of the fine run against the coarse run (two-sided; the logged values at full precision, docs/protocol.md §10.10).")
    print("The paper prints them truncated to 5 decimals.\n")
    shown = frame.copy()
    for metric in ("ndcg", "recall"):
        shown[f"p({metric})"] = shown[f"p({metric})"].map(format_p)
    print(shown.to_string(index=False))
    return 0 if frame[["ndcg matches", "recall matches"]].all().all() else 1
