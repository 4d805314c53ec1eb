"""The C2F paper's reproduction targets: table3, table4 (with table4-stats), fig4, fig5 and fig6.

C2F's option and stage names are kept in one place (:data:`C2F_OPTIONS`, :data:`C2F_COARSE_STAGE`), keyed
by the paper's symbols, so the grids below read like the paper and follow the c2f method if it renames
an option. The cells (:class:`lwbench.reports.cell.Cell`) are torch-free, so reports can import this module
where the trainer is not installed.
"""
from __future__ import annotations

import functools
import math

import pandas as pd

from lwbench.budget import STORAGE
from lwbench.reports import figures, significance, summaries
from lwbench.reports.cell import Cell, comparison_cell
from lwbench.reports.targets import Outputs, Target, TargetError, output_name, register_target
from lwbench.studies.c2f_paper import tables
from lwbench.studies.c2f_paper.figures import FIGURE_METRICS, ratio_curves
from lwbench.studies.c2f_paper.reference import TABLE3_METHODS

# --- C2F names (docs/protocol.md §10) ------------------------------------------------------------------------
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
ABLATION_NAMES = {"Full": "Full C2F", "A": "A: random E^r selection", "B": "B: no SparsePCA",
                  "C": "C: no soft threshold", "D": "D: direct matching (no weight bridging)"}
COARSE_REFERENCE = "coarse stage of Full C2F"
RELEASED = "released"   # Figure 5's row of the released configuration, which every sweep point is tested against
SENSITIVITY_GRIDS = {"d^r": [40, 60, 80, 100, 120], "λ": [0.5, 1, 3, 5, 10], "w_cr": [0.1, 0.3, 0.5, 0.7, 0.9],
                     "t^r": [2, 3, 4, 5, 6]}
RATIO_FIXED_COARSE, RATIO_RHOS = 100, [0.2, 0.4, 0.6, 0.8, 1.0]
RATIO_TOTAL, RATIO_FINE = 200, [0, 20, 40, 60, 80, 100]
PAPER_DATASETS = ("gowalla", "yelp2020", "amazon-book")
# The settings of the logged C2F runs where they differ from the dataset card (docs/protocol.md §9.3, §12.5
# item 6): Yelp2020's coarse stage and fine seeds 2024 and 2026 used 3 layers (the card says 4), and fine
# seed 2025 used 4 over that 3-layer coarse stage.
LOGGED_SETTINGS = {"yelp2020": {"trainer": {"layers": 3}}}
LOGGED_SEED_SETTINGS = {"yelp2020": {2025: {C2F: {"fine_layers": 4}}}}


@functools.cache
def check_c2f_names() -> None:
    """The names this study keeps for the c2f method (:data:`C2F_OPTIONS`, :data:`C2F_COARSE_STAGE`) against the
    method itself, once, when its cells are planned (the registry imports torch, so not when reports are built):
    a renamed option or stage is an error naming it, not a grid of wrong runs or an empty table."""
    from lwbench.options import resolve
    from lwbench.registry import get_method
    method = get_method(C2F)
    unknown = sorted(set(C2F_OPTIONS.values()) - set(method.options))
    first_stage = method.stages(resolve(method))[0].name
    if unknown or first_stage != C2F_COARSE_STAGE:
        raise TargetError(f"the C2F study's names no longer match the c2f method: options {unknown or 'ok'}, first "
                          f"stage {first_stage!r} (the study expects {C2F_COARSE_STAGE!r}); update "
                          "lwbench/studies/c2f_paper/targets.py")


