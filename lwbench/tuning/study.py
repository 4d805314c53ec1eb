"""A tuning study: the same number of trials for every method, successive halving over epoch rungs, selection
by validation only, and the chosen configuration retrained on the table's seeds (docs/protocol.md §10.12).

**Brackets.** Each cell (a dataset, a method with its fixed options, a budget; e.g. every cell of a target) is
one bracket. Every bracket gets the same ``trials`` (:mod:`lwbench.tuning.space`: trial 0 is the defaults, the
others drawn from the declared search space with a seeded generator) and the same rungs.

**Rungs.** ``rungs`` are epoch caps, e.g. ``(10, 30)``, followed by a full run (the protocol's epochs with its
early stopping). Rung ``i`` holds ``n_i`` trials: ``n_0 = trials``, ``n_{i+1} = ceil(n_i / eta)`` (at least 1);
the ``n_{i+1}`` best of rung ``i`` by the validation value of the early-stopping metric (the reported
checkpoint's, as the run's record states it; ties go to the lower trial index, so to the defaults) go on to the
next rung, and the best of the full rung is chosen. The defaults (trial 0) always join the full rung, whether or
not the short rungs promoted them (:func:`defaults_join`): short rungs favour what learns fast, and the defaults'
full run is the untuned table's run, copied where it exists, so a tuned configuration is chosen only where it
beats the defaults at the protocol's epochs. A lower rung where nobody would be stopped is skipped. With 8
trials, eta 3 and rungs 10, 30: 8 runs of at most 10 epochs, 3 of at most 30, one full run (two where the
defaults were not promoted).

A rung's run is an ordinary run with ``trainer.max_epochs`` set to the cap: a grid point like any other, with its
record, its resume file, its lock, on the grid's parallel workers. A promoted trial is **trained again from
scratch** at the next rung, not continued from its lower rung's weights. Continuing would make a rung's result
depend on another run's files, and a capped run is not the beginning of a longer one in general: the cap
applies to every stage (PEP's and CERP's searches end cut short and retrain from the largest values; a C2F
fine stage starts from a capped coarse stage), and a two-phase stage leaves FIXED early to give UPDATE its epoch
(docs/protocol.md §3.4). Retraining costs at most the lower rungs' epochs of the promoted trials again: with
caps growing by eta, about 1/eta of the trials' epochs. The price of short rungs is that they rank
configurations by what they reach early, for multi-stage methods by a shortened pipeline; this holds for every
method alike, and the full rung decides among the survivors.

**Records.** Trials train in ``OUT/tuning/<study>/`` (its own ``runs/``, ``logs/``, ``locks/``), so they never
enter ``OUT``'s tables. Every run of a study, trial or retraining, carries ``config.tuning = {"study": name,
"trial": k}``, which the configuration hash covers, and its label ends with ``@<study>`` (``ud-128@lastfm``): a
record of a tuned run always says which study chose it, and never stands in for (or is stood in for by) a run of
another study or of the untuned protocol. Two kinds of run are copied instead of trained twice, since the tag
changes nothing that is computed: the chosen trial's full run on the trials' seed is its retraining on that seed
(copied from the trials' folder into ``OUT/runs``, with ``adopted_from`` naming the trial, whose seconds the
study's cost holds), and trial 0 at the full rung is the untuned protocol's run
(the defaults at the protocol's epochs), so where ``OUT/runs`` holds that run's record on the same seed, the
record is copied under the tuned run's name with ``adopted_from`` naming the untuned run. Tuning a table after
its default runs therefore costs no full run for a method whose defaults win. The same command twice draws the same trials, finds their records and trains nothing; a study
killed at any point resumes from its records (and the trainer from its resume files) and ends identically.
A trial that diverged (:class:`~lwbench.training.trainer.DivergedError`) stays failed on a rerun unless
``retry_failed``; a trial that failed otherwise (out of memory, a full disk, a bug fixed since) is trained again.
A failed trial is never promoted.

**Outputs.** ``OUT/tuning/<study>.json`` (the study file), ``OUT/grids/tuned-<study>.json`` (the manifest of the
retrained runs; ``report`` builds the ``tuned`` target from it, :mod:`lwbench.studies.tuned`) and the tables. Both
files gather the brackets of every command of the study (e.g. one per method), each read, merged and written
under a lock in ``OUT/locks/``, so that commands running side by side keep each other's entries.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lwbench.budget import TABLE3, BudgetError
from lwbench.config import ConfigError, config_hash
from lwbench.files import atomic_write_json, exclusive_lock, prepare_output
from lwbench.grid.plan import GridPlan, GridRun, plan_grid
from lwbench.grid.run import (
    copy_as_run,
    device_type,
    estimate_seconds,
    existing_records,
    run_grid,
    summarize_failures,
)
from lwbench.grid.workers import ExecutionRequest, make_execution
from lwbench.logs import format_duration
from lwbench.options import Option
from lwbench.records import (
    failure_path,
    find_record,
    load_records,
    read_manifests,
    write_manifest,
)
from lwbench.registry import get_method
from lwbench.reports.cell import Cell
from lwbench.studies.tuned import TUNED, manifest_name, read_study, study_path, trials_folder
from lwbench.training.trainer import DivergedError
from lwbench.tuning.space import (
    as_overrides,
    bracket_space,
    check_space_names,
    describe_settings,
    describe_space,
    draw_trials,
)

logger = logging.getLogger(__name__)

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
FULL = None   # the cap of the last rung: the protocol's epochs
DEFAULTS = 0  # the trial of the defaults


@dataclass(frozen=True)
class StudySettings:
    """What makes two studies the same: the trials, the rungs and the seeds (docs/protocol.md §10.12)."""

    name: str
    trials: int = 8
    eta: int = 3
    rungs: tuple[int, ...] = (10, 30)      # epoch caps of the rungs before the full one
    seeds: tuple[int, ...] = (2024,)       # the chosen configuration is retrained on these
    search_seed: int = 0                   # keys the trials' draws
    trial_seed: int | None = None          # the seed the trials train with (None: the first of ``seeds``)
    space: tuple[str, ...] | None = None   # only these owner.option names (None: every declared range)
    retry_failed: bool = False

    def __post_init__(self):
        if not STUDY_NAME.fullmatch(self.name):
            raise ConfigError(f"--study {self.name!r}: a study name is 1 to 80 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit (it names files)")
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}")
        if self.eta < 2:
            raise ConfigError(f"--eta must be at least 2 (the fraction 1/eta of a rung goes on), got {self.eta}")
        if any(cap < 1 for cap in self.rungs) or list(self.rungs) != sorted(set(self.rungs)):
            raise ConfigError(f"--rungs must be increasing epoch caps of at least 1, got "
                              f"{','.join(map(str, self.rungs))}")
        if not self.seeds:
            raise ConfigError("--seeds is empty")

    @property
    def seed_of_trials(self) -> int:
        return self.seeds[0] if self.trial_seed is None else self.trial_seed

    def schedule(self) -> list[tuple[int | None, int]]:
        """``(epoch cap or None for the full rung, trials in it)`` per rung; a lower rung that would stop
        nobody is left out."""
        counts = [self.trials]
        for _ in self.rungs:
            counts.append(max(1, math.ceil(counts[-1] / self.eta)))
        rungs = [(cap, n) for cap, n, after in zip(self.rungs, counts, counts[1:]) if n > after]
        return rungs + [(FULL, counts[-1])]

    def to_dict(self) -> dict:
        return {"trials": self.trials, "eta": self.eta, "rungs": list(self.rungs), "seeds": list(self.seeds),
                "search_seed": self.search_seed, "trial_seed": self.seed_of_trials,
                "space": None if self.space is None else list(self.space),
                "schedule": [[cap, n] for cap, n in self.schedule()]}


@dataclass
class Bracket:
    """One cell's tuning: its trials, their runs per rung, and what was chosen."""

    key: str
    cell: Cell
    label: str                      # the method's label at the cell's options (``ud-64``)
    dataset: str
    full_epochs: int                # max_epochs of a full run
    metric: str                     # the early-stopping metric: selection looks at nothing else
    space: dict[str, Option]
    defaults: dict[str, Any]        # the searched options' values in trial 0
    trials: list[dict[str, Any]]    # flat settings per trial; trials[0] == {}
    runs: dict[tuple[int, int | None], GridRun | str] = field(default_factory=dict)  # (trial, cap) -> run or error
    rungs: list[dict] = field(default_factory=list)
    results: dict[int, list[dict]] = field(default_factory=dict)    # trial -> its rung results
    chosen: int | None = None
    status: str = "planned"

    def overrides(self, trial: int, cap: int | None) -> dict:
        merged = {owner: dict(options) for owner, options in self.cell.overrides.items()}
        for owner, options in as_overrides(self.trials[trial]).items():
            merged.setdefault(owner, {}).update(options)
        if cap is not None and cap < self.full_epochs:
            merged.setdefault("trainer", {})["max_epochs"] = cap
        return merged


