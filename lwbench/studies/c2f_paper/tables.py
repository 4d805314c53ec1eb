"""The C2F paper's tables: Table 3 (every method at the 500-bucket budget, with the paper's value and
the difference beside each cell and the best lightweight result in bold) and Table 4 (C2F against its
own coarse stage per seed, with the paper's protocol, plus the sound protocols of
:mod:`lwbench.reports.stats` in ``table4-stats``).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lwbench.config import UPDATE
from lwbench.records import checkpoint_metric, per_user, stage_checkpoint
from lwbench.reports import comparable, significance, stats
from lwbench.reports.summaries import (
    budget_label,
    budget_used,
    comparison_table,
    lowest_budget_fraction,
    method_display_name,
    metric_cell,
    metric_label,
    metric_labels_note,
    status_notes,
    under_budget_note,
)
from lwbench.reports.tables import Table
from lwbench.studies.c2f_paper import reference
from lwbench.studies.c2f_paper.protocol import paper_protocol


def _row_name(method: str, options: dict, label: str) -> tuple[str, str | None]:
    """(display name, paper row or None). The display name is the run's label in the paper's style
    (``UD-128``, ``PEP``, ``C2F-PAPER``): one name per label, so variants never share a row name."""
    return method_display_name(label), reference.paper_row(method, options)


def table3(pts: pd.DataFrame, out: Path, *, missing_methods: list[str] = (), storage: bool = False,
           name: str | None = None) -> list[Table]:
    """Every method x dataset: N@10, R@10, N@20, R@20 and #Param as mean ± std over seeds, the share of
    the budget each run stores, and (where the dataset has published values) the paper's value and
    ours − paper beside each; the best budgeted (lightweight) row per dataset in bold, and every other
    budgeted row tested against it (:mod:`lwbench.reports.significance`). Rows (per dataset: the references,
    then the methods by name) are configurations:
    runs that differ in anything but the seed are never averaged (:mod:`lwbench.reports.comparable`).
    ``storage``: the runs were sized to stored bytes (the ``table3-storage`` target), so the table adds
    their stored bytes and is named after that target. ``name``: the output's name (default the target's;
    ``tuned-<study>`` for a study's runs), the statistics table's is ``<name>-stats``. Returns the table and
    its statistics table."""
    name = name or ("table3-storage" if storage else "table3")
    metrics = reference.TABLE3_METRICS
    entries = []   # (dataset, display name, arm, paper values or None)
    for dataset, block in pts.groupby("dataset", sort=False):
        for _, group in block.groupby("label", sort=False):
            first = group.iloc[0]
            display, paper_row = _row_name(first["method"], first["options"], first["label"])
            paper = reference.table3(paper_row, dataset) if paper_row else None
            done = [r for r in group.loc[group["status"] == "done", "record"]]
            runs = comparable.group_runs(done) or [comparable.Group("", [])]
            varying = comparable.varying_settings(runs)
            for run_group in runs:
                extra = comparable.settings_label(run_group.first, varying) if varying else ""   # a label with no run
                budgeted = any(r["budget"]["applies"] for r in run_group.records)
                budget = budget_label(run_group.first) if budgeted else None   # references stand beside every budget
                arm = significance.Arm(f"{display} {extra}".strip(), (dataset, budget), run_group.records,
                                       candidate=budgeted)
                entries.append((dataset, arm, paper))
    # Each dataset's rows in one order whatever the runs' order: the unbudgeted references, then the methods
    # by name, so that two such tables (e.g. at the defaults and tuned) read row by row.
    datasets = list(dict.fromkeys(dataset for dataset, _, _ in entries))
    entries.sort(key=lambda e: (datasets.index(e[0]), e[1].candidate or not e[1].records, e[1].name))
    verdicts = significance.versus_best([arm for _, arm, _ in entries], metrics, out,
                                        block_text=lambda b: f"{b[0]}, {b[1]}", compare_references=False)
    with_paper = any(paper for _, _, paper in entries)
    columns = ["dataset", "method", "seeds", "budget used", "#Param"] + (["paper #Param"] if with_paper else []) \
        + (["stored bytes"] if storage else [])
    for metric in metrics:
        columns += [metric_label(metric)] + (["paper", "Δ"] if with_paper else [])
    rows, bold, data, under_all = [], set(), [], []
    for dataset, arm, paper in entries:
        used, under = budget_used(arm.records)
        under_all += under
        params = [r["params"] for r in arm.records]
        row = [dataset, arm.name, str(len(arm.records)), used, f"{params[0] / 1e6:.2f}m" if params else "–"]
        if with_paper:
            row.append(f"{paper['params_millions']:.2f}m" if paper else "–")
        if storage:
            row.append(f"{arm.records[0]['bytes']:,}" if arm.records else "–")
        for metric in metrics:
            text, mean, std, is_best, not_worse = metric_cell(verdicts, arm, metric)
            if is_best:
                bold.add((len(rows), len(row)))
            row.append(text)
            ref = paper[metric] if paper else math.nan
            diff = mean - ref
            if with_paper:
                row += ["–" if math.isnan(ref) else f"{ref:.4f}", "–" if math.isnan(diff) else f"{diff:+.4f}"]
            data.append({"dataset": dataset, "method": arm.name, "lightweight": arm.candidate, "metric": metric,
                         "mean": mean, "std": std, "n_seeds": len(arm.records), "params": params[0] if params else None,
                         "budget_fraction_min": lowest_budget_fraction(arm.records),
                         "paper": ref, "diff": diff, "best_lightweight": is_best,
                         "not_significantly_worse": not_worse,
                         "not_tested": verdicts.is_untested(arm.block, metric, arm.name)})
        rows.append(row)
    notes = [f"Values are test metrics of the reported checkpoint ({metric_labels_note(metrics)}), mean ± std over "
             "seeds"
             + ("; Δ = ours − paper (paper values: docs/protocol.md §10.9)." if with_paper else "."),
             ("Bold: the best lightweight (budgeted) method per dataset and metric; UD rows are unbudgeted references. "
              + verdicts.footnote(f"{name}-stats")).strip(),
             "budget used: the share of the budget each run stores, in the table's accounting (range over seeds).",
             "#Param: parameters in millions (m), in the paper's Table-3 convention (docs/protocol.md §5.1)."]
    notes += under_budget_note(under_all) + verdicts.notes   # e.g. a per-user file that is missing
    if missing_methods:
        notes.append(f"Not implemented (no registered method): {', '.join(missing_methods)}.")
    if storage:
        notes.append("Equal storage: every budgeted method stores at most the bytes of the 500-bucket LEGCF "
                     "(float32 values, indices at the narrowest type that holds their range, packed codes; "
                     "docs/protocol.md §5.2); compare its ranking with table3's equal float counts.")
    notes += status_notes(pts)
    title = ("Table 3 at equal storage: methods at the 500-bucket LEGCF's stored bytes" if storage
             else "Table 3: methods at the 500-bucket budget")
    tables = [Table(name, title, columns, rows, pd.DataFrame(data), bold, notes)]
    extra = significance.stats_table(f"{name}-stats", f"{title}: every method against the best", verdicts,
                                     block_column="dataset, budget")   # what an Arm's block above is
    return tables + ([extra] if extra else [])


def table4(pts: pd.DataFrame, out: Path, *, coarse_stage: str, alternative: str = "two-sided",
           name: str = "table4", notes: list[str] = ()) -> tuple[Table, Table]:
    """C2F (its reported fine-stage checkpoint) against its coarse stage (``coarse_stage``: its UPDATE
    checkpoint, or FIXED where a short run never reached UPDATE, which the notes list) per seed.

    Returns (metrics table, statistics table), named ``name`` and ``<name>-stats``. The metrics table shows both checkpoints at @5/@10/@20/@50,
    the improvement in %, and the paper's-protocol p-values; the statistics table gives, per metric, the
    paired t-test and the Wilcoxon signed-rank test across seeds and across users (per seed), with
    Holm-adjusted p-values within each (dataset, protocol, test) family. ``notes``: the study's own notes
    (e.g. which C2F configuration the runs are), shown after the table's."""
    output = name   # ``name`` is reused below for the two checkpoints
    ks = reference.TABLE4_KS
    families = ("ndcg", "recall")
    columns = ["dataset", "run", "seed"]
    for family in families:
        columns += [metric_label(f"{family}@{k}") for k in ks] + [f"p({family[0].upper()}) paper protocol"]
    rows, data, comparisons, fallbacks = [], [], [], []
    for dataset, block in pts.groupby("dataset", sort=False):
        done = block[block["status"] == "done"].sort_values("seed")
        fine = {int(r["seed"]): r["record"] for _, r in done.iterrows()}
        for seed, record in fine.items():
            coarse = stage_checkpoint(record, coarse_stage)
            if coarse != f"{coarse_stage}/{UPDATE}":
                fallbacks.append(f"{record['run_id']} ({coarse})")
            got = {name: {f: [checkpoint_metric(record, ckpt, f"{f}@{k}") for k in ks] for f in families}
                   for name, ckpt in (("coarse", coarse), ("C2F", record["reported_checkpoint"]))}
            paper_p = {f: paper_protocol(got["C2F"][f], got["coarse"][f], labels=("C2F", "coarse")) for f in families}
            for name in ("coarse", "C2F"):
                row = [dataset, "coarse stage" if name == "coarse" else "C2F",
                       str(coarse_seed(record, seed)) if name == "coarse" else str(seed)]
                for f in families:
                    row += [f"{v:.4f}" for v in got[name][f]] + [stats.format_p(paper_p[f].pvalue) if name == "C2F" else ""]
                rows.append(row)
            improvement = [dataset, "improvement %", str(seed)]
            for f in families:
                improvement += [f"{100 * (a - b) / b:+.2f}%" for a, b in zip(got["C2F"][f], got["coarse"][f])] + [""]
            rows.append(improvement)
            for f in families:
                for k, a, b in zip(ks, got["C2F"][f], got["coarse"][f]):
                    data.append({"dataset": dataset, "seed": seed, "metric": f"{f}@{k}", "c2f": a, "coarse": b,
                                 "improvement_pct": 100 * (a - b) / b,
                                 "p_paper_protocol": paper_p[f].pvalue})
                comparisons.append(("paper protocol", dataset, f"{f}@5..50 (seed {seed})", paper_p[f]))
        comparisons += fine_against_coarse(dataset, fine, out, coarse_stage, alternative)
        if dataset in reference.TABLE4_PRINTED:
            printed = reference.TABLE4_PRINTED[dataset]
            for seed in ("coarse",) + reference.TABLE4_SEEDS:
                row = [dataset, "paper: coarse (2024)" if seed == "coarse" else "paper: C2F", "2024" if seed == "coarse" else str(seed)]
                for i, f in enumerate(families):
                    row += [f"{v:.4f}" for v in printed[seed][f]] + ["" if seed == "coarse" else _paper_p(dataset, seed, i, f)]
                rows.append(row)
    extra, notes = list(notes), [reference.TABLE4_HEADER_NOTE,
             "Paper protocol: scipy.stats.ttest_rel over the 4 cutoff values of one run against its coarse stage "
             "(two-sided); the cutoffs are not independent samples, so these p-values do not test whether C2F is "
             f"better. The statistics table ({output}-stats) gives tests across seeds and across users.",
             *coarse_sharing_notes(pts, coarse_stage, compared=True),
             "In the paper every fine seed started from the one seed-2024 coarse run."
             + (" Paper rows: docs/protocol.md §10.9 (p-values truncated to 5 decimals)."
                if set(pts["dataset"]) & set(reference.TABLE4_PRINTED) else ""),
             "seed: the coarse stage's row gives the seed it was trained with (c2f.coarse_seed where seeds share it)."]
    notes += extra
    if fallbacks:
        notes.append(f"Coarse stage that never reached its UPDATE phase (its FIXED checkpoint is used): "
                     f"{', '.join(fallbacks)}.")
    notes += status_notes(pts)
    metrics_table = Table(output, "Table 4: C2F against its coarse stage, corrected cutoffs", columns,
                          rows, pd.DataFrame(data), notes=notes)
    stats_table = comparison_table(
        f"{output}-stats", "Table 4: significance of C2F against its coarse stage", comparisons, alternative,
        ("C2F", "coarse"), notes=["Across users: per-user test metrics of the same fixed test set "
                                  "(lwbench.grid.runner.load_per_user); Wilcoxon drops zero differences (scipy's default)."])
    return metrics_table, stats_table


