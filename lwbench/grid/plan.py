"""Run a grid of runs (datasets x methods x budgets x seeds x option sweeps) in parallel, resumably.

* **Plan** (:func:`plan_grid`): every cell is resolved with :func:`lwbench.runner.plan_runs` before
  anything trains, so a bad option fails at once; a method that cannot fit a budget only drops its
  cell (the budget curve asks for budgets some methods cannot meet). Cells that resolve to the same
  configuration share one run.
* **Execute** (:func:`run_grid`): one joblib task per run, ``jobs`` at a time, on local GPU slots or a
  dask/ray cluster (:mod:`lwbench.grid.workers`; the output folder must then be on a filesystem the
  workers share).
* **Resume**: the runner skips a run whose record exists, and the trainer resumes an unfinished run
  from ``<out>/work/<run_id>/last.pt``; per-run locks keep a rerun from training a run that a worker
  of a killed grid is still finishing.
* **Failures**: a failed run writes ``<run_id>.failed.json`` (error and traceback) and the grid goes on.
* **Progress**: a bar over the runs to train (done / running / failed, time left), fed by watching the
  output folder, so it works the same for every backend. Each run logs to ``<out>/logs/<run_id>.log``.
"""
from __future__ import annotations

import functools
import itertools
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from lwbench.budget import BudgetError
from lwbench.config import ConfigError, parse_value
from lwbench.data.cards import LoadedDataset, load_dataset
from lwbench.grid.workers import Execution, execute_task, is_running, joblib_backend
from lwbench.records import load_records
from lwbench.runner import RunSpec, find_record, plan_runs




@dataclass(frozen=True)
class DatasetRef:
    """How to load a dataset in any process: workers load it themselves (once per process) rather
    than receiving the interaction arrays pickled with every task."""

    name: str
    data_dir: str | None = None
    split_seed: int = 2024
    legacy_split_seed: int | None = None
    offline: bool | None = None

    def load(self) -> LoadedDataset:
        return _load_cached(self)


@functools.lru_cache(maxsize=8)
def _load_cached(ref: DatasetRef) -> LoadedDataset:
    return load_dataset(ref.name, data_dir=ref.data_dir, split_seed=ref.split_seed,
                        legacy_split_seed=ref.legacy_split_seed, offline=ref.offline)


@dataclass(frozen=True)
class Cell:
    """One point of a grid, before seeds: a dataset, a method, a budget and option overrides
    (``{"trainer": {...}, "<method>": {...}}``). ``coords`` are the report's coordinates of the
    point (e.g. ``{"c2f.threshold": 3}``); they do not change the run."""

    dataset: str
    method: str
    budget: str = "500buckets"
    overrides: Mapping = field(default_factory=dict)
    coords: Mapping = field(default_factory=dict)


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
                 "budget": r.cell.budget, "seed": r.spec.seed, "run_id": r.run_id,
                 "overrides": {k: dict(v) for k, v in r.cell.overrides.items()}, "coords": dict(r.cell.coords),
                 "options": r.spec.options}
                for r in self.runs]


def expand(datasets: list[str], methods: list[str], budgets: list[str], *, overrides: Mapping | None = None,
           sweeps: Mapping[str, list] | None = None) -> list[Cell]:
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
            cells.append(Cell(dataset, method, budget, cell_overrides, coords))
    return cells


def check_owners(owners: list[str], methods: list[str]) -> None:
    """Every ``--set``/``--sweep`` owner must be ``trainer`` or a method of the grid (never silently ignored)."""
    unknown = sorted(set(owners) - {"trainer"} - set(methods))
    if unknown:
        raise ConfigError(f"--set/--sweep name {', '.join(unknown)}, which is neither 'trainer' nor one of the "
                          f"grid's methods ({', '.join(methods)})")


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
              legacy_split: bool = False, offline: bool | None = None) -> GridPlan:
    """Resolve every cell and seed to a run. A cell whose method cannot fit its budget is dropped with
    its reason; every other error (unknown method or option, missing data) is raised."""
    plan = GridPlan(runs=[])
    for cell in cells:
        refs = ([DatasetRef(cell.dataset, data_dir, split_seed, seed, offline) for seed in seeds] if legacy_split
                else [DatasetRef(cell.dataset, data_dir, split_seed, None, offline)])
        for ref in refs:
            run_seeds = [ref.legacy_split_seed] if legacy_split else seeds
            try:
                specs = plan_runs([cell.method], ref.load(), cell.budget, run_seeds, cell.overrides)
            except BudgetError as exc:
                plan.dropped.append(f"{cell.dataset} {cell.method} at {cell.budget}: {exc}")
                break
            plan.runs += [GridRun(spec, cell, ref) for spec in specs]
    return plan


