"""Reproduction targets: ``run_bench.py reproduce NAME`` and ``run_bench.py report``.

A target is a grid (which cells to run) plus a builder (which tables and figures to draw from the
points). ``reproduce`` prints the plan (runs, how many exist, estimated time), writes the target's
manifest, runs the grid (reusing every existing run), then writes tables (Markdown, LaTeX, CSV) to
the output folder and figures (PNG, PDF) to the figures folder. ``report`` rebuilds every target
found in an output folder from its manifest and the records, without training.

C2F's option and stage names are kept in one place below (:data:`C2F_OPTIONS`, :data:`C2F_COARSE_STAGE`)
so they are easy to adjust to the c2f plugin.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from lwbench.reports import figures, summaries
from lwbench.data.cards import available_locally
from lwbench.grid.workers import ExecutionRequest, make_execution
from lwbench.grid.plan import Cell, plan_grid
from lwbench.grid.run import describe_plan, run_grid, summarize_failures
from lwbench.runner import check_owners
from lwbench.records import load_records, points, read_manifests, write_manifest
from lwbench.studies.c2f_paper.reference import TABLE3_METHODS
from lwbench.registry import get_method, method_names
from lwbench.reports.tables import Table

# --- C2F names (methods.md 11; adjust here when the c2f plugin lands) ------------------------------
C2F = "c2f"
C2F_OPTIONS = {
    "d^r": "fine_components",   # n_components_ft
    "λ": "threshold",           # threshold_ft
    "w_cr": "gate",             # gate
    "t^r": "fine_topk",         # top_k_ft
    "m^c": "coarse_buckets",    # num_clusters
    "m^r": "fine_buckets",      # num_clusters_ft
    "ablation": "ablation",     # {none, A, B, C, D}
}
C2F_COARSE_STAGE = "coarse"   # its checkpoint "coarse/update" (the phase-UPDATE best) is the LEGCF reference
ABLATION_CASES = {"Full": "none", "A": "A", "B": "B", "C": "C", "D": "D"}
SENSITIVITY_GRIDS = {"d^r": [40, 60, 80, 100, 120], "λ": [0.5, 1, 3, 5, 10], "w_cr": [0.1, 0.3, 0.5, 0.7, 0.9],
                     "t^r": [2, 3, 4, 5, 6]}
RATIO_FIXED_COARSE, RATIO_RHOS = 100, [0.2, 0.4, 0.6, 0.8, 1.0]
RATIO_TOTAL, RATIO_FINE = 200, [0, 20, 40, 60, 80, 100]
BUDGET_PERCENTS = [1, 2, 3, 5, 7.5, 10]

DEFAULT_SEEDS = (2024, 2025, 2026)
QUICK_TRAINER = {"max_epochs": 3, "eval_every": 1, "batch_size": 65536}  # few, large batches: CPU-friendly


def c2f_cell(dataset: str, options: dict, coords: dict, budget: str = "500buckets") -> Cell:
    """A C2F run with options given by their paper symbols (keys of :data:`C2F_OPTIONS`)."""
    return Cell(dataset, C2F, budget, {C2F: {C2F_OPTIONS[k]: v for k, v in options.items()}}, coords)


# --- targets -----------------------------------------------------------------------------------------

@dataclass
class Outputs:
    tables: list[Table] = field(default_factory=list)
    figures: dict = field(default_factory=dict)      # name -> matplotlib Figure


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    datasets: tuple[str, ...]
    requires: tuple[str, ...]                                    # methods that must be registered
    cells: Callable[[list[str], list[str]], list[Cell]]          # (datasets, methods) -> cells
    build: Callable[[pd.DataFrame, Path, dict, str], Outputs]    # (points, out, manifest, alternative)
    min_seeds: int = 1                                            # seeds kept by --quick
    listed: tuple[str, ...] = ()                                  # methods its table lists even if unregistered


def _table3_cells(datasets: list[str], methods: list[str]) -> list[Cell]:
    cells = []
    for dataset in datasets:
        if "ud" in methods:
            cells += [Cell(dataset, "ud", "500buckets", {"ud": {"dim": dim}}) for dim in (128, 64)]
        cells += [Cell(dataset, m, "500buckets") for m in methods if m != "ud"]
    return cells


def _build_table3(pts, out, manifest, alternative) -> Outputs:
    return Outputs(tables=[summaries.table3(pts, missing_methods=manifest.get("missing_methods", []))])


def _table4_cells(datasets, methods):
    return [c2f_cell(d, {}, {}) for d in datasets]


def _build_table4(pts, out, manifest, alternative) -> Outputs:
    return Outputs(tables=list(summaries.table4(pts, out, coarse_stage=C2F_COARSE_STAGE,
                                             alternative=alternative)))


def _fig4_cells(datasets, methods):
    return [c2f_cell(d, {"ablation": value}, {"case": case}) for d in datasets for case, value in ABLATION_CASES.items()]


def _build_fig4(pts, out, manifest, alternative) -> Outputs:
    metrics = list(figures.FIGURE_METRICS)
    summary = summaries.summarize(pts, ["dataset", "case"], metrics)
    coarse = summaries.summarize(pts[pts["case"] == "Full"], ["dataset"], metrics, C2F_COARSE_STAGE)
    table = summaries.series_table("fig4", "Figure 4: C2F ablation (cases A-D against the full model)",
                                pd.concat([summary, coarse.assign(case="LEGCF (coarse stage of Full)")]),
                                ["dataset", "case"], metrics,
                                notes=["A: random E^r selection; B: no SparsePCA; C: no soft threshold; "
                                       "D: direct matching instead of weight bridging (methods.md 11.1)."]
                                + summaries.status_notes(pts))
    return Outputs([table], {"fig4": figures.ablation_bars(summary, coarse, list(ABLATION_CASES))})


def _fig5_cells(datasets, methods):
    return [c2f_cell(d, {factor: value}, {"factor": factor, "value": value})
            for d in datasets for factor, grid in SENSITIVITY_GRIDS.items() for value in grid]


def _build_fig5(pts, out, manifest, alternative) -> Outputs:
    metrics = list(figures.FIGURE_METRICS)
    diagnostics = summaries.diagnostic_names(pts)   # e.g. the non-zero fraction of S_λ(E^r) (methods.md 11.2)
    summary = summaries.summarize(pts, ["dataset", "factor", "value"], metrics, diagnostics=diagnostics)
    notes = summaries.status_notes(pts)
    if diagnostics:
        notes.append("Diagnostic columns: the method's own diagnostics at the reported checkpoint, mean over seeds.")
    table = summaries.series_table("fig5", "Figure 5: C2F sensitivity (one factor at a time, others as released)",
                                summary, ["dataset", "factor", "value"], metrics, notes=notes, diagnostics=diagnostics)
    return Outputs([table], {"fig5": figures.sweep_lines(summary, list(SENSITIVITY_GRIDS))})


def _fig6_cells(datasets, methods):
    cells = []
    for d in datasets:
        cells += [c2f_cell(d, {"m^c": RATIO_FIXED_COARSE, "m^r": round(rho * RATIO_FIXED_COARSE)},
                           {"panel": "a", "rho": rho}) for rho in RATIO_RHOS]
        for fine in RATIO_FINE:
            # m^r = 0 is the coarse stage alone (m^c = total): read from the coarse checkpoint of a C2F run
            # with that m^c, so no method has to accept an empty fine table.
            options = {"m^c": RATIO_TOTAL - fine} if fine == 0 else {"m^c": RATIO_TOTAL - fine, "m^r": fine}
            cells.append(c2f_cell(d, options, {"panel": "b", "fine": fine, "coarse_only": fine == 0}))
    return cells


def _build_fig6(pts, out, manifest, alternative) -> Outputs:
    metrics = list(figures.FIGURE_METRICS)
    a = summaries.summarize(pts[pts["panel"] == "a"], ["dataset", "rho"], metrics)
    b = pts[pts["panel"] == "b"]
    coarse_only = b["coarse_only"] == True  # noqa: E712 (a column that is NaN outside panel b)
    after = pd.concat([summaries.summarize(b[~coarse_only], ["dataset", "fine"], metrics),
                       summaries.summarize(b[coarse_only], ["dataset", "fine"], metrics, C2F_COARSE_STAGE)])
    before = summaries.summarize(b, ["dataset", "fine"], metrics, C2F_COARSE_STAGE)
    frame = pd.concat([a.assign(panel="a: fixed m^c, after fine stage"),
                       before.assign(panel="b: fixed total, before fine stage"),
                       after.assign(panel="b: fixed total, after fine stage")])
    keys = ["dataset", "panel", "rho", "fine"]
    table = summaries.series_table("fig6", "Figure 6: coarse/fine ratio", frame, keys, metrics,
                                notes=[f"(a) m^c = {RATIO_FIXED_COARSE}, m^r = ρ·m^c; (b) m^c + m^r = {RATIO_TOTAL}; "
                                       "m^r = 0 is the coarse stage alone."] + summaries.status_notes(pts))
    return Outputs([table], {"fig6": figures.ratio_curves(a, after, before)})


def _budget_cells(datasets, methods):
    budgeted = [m for m in methods if get_method(m).budgeted]
    if not budgeted:
        raise TargetError(f"budget-curve needs at least one budgeted method; registered: {', '.join(methods)}")
    cells = []
    for d in datasets:
        cells += [Cell(d, m, f"{pct}%", {}, {"budget_pct": pct, "reference": False})
                  for m in budgeted for pct in BUDGET_PERCENTS]
        if "ud" in methods:
            cells.append(Cell(d, "ud", "none", {"ud": {"dim": 128}}, {"reference": True}))
    return cells


def _build_budget(pts, out, manifest, alternative) -> Outputs:
    metrics = ["ndcg@20", "recall@20"]
    is_reference = pts["reference"] == True  # noqa: E712
    summary = summaries.summarize(pts[~is_reference], ["dataset", "method", "budget_pct"], metrics)
    references = summaries.summarize(pts[is_reference], ["dataset", "label"], metrics).rename(columns={"label": "method"})
    frame = pd.concat([summary, references.assign(budget_pct="unbudgeted")])
    table = summaries.series_table("budget-curve", "N@20 and R@20 against the budget (% of the full N × 128 table)",
                                frame, ["dataset", "method", "budget_pct"], metrics,
                                notes=[f"Not run (cannot fit the budget): {d}" for d in manifest.get("dropped", [])]
                                + summaries.status_notes(pts))
    return Outputs([table], {"budget-curve": figures.budget_curves(summary, references)})


PAPER_DATASETS = ("gowalla", "yelp2020", "amazon-book")
TARGETS = {t.name: t for t in [
    Target("table3", "every method at the 500-bucket budget (Table 3)", PAPER_DATASETS, (), _table3_cells,
           _build_table3, listed=TABLE3_METHODS),
    Target("table4", "C2F against its coarse stage per seed (Table 4)", ("gowalla", "yelp2020"), (C2F,),
           _table4_cells, _build_table4, min_seeds=2),
    Target("fig4", "C2F component ablation (Figure 4)", ("gowalla", "yelp2020"), (C2F,), _fig4_cells, _build_fig4),
    Target("fig5", "C2F sensitivity sweeps (Figure 5)", ("gowalla", "yelp2020"), (C2F,), _fig5_cells, _build_fig5),
    Target("fig6", "C2F coarse/fine ratios (Figure 6)", ("gowalla",), (C2F,), _fig6_cells, _build_fig6),
    Target("budget-curve", "every method's N@20 from 1% to 10% of the full table", PAPER_DATASETS, (),
           _budget_cells, _build_budget),
]}


class TargetError(RuntimeError):
    """A target cannot be planned (unknown name, missing method, no dataset)."""


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise TargetError(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
    return TARGETS[name]


@dataclass
class ReproduceOptions:
    quick: bool = False
    datasets: list[str] | None = None
    methods: list[str] | None = None
    seeds: list[int] | None = None
    overrides: dict = field(default_factory=dict)     # --set, applied to the cells whose method owns them
    data_dir: str | None = None
    offline: bool | None = None
    split_seed: int = 2024
    out: Path = Path("results")
    figures_dir: Path = Path("figures")
    alternative: str = "two-sided"
    force: bool = False
    plan_only: bool = False
    show_progress: bool | None = None


def resolve_methods(target: Target, wanted: list[str] | None) -> tuple[list[str], list[str]]:
    """(methods to run, Table-3 methods that are not registered). Raises when a required one is missing."""
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
    found = [d for d in target.datasets if available_locally(d, options.data_dir)]
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
    return Cell(cell.dataset, cell.method, cell.budget, merged, cell.coords)


def reproduce(name: str, options: ReproduceOptions, request: ExecutionRequest, log=print) -> int:
    """Plan, run and report one target; returns the exit status (1 if any run failed)."""
    target = get_target(name)
    methods, missing = resolve_methods(target, options.methods)
    datasets, skipped = resolve_datasets(target, options)
    seeds = options.seeds or list(DEFAULT_SEEDS[:target.min_seeds] if options.quick else DEFAULT_SEEDS)
    cells = target.cells(datasets, methods)
    check_owners(list(options.overrides), sorted({c.method for c in cells}))
    cells = [with_user_overrides(c, options.overrides, options.quick) for c in cells]
    plan = plan_grid(cells, seeds, data_dir=options.data_dir, split_seed=options.split_seed, offline=options.offline)
    records = load_records(options.out)
    execution, how = make_execution(request, plan.unique_runs(), records)
    log(f"target {name}: {target.description}" + (" [quick: synthetic data, few epochs]" if options.quick else ""))
    log(f"datasets: {', '.join(datasets)}; seeds: {', '.join(map(str, seeds))}")
    for note in skipped:
        log(f"  skipped dataset {note}")
    if missing:
        log(f"  not implemented (listed in the table): {', '.join(missing)}")
    log(describe_plan(plan, options.out, records, execution, how))
    if options.plan_only:
        return 0
    write_manifest(options.out, name, plan.manifest_rows(), target=name, quick=options.quick, seeds=seeds,
                   missing_methods=missing, skipped_datasets=skipped, dropped=plan.dropped)
    outcome = run_grid(plan, options.out, execution, force=options.force, show_progress=options.show_progress)
    if outcome.failures:
        log(summarize_failures(outcome.failures, options.out))
    build_target(name, options.out, options.figures_dir, options.alternative, log)
    return 1 if outcome.failures else 0


def build_target(name: str, out: Path, figures_dir: Path, alternative: str, log=print) -> list[Path]:
    """Write a target's tables and figures from its manifest and the records in ``out``."""
    manifest = read_manifests(out).get(name)
    if manifest is None:
        raise TargetError(f"{out}/grids/{name}.json does not exist: run `run_bench.py reproduce {name}` first")
    pts = points(out, manifest)
    if not len(pts):
        log(f"{name}: the manifest lists no runs")
        return []
    try:
        outputs = get_target(manifest["target"]).build(pts, Path(out), manifest, alternative)
    except (KeyError, ValueError) as exc:  # records that do not fit the target (e.g. a missing checkpoint)
        raise TargetError(f"cannot build {name} from the records in {out}: {exc.args[0]}") from exc
    written = []
    for table in outputs.tables:
        log("\n" + table.to_markdown())
        written += table.write(out)
    for figure_name, figure in outputs.figures.items():
        written += figures.save(figure, figures_dir, figure_name)
    log("wrote: " + ", ".join(str(p) for p in written))
    return written


def build_report(out: Path, figures_dir: Path, alternative: str = "two-sided", log=print
                 ) -> tuple[list[Path], list[str]]:
    """Every target with a manifest in ``out``, plus a summary of all records; no training.
    Returns (files written, errors): a target that cannot be built does not stop the others."""
    out = Path(out)
    if not (out / "runs").is_dir():
        raise TargetError(f"{out}/runs does not exist: point --out at a folder that run_bench.py wrote records to")
    written, errors = [], []
    for name in read_manifests(out):
        try:
            written += build_target(name, out, figures_dir, alternative, log)
        except TargetError as exc:
            errors.append(f"{name}: {exc}")
    summary = summaries.summary_table(load_records(out))
    if summary is not None:
        log("\n" + summary.to_markdown())
        written += summary.write(out)
    return written, errors