def c2f_cell(dataset: str, options: dict, coords: dict, budget: str = "500buckets", *,
             comparison: bool = False) -> Cell:
    """A C2F run with options given by their paper symbols (keys of :data:`C2F_OPTIONS`), under the
    logged runs' settings for the dataset and seed (:data:`LOGGED_SETTINGS`, :data:`LOGGED_SEED_SETTINGS`).
    ``comparison``: a cell of a table that compares methods, where C2F fills the budget
    (:func:`lwbench.reports.cell.comparison_cell`); the C2F studies keep the released configuration."""
    check_c2f_names()
    overrides = {owner: dict(values) for owner, values in LOGGED_SETTINGS.get(dataset, {}).items()}
    overrides.setdefault(C2F, {}).update({C2F_OPTIONS[k]: v for k, v in options.items()})
    seed_overrides = LOGGED_SEED_SETTINGS.get(dataset, {})
    if comparison:
        return comparison_cell(dataset, C2F, budget, overrides, coords, seed_overrides=seed_overrides)
    return Cell(dataset, C2F, budget, overrides, coords, seed_overrides=seed_overrides)


def sizes_note(pts: pd.DataFrame) -> list[str]:
    """Which C2F a study's table shows: its runs keep the released sizes, which store less than the budget that
    Table 3's C2F scales them to fill, so a reader comparing the two tables is told (from the records)."""
    done = [r for r in pts.loc[pts["status"] == "done", "record"] if r]
    if not done:
        return []
    options = [r["config"]["method"].get("options", {}) for r in done]
    sizes = sorted({(o.get(C2F_OPTIONS["m^c"]), o.get(C2F_OPTIONS["m^r"])) for o in options})
    if any(None in size for size in sizes):   # not records of the c2f method (e.g. a test's fabricated ones)
        return []
    share, _ = summaries.budget_used(done)
    stored = "" if share == "–" else \
        f", and stores {share.removesuffix(' ' + summaries.UNDER_BUDGET_FLAG)} of the {done[0]['budget']['text']} budget"
    return ["C2F here keeps the released sizes, "
            + " or ".join(f"m^c = {coarse} coarse and m^r = {fine} fine meta-embeddings" for coarse, fine in sizes)
            + stored + " (Table 3's C2F scales both to fill the budget); its coarse stage is a LEGCF model with the "
            "m^c coarse meta-embeddings."]


def one_per_coarse_stage(pts: pd.DataFrame) -> pd.DataFrame:
    """The runs with one record per coarse stage: seeds that started from one shared coarse stage
    (``c2f.coarse_seed``) show it once, not as identical seeds with a zero spread."""
    key = pts["record"].map(lambda r: r["shared_stages"].get(C2F_COARSE_STAGE, r["run_id"]) if r else None)
    return pts[key.isna() | ~key.duplicated()]


def _table3_cells(datasets: list[str], methods: list[str]) -> list[Cell]:
    cells = []
    for dataset in datasets:
        if "ud" in methods:
            cells += [Cell(dataset, "ud", "500buckets", {"ud": {"dim": dim}}) for dim in (128, 64)]
        cells += [c2f_cell(dataset, {}, {}, comparison=True) if m == C2F else comparison_cell(dataset, m, "500buckets")
                  for m in methods if m != "ud"]
    return cells


def _build_table3(pts, out, manifest, alternative) -> Outputs:
    return Outputs(tables=tables.table3(pts, out, missing_methods=manifest.get("missing_methods", []),
                                        name=output_name(manifest, "table3")))


def _table3_storage_cells(datasets: list[str], methods: list[str]) -> list[Cell]:
    """Table 3's cells, every budget counted in stored bytes (docs/protocol.md §5.2): the budgeted methods get
    the bytes the 500-bucket LEGCF stores instead of its float count."""
    import dataclasses
    return [dataclasses.replace(cell, accounting=STORAGE) for cell in _table3_cells(datasets, methods)]


def _build_table3_storage(pts, out, manifest, alternative) -> Outputs:
    return Outputs(tables=tables.table3(pts, out, missing_methods=manifest.get("missing_methods", []), storage=True,
                                        name=output_name(manifest, "table3-storage")))


def _table4_cells(datasets, methods):
    return [c2f_cell(d, {}, {}) for d in datasets]


