"""Plan a grid: datasets x methods x budgets x seeds x option sweeps, resolved to runs before anything trains.

Every cell is resolved with :func:`lwbench.grid.runner.plan_runs`, so a bad option fails at once; in a grid
a method that cannot fit a budget only drops its cell (the budget curve asks for budgets some methods
cannot meet), while the plain command, a grid of one cell per method, fails instead. Cells that resolve
to the same configuration share one run. Executing the plan is :mod:`lwbench.grid.run`.
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from lwbench.budget import TABLE3, BudgetError
from lwbench.config import ConfigError, parse_value
from lwbench.data.cards import LoadedDataset, load_dataset
from lwbench.grid.runner import RunSpec, check_owners, plan_runs
from lwbench.reports.cell import Cell


@dataclass(frozen=True)
class DatasetRef:
    """How to load a dataset in any process: workers load it themselves (once per process) rather
    than receiving the interaction arrays pickled with every task."""

    name: str
    data_dir: str | None = None
    split_seed: int = 2024
    legacy_split_seed: int | None = None
    offline: bool | None = None
    cold: str = "keep"
    overlap: str = "error"
    valid_from: str = "test"

    def load(self) -> LoadedDataset:
        return _load_cached(self)


@functools.lru_cache(maxsize=8)
def _load_cached(ref: DatasetRef) -> LoadedDataset:
    return load_dataset(ref.name, data_dir=ref.data_dir, split_seed=ref.split_seed,
                        legacy_split_seed=ref.legacy_split_seed, offline=ref.offline, cold=ref.cold,
                        overlap=ref.overlap, valid_from=ref.valid_from)


@dataclass(frozen=True)
class GridRun:
    spec: RunSpec
    cell: Cell
    dataset: DatasetRef

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def dataset_name(self) -> str:
        """The dataset's name (a folder given as a path is named by the folder)."""
        return self.spec.config["dataset"]["name"]


@dataclass
class GridPlan:
    runs: list[GridRun]                        # one per cell and seed (cells may share a run)
    dropped: list[str] = field(default_factory=list)   # cells that could not be planned, with the reason

    def unique_runs(self) -> list[GridRun]:
        seen = {}
        for run in self.runs:
            seen.setdefault(run.run_id, run)
        return list(seen.values())

    def manifest_rows(self) -> list[dict]:
        """What a report needs to find each point's record again, without re-planning."""
        return [{"dataset": r.dataset_name, "method": r.spec.method, "label": r.spec.label,
                 "budget": r.cell.budget, "accounting": r.cell.accounting, "seed": r.spec.seed, "run_id": r.run_id,
                 "overrides": r.cell.overrides_for(r.spec.seed), "coords": dict(r.cell.coords),
                 "options": r.spec.options}
                for r in self.runs]


def expand(datasets: list[str], methods: list[str], budgets: list[str], *, overrides: Mapping | None = None,
           sweeps: Mapping[str, list] | None = None, accounting: str = TABLE3) -> list[Cell]:
    """The full product of datasets x methods x budgets x sweep values. ``sweeps`` maps
    ``owner.option`` to values; an axis applies to the cells whose method owns it (or to all cells
    for ``trainer.*``), so sweeping ``c2f.threshold`` does not repeat the other methods' runs."""
    overrides = overrides or {}
    sweeps = sweeps or {}
    check_owners(list(overrides) + [key.split(".", 1)[0] for key in sweeps], methods)
    cells = []
    for dataset, method, budget in itertools.product(datasets, methods, budgets):
        axes = [(key, values) for key, values in sweeps.items() if key.split(".", 1)[0] in ("trainer", method)]
        for values in itertools.product(*(v for _, v in axes)):
            cell_overrides = {owner: dict(options) for owner, options in overrides.items()
                              if owner in ("trainer", method)}
            coords = {}
            for (key, _), value in zip(axes, values):
                owner, option = key.split(".", 1)
                cell_overrides.setdefault(owner, {})[option] = value
                coords[key] = value
            cells.append(Cell(dataset, method, budget, cell_overrides, coords, accounting=accounting))
    return cells


def parse_sweeps(items: list[str]) -> dict[str, list]:
    """``["c2f.threshold=0.5,1,3"]`` -> ``{"c2f.threshold": [0.5, 1, 3]}``."""
    sweeps = {}
    for item in items:
        key, sep, text = item.partition("=")
        owner, dot, option = key.strip().partition(".")
        if not sep or not dot or not owner or not option or not text.strip():
            raise ConfigError(f"--sweep {item!r}: expected OWNER.OPTION=V1,V2,..., e.g. c2f.threshold=0.5,1,3")
        values = parse_value(text.strip())
        sweeps[key.strip()] = list(values) if isinstance(values, list) else [values]
    return sweeps


def plan_grid(cells: list[Cell], seeds: list[int], *, data_dir: str | None = None, split_seed: int = 2024,
              legacy_split: bool = False, offline: bool | None = None, drop_unfit: bool = True,
              cold: str = "keep", overlap: str = "error", valid_from: str = "test") -> GridPlan:
    """Resolve every cell and seed to a run. A cell whose method cannot fit its budget is dropped with
    its reason (``drop_unfit``; otherwise the :class:`BudgetError` is raised); every other error (unknown
    method or option, missing data) is raised."""
    plan = GridPlan(runs=[])
    for cell in cells:
        refs = [DatasetRef(cell.dataset, data_dir, split_seed, seed, offline, cold, overlap, valid_from)
                for seed in (seeds if legacy_split else [None])]
        try:
            for ref in refs:
                run_seeds = [ref.legacy_split_seed] if legacy_split else seeds
                by_overrides = {}   # seeds that share their overrides are planned together, in seed order
                for seed in run_seeds:
                    by_overrides.setdefault(repr(cell.overrides_for(seed)), []).append(seed)
                specs = {spec.seed: spec for group in by_overrides.values()
                         for spec in plan_runs([cell.method], ref.load(), cell.budget, group,
                                               cell.overrides_for(group[0]), accounting=cell.accounting)}
                plan.runs += [GridRun(specs[seed], cell, ref) for seed in run_seeds]
        except BudgetError as exc:
            if not drop_unfit:
                raise
            plan.dropped.append(f"{cell.dataset} {cell.method} at {cell.budget} ({cell.accounting}): {exc}")
    return plan