@dataclass
class TuneOptions:
    settings: StudySettings
    out: Path
    data: dict = field(default_factory=dict)          # plan_grid's data options
    figures_dir: Path = Path("figures")
    alternative: str = "two-sided"
    base_target: str | None = None                    # the target whose cells are tuned, if any
    manifest_info: dict = field(default_factory=dict)  # the base target's notes (missing methods, ...)
    force: bool = False
    plan_only: bool = False
    show_progress: bool | None = None


# --- planning ----------------------------------------------------------------------------------------------

def tagged(run: GridRun, study: str, trial: int) -> GridRun:
    """``run`` as a run of ``study``'s trial ``trial``: ``config.tuning`` names both (and is hashed), and the
    label ends with ``@study``."""
    config = {**run.spec.config, "tuning": {"study": study, "trial": trial}}
    spec = dataclasses.replace(run.spec, label=f"{run.spec.label}@{study}", config=config,
                               config_hash=config_hash(config))
    return dataclasses.replace(run, spec=spec)


def plan_one(cell: Cell, seeds: list[int], data: dict) -> list[GridRun]:
    return plan_grid([cell], seeds, drop_unfit=False, **data).runs


def bracket_key(cell: Cell, dataset: str, label: str) -> str:
    key = f"{dataset}/{label}/{cell.budget}" + ("" if cell.accounting == TABLE3 else f"/{cell.accounting}")
    return key + "".join(f"/{k}={v}" for k, v in sorted(cell.coords.items()))


