"""Every method against the best one, in every comparison table (docs/protocol.md §10.8).

A table is cut into *blocks* (e.g. one dataset at one budget). In each block and for each metric the
best row is the candidate with the highest mean over seeds (rows whose mean is not a number are left out);
every other candidate is tested against it, paired twice:

* **across seeds**: one pair per seed both rows have, each run's metric (a paired t-test and a Wilcoxon
  signed-rank test over those pairs, when there are at least two); it carries the seed-to-seed variance,
  so it decides the mark when both rows share at least :data:`MIN_SEEDS` seeds;
* **across users**: every test user's metric, averaged over the seeds both rows share (over all of
  each row's seeds where they share none), paired by user (the same two tests). Computed wherever both
  rows' per-user files hold the metric (else a note names the file and the test is skipped); it decides
  the mark when fewer than :data:`MIN_SEEDS` seeds are shared, and then says only that the difference is
  larger than the test users' noise, not that it would survive another seed.

The deciding test is the two-sided paired t-test (a signed-rank test over three seeds cannot reach
p < 0.25). Its p-values are Holm-corrected over all deciding tests of the table, and a row is *not
significantly worse than the best* (:data:`MARK`) unless its corrected p is below :data:`ALPHA` with a
negative mean difference. A row that no test could decide (fewer than :data:`MIN_SEEDS` seeds shared
with the best and no across-users test) is marked :data:`UNTESTED`, never left unmarked as if it were
significantly worse. Every test, with its CI of the mean paired difference, effect size, n and the
Wilcoxon test's non-zero pairs, goes to the table's companion ``<name>-stats`` table.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lwbench.records import RecordError, per_user
from lwbench.reports import stats
from lwbench.reports.tables import Table

ALPHA = 0.05
MIN_SEEDS = 3          # shared seeds for the across-seeds test to decide the mark
MARK = "†"             # not significantly worse than the best row of its block
UNTESTED = "?"         # not tested against the best row of its block: no test could decide
SEEDS, USERS = "across seeds", "across users"
DECIDING_TEST = "paired t-test"


@dataclass
class Arm:
    """One row of a table: comparable runs (one per seed) of one configuration."""

    name: str
    block: Hashable                  # rows of one block are compared (e.g. (dataset, budget))
    records: list
    candidate: bool = True           # may be the best and is tested (False: an unbudgeted reference row,
                                     # tested only in a block without budgeted rows)

    def mean(self, metric: str) -> float:
        vals = [r["metrics"]["test"][metric] for r in self.records]
        return float(sum(vals) / len(vals)) if vals else math.nan

    def by_seed(self, metric: str) -> dict[int, float]:
        return {int(r["seed"]): r["metrics"]["test"][metric] for r in self.records}


@dataclass
class Verdicts:
    """The outcome for one table: which cell is best, which rows are not significantly worse, and every
    test for the companion statistics table."""

    best: dict = field(default_factory=dict)         # (block, metric) -> name of the best arm
    not_worse: set = field(default_factory=set)      # (block, metric, name)
    untested: set = field(default_factory=set)       # (block, metric, name) that no test could decide
    comparisons: list = field(default_factory=list)  # (protocol, block text, what, Comparison), Holm applied
    deciding: set = field(default_factory=set)       # protocols that decided at least one mark
    n_deciding: int = 0                              # deciding tests (one per tested row and metric), Holm's family
    notes: list = field(default_factory=list)        # what could not be tested, and why
    reference: str | None = None                     # the row tested against, where it is not the best

    def is_best(self, block, metric: str, name: str) -> bool:
        return self.best.get((block, metric)) == name

    def mark(self, block, metric: str, name: str) -> str:
        """:data:`MARK` where the row was tested and is not significantly worse than the best,
        :data:`UNTESTED` where no test could decide, else nothing (significantly worse, or the best)."""
        key = (block, metric, name)
        return MARK if key in self.not_worse else UNTESTED if key in self.untested else ""

    def is_untested(self, block, metric: str, name: str) -> bool:
        return (block, metric, name) in self.untested

    def footnote(self, stats_name: str) -> str:
        """The marks' footnote; empty where no row was tested or left untested (e.g. one row per block)."""
        parts = []
        if self.deciding:
            deciding = " and ".join(
                {SEEDS: f"across seeds where both rows share at least {MIN_SEEDS} seeds",
                 USERS: "across the test users (per-user metrics averaged over the shared seeds; this ignores "
                        "seed-to-seed variance)"}[p] for p in (SEEDS, USERS) if p in self.deciding)
            against = f"the {self.reference} row" if self.reference else "the best (bold) row of its block"
            parts.append(f"{MARK}: not significantly worse than {against}: two-sided paired "
                         f"t-test at α = {ALPHA}, Holm-corrected over the table's deciding tests, {deciding}."
                         f" All tests, with CIs and Wilcoxon: {stats_name}.md ({self.n_deciding} deciding tests).")
        if self.untested:
            parts.append(f"{UNTESTED}: not tested: the row shares fewer than {MIN_SEEDS} seeds with the best row of "
                         "its block and the test users could not be compared (the notes below say why), so it is "
                         f"neither marked {MARK} nor shown to be significantly worse.")
        return " ".join(parts)


    def table_notes(self, stats_name: str) -> list[str]:
        """The footnote (where there is one) and what could not be tested, as a table's notes."""
        return [note for note in (self.footnote(stats_name), *self.notes) if note]


