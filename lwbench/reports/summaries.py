"""Tables of the reproduction targets, built from grid points (:func:`lwbench.records.points`).

* :func:`summarize` and :func:`series_table`: mean ± std per point of a figure (the numbers behind
  every figure), optionally of the checkpoint that stands for one stage of a staged method.
* :func:`comparison_table`: paired tests (:mod:`lwbench.reports.stats`), one row each, with Holm
  within each family.
* :func:`summary_table`: every record in an output folder.

A study's own tables (e.g. published numbers beside ours) live with the study (:mod:`lwbench.studies`).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lwbench.records import checkpoint_metric, stage_checkpoint
from lwbench.reports import stats
from lwbench.reports.tables import Table


def metric_label(metric: str) -> str:
    """``ndcg@10`` -> ``N@10``."""
    name, k = metric.split("@")
    return f"{name[0].upper()}@{k}"


def values(pts: pd.DataFrame, metric: str, stage: str | None = None) -> pd.Series:
    """A test metric per point (NaN where the run is not done): of the reported checkpoint, or of the
    checkpoint standing for ``stage`` (e.g. the first stage of a two-stage method)."""
    def get(record):
        if record is None:
            return math.nan
        if stage is None:
            return record["metrics"]["test"][metric]
        return checkpoint_metric(record, stage_checkpoint(record, stage), metric)
    return pts["record"].map(get).astype(float)


def format_mean_std(mean: float, std: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def status_notes(pts: pd.DataFrame) -> list[str]:
    notes = []
    for status in ("failed", "missing"):
        ids = sorted(set(pts.loc[pts["status"] == status, "run_id"]))
        if ids:
            what = "failed (see runs/<id>.failed.json)" if status == "failed" else "not run yet or unfinished"
            notes.append(f"{len(ids)} run(s) {what}: {', '.join(ids)}")
    return notes


def comparison_table(name: str, title: str, comparisons: list[tuple], alternative: str,
                     labels: tuple[str, str], notes: list[str] = ()) -> Table:
    """``comparisons`` as ``(protocol, dataset, what, Comparison)``: Holm within each (dataset, protocol,
    test) family, then one row per comparison; ``labels`` name the two compared columns."""
    families: dict[tuple, list[int]] = {}
    for i, (protocol, dataset, _, c) in enumerate(comparisons):
        families.setdefault((dataset, protocol, c.test), []).append(i)
    comparisons = list(comparisons)
    for members in families.values():
        for i, c in zip(members, stats.with_holm([comparisons[i][3] for i in members])):
            comparisons[i] = (*comparisons[i][:3], c)
    columns = ["dataset", "protocol", "comparison", "test", "n", *labels, "Δ [95% CI]", "effect", "p",
               "p (Holm)", "H1"]
    rows, data = [], []
    for protocol, dataset, what, c in comparisons:
        ci = "" if math.isnan(c.ci_low) else f" [{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
        rows.append([dataset, protocol, what, c.test, str(c.n), f"{c.mean_a:.4f}", f"{c.mean_b:.4f}",
                     f"{c.mean_diff:+.4f}{ci}", f"{c.effect_name} = {c.effect:.2f}", stats.format_p(c.pvalue),
                     stats.format_p(c.p_holm), c.hypothesis])
        data.append({"dataset": dataset, "protocol": protocol, "comparison": what, **c.as_row()})
    notes = [f"Alternative hypothesis: {alternative} (stated per row in H1); differences are {labels[0]} − {labels[1]}.",
             "Holm correction within each family of one dataset, one protocol and one test.", *notes]
    return Table(name, title, columns, rows, pd.DataFrame(data), notes=notes)


def series_table(name: str, title: str, summary: pd.DataFrame, keys: list[str], metrics: list[str],
                 notes: list[str] = (), diagnostics: list[str] = ()) -> Table:
    """A :func:`summarize` frame as a table: mean ± std over seeds per point, for each metric, then the
    mean of each diagnostic (the numbers behind a figure)."""
    columns = keys + ["seeds"] + [metric_label(m) for m in metrics] + list(diagnostics)
    rows = [[_display(r[k]) for k in keys] + [str(int(r["seeds"]))] +
            [format_mean_std(r[f"{m}:mean"], r[f"{m}:std"]) for m in metrics] +
            [f"{r[f'{d}:mean']:.4g}" for d in diagnostics] for _, r in summary.iterrows()]
    return Table(name, title, columns, rows, summary, notes=list(notes))


def diagnostic_names(pts: pd.DataFrame) -> list[str]:
    """Numeric diagnostics the method logged at the reported checkpoint (``final_diagnostics``)."""
    names = {k for record in pts["record"] if record for k, v in record.get("final_diagnostics", {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(names)


def summarize(pts: pd.DataFrame, keys: list[str], metrics: list[str], stage: str | None = None,
              diagnostics: list[str] = ()) -> pd.DataFrame:
    """Per group of ``keys``: ``seeds`` (finished runs), ``<metric>:mean`` and ``<metric>:std``, and
    ``<diagnostic>:mean`` for each name in ``diagnostics``."""
    frame = pts[keys].copy()
    for metric in metrics:
        frame[metric] = values(pts, metric, stage).to_numpy()
    for name in diagnostics:
        frame[f"diagnostic:{name}"] = pts["record"].map(
            lambda r: float(r["final_diagnostics"].get(name, math.nan)) if r else math.nan).to_numpy()
    rows = []
    for key, group in frame.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        done = group.dropna(subset=list(metrics))
        row["seeds"] = len(done)
        for metric in metrics:
            mean, std = stats.mean_std(done[metric]) if len(done) else (math.nan, math.nan)
            row[f"{metric}:mean"], row[f"{metric}:std"] = mean, std
        for name in diagnostics:
            row[f"{name}:mean"] = float(done[f"diagnostic:{name}"].mean()) if len(done) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _display(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    return str(value)


def budget_label(record: dict) -> str:
    """The budget as tables show it: its text, with the accounting when it is not the default table3."""
    budget = record["budget"]
    if not budget["applies"]:
        return "unbudgeted"
    accounting = budget.get("accounting", "table3")
    return budget["text"] if accounting == "table3" else f"{budget['text']} ({accounting})"


def summary_table(records: list[dict]) -> Table | None:
    """Every record in an output folder: mean ± std per dataset, method and budget (the catch-all table)."""
    if not records:
        return None
    pts = pd.DataFrame([{"dataset": r["dataset"], "method": r["label"], "budget": budget_label(r),
                         "options": r["config"]["method"]["options"], "record": r} for r in records])
    pts["options"] = _distinguishing_options(pts)
    keys, metrics = ["dataset", "method", "budget", "options"], ["ndcg@10", "recall@10", "ndcg@20", "recall@20"]
    return series_table("summary", "All runs in this folder (mean ± std over seeds)", summarize(pts, keys, metrics),
                        keys, metrics, notes=[f"{', '.join(metric_label(m) for m in metrics)}: test "
                                              f"{', '.join(metrics)} of each run's reported checkpoint."])


def _distinguishing_options(pts: pd.DataFrame) -> pd.Series:
    """Per run, the options that differ between runs of the same dataset, method and budget (e.g. a
    sweep), as ``k=v`` text; empty where all its runs share their options."""
    text = pd.Series("", index=pts.index)
    for _, group in pts.groupby(["dataset", "method", "budget"], sort=False):
        keys = sorted({k for options in group["options"] for k in options})
        varying = [k for k in keys if len({repr(o.get(k)) for o in group["options"]}) > 1]
        for index, options in group["options"].items():
            text[index] = " ".join(f"{k}={options.get(k)}" for k in varying)
    return text


PROFILE_BYTES = ("values", "indices", "codes", "bias")


def profile_table(records: list[dict]) -> Table | None:
    """The inference profile of every record (docs/protocol.md §5.6): stored bytes by component and the
    median times to form 4,096 layer-0 rows and to score one user against all items, per dataset, method,
    budget and device (the median over seeds: a time is a property of the configuration and device)."""
    rows = [{"dataset": r["dataset"], "method": r["label"], "budget": budget_label(r), "device": r["device_name"],
             "params": r["params"], "stored": r["bytes"],
             **{name: r["inference_profile"]["bytes"][name] for name in PROFILE_BYTES},
             "rows_ms": 1e3 * r["inference_profile"]["rows_seconds"],
             "score_ms": 1e3 * r["inference_profile"]["score_seconds"]}
            for r in records if r.get("inference_profile")]
    if not rows:
        return None
    keys = ["dataset", "method", "budget", "device"]
    data = pd.DataFrame(rows).groupby(keys, sort=False).median(numeric_only=True).reset_index()
    columns = keys + ["Table-3 params", "stored bytes"] + [f"{name} bytes" for name in PROFILE_BYTES] + \
        ["4,096 rows (ms)", "score 1 user (ms)"]
    table_rows = [[str(r[k]) for k in keys] + [f"{int(r['params']):,}", f"{int(r['stored']):,}"] +
                  [f"{int(r[name]):,}" for name in PROFILE_BYTES] + [f"{r['rows_ms']:.3g}", f"{r['score_ms']:.3g}"]
                  for _, r in data.iterrows()]
    return Table("inference-profile", "Inference profile (median over seeds)", columns, table_rows, data,
                 notes=["stored bytes = values + indices + codes (values by dtype, indices at the narrowest type "
                        "that holds their range, codes packed); the item bias (float32) is in neither accounting "
                        "convention and is shown apart. Times are medians of 11 repetitions on the run's device."])