@dataclass
class GridOutcome:
    records: dict[str, dict]       # run_id -> record (reused and new)
    failures: dict[str, dict]      # run_id -> failure
    reused: int


def run_grid(plan: GridPlan, out: Path, execution: Execution, *, force: bool = False,
             show_progress: bool | None = None, log: Callable[[str], None] | None = None) -> GridOutcome:
    """Execute every unique run of the plan (reusing existing records unless ``force``)."""
    log = log or (lambda message: print(message, file=sys.stderr))
    out = Path(out)
    runs = plan.unique_runs()
    records = {} if force else {r.run_id: rec for r in runs if (rec := find_record(out, r.spec)) is not None}
    pending = [r for r in runs if r.run_id not in records]
    outcome = GridOutcome(records=records, failures={}, reused=len(records))
    if not pending:
        return outcome
    local = execution.backend == "local"
    threads = execution.threads or (max(1, (os.cpu_count() or 1) // execution.jobs) if local else None)
    devices, slots = (execution.devices, execution.jobs) if local else ((execution.remote_device,), 0)
    tasks = [delayed(execute_task)(run, str(out), devices, slots, threads, force) for run in pending]
    prior, unknown = estimate_seconds(pending, load_records(out), device_type(execution))
    monitor = GridProgress(pending, out, execution.jobs, show_progress, log, prior_seconds=None if unknown else prior)
    monitor.start()
    try:
        with joblib_backend(execution) as return_as:
            for result in Parallel(n_jobs=execution.jobs, batch_size=1, return_as=return_as)(tasks):
                if result.get("failure") is not None:
                    outcome.failures[result["run_id"]] = result["failure"]
                else:
                    outcome.records[result["run_id"]] = result["record"]
    finally:
        monitor.stop()
    return outcome


class GridProgress(threading.Thread):
    """Watches the output folder: finished records, fresh failure files and held run locks."""

    def __init__(self, runs: list[GridRun], out: Path, jobs: int, show: bool | None, log: Callable[[str], None],
                 every: float = 1.0, prior_seconds: float | None = None):
        super().__init__(daemon=True)
        self.runs, self.out, self.jobs, self.log, self.every = runs, Path(out), jobs, log, every
        self.prior_seconds = prior_seconds   # estimated time of all runs, from existing records (None: unknown)
        self.started = time.time()
        self.state = {r.run_id: "pending" for r in runs}
        self.bar = tqdm(total=len(runs), desc="grid", unit="run", dynamic_ncols=True,
                        bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}",
                        disable=None if show is None else not show)
        self._halt = threading.Event()

    def poll(self) -> None:
        runs_dir = self.out / "runs"
        for run_id, state in self.state.items():
            if state in ("done", "failed"):
                continue
            if (runs_dir / f"{run_id}.json").exists():
                new = "done"
            elif (failed := runs_dir / f"{run_id}.failed.json").exists() and failed.stat().st_mtime >= self.started:
                new = "failed"
            else:
                new = "running" if is_running(self.out, run_id) else "pending"
            if new != state and new in ("done", "failed"):
                with tqdm.external_write_mode(file=sys.stderr):  # keep the bar intact around the message
                    self.log(f"grid: {new} {run_id}" + (f" (traceback in {runs_dir / f'{run_id}.failed.json'})"
                                                          if new == "failed" else ""))
            self.state[run_id] = new
        counts = {s: sum(v == s for v in self.state.values()) for s in ("done", "failed", "running", "pending")}
        self.bar.n = counts["done"] + counts["failed"]
        left = self.time_left(self.bar.n)
        self.bar.set_postfix_str(f"done {counts['done']}, running {counts['running']}, failed {counts['failed']}, "
                                 f"left {'?' if left is None else format_duration(left)}", refresh=False)
        self.bar.refresh()

    def time_left(self, finished: int) -> float | None:
        """From this grid's throughput once a run has finished, before that from the prior estimate."""
        elapsed = time.time() - self.started
        if finished:
            return elapsed / finished * (len(self.state) - finished)
        if self.prior_seconds:
            return max(0.0, self.prior_seconds / max(1, self.jobs) - elapsed)
        return None

    def run(self) -> None:
        while not self._halt.wait(self.every):
            self.poll()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.poll()
        self.bar.close()


# --- plan summary ------------------------------------------------------------------------------------

def estimate_seconds(runs: list[GridRun], records: list[dict], device_type: str) -> tuple[float, int]:
    """(estimated seconds for the runs, number of runs without an estimate). Seconds per epoch come
    from existing records of the same dataset and method on the same kind of device; the number of
    epochs from those with the same epoch cap, else the cap itself (an upper bound)."""
    per_epoch, epochs = {}, {}
    for record in records:
        if str(record.get("device", "")).split(":")[0] != device_type or not record.get("epochs_run"):
            continue
        key = (record["dataset"], record["method"])
        seconds = (record["train_seconds"] + record["eval_seconds"]) / record["epochs_run"]
        per_epoch.setdefault(key, []).append(seconds)
        cap = record["config"]["trainer"]["max_epochs"]
        epochs.setdefault(key + (cap,), []).append(record["epochs_run"])
    total, unknown = 0.0, 0
    for run in runs:
        key = (run.dataset_name, run.spec.method)
        if key not in per_epoch:
            unknown += 1
            continue
        cap = run.spec.trainer.max_epochs
        expected = epochs.get(key + (cap,))
        n_epochs = statistics.median(expected) if expected else cap * len(run.spec.config["stages"])
        total += statistics.median(per_epoch[key]) * n_epochs
    return total, unknown


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def device_type(execution: Execution) -> str:
    """``cuda`` or ``cpu``: the kind of device the runs will use (remote ``auto`` judged from this machine)."""
    kind = (execution.devices[0] if execution.devices else execution.remote_device).split(":")[0]
    return ("cuda" if torch.cuda.is_available() else "cpu") if kind == "auto" else kind


def describe_plan(plan: GridPlan, out: Path, records: list[dict], execution: Execution, how: str = "") -> str:
    """The plan as text: runs per dataset and method, how many exist, estimated time."""
    out = Path(out)
    runs = plan.unique_runs()
    existing = {r.run_id for r in runs if find_record(out, r.spec) is not None}
    todo = [r for r in runs if r.run_id not in existing]
    kind = device_type(execution)
    lines = [f"plan: {len(runs)} runs ({len(existing)} reused from {out / 'runs'}, {len(todo)} to train)"
             + (f"; {how}" if how else "")]
    groups: dict[tuple, list[GridRun]] = {}
    for run in runs:
        groups.setdefault((run.dataset_name, run.spec.method, run.cell.budget), []).append(run)
    for (dataset, method, budget), group in groups.items():
        done = sum(r.run_id in existing for r in group)
        lines.append(f"  {dataset:<12} {method:<10} {budget:<11} {len(group):>4} runs  {done:>4} exist")
    seconds, unknown = estimate_seconds(todo, records, kind)
    kind = "GPU" if kind == "cuda" else "CPU"
    if todo:
        known = len(todo) - unknown
        estimate = (f"{format_duration(seconds)} of {kind} time for {known} runs measured in existing records"
                    if known else "")
        if unknown:
            estimate += ("; " if estimate else "") + f"unknown for {unknown} runs (no record of that dataset " \
                        f"and method on {kind})"
        parallel = f"; wall time ≈ {format_duration(seconds / execution.jobs)}" if execution.jobs > 0 else ""
        lines.append(f"estimated: {estimate}" + (parallel if seconds and not unknown else ""))
    for reason in plan.dropped:
        lines.append(f"  dropped: {reason}")
    return "\n".join(lines)


def summarize_failures(failures: dict[str, dict], out: Path) -> str:
    lines = [f"{len(failures)} run(s) FAILED (the others completed):"] if failures else []
    for run_id, failure in failures.items():
        lines.append(f"  {run_id}: {failure['error']}  (traceback: {Path(out) / 'runs' / f'{run_id}.failed.json'})")
    return "\n".join(lines)