def plan_brackets(cells: list[Cell], settings: StudySettings, data: dict) -> list[Bracket]:
    """Every cell's bracket with its space and trials drawn; errors in the cell itself (trial 0) are raised,
    a sampled trial that cannot be planned (e.g. it does not fit the budget) is marked invalid."""
    methods = {cell.method: get_method(cell.method) for cell in cells}
    if settings.space is not None:
        check_space_names(list(settings.space), list(methods.values()))
    brackets: dict[str, Bracket] = {}
    for cell in cells:
        (base,) = plan_one(cell, [settings.seed_of_trials], data)
        spec = base.spec
        dataset = spec.config["dataset"]["name"]
        key = bracket_key(cell, dataset, spec.label)
        if key in brackets:
            continue
        space = bracket_space(methods[cell.method], cell.overrides,
                              None if settings.space is None else list(settings.space))
        defaults = {name: (spec.config["trainer"] if name.startswith("trainer.") else spec.options)
                    [name.partition(".")[2]] for name in space}
        draw_key = f"{settings.search_seed}/{dataset}/{cell.method}/{cell.budget}/{cell.accounting}"
        trials = draw_trials(space, settings.trials, draw_key, defaults, what=key)
        bracket = Bracket(key, cell, spec.label, dataset, spec.trainer.max_epochs, spec.trainer.early_stop_metric,
                          space, defaults, trials)
        bracket.runs[(0, FULL)] = tagged(base, settings.name, 0)
        brackets[key] = bracket
    return list(brackets.values())


def trial_run(bracket: Bracket, trial: int, cap: int | None, settings: StudySettings, data: dict) -> GridRun | str:
    """The run of ``trial`` at a rung (planned once), or the reason it cannot be planned."""
    cap = None if cap is None or cap >= bracket.full_epochs else cap   # a cap at or over the full epochs: full
    if (trial, cap) not in bracket.runs:
        cell = dataclasses.replace(bracket.cell, overrides=bracket.overrides(trial, cap))
        try:
            (run,) = plan_one(cell, [settings.seed_of_trials], data)
            bracket.runs[(trial, cap)] = tagged(run, settings.name, trial)
        except (ConfigError, BudgetError) as exc:
            bracket.runs[(trial, cap)] = f"{type(exc).__name__}: {exc}"
    return bracket.runs[(trial, cap)]