class PerUser:
    """Per-user test metrics of records, each file read once and each seed average computed once: the one
    reader of per-user files for the reports (the marks here, the one-seed intervals of
    :func:`lwbench.reports.summaries.summarize` and of the comparison tables beside their marks). A file that
    is missing or unreadable, or lacks the checkpoint or the metric, is a :class:`~lwbench.records.RecordError`
    naming it."""

    def __init__(self, out: Path):
        self.out, self.frames, self.means = Path(out), {}, {}

    def get(self, record: Mapping, checkpoint: str | None = None) -> pd.DataFrame:
        """Every per-user metric of ``checkpoint`` (default: the reported one)."""
        key = (record["run_id"], checkpoint)
        if key not in self.frames:
            self.frames[key] = per_user(self.out, record, checkpoint)
        return self.frames[key]

    def column(self, record: Mapping, metric: str, checkpoint: str | None = None) -> pd.Series:
        """One per-user metric of ``checkpoint`` (default: the reported one), indexed by user id."""
        frame = self.get(record, checkpoint)
        if metric not in frame.columns:
            raise RecordError(f"{self.out / 'runs' / record['per_user_file']}: no per-user {metric} "
                              f"(it holds {', '.join(frame.columns)})")
        return frame[metric]

    def averaged(self, arm: Arm, seeds: Sequence[int], metric: str) -> pd.Series:
        """Each test user's ``metric`` averaged over the arm's runs of ``seeds`` (users of the first run's
        order; runs whose users differ are aligned by user id)."""
        runs = tuple(r["run_id"] for r in arm.records if int(r["seed"]) in seeds)
        key = (runs, metric)
        if key not in self.means:
            columns = [self.column(r, metric) for r in arm.records if int(r["seed"]) in seeds]
            first = columns[0]
            if all(c.index.equals(first.index) for c in columns[1:]):
                mean = pd.Series(np.mean([c.to_numpy() for c in columns], axis=0), index=first.index)
            else:
                mean = pd.concat(columns, axis=1).mean(axis=1)
            self.means[key] = mean
        return self.means[key]


def versus_best(arms: list[Arm], metrics: Sequence[str], out: Path, *, block_text=str,
                compare_references: bool = True, reference: str | None = None,
                users: PerUser | None = None) -> Verdicts:
    """Test every candidate arm against the best of its block for each metric (see the module doc).
    ``compare_references``: a block holding only references (non-candidates) compares them with each
    other (a summary of full-size runs); False leaves references untested (Table 3's UD rows).
    ``reference``: the name of the arm every other arm of its block is tested against instead of the best
    (an ablation against its full model); the marks then say "not significantly worse than it".
    ``users``: the per-user reader to share with the caller's other uses of the same files (default: its own)."""
    verdicts, users = Verdicts(reference=reference), users or PerUser(out)
    deciding: list[tuple[int, Hashable, str, str]] = []   # (index into comparisons, block, metric, name)
    blocks: dict[Hashable, list[Arm]] = {}
    for arm in arms:
        if arm.records:
            blocks.setdefault(arm.block, []).append(arm)
    # Unbudgeted references stand beside budgeted rows untested; a block of references alone (e.g. a sweep of
    # the full model) compares them with each other.
    blocks = {block: [a for a in members if a.candidate] or (members if compare_references else [])
              for block, members in blocks.items()}
    blocks = {block: members for block, members in blocks.items() if members}
    for block, members in blocks.items():
        for metric in metrics:
            # A row whose mean is not a number (a run without the value) can be neither the best nor tested; max()
            # over NaN would depend on the order of the rows.
            valued = [a for a in members if not math.isnan(a.mean(metric))]
            if len(members) > 1:
                verdicts.notes += [f"{a.name}: {metric} is not a number in a run; not tested" for a in members
                                   if math.isnan(a.mean(metric))]
            if not valued:
                continue
            best = (next((a for a in valued if a.name == reference), None) if reference
                    else max(valued, key=lambda a: a.mean(metric)))
            if best is None:
                verdicts.notes.append(f"{block_text(block)}: no {reference} row with a {metric}; not tested")
                continue
            verdicts.best[(block, metric)] = best.name
            for arm in valued:
                if arm is best:
                    continue
                found, decider = _compare(arm, best, metric, users, verdicts.notes)
                what = f"{arm.name} vs {best.name}, {metric}"
                for protocol, comparison in found:
                    if protocol == decider and comparison.test == DECIDING_TEST:
                        deciding.append((len(verdicts.comparisons), block, metric, arm.name))
                    verdicts.comparisons.append((protocol, block_text(block), what, comparison))
                if decider:
                    verdicts.deciding.add(decider)
                else:
                    verdicts.untested.add((block, metric, arm.name))
    # Holm within the table: the deciding tests form one family, every other (protocol, test) its own.
    families: dict[tuple, list[int]] = {}
    deciding_index = {i for i, *_ in deciding}
    for i, (protocol, _, _, c) in enumerate(verdicts.comparisons):
        families.setdefault(("deciding",) if i in deciding_index else (protocol, c.test), []).append(i)
    for members in families.values():
        adjusted = stats.holm([verdicts.comparisons[i][3].pvalue for i in members])
        for i, p in zip(members, adjusted):
            entry = verdicts.comparisons[i]
            verdicts.comparisons[i] = (*entry[:3], dataclasses.replace(entry[3], p_holm=float(p)))
    verdicts.n_deciding = len(deciding)
    for i, block, metric, name in deciding:
        c = verdicts.comparisons[i][3]
        worse = c.p_holm is not None and not math.isnan(c.p_holm) and c.p_holm < ALPHA and c.mean_diff < 0
        if not worse:
            verdicts.not_worse.add((block, metric, name))
    return verdicts


