"""Execute a grid plan: one joblib task per run, ``jobs`` at a time, on local GPU slots or a dask/ray
cluster (:mod:`lwbench.grid.workers`; the output folder must then be on a filesystem the workers share).

* **Resume**: a run whose record exists is skipped, and the trainer resumes an unfinished run from
  ``<out>/work/<run_id>/last.pt``; per-run locks keep a rerun from training a run that a worker of a
  killed grid is still finishing.
* **A configuration is not trained twice**: the budget reaches training only through the method's resolved
  options, so a run whose configuration apart from the budget equals a record's (UD under every budget; QR at
  x% of the parameters and of the bytes) copies that record rather than train again (:func:`configuration_twins`).
* **Order**: the first run of each shared stage not yet trained starts before the second of any
  (:func:`spread_shared_stages`), so workers train different stages rather than wait for one.
* **Failures**: a failed run writes ``<run_id>.failed.json`` (error, its type and traceback) and the grid goes on.
* **Progress**: a bar over the runs to train (done / running / failed, time left), fed by watching the
  output folder, so it works the same for every backend. Each run logs to ``<out>/logs/<run_id>.log``. The
  time left comes from each run's estimate (:func:`estimate_run_seconds`) where every run has one, so a
  resumed run that finishes early or a short run ahead of long ones does not shorten it; else from the
  grid's throughput.
"""
from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from lwbench.budget import TABLE3
from lwbench.config import config_hash
from lwbench.files import prepare_output
from lwbench.grid.plan import GridPlan, GridRun
from lwbench.grid.runner import budget_entry, shared_stages
from lwbench.grid.workers import Execution, execute_task, is_running, joblib_backend, run_log_path
from lwbench.logs import format_duration
from lwbench.records import copy_record, failure_path, find_record, load_records, record_path, stage_shares
from lwbench.training.persistence import shared_stage_finished

logger = logging.getLogger(__name__)


@dataclass
class GridOutcome:
    records: dict[str, dict]       # run_id -> record (reused and new)
    failures: dict[str, dict]      # run_id -> failure
    reused: int