def _paper_p(dataset: str, seed: int, index: int, family: str) -> str:
    """The printed Table-4 p-value and the one recomputed from the logs with the paper's protocol."""
    logs = reference.C2F_LOGS[dataset]
    recomputed = paper_protocol(logs[seed][family], logs["coarse"][family]).pvalue
    return f"{reference.TABLE4_PVALUES[dataset][seed][index]:.5f} (logs: {stats.format_p(recomputed)})"


def fine_against_coarse(dataset: str, fine: dict[int, dict], out: Path, coarse_stage: str,
                        alternative: str) -> list[tuple]:
    """C2F runs (``fine``: seed -> record) against their own coarse stage's checkpoint, across seeds (two or
    more) and across users (per seed), for every metric at the Table-4 cutoffs: ``(protocol, dataset, what,
    Comparison)`` rows for :func:`lwbench.reports.summaries.comparison_table`."""
    found = []
    labels = ("C2F", "coarse")
    users = {seed: (per_user(out, record), per_user(out, record, stage_checkpoint(record, coarse_stage)))
             for seed, record in fine.items()}   # each per-user file read once
    for f in ("ndcg", "recall"):
        for k in reference.TABLE4_KS:
            metric = f"{f}@{k}"
            if len(fine) >= 2:
                a = {s: checkpoint_metric(r, r["reported_checkpoint"], metric) for s, r in fine.items()}
                b = {s: checkpoint_metric(r, stage_checkpoint(r, coarse_stage), metric) for s, r in fine.items()}
                found += [("across seeds", dataset, metric, c)
                          for c in stats.across_seeds(a, b, labels=labels, alternative=alternative)]
            for seed, (fine_users, coarse_users) in users.items():
                found += [("across users", dataset, f"{metric} (seed {seed})", c)
                          for c in stats.across_users(fine_users[metric], coarse_users[metric], labels=labels,
                                                      alternative=alternative)]
    return found


