"""``run_bench.py compare A B --out DIR``: is row A better than row B? From records alone, without torch.

A and B are run labels in one output folder (``qr``, ``ud-64``, a plugin's label). Each must name one
configuration (:mod:`lwbench.reports.comparable`): when a label has runs of several configurations (other
budgets, datasets or settings), ``--dataset``, ``--budget`` and ``--where KEY=VALUE`` narrow both down,
``LABEL:KEY=VALUE`` one side (``qr:trainer.lr=0.001`` against ``qr:trainer.lr=0.003``), and the error
lists the candidates with the settings that tell them apart. The two are tested both ways
that :mod:`lwbench.reports.significance` tests a table: paired across their shared seeds and paired
across test users, each with the paired t-test and the Wilcoxon signed-rank test, the CI of the mean
paired difference, an effect size, n, and the pairs the Wilcoxon test ranks.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lwbench.budget import TABLE3
from lwbench.records import load_records
from lwbench.reports import comparable, significance
from lwbench.reports.summaries import budget_label, budget_used, comparison_table, mean_std_of
from lwbench.reports.tables import Table


class CompareError(ValueError):
    """The two rows cannot be found or compared; the message says what to change."""


@dataclass
class Selection:
    """Which configuration a label means: filters applied to the label's comparable groups."""

    label: str
    dataset: str | None = None
    budget: str | None = None
    where: dict[str, str] = field(default_factory=dict)   # setting (dotted or short name) -> value as shown

    @classmethod
    def parse(cls, text: str, dataset: str | None, budget: str | None, where: dict[str, str]) -> Selection:
        """``LABEL`` or ``LABEL:SETTING=VALUE[,SETTING=VALUE...]`` (settings of this side only, over ``where``)."""
        label, _, own = text.partition(":")
        return cls(label, dataset, budget, {**where, **(parse_where(own.split(",")) if own else {})})

    def matches(self, group: comparable.Group) -> bool:
        record = group.first
        if record["label"] != self.label:
            return False
        if self.dataset is not None and record["dataset"] != self.dataset:
            return False
        if self.budget is not None and not budget_matches(self.budget, record):
            return False
        return all(_setting(record, key) == value for key, value in self.where.items())


def budget_matches(budget: str, record: dict) -> bool:
    """``budget`` as the summary names it: ``500buckets`` counts Table-3 parameters, ``500buckets (storage)``
    stored bytes. A full-size reference, which no budget sizes, matches ``unbudgeted`` and every budget of the
    accounting it was run under (its copies under the two accountings are separate rows, docs/protocol.md
    §10.11), so that ``compare ud-128 qr --budget "2.5% (storage)"`` finds both."""
    if record["budget"]["applies"]:
        return budget == budget_label(record)
    named = re.fullmatch(r".*\((\w+)\)", budget.strip())
    return budget == "unbudgeted" or (named[1] if named else TABLE3) == record["budget"].get("accounting", TABLE3)


def _setting(record: dict, key: str) -> str | None:
    """A setting's value as tables show it, by its dotted name or its short name (``dim`` for a method option)."""
    flat = comparable.settings(record)
    if key not in flat:
        key = f"method.options.{key}"
    return comparable.setting_text(record, key) if key in flat else None


def parse_where(items: list[str]) -> dict[str, str]:
    where = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CompareError(f"--where {item!r}: expected SETTING=VALUE, e.g. trainer.lr=0.003 or dim=64")
        where[key.strip()] = value.strip()
    return where


def select(groups: list[comparable.Group], selection: Selection) -> comparable.Group:
    """The one group ``selection`` names, or a :class:`CompareError` that lists what there is."""
    found = [g for g in groups if selection.matches(g)]
    if len(found) == 1:
        return found[0]
    if not found:
        labels = sorted({g.first["label"] for g in groups})
        if selection.label not in labels:
            raise CompareError(f"no runs labelled {selection.label!r} in this folder; labels: {', '.join(labels)}")
        raise CompareError(f"no runs of {selection.label!r} match --dataset/--budget/--where; it has: "
                           + "; ".join(_describe(g, groups) for g in groups if g.first["label"] == selection.label))
    varying = comparable.varying_settings(found)
    options = "; ".join(f"{_describe(g, found)}" for g in found)
    raise CompareError(f"{selection.label!r} names {len(found)} configurations ({options}); choose one with "
                       f"--dataset, --budget or --where"
                       + (f" (they differ in {', '.join(varying)})" if varying else ""))


