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

from lwbench.logs import format_duration
from lwbench.records import checkpoint_metric, compute_seconds, stage_checkpoint
from lwbench.reports import stats
from lwbench.reports.tables import Table


def method_display_name(label: str) -> str:
    """A run's label as a paper-style table or legend names the method (``ud-128`` -> ``UD-128``): one name per
    label, so variants never share a row name, and the same name in every study that shows the method."""
    return label.upper()


def metric_label(metric: str) -> str:
    """``ndcg@10`` -> ``N@10`` (:func:`metric_labels_note` says so under a table)."""
    name, k = metric.split("@")
    return f"{name[0].upper()}@{k}"


def metric_labels_note(metrics: list[str]) -> str:
    """What a table's short metric labels stand for: ``N@k: ndcg@k, R@k: recall@k``."""
    families = dict.fromkeys(metric.split("@")[0] for metric in metrics)
    return ", ".join(f"{metric_label(f'{family}@k')}: {family}@k" for family in families)


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
    """Footnotes on the runs a table could not use (failed, missing) and on those it used that warned while
    training (a rising loss, a resume with other code: their records' ``warnings``), whose numbers stand
    but deserve a look."""
    notes = []
    for status in ("failed", "missing"):
        ids = sorted(set(pts.loc[pts["status"] == status, "run_id"]))
        if ids:
            what = "failed (see runs/<id>.failed.json)" if status == "failed" else "not run yet or unfinished"
            notes.append(f"{len(ids)} run(s) {what}: {', '.join(ids)}")
    done = list(pts.loc[pts["status"] == "done", "record"])
    warned = {r["run_id"]: r["warnings"] for r in done if r.get("warnings")}
    if warned:
        notes.append(f"{len(warned)} run(s) warned while training (their records' warnings): "
                     + "; ".join(f"{run_id}: {' '.join(w)}" for run_id, w in sorted(warned.items())))
    return notes + cost_note(done)


def cost_note(records: list[dict]) -> list[str]:
    """What the table's runs cost to train, from their records (:func:`lwbench.records.compute_seconds`), and
    on which devices, so that a table carries its own compute bill."""
    if not records:
        return []
    seconds, copied = compute_seconds(records)
    trained = len({r["run_id"] for r in records}) - copied
    devices = sorted({r.get("device_name") or r.get("device", "an unnamed device") for r in records
                      if not r.get("adopted_from")})
    text = (f"Cost: {trained} run(s) trained for {format_duration(seconds)} of training and evaluation (their "
            f"records' seconds; a stage shared between runs counted once) on {'; '.join(devices)}") if trained else ""
    if copied:
        text += ("; " if text else "Cost: ") + (f"{copied} record(s) copied from runs trained before (each record's "
                                                "adopted_from names its source), counted where they were trained")
    return [text + "."]


def comparison_table(name: str, title: str, comparisons: list[tuple], alternative: str,
                     labels: tuple[str, str], notes: list[str] = (), family: str | None = "dataset",
                     block_column: str = "dataset") -> Table:
    """``comparisons`` as ``(protocol, block, what, Comparison)``, one row each; ``block_column`` names the
    first column, what ``block`` is (a dataset, or e.g. "dataset, budget" where a table's blocks are a dataset
    at one budget). ``family="dataset"``: Holm within each (block, protocol, test) family; ``None``: the
    comparisons carry their Holm p-values already (:mod:`lwbench.reports.significance` corrects over a whole
    table). ``labels`` name the two compared columns."""
    comparisons = list(comparisons)
    if family == "dataset":
        families: dict[tuple, list[int]] = {}
        for i, (protocol, block, _, c) in enumerate(comparisons):
            families.setdefault((block, protocol, c.test), []).append(i)
        for members in families.values():
            for i, c in zip(members, stats.with_holm([comparisons[i][3] for i in members])):
                comparisons[i] = (*comparisons[i][:3], c)
    columns = [block_column, "protocol", "comparison", "test", "n", "n≠0", *labels, "Δ [95% CI]", "effect", "p",
               "p (Holm)", "H1"]
    rows, data = [], []
    for protocol, block, what, c in comparisons:
        ci = "" if math.isnan(c.ci_low) else f" [{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
        effect = "n/a" if math.isnan(c.effect) else f"{c.effect:.2f}"
        rows.append([block, protocol, what, c.test, str(c.n), "" if c.n_nonzero is None else str(c.n_nonzero),
                     f"{c.mean_a:.4f}", f"{c.mean_b:.4f}", f"{c.mean_diff:+.4f}{ci}", f"{c.effect_name} = {effect}",
                     stats.format_p(c.pvalue), stats.format_p(c.p_holm), c.hypothesis])
        data.append({block_column: block, "protocol": protocol, "comparison": what, **c.as_row()})
    holm_note = ("Holm correction within each family of one dataset, one protocol and one test." if family == "dataset"
                 else "")
    notes = [f"Alternative hypothesis: {alternative} (stated per row in H1); differences are {labels[0]} − {labels[1]}.",
             *([holm_note] if holm_note else []),
             "n≠0: the pairs with a non-zero difference, the ones the Wilcoxon signed-rank test ranks.", *notes]
    return Table(name, title, columns, rows, pd.DataFrame(data), notes=notes)