# --- selection: validation values only ----------------------------------------------------------------------

def validation_value(record: dict, metric: str) -> float:
    """The value a trial is ranked by: the validation ``metric`` of the run's reported checkpoint. Test
    metrics are never read."""
    return float(record["metrics"]["valid"][metric])


def defaults_join(bracket: Bracket, promoted: list[int]) -> bool:
    """Whether the defaults (trial 0) join the full rung beside the ``promoted`` trials: always, unless they are
    among them or their last run failed. Short rungs favour what learns fast (high learning rates; methods whose
    later stages or phases a cap cuts short), so they may drop the defaults; their full run is the untuned
    protocol's run, copied where the untuned table holds it, and with it in the full rung a tuned configuration
    is chosen only where it beats the defaults on validation at the protocol's epochs."""
    return DEFAULTS not in promoted and bracket.results.get(DEFAULTS, [{}])[-1].get("status") == "done"


def promote(values: dict[int, float | None], n: int) -> list[int]:
    """The ``n`` best trials by validation value (higher is better; ties to the lower trial index); trials
    without a value (failed, invalid) never go on."""
    ranked = sorted((t for t, v in values.items() if v is not None and not math.isnan(v)),
                    key=lambda t: (-values[t], t))
    return ranked[:n]


# --- running ------------------------------------------------------------------------------------------------

def failed_before(out: Path, run: GridRun) -> dict | None:
    """The failure file a run of the same configuration left, if the run diverged (:class:`DivergedError`: the
    same configuration and seed diverge again). Any other failure (out of memory, a full disk, a bug fixed
    since; or a failure file that does not say its error's type) is None: the trial is trained again."""
    import json
    path = failure_path(out, run.run_id)
    if not path.exists():
        return None
    try:
        failure = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(failure, dict) or failure.get("config_hash") != run.spec.config_hash:
        return None
    return failure if failure.get("error_type") == DivergedError.__name__ else None


def counts(runs: list[GridRun], existing: dict) -> str:
    return f"{len(runs)} runs ({len(existing)} exist, {len(runs) - len(existing)} to train)"


def found(runs: list[GridRun], out: Path, options: TuneOptions) -> dict[str, dict]:
    """run_id -> record of the (unique) runs whose record ``out`` holds (none with ``force``): read once, then
    counted, extended by the records copied in and handed to :func:`execute`."""
    return {} if options.force else existing_records(runs, out)


def execute(runs: list[GridRun], existing: dict[str, dict], out: Path, options: TuneOptions,
            request: ExecutionRequest) -> tuple[dict, dict]:
    """Run the (unique) runs that ``existing`` (:func:`found`) has no record of (through the grid: locks, workers,
    resume); returns (run_id -> record, run_id -> failure)."""
    records = dict(existing)
    pending = [r for r in runs if r.run_id not in records]
    if not pending:
        return records, {}
    execution, how = make_execution(request, pending, load_records(out))
    logger.info("%s", how)
    outcome = run_grid(GridPlan(runs=pending), out, execution, force=options.force,
                       show_progress=options.show_progress)
    return {**records, **outcome.records}, dict(outcome.failures)