def run_grid(plan: GridPlan, out: Path, execution: Execution, *, force: bool = False,
             show_progress: bool | None = None) -> GridOutcome:
    """Execute every unique run of the plan (reusing existing records unless ``force``)."""
    out = Path(out)
    prepare_output(out)   # an unusable --out is one error naming it, before anything trains
    runs = plan.unique_runs()
    if not force:
        adopt_configuration_twins(runs, out)
    records = {} if force else existing_records(runs, out)
    for run_id in records:
        logger.info("%s: record exists (same config hash), skipping", run_id)
    pending = spread_shared_stages([r for r in runs if r.run_id not in records], out)
    outcome = GridOutcome(records=records, failures={}, reused=len(records))
    if not pending:
        return outcome
    local = execution.backend == "local"
    threads = execution.threads or (max(1, (os.cpu_count() or 1) // execution.jobs) if local else None)
    devices, slots = (execution.devices, execution.jobs) if local else ((execution.remote_device,), 0)
    # One local run at a time trains in this process (joblib runs n_jobs=1 inline) and shows the trainer's
    # own bar; workers never draw bars, the grid's bar follows them instead.
    inline = local and execution.jobs == 1
    tasks = [delayed(execute_task)(run, str(out), devices, slots, threads, force, show_progress if inline else False,
                                   os.getpid() if local else None)
             for run in pending]
    estimates = estimate_run_seconds(pending, load_records(out), device_type(execution), out)
    # The monitor follows workers through the output folder; its bar stays hidden while a run trains inline.
    monitor = GridProgress(pending, out, execution.jobs, False if inline else show_progress,
                           estimates=None if None in estimates.values() else estimates, announce_starts=not inline)
    monitor.start()
    as_they_finish = True

    def finished_text(finished: int) -> str:
        """How far the grid is, in every done or failed line: a log file has no bar. A backend that returns
        results only at the end (ray) gets no time left, which its finish times could not tell."""
        if not as_they_finish or finished == len(pending):
            return f"{finished}/{len(pending)} finished"
        monitor.poll()   # the run just returned may not have been seen finished yet
        left = monitor.time_left(finished)
        return f"{finished}/{len(pending)} finished" + (f", about {format_duration(left)} left" if left else "")

    try:
        with joblib_backend(execution) as return_as:
            as_they_finish = return_as != "list"
            for finished, result in enumerate(Parallel(n_jobs=execution.jobs, batch_size=1,
                                                       return_as=return_as)(tasks), start=1):
                run_id = result["run_id"]
                if result.get("failure") is not None:
                    outcome.failures[run_id] = result["failure"]
                    logger.warning("grid: failed %s (traceback in %s; %s)", run_id, failure_path(out, run_id),
                                   finished_text(finished))
                elif result.get("reused"):
                    outcome.records[run_id] = result["record"]
                    outcome.reused += 1
                    logger.info("%s: record exists (written by another process while this one waited for the "
                                "run's lock), skipping (%s)", run_id, finished_text(finished))
                else:
                    outcome.records[run_id] = result["record"]
                    logger.info("grid: done %s (%s)", run_id, finished_text(finished))
    finally:
        monitor.stop()
    return outcome


class GridProgress(threading.Thread):
    """Watches the output folder: finished records, fresh failure files and held run locks."""

    def __init__(self, runs: list[GridRun], out: Path, jobs: int, show: bool | None, every: float = 1.0,
                 estimates: dict[str, float] | None = None, announce_starts: bool = True):
        super().__init__(daemon=True)
        self.announce_starts = announce_starts   # False where a run trains in this process and says so itself
        self.runs, self.out, self.jobs, self.every = runs, Path(out), jobs, every
        self.estimates = estimates   # run_id -> estimated seconds, from existing records (None: not for every run)
        self.started = time.time()
        self.state = {r.run_id: "pending" for r in runs}
        self.running_since: dict[str, float] = {}
        self._polling = threading.Lock()   # the grid polls too, before each finished line
        self.bar = tqdm(total=len(runs), desc="grid", unit="run", dynamic_ncols=True,
                        bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}",
                        disable=None if show is None else not show)
        self._halt = threading.Event()

    def poll(self) -> None:
        with self._polling:
            self._poll()

    def _poll(self) -> None:
        for run_id, state in self.state.items():
            if state in ("done", "failed"):
                continue
            if record_path(self.out, run_id).exists():
                new = "done"
            elif (failed := failure_path(self.out, run_id)).exists() and failed.stat().st_mtime >= self.started:
                new = "failed"
            else:
                new = "running" if is_running(self.out, run_id) else "pending"
            if new == "running" and run_id not in self.running_since:
                self.running_since[run_id] = time.time()
                if self.announce_starts:   # a log file has no bar: which runs started, where their epochs go
                    logger.info("grid: started %s (its progress: %s)", run_id, run_log_path(self.out, run_id))
            self.state[run_id] = new
        counts = {s: sum(v == s for v in self.state.values()) for s in ("done", "failed", "running", "pending")}
        self.bar.n = counts["done"] + counts["failed"]
        left = self.time_left(self.bar.n)
        self.bar.set_postfix_str(f"done {counts['done']}, running {counts['running']}, failed {counts['failed']}, "
                                 f"left {'?' if left is None else format_duration(left)}", refresh=False)
        self.bar.refresh()

    def time_left(self, finished: int) -> float | None:
        """The estimated seconds of the runs not finished (a running one's less the time it has run, down to
        zero) shared by the workers, where every run has an estimate; else from this grid's throughput once a
        run has finished (None before)."""
        now = time.time()
        if self.estimates is None:
            return time_left(now - self.started, finished, len(self.state)) if finished else None
        work = sum(max(0.0, self.estimates[run_id] - (now - self.running_since.get(run_id, now)))
                   for run_id, state in list(self.state.items()) if state not in ("done", "failed"))
        return work / max(1, self.jobs)

    def run(self) -> None:
        while not self._halt.wait(self.every):
            self.poll()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.poll()
        self.bar.close()


# --- plan summary ---------------------------------------------------------------------------------

def existing_records(runs: list[GridRun], out: Path) -> dict[str, dict]:
    """run_id -> record, for the runs whose record exists with the same configuration hash."""
    return {r.run_id: record for r in runs if (record := find_record(out, r.run_id, r.spec.config_hash)) is not None}


def spread_shared_stages(runs: list[GridRun], out: Path) -> list[GridRun]:
    """The runs in the order to start them: the first run of each shared stage not yet trained (C2F's coarse
    stage of each configuration) before the second of any, otherwise as planned. A run whose shared stage
    another worker is training waits for it (the stage's lock), so planned order would leave workers waiting
    while other stages could train: Figure 6's six coarse stages train two at a time, not one."""
    rank, seen = {}, {}
    for run in runs:
        stages = shared_stages(run.spec, run.dataset.load(), out)
        key = tuple(sorted(str(folder) for folder in stages.values() if not shared_stage_finished(folder)))
        rank[run.run_id] = seen.get(key, 0) if key else 0
        if key:
            seen[key] = rank[run.run_id] + 1
    return sorted(runs, key=lambda run: rank[run.run_id])


def budget_free_key(config: dict) -> str:
    """The hash of a run's configuration without its budget: equal for runs that differ only in the budget,
    which nothing trained reads (the trainer gets the method's resolved options, never the budget)."""
    return config_hash({key: value for key, value in config.items() if key != "budget"})


def stored_within(record: dict, run: GridRun) -> float | None:
    """The share of ``run``'s budget that ``record``'s trained model stores, in the budget's accounting; None
    for an unbudgeted run. Above 1 where it does not fit."""
    if not run.spec.config["method"]["budgeted"] or run.spec.budget is None:
        return None
    count = record["param_count"]
    return count["table3" if run.spec.budget.accounting == TABLE3 else "storage_bytes"] / run.spec.budget.limit


def configuration_twins(runs: list[GridRun], out: Path) -> dict[str, dict]:
    """run_id -> a record in ``out`` that a run without a record of its own reuses: a record of the same
    configuration and seed apart from the budget (:func:`budget_free_key`). The budget reaches training only
    through the method's resolved options (its sizes), so equal options train the same model: an unbudgeted
    reference under every budget and accounting, and a budgeted method whose sizes resolve alike under
    another budget (QR or DPQ at x% of the parameters and at x% of the float32 bytes). A budgeted twin must
    fit the run's budget (docs/protocol.md §10.11)."""
    existing = existing_records(runs, out)
    wanted = [r for r in runs if r.run_id not in existing]
    if not wanted:
        return {}
    twins: dict[str, dict] = {}
    for record in load_records(out):
        if (Path(out) / "runs" / record["per_user_file"]).is_file():
            twins.setdefault(budget_free_key(record["config"]), record)
    return {run.run_id: record for run in wanted
            if (record := twins.get(budget_free_key(run.spec.config))) and (stored_within(record, run) or 0.0) <= 1.0}


def copy_as_run(source_out: Path, record: dict, out: Path, run: GridRun, **fields) -> dict:
    """Write ``record`` (a record in ``source_out``) and its per-user file into ``out`` as the record of ``run``
    (its run id, label and configuration), with ``fields`` added or replaced (what says where it came from);
    returns the record written. How a run computed already is reused rather than trained again."""
    return copy_record(source_out, record, out, run_id=run.run_id, label=run.spec.label,
                       config=run.spec.config, config_hash=run.spec.config_hash, **fields)


def adopt_configuration_twins(runs: list[GridRun], out: Path) -> None:
    """Copy every :func:`configuration_twins` record under its run's name, with the run's own budget (and the
    share of it the model stores) and ``adopted_from`` naming the source."""
    by_id = {run.run_id: run for run in runs}
    for run_id, record in configuration_twins(runs, out).items():
        run = by_id[run_id]
        budgeted = run.spec.config["method"]["budgeted"]
        why = ("the same configuration and seed under another budget, which "
               + (f"resolves {run.spec.method}'s options alike" if budgeted else f"{run.spec.method} ignores"))
        copy_as_run(out, record, out, run,
                    budget={**budget_entry(run.spec.budget_text, run.spec.budget, budgeted),
                            "fraction": stored_within(record, run)},
                    within_budget=True,
                    adopted_from={"run_id": record["run_id"], "config_hash": record["config_hash"], "why": why})
        logger.info("%s: copied from %s (%s), not trained again", run_id, record["run_id"], why)


def estimate_seconds(runs: list[GridRun], records: list[dict], device_type: str,
                     out: Path | None = None) -> tuple[float, int]:
    """(estimated seconds for the runs, number of runs without an estimate): :func:`estimate_run_seconds`
    summed."""
    estimates = estimate_run_seconds(runs, records, device_type, out).values()
    return sum(seconds for seconds in estimates if seconds is not None), sum(seconds is None for seconds in estimates)


def estimate_run_seconds(runs: list[GridRun], records: list[dict], device_type: str,
                         out: Path | None = None) -> dict[str, float | None]:
    """run_id -> estimated seconds of training and evaluation, None without an estimate. Seconds per epoch come
    from existing records of the same dataset and method on the same kind of device; the number of
    epochs from those with the same epoch cap, else the cap itself (an upper bound). With ``out``, a
    stage shared between runs (C2F's coarse stage) costs nothing in a run that will find it finished in
    ``out``'s cache, or trained by an earlier run of ``runs``: its median share of those records' training
    time is taken off."""
    per_epoch, epochs, shares = {}, {}, {}
    for record in records:
        if str(record.get("device", "")).split(":")[0] != device_type or not record.get("epochs_run"):
            continue
        key = (record["dataset"], record["method"])
        seconds = (record["train_seconds"] + record["eval_seconds"]) / record["epochs_run"]
        per_epoch.setdefault(key, []).append(seconds)
        cap = record["config"]["trainer"]["max_epochs"]
        epochs.setdefault(key + (cap,), []).append(record["epochs_run"])
        shares.setdefault(key, []).append(stage_shares(record))
    estimates, trained = {}, set()
    for run in runs:
        key = (run.dataset_name, run.spec.method)
        if key not in per_epoch:
            estimates[run.run_id] = None
            continue
        cap = run.spec.trainer.max_epochs
        expected = epochs.get(key + (cap,))
        n_epochs = statistics.median(expected) if expected else cap * len(run.spec.config["stages"])
        seconds = statistics.median(per_epoch[key]) * n_epochs
        for stage, folder in (shared_stages(run.spec, run.dataset.load(), out) if out is not None else {}).items():
            if folder in trained or shared_stage_finished(folder):
                seconds *= 1 - statistics.median(share.get(stage, 0.0) for share in shares[key])
            trained.add(folder)
        estimates[run.run_id] = seconds
    return estimates


def time_left(elapsed: float, finished: int, total: int) -> float | None:
    """Seconds until ``total`` runs finish at the throughput of the ``finished`` ones so far (None before the
    first; parallel workers are in the throughput)."""
    return elapsed / finished * (total - finished) if finished else None


def device_type(execution: Execution) -> str:
    """``cuda`` or ``cpu``: the kind of device the runs will use (remote ``auto`` judged from this machine)."""
    kind = (execution.devices[0] if execution.devices else execution.remote_device).split(":")[0]
    return ("cuda" if torch.cuda.is_available() else "cpu") if kind == "auto" else kind


def describe_data(config: dict) -> str:
    """A run configuration's dataset as the plan shows it: the cold counts (docs/protocol.md §1.2) and every
    data option in effect (--cold, --overlap, --valid-from, the split and its seed)."""
    stats, checks = config["stats"], config["checks"]
    split = ("--legacy-split (split by each run's seed)" if config.get("split_mode") == "legacy"
             else f"split seed {config.get('split_seed')}")
    valid = "file" if checks.get("valid_from") == "file" else "test"
    # No "NAME: value" text: "--overlap error: ..." would read as an error message (and match "error:").
    return (f"{stats['cold_items']:,} cold items, {stats['cold_users']:,} cold users "
            f"(--cold {checks['cold']}, {checks['cold_dropped']:,} test pairs dropped; --overlap {checks['overlap']}, "
            f"{checks.get('overlap_dropped', 0):,} dropped; --valid-from {valid}; {split})")


def describe_plan(plan: GridPlan, out: Path, records: list[dict], execution: Execution, how: str = "") -> str:
    """The plan as text: runs per dataset and method, how many exist, estimated time."""
    out = Path(out)
    runs = plan.unique_runs()
    existing = set(existing_records(runs, out)) | set(configuration_twins(runs, out))
    todo = [r for r in runs if r.run_id not in existing]
    kind = device_type(execution)
    lines = [f"plan: {len(runs)} runs ({len(existing)} reused from {out / 'runs'}, {len(todo)} to train)"
             + (f"; {how}" if how else "")]
    groups: dict[tuple, list[GridRun]] = {}
    for run in runs:
        budget = run.cell.budget if run.cell.accounting == "table3" else f"{run.cell.budget} ({run.cell.accounting})"
        groups.setdefault((run.dataset_name, run.spec.method, budget), []).append(run)
    for dataset, config in {r.dataset_name: r.spec.config["dataset"] for r in runs}.items():
        lines.append(f"  {dataset:<12} {describe_data(config)}")
    width = max([11] + [len(budget) for _, _, budget in groups])
    for (dataset, method, budget), group in groups.items():
        done = sum(r.run_id in existing for r in group)
        lines.append(f"  {dataset:<12} {method:<10} {budget:<{width}} {len(group):>4} runs  {done:>4} exist")
        per_seed = {(r.spec.seed, f"{owner}.{key}={value}") for r in group
                    for owner, options in r.cell.seed_overrides.get(r.spec.seed, {}).items()
                    for key, value in options.items()}
        lines += [f"    seed {seed}: {setting}" for seed, setting in sorted(per_seed)]
    seconds, unknown = estimate_seconds(todo, records, kind, out)
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
        lines.append(f"  {run_id}: {failure['error']}  (traceback: {failure_path(out, run_id)})")
    return "\n".join(lines)