def series_table(name: str, title: str, summary: pd.DataFrame, keys: list[str], metrics: list[str],
                 notes: list[str] = (), diagnostics: list[str] = (), marks=None) -> Table:
    """A :func:`summarize` frame as a table: mean ± std over seeds per point, for each metric, then the
    mean of each diagnostic (the numbers behind a figure). ``marks(row, metric)``: a significance mark to
    append to a cell (e.g. :meth:`lwbench.reports.significance.Verdicts.mark` against a reference row).
    A diagnostic with one value (as shown) on every row that has it is said once in a note instead of a
    column of repeats (the CSV keeps every column)."""
    shown = {d: [format_diagnostic(v) for v in summary[f"{d}:mean"].dropna()] for d in diagnostics}   # as it reads
    constant = {d: seen[0] for d, seen in shown.items() if len(seen) > 1 and len(set(seen)) == 1}
    diagnostics = [d for d in diagnostics if d not in constant]
    notes = [f"Cells: test metrics ({metric_labels_note(metrics)}) of each run's reported checkpoint, or of the "
             "stage a row names, mean ± std over seeds."] + list(notes)
    if diagnostics:
        notes.append("Diagnostic columns: the method's own diagnostics at the reported checkpoint, mean over seeds.")
    if constant:
        notes.append("Diagnostics with one value (as shown) on every row that has them: "
                     + ", ".join(f"{d} = {v}" for d, v in constant.items()) + ".")
    columns = keys + ["seeds"] + [metric_label(m) for m in metrics] + list(diagnostics)
    rows = [[display_value(r[k]) for k in keys] + [str(int(r["seeds"]))] +
            [format_mean_std(r[f"{m}:mean"], r[f"{m}:std"]) + (marks(r, m) if marks else "") for m in metrics] +
            ["–" if math.isnan(r[f"{d}:mean"]) else format_diagnostic(r[f"{d}:mean"]) for d in diagnostics]
            for _, r in summary.iterrows()]
    return Table(name, title, columns, rows, summary, notes=notes + mixed_notes(summary, keys))


def format_diagnostic(value: float) -> str:
    """A diagnostic as a table shows it: four significant digits, a large count in full with thousands
    separators (80,257, not 8.026e+04)."""
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def mixed_notes(summary: pd.DataFrame, keys: list[str]) -> list[str]:
    """A note for every point of a :func:`summarize` frame whose seeds ran different settings (a target's
    per-seed settings, e.g. logged runs): such a point averages unlike runs, which comparison tables never do
    (docs/protocol.md §10.11), so the table says so."""
    return [f"{', '.join(display_value(r[k]) for k in keys)} averages runs whose settings differ: {r['mixed']}."
            for _, r in summary.iterrows() if r.get("mixed")]


