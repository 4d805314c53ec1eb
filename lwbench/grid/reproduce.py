"""``run_bench.py reproduce NAME``: plan, run and report one registered target.

``reproduce`` prints the plan (runs, how many exist, estimated time), writes the target's manifest,
runs the grid (reusing every existing run), then builds the target's tables and figures
(:func:`lwbench.reports.targets.build_target`). It trains, so it lives with the grid; the targets and their
reports (:mod:`lwbench.reports`) stay torch-free.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from lwbench.data.cards import available_locally
from lwbench.grid.plan import plan_grid
from lwbench.grid.run import describe_plan, run_grid, summarize_failures
from lwbench.grid.runner import check_owners
from lwbench.grid.workers import ExecutionRequest, make_execution
from lwbench.records import load_records, write_manifest
from lwbench.registry import get_method, method_names
from lwbench.reports.cell import Cell
from lwbench.reports.targets import Target, TargetError, build_target, get_target

logger = logging.getLogger(__name__)

DEFAULT_SEEDS = (2024, 2025, 2026)
# Few, large batches: CPU-friendly. Three epochs rarely reach a two-phase stage's UPDATE phase, so a later
# stage may start from the earlier phase's checkpoint (docs/protocol.md §3.4); the target line says so.
QUICK_TRAINER = {"max_epochs": 3, "eval_every": 1, "batch_size": 65536, "allow_handoff_fallback": True}


@dataclass
class ReproduceOptions:
    quick: bool = False
    datasets: list[str] | None = None
    methods: list[str] | None = None
    seeds: list[int] | None = None
    overrides: dict = field(default_factory=dict)     # --set, applied to the cells whose method owns them
    data: dict = field(default_factory=dict)           # the data options, as plan_grid takes them
    out: Path = Path("results")
    figures_dir: Path = Path("figures")
    alternative: str = "two-sided"
    force: bool = False
    plan_only: bool = False
    show_progress: bool | None = None


def resolve_methods(target: Target, wanted: list[str] | None) -> tuple[list[str], list[str]]:
    """(methods to run, methods the target lists that are not registered). Raises when a required one
    is missing."""
    registered = method_names()
    missing_required = [m for m in target.requires if m not in registered]
    if missing_required:
        raise TargetError(f"target {target.name} needs method(s) {', '.join(missing_required)}, which are not "
                          f"registered (registered: {', '.join(registered)}); implement them as plugins in methods/")
    if wanted:
        unknown = [m for m in wanted if m not in registered]
        if unknown:
            raise TargetError(f"--methods names unregistered method(s) {', '.join(unknown)}; "
                              f"registered: {', '.join(registered)}")
        methods = wanted
    else:
        methods = registered
    missing = [m for m in target.listed if m not in registered]
    return methods, missing


def resolve_datasets(target: Target, options: ReproduceOptions) -> tuple[list[str], list[str]]:
    """(datasets to use, notes on the target's datasets that are not available here)."""
    if options.datasets:
        return options.datasets, []
    if options.quick:
        return ["synthetic"], []
    found = [d for d in target.datasets if available_locally(d, options.data.get("data_dir"))]
    skipped = [f"{d}: files not found (pass --data-dir, or see `run_bench.py --dataset {d}` for where to put them)"
               for d in target.datasets if d not in found]
    if not found:
        raise TargetError(f"target {target.name}: none of its datasets ({', '.join(target.datasets)}) is available "
                          "locally; pass --data-dir DIR holding <dataset>/train.txt[.gz] and test.txt[.gz], "
                          "--datasets NAME to choose, or --quick for the synthetic smoke version")
    return found, skipped


def with_user_overrides(cell: Cell, overrides: dict, quick: bool) -> Cell:
    """The cell's options; with ``--quick`` over the method's ``smoke_options`` (so that e.g. a pruning
    search reaches its target in a few epochs) and under the quick trainer settings; ``--set`` over all."""
    merged = {cell.method: dict(get_method(cell.method).smoke_options)} if quick else {}
    for owner, options in cell.overrides.items():
        merged.setdefault(owner, {}).update(options)
    layers = ([{"trainer": QUICK_TRAINER}] if quick else []) + [overrides]
    for layer in layers:
        for owner, options in layer.items():
            if owner in ("trainer", cell.method):
                merged.setdefault(owner, {}).update(options)
    # per-seed settings of the target stay, except where --set names the same option (--set wins)
    per_seed = {seed: {owner: {k: v for k, v in options.items() if k not in overrides.get(owner, {})}
                       for owner, options in layer.items()} for seed, layer in cell.seed_overrides.items()}
    return dataclasses.replace(cell, overrides=merged, seed_overrides=per_seed)


def reproduce(name: str, options: ReproduceOptions, request: ExecutionRequest) -> int:
    """Plan, run and report one target; returns the exit status (1 if any run failed). The plan and the
    tables are the command's output (stdout); progress goes to the log."""
    target = get_target(name)
    methods, missing = resolve_methods(target, options.methods)
    datasets, skipped = resolve_datasets(target, options)
    seeds = options.seeds or list(DEFAULT_SEEDS[:target.min_seeds] if options.quick else DEFAULT_SEEDS)
    cells = target.cells(datasets, methods)
    check_owners(list(options.overrides), sorted({c.method for c in cells}))
    cells = [with_user_overrides(c, options.overrides, options.quick) for c in cells]
    plan = plan_grid(cells, seeds, **options.data)
    records = load_records(options.out)
    execution, how = make_execution(request, plan.unique_runs(), records)
    quick_note = (" [quick: synthetic data, few epochs; trainer.allow_handoff_fallback: a stage short of its "
                  "last phase hands on an earlier checkpoint]")
    print(f"target {name}: {target.description}" + (quick_note if options.quick else ""))
    print(f"datasets: {', '.join(datasets)}; seeds: {', '.join(map(str, seeds))}")
    for note in skipped:
        print(f"  skipped dataset {note}")
    if missing:
        print(f"  not implemented (listed in the table): {', '.join(missing)}")
    print(describe_plan(plan, options.out, records, execution, how))
    if options.plan_only:
        return 0
    write_manifest(options.out, name, plan.manifest_rows(), target=name, quick=options.quick, seeds=seeds,
                   missing_methods=missing, skipped_datasets=skipped, dropped=plan.dropped)
    outcome = run_grid(plan, options.out, execution, force=options.force, show_progress=options.show_progress)
    if outcome.failures:
        logger.error("%s", summarize_failures(outcome.failures, options.out))
    build_target(name, options.out, options.figures_dir, options.alternative)
    return 1 if outcome.failures else 0