def run_rung(brackets: list[Bracket], active: dict[str, list[int]], cap: int | None, index: int, n_rungs: int,
             options: TuneOptions, request: ExecutionRequest) -> None:
    """Train (or find) every active trial's run at this rung; record each trial's result in its bracket."""
    settings, trials_out = options.settings, trials_folder(options.out, options.settings.name)
    wanted: list[tuple[Bracket, int, GridRun | str]] = [
        (b, t, trial_run(b, t, cap, settings, options.data)) for b in brackets for t in active.get(b.key, [])]
    runs = [run for _, _, run in wanted if isinstance(run, GridRun)]
    reuse_failures = not (settings.retry_failed or options.force)
    earlier = {run.run_id: failure for run in runs if reuse_failures and (failure := failed_before(trials_out, run))}
    unique = GridPlan(runs=[run for run in runs if run.run_id not in earlier]).unique_runs()
    existing = found(unique, trials_out, options)
    adopted = {} if options.force else adopt_untuned_records(
        options.out, trials_out, [run for run in unique if run.run_id not in existing])
    existing.update(adopted)
    what = f"at most {cap} epoch{'s' if cap != 1 else ''} per stage" if cap is not None else \
        "full runs (the protocol's epochs)"
    print(f"rung {index + 1}/{n_rungs}: {max(len(v) for v in active.values())} trial(s) per method, {what}: "
          f"{counts(unique, existing)}"
          + (f", {len(earlier)} diverged earlier (not retried)" if earlier else "")
          + (f", {len(adopted)} of them the untuned runs in {options.out} (copied)" if adopted else ""), flush=True)
    records, failures = execute(unique, existing, trials_out, options, request)
    failures.update(earlier)
    for bracket, trial, run in wanted:
        result = {"max_epochs": cap, "run_id": None, "status": "invalid", "valid": None}
        if isinstance(run, str):
            result["error"] = run
        else:
            result["run_id"] = run.run_id
            record = records.get(run.run_id)
            if record is not None:
                result.update(status="done", valid=validation_value(record, bracket.metric),
                              epochs_run=record["epochs_run"], train_seconds=record["train_seconds"],
                              eval_seconds=record["eval_seconds"], copied=bool(record.get("adopted_from")))
            else:
                failure = failures.get(run.run_id, {})
                result.update(status="failed", error=failure.get("error", "no record"))
        bracket.results.setdefault(trial, []).append(result)


def run_study(brackets: list[Bracket], options: TuneOptions, request: ExecutionRequest) -> None:
    """Every rung of every bracket, in lockstep (one grid per rung, so methods train side by side)."""
    schedule = options.settings.schedule()
    active = {b.key: list(range(len(b.trials))) for b in brackets}
    for index, (cap, _) in enumerate(schedule):
        active = {key: trials for key, trials in active.items() if trials}
        if not active:
            break
        run_rung(brackets, active, cap, index, len(schedule), options, request)
        following = schedule[index + 1][1] if index + 1 < len(schedule) else 1
        for bracket in brackets:
            if bracket.key not in active:
                continue
            values = {t: bracket.results[t][-1]["valid"] for t in active[bracket.key]}
            kept = promote(values, following)
            guarded = index + 2 == len(schedule) and defaults_join(bracket, kept)   # the next rung is the full one
            kept = kept + [DEFAULTS] if guarded else kept
            bracket.rungs.append({"max_epochs": cap, "trials": len(values), "run": active[bracket.key],
                                  "valid": values, "promoted": kept, "defaults_added": guarded})
            shown = " ".join(f"t{t} {'–' if v is None else f'{v:.4f}'}" for t, v in values.items())
            last = index + 1 == len(schedule)
            print(f"  {bracket.key}: {bracket.metric} {shown} -> "
                  + ("chosen " if last else "promoted ") + (", ".join(f"t{t}" for t in kept) or "none")
                  + (f" (t{DEFAULTS}, the defaults, always runs in full)" if guarded else ""), flush=True)
            active[bracket.key] = kept
            if not kept:
                bracket.status = f"failed: no trial finished rung {index + 1}"
            elif last:
                bracket.chosen, bracket.status = kept[0], "done"
        write_study(brackets, options, final=False)


# --- retraining and outputs -----------------------------------------------------------------------------------

def adopt_trial_record(trials_out: Path, out: Path, run: GridRun) -> dict | None:
    """Copy the record (and per-user file) of a trial run that is the same configuration as ``run`` into
    ``out`` (which has no record of it), so that it is not trained twice; returns the record written, or None
    when there is none. The copy's ``adopted_from`` names the run that trained: the trial, or, where the trial
    is itself a copy (the defaults' run, copied from the untuned table), the trial's own source. Its seconds
    are counted there, so a table over the retrained runs does not charge them again."""
    record = find_record(trials_out, run.run_id, run.spec.config_hash)
    if record is None:
        return None
    origin = record.get("adopted_from") or {
        "run_id": record["run_id"], "config_hash": record["config_hash"],
        "why": f"the chosen trial's full run on the trials' seed, in {trials_out.parent.name}/{trials_out.name} "
               "(counted in the study's cost)"}
    return copy_as_run(trials_out, record, out, run, adopted_from=origin)