def _build_table4(pts, out, manifest, alternative) -> Outputs:
    return Outputs(tables=list(tables.table4(pts, out, coarse_stage=C2F_COARSE_STAGE, alternative=alternative,
                                             name=output_name(manifest, "table4"), notes=sizes_note(pts))))


def _fig4_cells(datasets, methods):
    return [c2f_cell(d, {"ablation": value}, {"case": case}) for d in datasets for case, value in ABLATION_CASES.items()]


def _build_fig4(pts, out, manifest, alternative) -> Outputs:
    metrics = list(FIGURE_METRICS)
    summary = summaries.summarize(pts, ["dataset", "case"], metrics, out=out)
    coarse = summaries.summarize(one_per_coarse_stage(pts[pts["case"] == "Full"]), ["dataset"], metrics,
                                 C2F_COARSE_STAGE, out=out)
    frame = pd.concat([summary.assign(case=summary["case"].map(ABLATION_NAMES)),
                       coarse.assign(case=COARSE_REFERENCE)])
    verdicts = ablation_verdicts(pts, metrics, out)
    table = summaries.series_table("fig4", "Figure 4: C2F ablation (cases A-D against the full model)", frame,
                                   ["dataset", "case"], metrics,
                                   notes=["Cases: " + "; ".join(v for k, v in ABLATION_NAMES.items() if k != "Full")
                                          + " (docs/protocol.md §8.10)."] + sizes_note(pts)
                                   + tables.coarse_sharing_notes(pts, C2F_COARSE_STAGE, compared=False)
                                   + summaries.ci_note(frame, metrics)
                                   + verdicts.table_notes("fig4-stats") + summaries.status_notes(pts),
                                   marks=lambda row, metric: verdicts.mark(row["dataset"], metric, row["case"]))
    stats_table = significance.stats_table("fig4-stats", "Figure 4: every ablation against the full model",
                                           verdicts)
    figure = figures.case_points(summary, metrics, ABLATION_NAMES, reference=coarse, reference_label=COARSE_REFERENCE)
    return Outputs([table] + ([stats_table] if stats_table else []), {"fig4": figure})


def ablation_verdicts(pts: pd.DataFrame, metrics: list[str], out) -> significance.Verdicts:
    """Each ablation case against the full model on the same dataset: does removing the component change the
    result?"""
    verdicts, _ = versus_reference(pts, ["case"], lambda case: ABLATION_NAMES[case], ABLATION_NAMES["Full"], metrics,
                                   out)
    return verdicts


def versus_reference(pts: pd.DataFrame, keys: list[str], name, reference: str, metrics: list[str],
                     out) -> tuple[significance.Verdicts, list[str]]:
    """Every point of a study (its finished runs grouped by dataset and ``keys``, named ``name(*key values)``)
    against the ``reference`` point of its dataset (:func:`lwbench.reports.significance.versus_best` with a
    reference row: paired across the seeds both have and across the test users, Holm over the table). A point
    made of the reference's very runs (a sweep value that is the released one) is not tested against itself:
    those points' names are returned beside the verdicts, for the table to say why they carry no mark."""
    done = pts[pts["status"] == "done"]
    arms = [significance.Arm(name(*key), dataset, list(group["record"]))
            for (dataset, *key), group in done.groupby(["dataset", *keys], sort=False, dropna=False)]
    runs = {arm.block: {r["run_id"] for r in arm.records} for arm in arms if arm.name == reference}
    same = [arm for arm in arms if arm.name != reference and {r["run_id"] for r in arm.records} == runs.get(arm.block)]
    arms = [arm for arm in arms if arm not in same]
    return significance.versus_best(arms, metrics, out, reference=reference), list(dict.fromkeys(a.name for a in same))


def _fig5_cells(datasets, methods):
    # Each dataset's released configuration too (Table 4's cell: no run of its own where Table 4 ran), which
    # every point departs from in one factor and is tested against.
    return [c2f_cell(d, {factor: value}, {"factor": factor, "value": value})
            for d in datasets for factor, grid in SENSITIVITY_GRIDS.items() for value in grid] + \
        [c2f_cell(d, {}, {"factor": RELEASED, "value": math.nan}) for d in datasets]