def paired_comparisons(arm: Arm, other: Arm, metric: str, users: PerUser, *, alternative: str = "two-sided"
                       ) -> tuple[list[tuple[str, stats.Comparison]], list[str]]:
    """Both protocols' tests of ``arm`` against ``other`` (differences ``arm - other``): across the seeds
    both have (when they share two or more), and across the test users with each user's metric averaged
    over those seeds (over each row's own seeds where they share none). Returns (tests, notes on what
    could not be tested)."""
    labels = (arm.name, other.name)
    a, b = arm.by_seed(metric), other.by_seed(metric)
    shared = sorted(set(a) & set(b))
    found, notes = [], []
    if len(shared) >= 2:
        found += [(SEEDS, c) for c in stats.across_seeds({s: a[s] for s in shared}, {s: b[s] for s in shared},
                                                        labels=labels, alternative=alternative)]
    try:
        ua = users.averaged(arm, shared or sorted(a), metric)
        ub = users.averaged(other, shared or sorted(b), metric)
        unit = (f"test users, seed means over {', '.join(map(str, shared))}" if shared
                else "test users, each row's own seeds averaged")
        found += [(USERS, c) for c in stats.across_users(ua, ub, labels=labels, unit=unit, alternative=alternative)]
    except (RecordError, ValueError) as exc:
        notes.append(f"{arm.name} vs {other.name}: no across-users test ({exc})")
    return found, notes


def _compare(arm: Arm, best: Arm, metric: str, users: PerUser, notes: list) -> tuple[list, str | None]:
    """Both protocols' tests of ``arm`` against ``best``; returns (tests, the protocol that decides)."""
    found, missing = paired_comparisons(arm, best, metric, users)
    notes += [n for n in missing if n not in notes]
    if len(set(arm.by_seed(metric)) & set(best.by_seed(metric))) >= MIN_SEEDS:
        return found, SEEDS
    return found, USERS if any(p == USERS for p, _ in found) else None


def stats_table(name: str, title: str, verdicts: Verdicts, notes: Sequence[str] = (),
                block_column: str = "dataset") -> Table | None:
    """The companion table of every test behind a table's marks; ``block_column`` names what a block is (its
    first column, e.g. "dataset, budget (%)")."""
    from lwbench.reports.summaries import comparison_table
    if not verdicts.comparisons:
        return None
    against = (f"Each row is tested against the {verdicts.reference} row of its block." if verdicts.reference
               else "Each row is tested against the best row of its block (the highest mean).")
    return comparison_table(name, title, verdicts.comparisons, "two-sided",
                            ("row", verdicts.reference or "best"), family=None, block_column=block_column,
                            notes=[against,
                                   "Holm: the deciding tests (paired t, the protocol named in the main table's "
                                   "footnote) form one family over the whole table; every other protocol and "
                                   "test is corrected as its own family over the table.",
                                   *verdicts.notes, *notes])