def untuned_twin(run: GridRun) -> GridRun:
    """The untuned protocol's run that a run of a study repeats: its configuration without ``config.tuning``,
    its label without ``@study``. It computes the same numbers; only trial 0 at the full rung has one that
    a default table trains (every other trial changes a setting, every capped run the epochs)."""
    study = run.spec.config["tuning"]["study"]
    config = {key: value for key, value in run.spec.config.items() if key != "tuning"}
    spec = dataclasses.replace(run.spec, label=run.spec.label.removesuffix(f"@{study}"), config=config,
                               config_hash=config_hash(config))
    return dataclasses.replace(run, spec=spec)


def untuned_record(untuned_out: Path, run: GridRun) -> dict | None:
    twin = untuned_twin(run)
    return find_record(untuned_out, twin.run_id, twin.spec.config_hash)


def adopt_untuned_records(untuned_out: Path, out: Path, runs: list[GridRun]) -> dict[str, dict]:
    """Copy into ``out`` the record of every one of ``runs`` (runs ``out`` has no record of) whose untuned twin
    has a record in ``untuned_out`` (:func:`untuned_twin`), with ``adopted_from`` naming that record; returns
    run_id -> the record written, for those copied."""
    copied = {}
    for run in runs:
        record = untuned_record(untuned_out, run)
        if record is None:
            continue
        copied[run.run_id] = copy_as_run(untuned_out, record, out, run, adopted_from={
            "run_id": record["run_id"], "config_hash": record["config_hash"],
            "why": "the untuned run of the same configuration and seed (config.tuning changes nothing computed)"})
    return copied


def retrain_runs(bracket: Bracket, settings: StudySettings, data: dict) -> list[GridRun]:
    cell = dataclasses.replace(bracket.cell, overrides=bracket.overrides(bracket.chosen, FULL))
    return [tagged(run, settings.name, bracket.chosen) for run in plan_one(cell, list(settings.seeds), data)]


def manifest_rows(bracket: Bracket, runs: list[GridRun]) -> list[dict]:
    rows = GridPlan(runs=runs).manifest_rows()
    for row in rows:
        row.update(label=bracket.label, bracket=bracket.key, trial=bracket.chosen)
    return rows


def bracket_entry(bracket: Bracket, settings: StudySettings, retrained: list[dict]) -> dict:
    runs = {}
    for results in bracket.results.values():
        for result in results:
            if result["status"] == "done":
                runs[result["run_id"]] = result
    # The study's own cost: a run copied from the untuned table (the defaults' full run) was trained, and is
    # counted, there.
    trained = [r for r in runs.values() if not r.get("copied")]
    cost = {"runs": len(trained), "copied": len(runs) - len(trained), "epochs": sum(r["epochs_run"] for r in trained),
            "train_seconds": sum(r["train_seconds"] for r in trained),
            "eval_seconds": sum(r["eval_seconds"] for r in trained)}
    chosen = None
    if bracket.chosen is not None:
        settings_chosen = bracket.trials[bracket.chosen]
        chosen = {"trial": bracket.chosen, "settings": settings_chosen,
                  "described": describe_settings(settings_chosen),
                  "overrides": bracket.overrides(bracket.chosen, FULL),
                  "valid": bracket.results[bracket.chosen][-1]["valid"]}
    return {"dataset": bracket.dataset, "method": bracket.cell.method, "label": bracket.label,
            "budget": bracket.cell.budget, "budgeted": get_method(bracket.cell.method).budgeted,
            "accounting": bracket.cell.accounting, "coords": dict(bracket.cell.coords),
            "fixed": bracket.cell.overrides, "metric": bracket.metric, "full_epochs": bracket.full_epochs,
            "settings": settings.to_dict(), "space": describe_space(bracket.space), "defaults": bracket.defaults,
            "trials": [{"trial": t, "settings": s, "described": describe_settings(s),
                        "rungs": bracket.results.get(t, [])} for t, s in enumerate(bracket.trials)],
            "rungs": bracket.rungs, "chosen": chosen, "cost": cost, "retrained": retrained, "status": bracket.status}


def merge_lock(out: Path, name: str) -> Path:
    """``<out>/locks/<name>.lock``: held around each read-merge-write of a file that several commands (a study's
    tunes of different cells, on one output folder) merge into, so that none loses another's entries."""
    return Path(out) / "locks" / f"{name}.lock"