def _build_fig5(pts, out, manifest, alternative) -> Outputs:
    metrics = list(FIGURE_METRICS)
    diagnostics = summaries.diagnostic_names(pts)   # e.g. the non-zero fraction of S_λ(E^r) (docs/protocol.md §10.5)
    released = pts[pts["factor"] == RELEASED]
    order = {"dataset": list(dict.fromkeys(pts["dataset"])).index, "factor": list(SENSITIVITY_GRIDS).index}
    sweep = pts[pts["factor"] != RELEASED].sort_values(   # each dataset's rows together, in the natural order
        ["dataset", "factor", "value"], kind="stable", key=lambda c: c.map(order[c.name]) if c.name in order else c)
    summary = summaries.summarize(sweep, ["dataset", "factor", "value"], metrics, diagnostics=diagnostics, out=out)
    reference = summaries.summarize(released, ["dataset", "factor", "value"], metrics, diagnostics=diagnostics, out=out)
    verdicts, same = versus_reference(pd.concat([released, sweep]), ["factor", "value"], sweep_point, RELEASED,
                                      metrics, out)
    notes = factors_note(released) + sizes_note(pts) + summaries.ci_note(summary, metrics)
    notes += verdicts.table_notes("fig5-stats")
    if same:
        notes.append(f"{', '.join(same)}: the released configuration's own run, not tested against itself.")
    notes += summaries.status_notes(pts)
    table = summaries.series_table(
        "fig5", "Figure 5: C2F sensitivity (one factor at a time, others as released)",
        pd.concat([summary, reference]), ["dataset", "factor", "value"], metrics, notes=notes,
        diagnostics=diagnostics,
        marks=lambda row, metric: verdicts.mark(row["dataset"], metric, sweep_point(row["factor"], row["value"])))
    if diagnostics:
        table.notes.append("What each diagnostic counts: docs/protocol.md §10.5.")
    stats_table = significance.stats_table("fig5-stats", "Figure 5: every sweep point against the released "
                                           "configuration", verdicts)
    figure = figures.sweep_lines(summary, list(SENSITIVITY_GRIDS), metrics, reference=reference,
                                 reference_label=f"{RELEASED} configuration")
    return Outputs([table] + ([stats_table] if stats_table else []), {"fig5": figure})


def factors_note(released: pd.DataFrame) -> list[str]:
    """Each swept factor's c2f option and its released value (from the released row's record), so the table
    reads without the paper: w_cr's released value, for one, is not on its grid."""
    records = [r for r in released["record"] if r]
    if not records:
        return []
    options = records[0]["config"]["method"].get("options", {})
    if not all(C2F_OPTIONS[symbol] in options for symbol in SENSITIVITY_GRIDS):
        return []
    return ["Factors (c2f option, released value): " + "; ".join(
        f"{symbol}: {C2F_OPTIONS[symbol]}, {summaries.display_value(float(options[C2F_OPTIONS[symbol]]))}"
        for symbol in SENSITIVITY_GRIDS) + "."]