def coarse_seed(record: dict, seed: int) -> int | str:
    """The seed a C2F run's coarse stage was trained with: ``c2f.coarse_seed`` where set (one coarse stage
    shared by every seed, as in the paper), the run's own for ``-1`` (a coarse stage per seed), ``–`` where
    the record does not say."""
    shared = record["config"]["method"].get("options", {}).get("coarse_seed")
    if shared is None:
        return "–"
    return seed if shared < 0 else shared


def coarse_sharing_notes(pts: pd.DataFrame, coarse_stage: str, *, compared: bool) -> list[str]:
    """What the records say about the coarse stages the C2F seeds started from, per dataset: one shared
    stage (the default ``coarse_seed``, as in the paper) or one per seed (``coarse_seed=-1``); none
    without finished runs. ``compared``: the table compares each run with that coarse stage (Table 4)."""
    notes = []
    for dataset, block in pts.groupby("dataset", sort=False):
        done = [r for r in block["record"] if r]
        stages = {r["shared_stages"].get(coarse_stage) for r in done}
        where = f" ({dataset})" if pts["dataset"].nunique() > 1 else ""
        if len(done) > 1 and len(stages) == 1 and None not in stages:
            seed = coarse_seed(done[0], done[0]["seed"])
            notes.append(f"Every C2F seed{where} started from the same coarse stage (c2f.coarse_seed={seed})"
                         + (", the one it is compared with." if compared else "."))
        elif done and compared:
            notes.append(f"Each C2F run{where} is compared with the coarse stage it started from.")
    return notes