def write_study(brackets: list[Bracket], options: TuneOptions, final: bool, retrained: dict | None = None) -> dict:
    """Write (merge) the study file: this command's brackets replace their earlier entries, others stay."""
    settings = options.settings
    entries = {bracket.key: bracket_entry(bracket, settings, (retrained or {}).get(bracket.key, []))
               for bracket in brackets}
    with exclusive_lock(merge_lock(options.out, f"study-{settings.name}")):
        study = read_study(options.out, settings.name) or {"study": settings.name, "brackets": {}}
        study["brackets"].update(entries)
        study.update(written_at=dt.datetime.now(dt.timezone.utc).isoformat(), finished=final,
                     trials_folder=str(trials_folder(options.out, settings.name).relative_to(options.out)))
        atomic_write_json(study_path(options.out, settings.name), study)
    return study


def write_study_manifest(options: TuneOptions, rows: list[dict], keys: set[str]) -> str:
    """The tuned target's manifest: this command's rows, plus earlier rows of other brackets of the study."""
    name = manifest_name(options.settings.name)
    with exclusive_lock(merge_lock(options.out, f"manifest-{name}")):
        earlier = read_manifests(options.out).get(name, {}).get("rows", [])
        rows = [row for row in earlier if row.get("bracket") not in keys] + rows
        write_manifest(options.out, name, rows, target=TUNED, study=options.settings.name,
                       base_target=options.base_target, seeds=list(options.settings.seeds), **options.manifest_info)
    return name


def retrain(brackets: list[Bracket], options: TuneOptions, request: ExecutionRequest) -> tuple[int, dict]:
    """Retrain every chosen configuration on the seeds (taking the chosen trial's full run, or the untuned run
    where the defaults were chosen, when it is the same run); writes the manifest first, so that an unfinished
    run shows as missing."""
    settings, out = options.settings, options.out
    trials_out = trials_folder(out, settings.name)
    done = [b for b in brackets if b.chosen is not None]
    runs, rows, retrained = [], [], {}
    for bracket in done:
        planned = retrain_runs(bracket, settings, options.data)
        runs += planned
        rows += manifest_rows(bracket, planned)
        retrained[bracket.key] = [{"seed": r.spec.seed, "run_id": r.run_id} for r in planned]
    name = write_study_manifest(options, rows, {b.key for b in done})
    unique = GridPlan(runs=runs).unique_runs()
    existing = found(unique, out, options)
    copied, adopted = {}, {}
    if not options.force:
        copied = {run.run_id: record for run in unique if run.run_id not in existing
                  and (record := adopt_trial_record(trials_out, out, run)) is not None}
        existing.update(copied)
        adopted = adopt_untuned_records(out, out, [run for run in unique if run.run_id not in existing])
        existing.update(adopted)
    print(f"retrain on seeds {', '.join(map(str, settings.seeds))}: {counts(unique, existing)}"
          + (f", {len(copied)} of them the chosen trials' full runs (copied)" if copied else "")
          + (f", {len(adopted)} of them the untuned runs (copied)" if adopted else ""), flush=True)
    _, failures = execute(unique, existing, out, options, request)
    if failures:
        logger.error("%s", summarize_failures(failures, out))
    for bracket in done:
        for entry in retrained[bracket.key]:
            entry["status"] = "failed" if entry["run_id"] in failures else "done"
    return (1 if failures else 0), {"manifest": name, "retrained": retrained}


def describe(brackets: list[Bracket], settings: StudySettings, trials_only: bool = False) -> str:
    schedule = ", then ".join(f"{n} {'full' if cap is None else f'at <= {cap} epoch' + ('s' if cap != 1 else '')}"
                              for cap, n in settings.schedule())
    lines = [f"study {settings.name}: {len(brackets)} method(s), {settings.trials} trials each (trial 0: defaults), "
             f"rungs: {schedule} (eta {settings.eta}); trials train with seed {settings.seed_of_trials}, the chosen "
             f"configuration is retrained on seeds {', '.join(map(str, settings.seeds))}"]
    for bracket in brackets:
        space = "; ".join(f"{name} {text}" for name, text in describe_space(bracket.space).items()) or "nothing"
        lines.append(f"  {bracket.key}: searches {space}")
        if not trials_only:
            continue
        for trial, values in enumerate(bracket.trials):
            shown = describe_settings(values) if trial else f"defaults ({describe_settings(bracket.defaults)})"
            lines.append(f"    t{trial}: {shown}")
    return "\n".join(lines)