def sweep_point(factor: str, value) -> str:
    """A Figure-5 point's name in its tests: ``λ = 3``; the released configuration is ``released``."""
    return factor if factor == RELEASED else f"{factor} = {summaries.display_value(value)}"


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
    metrics = list(FIGURE_METRICS)
    a = summaries.summarize(pts[pts["panel"] == "a"].sort_values("rho", kind="stable"), ["dataset", "rho"], metrics,
                            out=out)
    b = pts[pts["panel"] == "b"].sort_values("fine", kind="stable")
    coarse_only = b["coarse_only"] == True  # noqa: E712 (a column that is NaN outside panel b)
    after = pd.concat([summaries.summarize(b[coarse_only], ["dataset", "fine"], metrics, C2F_COARSE_STAGE, out=out),
                       summaries.summarize(b[~coarse_only], ["dataset", "fine"], metrics, out=out)])
    before = summaries.summarize(b, ["dataset", "fine"], metrics, C2F_COARSE_STAGE, out=out)
    # Every row names its m^c and m^r, and panel (a)'s its ρ, rather than each panel only its own parameter.
    a_counts = {"m^c": RATIO_FIXED_COARSE, "fine": (a["rho"] * RATIO_FIXED_COARSE).round()}
    frame = pd.concat([a.assign(panel="a: fixed m^c, after fine stage", **a_counts),
                       *[part.assign(panel=f"b: fixed total, {when} fine stage", **{"m^c": RATIO_TOTAL - part["fine"]})
                         for part, when in ((before, "before"), (after, "after"))]]).rename(
        columns={"fine": "m^r", "rho": "ρ"})
    keys = ["dataset", "panel", "m^c", "m^r", "ρ"]
    frame = frame[keys + [c for c in frame.columns if c not in keys]].astype({"m^c": int, "m^r": int})   # counts
    stats_table = fine_stage_tests(b[~coarse_only], out, alternative)
    table = summaries.series_table("fig6", "Figure 6: coarse/fine ratio", frame, keys, metrics,
                                   notes=[f"(a) m^c = {RATIO_FIXED_COARSE}, m^r = ρ·m^c; (b) m^c + m^r = {RATIO_TOTAL}; "
                                          "m^r = 0 is the coarse stage alone; ρ applies to panel (a) only."] + summaries.ci_note(frame, metrics)
                                   + (["Panel (b), after against before the fine stage for every m^r > 0 (paired "
                                       "across the test users, and across seeds where there are two or more): "
                                       "fig6-stats.md."] if stats_table else [])
                                   + summaries.status_notes(pts))
    return Outputs([table] + ([stats_table] if stats_table else []), {"fig6": ratio_curves(a, after, before)})


def fine_stage_tests(runs: pd.DataFrame, out, alternative: str):
    """Figure 6 (b)'s question, tested: does the fine stage improve on its own coarse stage at each m^r? Each
    point's C2F runs against their coarse checkpoints (:func:`lwbench.studies.c2f_paper.tables.fine_against_coarse`),
    Holm within each dataset, protocol and test over all m^r and metrics; None without finished runs."""
    comparisons = []
    for (dataset, fine), group in runs[runs["status"] == "done"].groupby(["dataset", "fine"], sort=False):
        records = {int(r["seed"]): r for r in group["record"]}
        comparisons += [(protocol, ds, f"m^r = {int(fine)}: {what}", c) for protocol, ds, what, c in
                        tables.fine_against_coarse(dataset, records, out, C2F_COARSE_STAGE, alternative)]
    if not comparisons:
        return None
    return summaries.comparison_table("fig6-stats", "Figure 6 (b): C2F after against before its fine stage",
                                      comparisons, alternative, ("after", "before"))


TARGETS = tuple(register_target(target) for target in (
    Target("table3", "every method at the 500-bucket budget (Table 3)", PAPER_DATASETS, (), _table3_cells,
           _build_table3, listed=TABLE3_METHODS),
    Target("table3-storage", "Table 3 at equal stored bytes instead of equal float counts", PAPER_DATASETS, (),
           _table3_storage_cells, _build_table3_storage, listed=TABLE3_METHODS),
    Target("table4", "C2F against its coarse stage per seed (Table 4)", ("gowalla", "yelp2020"), (C2F,),
           _table4_cells, _build_table4, min_seeds=2),
    Target("fig4", "C2F component ablation (Figure 4)", ("gowalla", "yelp2020"), (C2F,), _fig4_cells, _build_fig4),
    Target("fig5", "C2F sensitivity sweeps (Figure 5)", ("gowalla", "yelp2020"), (C2F,), _fig5_cells, _build_fig5),
    Target("fig6", "C2F coarse/fine ratios (Figure 6)", ("gowalla",), (C2F,), _fig6_cells, _build_fig6),
))
