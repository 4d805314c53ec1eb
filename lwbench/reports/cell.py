"""A grid point before seeds (:class:`Cell`): what the reproduction targets of the studies are made of.

Torch-free, so studies build their cells and reports read them on machines without the trainer; planning
a cell into runs is :mod:`lwbench.grid.plan`, a layer above.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lwbench.budget import TABLE3


@dataclass(frozen=True)
class Cell:
    """One point of a grid, before seeds: a dataset, a method, a budget and option overrides
    (``{"trainer": {...}, "<method>": {...}}``). ``seed_overrides`` maps a seed to overrides of the same
    form merged over ``overrides`` for that seed only (e.g. a logged run that used other settings for one
    seed); seeds it does not name use ``overrides``. ``coords`` are the report's coordinates of the
    point (e.g. ``{"c2f.threshold": 3}``); they do not change the run."""

    dataset: str
    method: str
    budget: str = "500buckets"
    overrides: Mapping = field(default_factory=dict)
    coords: Mapping = field(default_factory=dict)
    seed_overrides: Mapping = field(default_factory=dict)
    accounting: str = TABLE3        # the convention the budget counts in (docs/protocol.md §5.2)

    def overrides_for(self, seed: int) -> dict:
        """The overrides of this cell's run with ``seed``."""
        merged = {owner: dict(options) for owner, options in self.overrides.items()}
        for owner, options in self.seed_overrides.get(seed, {}).items():
            merged.setdefault(owner, {}).update(options)
        return merged


def comparison_cell(dataset: str, method: str, budget: str, overrides: Mapping | None = None,
                    coords: Mapping | None = None, **fields) -> Cell:
    """A cell of a table that compares methods at one budget: the method's ``comparison_options`` (e.g. a
    method whose published size sits below the budget grows to fill it, docs/protocol.md §5.2) under the
    cell's own overrides, so that every method in the table uses its budget."""
    from lwbench.registry import get_method
    merged = {owner: dict(options) for owner, options in (overrides or {}).items()}
    own = get_method(method).comparison_options
    if own:
        merged[method] = {**own, **merged.get(method, {})}
    return Cell(dataset, method, budget, merged, dict(coords or {}), **fields)