def estimate(brackets: list[Bracket], options: TuneOptions, request: ExecutionRequest) -> str:
    """The study's estimated run time from existing records' epoch times, as the grid estimates its plans (the
    first trials stand for whoever will be promoted, the defaults for whatever will be chosen)."""
    settings = options.settings
    trials_out = trials_folder(options.out, settings.name)
    records = load_records(options.out) + load_records(trials_out)
    schedule = settings.schedule()
    # the first trials stand for the promoted ones; the full rung of a halving adds the defaults (trial 0)
    trials = [run for cap, n in schedule for b in brackets
              for t in range(min(n + (cap is FULL and len(schedule) > 1), len(b.trials)))
              if isinstance(run := trial_run(b, t, cap, settings, options.data), GridRun)]
    others = [s for s in settings.seeds if s != settings.seed_of_trials]
    retrains = [tagged(run, settings.name, 0) for b in brackets for run in plan_one(b.cell, others, options.data)]
    execution, _ = make_execution(request, trials, records)
    lines = []
    for what, runs, out in (("trials", trials, trials_out), ("retraining", retrains, options.out)):
        unique = GridPlan(runs=runs).unique_runs()
        existing = existing_records(unique, out)
        new = [r for r in unique if r.run_id not in existing]
        seconds, unknown = estimate_seconds(new, records, device_type(execution), out)
        text = f"{what}: {len(unique)} runs, {len(new)} to train"
        if len(new) > unknown:
            text += f", {format_duration(seconds)} of run time estimated for {len(new) - unknown} from existing records"
        if unknown:
            text += f", no estimate for {unknown} (no record of that dataset and method)"
        adoptable = [r for r in new if untuned_record(options.out, r) is not None]
        if adoptable:
            saved, _ = estimate_seconds(adoptable, records, device_type(execution), out)
            text += (f"; {len(adoptable)} of them ({format_duration(saved)}) are untuned runs with a record in "
                     f"{options.out}, copied instead of trained where the defaults reach the full rung or are chosen")
        lines.append(text)
    lines.append(f"(the chosen trial's full run is its retraining on seed {settings.seed_of_trials}; with "
                 f"{execution.jobs} run(s) at a time, the wall time is about the run time / {execution.jobs})")
    return "\n".join(lines)


def tune(cells: list[Cell], options: TuneOptions, request: ExecutionRequest) -> int:
    """Plan the study; unless ``plan_only``, run its rungs, retrain the chosen configurations, write the study
    file and the manifest, and print the tables. Returns the exit status (1 when a method has no result or a
    retraining failed)."""
    settings = options.settings
    brackets = plan_brackets(cells, settings, options.data)
    print(describe(brackets, settings, trials_only=options.plan_only))
    if options.plan_only:
        print(estimate(brackets, options, request))
        return 0
    prepare_output(options.out)
    prepare_output(trials_folder(options.out, settings.name))
    write_study(brackets, options, final=False)
    run_study(brackets, options, request)
    for bracket in brackets:
        if bracket.chosen is not None:
            result = bracket.results[bracket.chosen][-1]
            print(f"chosen for {bracket.key}: trial {bracket.chosen} ({describe_settings(bracket.trials[bracket.chosen])}), "
                  f"validation {bracket.metric} {result['valid']:.4f}")
    status, summary = retrain(brackets, options, request)
    study = write_study(brackets, options, final=True, retrained=summary["retrained"])
    for key in (b.key for b in brackets):
        cost = study["brackets"][key]["cost"]
        print(f"trials of {key}: {cost['runs']} runs, {cost['epochs']} epochs, "
              f"{cost['train_seconds'] + cost['eval_seconds']:.0f} s training + evaluation")
    from lwbench.reports.targets import build_target
    build_target(summary["manifest"], options.out, options.figures_dir, options.alternative)
    print(f"\nstudy file: {study_path(options.out, settings.name)}; trials: {trials_folder(options.out, settings.name)}")
    unfinished = [b.key for b in brackets if b.chosen is None]
    if unfinished:
        logger.error("no configuration chosen for %s (every trial failed; see the study file)", ", ".join(unfinished))
    return 1 if status or unfinished else 0