def _describe(group: comparable.Group, among: list[comparable.Group]) -> str:
    """Dataset, budget, seeds, and the settings that tell ``group`` apart from the others of its label."""
    record = group.first
    same_label = [g for g in among if g.first["label"] == record["label"]]
    varying = [k for k in comparable.varying_settings(same_label) if k not in ("dataset.name", "budget.text")]
    settings = comparable.settings_label(record, varying)
    budget = budget_label(record)
    if not record["budget"]["applies"] and record["budget"].get("accounting", TABLE3) != TABLE3:
        budget += f" ({record['budget']['accounting']})"   # which --budget values find this copy of a reference
    return (f"dataset {record['dataset']}, budget {budget}"
            + (f", {settings}" if settings else "") + f", seeds {','.join(map(str, group.seeds))}")


def compare(out: Path, a: Selection, b: Selection, metric: str = "ndcg@20") -> tuple[list[str], Table]:
    """(header lines describing both rows, the table of tests of A against B)."""
    out = Path(out)
    if not (out / "runs").is_dir():
        raise CompareError(f"{out}/runs does not exist: point --out at a folder that run_bench.py wrote records to")
    groups = comparable.group_runs(load_records(out))
    if not groups:
        raise CompareError(f"{out}/runs holds no usable record")
    ga, gb = select(groups, a), select(groups, b)
    if ga is gb:
        raise CompareError(f"A and B name the same configuration ({_describe(ga, groups)}); compare two different rows")
    if metric not in ga.first["metrics"]["test"]:
        raise CompareError(f"unknown metric {metric!r}; the records have {', '.join(ga.first['metrics']['test'])}")
    name_a, name_b = _names(ga, gb)
    arm_a = significance.Arm(name_a, None, ga.records)
    arm_b = significance.Arm(name_b, None, gb.records)
    found, notes = significance.paired_comparisons(arm_a, arm_b, metric, significance.PerUser(out))
    header = []
    for name, group in ((name_a, ga), (name_b, gb)):
        mean, std = mean_std_of(group.records, metric)
        used, _ = budget_used(group.records)
        header.append(f"{name}: {_describe(group, [ga, gb])}; budget used {used}; test {metric} "
                      f"{mean:.4f}" + ("" if std != std else f" ± {std:.4f}"))
    if ga.first["dataset"] != gb.first["dataset"]:
        notes.append("The rows are on different datasets: only the seed-level test is defined, and it compares "
                     "unlike things.")
    elif budget_label(ga.first) != budget_label(gb.first):
        notes.append("The rows have different budgets: this is not an equal-budget comparison.")
    if not found:
        raise CompareError("no test is possible: the rows share fewer than two seeds and no test users "
                           + (f"({'; '.join(notes)})" if notes else ""))
    comparisons = [(protocol, ga.first["dataset"], f"{name_a} vs {name_b}, {metric}", c) for protocol, c in found]
    table = comparison_table("compare", f"{name_a} against {name_b} ({metric})", comparisons, "two-sided",
                             (name_a, name_b), family=None, notes=[
                                 "Across seeds: one pair per seed both rows have. Across users: each test user's "
                                 "metric averaged over those seeds, paired by user (this ignores seed-to-seed "
                                 "variance). No correction for multiple tests.", *notes])
    return header, table


def _names(ga: comparable.Group, gb: comparable.Group) -> tuple[str, str]:
    """The two labels, with the settings that differ when the labels are equal (e.g. two learning rates)."""
    a, b = ga.first["label"], gb.first["label"]
    if a != b:
        return a, b
    varying = comparable.varying_settings([ga, gb])[:2]
    return tuple(f"{g.first['label']} {comparable.settings_label(g.first, varying)}" for g in (ga, gb))