def diagnostic_names(pts: pd.DataFrame) -> list[str]:
    """Numeric diagnostics the method logged at the reported checkpoint (``final_diagnostics``)."""
    names = {k for record in pts["record"] if record for k, v in record.get("final_diagnostics", {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(names)


def summarize(pts: pd.DataFrame, keys: list[str], metrics: list[str], stage: str | None = None,
              diagnostics: list[str] = (), out=None) -> pd.DataFrame:
    """Per group of ``keys``: ``seeds`` (finished runs), ``<metric>:mean`` and ``<metric>:std``, the 95%
    interval ``<metric>:ci_low`` / ``<metric>:ci_high`` (the t-interval over seeds for two or more seeds;
    for one seed, with ``out`` given, the bootstrap interval over its test users, from its per-user file;
    ``<metric>:ci`` says which), ``<diagnostic>:mean`` for each name in ``diagnostics``, ``under_budget``: whether
    a finished run stores under :data:`MIN_BUDGET_FRACTION` of its budget (a figure marks such a point), and
    ``mixed``: empty when the finished runs are one configuration, else which seeds ran which settings
    (:func:`mixed_notes`)."""
    frame = pts[keys].copy()
    frame["_record"] = pts["record"].to_numpy()
    for metric in metrics:
        frame[metric] = values(pts, metric, stage).to_numpy()
    for name in diagnostics:
        frame[f"diagnostic:{name}"] = pts["record"].map(
            lambda r, name=name: float(r["final_diagnostics"].get(name, math.nan)) if r else math.nan).to_numpy()
    from lwbench.reports.significance import PerUser
    reader = PerUser(out) if out is not None else None
    rows = []
    for key, group in frame.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        done = group.dropna(subset=list(metrics))
        row["seeds"] = len(done)
        for metric in metrics:
            mean, std = stats.mean_std(done[metric]) if len(done) else (math.nan, math.nan)
            row[f"{metric}:mean"], row[f"{metric}:std"] = mean, std
            row[f"{metric}:ci_low"], row[f"{metric}:ci_high"], row[f"{metric}:ci"] = point_interval(
                reader, list(done["_record"]), list(done[metric]), metric, stage)
        for name in diagnostics:
            row[f"{name}:mean"] = float(done[f"diagnostic:{name}"].mean()) if len(done) else math.nan
        row["under_budget"] = bool(budget_used(list(done["_record"]))[1])
        row["mixed"] = _mixed_settings(list(done["_record"]))
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=keys)   # no points: still the key columns


def interval(seed_values, per_user: np.ndarray | None) -> tuple[float, float, str]:
    """The 95% interval of a point's mean and its kind: the t-interval over seeds (``seeds``) where it has two or
    more, else the bootstrap interval over the test users (``users``) of its one run where ``per_user`` holds that
    run's per-user metric, else none (NaN, NaN, "")."""
    if len(seed_values) >= 2:
        return (*stats.mean_ci(seed_values), "seeds")
    if per_user is not None:
        return (*stats.bootstrap_ci(per_user), "users")
    return math.nan, math.nan, ""


def point_interval(reader, records: list[dict], seed_values: list[float], metric: str,
                   stage: str | None) -> tuple[float, float, str]:
    """:func:`interval` of a point whose runs ``records`` gave ``seed_values`` (those with a value): over the
    seeds, or over the test users of its one run, read by ``reader`` (None: no per-user interval)."""
    one_run = len(records) == 1 and reader is not None
    return interval(seed_values, _per_user_of(reader, records[0], metric, stage) if one_run else None)


def _mixed_settings(records: list[dict]) -> str:
    """``seed 2025: fine_layers=4; seeds 2024, 2026: fine_layers=0`` where ``records`` are more than one
    comparable configuration, else empty."""
    from lwbench.reports import comparable
    groups = comparable.group_runs(records)
    if len(groups) < 2:
        return ""
    varying = comparable.varying_settings(groups)
    return "; ".join(f"seed{'s' if len(g.seeds) > 1 else ''} {', '.join(map(str, g.seeds))}: "
                     f"{comparable.settings_label(g.first, varying)}" for g in groups)


def _per_user_of(reader, record: dict, metric: str, stage: str | None) -> np.ndarray | None:
    """A run's per-user test ``metric`` at the checkpoint standing for ``stage``, read by the reports' one
    per-user reader (:class:`lwbench.reports.significance.PerUser`); None where the file is missing, unreadable
    or lacks the checkpoint or the metric: the point then has no interval."""
    from lwbench.records import RecordError
    try:
        return reader.column(record, metric, None if stage is None else stage_checkpoint(record, stage)).to_numpy()
    except RecordError:
        return None


def ci_note(summary: pd.DataFrame, metrics: list[str]) -> list[str]:
    """What the error bars of a figure drawn from ``summary`` are."""
    kinds = {summary[f"{m}:ci"].iloc[i] for m in metrics if f"{m}:ci" in summary for i in range(len(summary))}
    parts = []
    if "seeds" in kinds:
        parts.append("the 95% t-interval of the mean over seeds where a point has two or more")
    if "users" in kinds:
        parts.append("the 95% bootstrap interval over the test users (1,000 resamples) where it has one seed")
    return [f"Error bars: {'; '.join(parts)}."] if parts else []


def display_value(value) -> str:
    """A coordinate as tables show it: ``40.0`` as ``40``, NaN (not applicable) as ``–``."""
    if isinstance(value, float) and math.isnan(value):
        return "–"   # a coordinate that does not apply to the row (e.g. ρ in panel (b) of Figure 6)
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


MIN_BUDGET_FRACTION = 0.95   # a budgeted run below this share of its budget is flagged (docs/protocol.md §5.2)
UNDER_BUDGET_FLAG = "!"


def in_table_order(records: list[dict]) -> list[dict]:
    """The records in the order a folder's tables list them: by dataset and method label, then each
    method's budgets from the smallest (unbudgeted first; Table-3 parameter budgets before those of another
    accounting), so a method's rows read as its budget grows whatever order the runs were made or named in."""
    def key(record: dict) -> tuple:
        budget = record["budget"]
        if not budget["applies"]:
            return record["dataset"], record["label"], False, "", 0
        accounting = budget.get("accounting", "table3")
        return record["dataset"], record["label"], accounting != "table3", accounting, budget.get("params") or 0
    return sorted(records, key=key)


def budget_used(records: list[dict]) -> tuple[str, list[dict]]:
    """The share of the budget the runs store (in the budget's own accounting): one value, or the range
    over seeds, marked :data:`UNDER_BUDGET_FLAG` when a run stores under :data:`MIN_BUDGET_FRACTION`; and
    the runs that do ("–" for unbudgeted runs and records that do not say)."""
    fractions = [r["budget"].get("fraction") for r in records if r["budget"].get("applies")]
    fractions = [f for f in fractions if f is not None]
    if not fractions:
        return "–", []
    low, high = min(fractions), max(fractions)
    text = f"{100 * low:.1f}%" if round(1000 * low) == round(1000 * high) else f"{100 * low:.1f}–{100 * high:.1f}%"
    under = [r for r in records if r["budget"].get("applies") and r["budget"].get("fraction") is not None
             and r["budget"]["fraction"] < MIN_BUDGET_FRACTION]
    return (text + f" {UNDER_BUDGET_FLAG}" if under else text), under


def under_budget_note(under: list[dict]) -> list[str]:
    """The footnote naming every run under :data:`MIN_BUDGET_FRACTION` of its budget."""
    if not under:
        return []
    runs = ", ".join(f"{r['run_id']} ({100 * r['budget']['fraction']:.1f}%)" for r in under)
    return [f"{UNDER_BUDGET_FLAG}: a run stores under {100 * MIN_BUDGET_FRACTION:.0f}% of its budget, so its row is "
            f"not an equal-budget comparison: {runs}."]


def mean_std_of(records: list[dict], metric: str) -> tuple[float, float]:
    return stats.mean_std([r["metrics"]["test"][metric] for r in records]) if records else (math.nan, math.nan)


def metric_cell(verdicts, arm, metric: str) -> tuple[str, float, float, bool, bool]:
    """A comparison table's cell of ``arm`` for ``metric``: (``mean ± std`` with its significance mark, mean,
    std, whether it is its block's best, whether it is marked not significantly worse). A row no test could
    decide carries its own mark (:data:`lwbench.reports.significance.UNTESTED`) and is not "not worse"."""
    from lwbench.reports.significance import MARK
    mean, std = mean_std_of(arm.records, metric)
    mark = verdicts.mark(arm.block, metric, arm.name)
    return (format_mean_std(mean, std) + mark, mean, std, verdicts.is_best(arm.block, metric, arm.name),
            mark == MARK)


def lowest_budget_fraction(records: list[dict]) -> float | None:
    """The smallest share of its budget any of the runs stores, over the records that say (a stored 0.0
    counts); NaN where none says (e.g. unbudgeted runs), None without records."""
    if not records:
        return None
    known = [f for f in (r["budget"].get("fraction") for r in records) if f is not None and not math.isnan(f)]
    return min(known) if known else math.nan


def summary_table(records: list[dict], out) -> list[Table]:
    """Every record in an output folder, one row per configuration (:func:`in_table_order`), each tested
    against the best of its dataset and budget (:func:`versus_best_table`). Returns the summary and its
    statistics table (none without records)."""
    if not records:
        return []
    pts = pd.DataFrame([{"dataset": r["dataset"], "budget": budget_label(r), "label": r["label"], "status": "done",
                         "run_id": r["run_id"],
                         "record": r} for r in in_table_order(records)])
    return versus_best_table("summary", "All runs in this folder (mean ± std over seeds)", pts,
                             ["dataset", "budget"], ["ndcg@10", "recall@10", "ndcg@20", "recall@20"], out)


def versus_best_table(name: str, title: str, pts: pd.DataFrame, block_keys: list[str], metrics: list[str], out,
                      notes: list[str] = ()) -> list[Table]:
    """A comparison table from grid points: one row per block (``block_keys``, e.g. dataset and budget)
    and configuration, mean ± std over its seeds (and, in the CSV, the 95% interval of :func:`interval`: the
    error bars of a figure whose points are one configuration each), the share of its budget each run stores,
    and every
    budgeted row tested against the best of its block (:mod:`lwbench.reports.significance`). Runs that
    differ in anything but the seed are separate rows, never averaged (:mod:`lwbench.reports.comparable`);
    the settings that tell rows of one method apart are shown as columns. Returns the table and its
    statistics table ``<name>-stats``."""
    from lwbench.reports import comparable, significance
    done = pts[pts["status"] == "done"]
    keyed = {(key if isinstance(key, tuple) else (key,)): list(group["record"])
             for key, group in done.groupby(block_keys + ["label"], sort=False, dropna=False)}
    configurations, varying = comparable.configuration_rows(keyed)
    rows_of = [(key[:-1], key[-1], g) for key, g, _ in configurations]   # (block, label, comparable runs)
    arms = [significance.Arm(f"{key[-1]} {extra}".strip(), key[:-1], g.records,
                             candidate=any(r["budget"]["applies"] for r in g.records))
            for key, g, extra in configurations]
    reader = significance.PerUser(out)   # the marks' tests and the intervals read each per-user file once
    verdicts = significance.versus_best(arms, metrics, out, block_text=lambda b: ", ".join(display_value(v) for v in b),
                                        users=reader)
    columns = [*block_keys, "method", *[comparable.short_setting_name(k) for k in varying], "seeds", "budget used",
               *[metric_label(m) for m in metrics]]
    rows, bold, data, under_all = [], set(), [], []
    for arm, (block, label, g) in zip(arms, rows_of):
        used, under = budget_used(g.records)
        under_all += under
        settings = {comparable.short_setting_name(k): comparable.setting_text(g.first, k) for k in varying}
        row = [*[display_value(v) for v in block], label, *settings.values(), str(len(g.records)), used]
        entry = {**dict(zip(block_keys, block)), "method": label, **settings, "seeds": len(g.records),
                 "budget_fraction_min": lowest_budget_fraction(g.records)}
        for metric in metrics:
            text, mean, std, is_best, not_worse = metric_cell(verdicts, arm, metric)
            if is_best:
                bold.add((len(rows), len(row)))
            row.append(text)
            valued = [r for r in g.records if not math.isnan(r["metrics"]["test"][metric])]   # runs with a value
            low, high, kind = point_interval(reader, valued, [r["metrics"]["test"][metric] for r in valued],
                                             metric, None)
            entry.update({f"{metric}:mean": mean, f"{metric}:std": std, f"{metric}:ci_low": low,
                          f"{metric}:ci_high": high, f"{metric}:ci": kind, f"{metric}:best": is_best,
                          f"{metric}:not_worse": not_worse,
                          f"{metric}:not_tested": verdicts.is_untested(arm.block, metric, arm.name)})
        rows.append(row)
        data.append(entry)
    blocks = " and ".join(block_keys)
    notes = [f"{', '.join(metric_label(m) for m in metrics)}: test {', '.join(metrics)} of each run's reported "
             "checkpoint, mean ± std over the seeds of one configuration (runs that differ in anything but the seed "
             "are separate rows" + ("; the columns after method show the settings that tell them apart)." if varying
                                    else ")."),
             "budget used: the share of its budget each run stores, in the budget's own accounting (range over seeds).",
             (f"Bold: the best row of its {blocks} (among the budgeted rows where there are any; unbudgeted "
              "references are not tested against them). " + verdicts.footnote(f"{name}-stats")).strip(),
             f"{name}.csv adds each row's 95% interval (<metric>:ci_low, :ci_high; :ci says over what: seeds where a "
             "row has two or more, else its one run's test users, bootstrapped).",
             *under_budget_note(under_all), *verdicts.notes, *notes, *status_notes(pts)]
    tables = [Table(name, title, columns, rows, pd.DataFrame(data), bold, notes)]
    extra = significance.stats_table(f"{name}-stats", f"{title}: every row against the best of its {blocks}",
                                     verdicts, block_column=", ".join(block_keys))
    return tables + ([extra] if extra else [])


PROFILE_BYTES = ("values", "indices", "codes", "bias")


def profile_table(records: list[dict]) -> Table | None:
    """The inference profile of every record (docs/protocol.md §5.6): stored bytes by component and the
    median times to form 4,096 layer-0 rows and to score one user against all items, per dataset, method,
    budget, device and comparable configuration (the median over its seeds: a time is a property of the
    configuration and device). Two configurations of one method (e.g. PEP's two target rules) are two rows,
    told apart by the settings in which they differ, as in every comparison table."""
    from lwbench.reports import comparable
    by_row: dict[tuple, list[dict]] = {}
    for r in in_table_order(records):
        if r.get("inference_profile"):
            by_row.setdefault((r["dataset"], r["label"], budget_label(r), r["device_name"]), []).append(r)
    if not by_row:
        return None
    keys = ["dataset", "method", "budget", "device"]
    rows = []
    # A configuration is named alike on every device it ran on.
    named = comparable.configuration_rows(by_row, named_among=lambda key: key[:3])[0]
    for (dataset, label, budget, device), group, extra in named:
        measured = pd.DataFrame([{"params": r["params"], "stored": r["bytes"],
                                  **{name: r["inference_profile"]["bytes"][name] for name in PROFILE_BYTES},
                                  "rows_ms": 1e3 * r["inference_profile"]["rows_seconds"],
                                  "score_ms": 1e3 * r["inference_profile"]["score_seconds"]} for r in group.records])
        rows.append({"dataset": dataset, "method": f"{label} {extra}".strip(), "budget": budget, "device": device,
                     **measured.median().to_dict()})
    data = pd.DataFrame(rows)
    columns = keys + ["Table-3 params", "stored bytes"] + [f"{name} bytes" for name in PROFILE_BYTES] + \
        ["4,096 rows (ms)", "score 1 user (ms)"]
    table_rows = [[str(r[k]) for k in keys] + [f"{int(r['params']):,}", f"{int(r['stored']):,}"] +
                  [f"{int(r[name]):,}" for name in PROFILE_BYTES] + [f"{r['rows_ms']:.3g}", f"{r['score_ms']:.3g}"]
                  for _, r in data.iterrows()]
    return Table("inference-profile", "Inference profile (median over seeds)", columns, table_rows, data,
                 notes=["stored bytes = values + indices + codes (values by dtype, indices at the narrowest type "
                        "that holds their range, codes packed); the item bias (float32) is in neither accounting "
                        "convention and is shown apart. Times are medians of 11 repetitions on the run's device."])
