"""One run: resolve a (method, seed) to a full configuration (:func:`plan_runs`), train it and write its
record (:func:`execute_run`). Which runs to execute, in which order and where is the rest of the grid's
business (:mod:`lwbench.grid.plan`, :mod:`lwbench.grid.run`); the output folder's layout is described in
:mod:`lwbench.records`.

``run_id`` ends with the first characters of the configuration hash, so a changed option gives a
new run, and a repeated command finds its records and skips them.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from lwbench.budget import STORAGE, TABLE3, Budget, BudgetError, ParamCount, parse_budget
from lwbench.config import ConfigError, TrainerConfig, config_hash
from lwbench.data.cards import LoadedDataset
from lwbench.environment import code_version, device_name, library_versions
from lwbench.options import resolve
from lwbench.plugin import Method, check_within_budget, plan_count, size_to_budget
from lwbench.profile import inference_profile
from lwbench.records import (
    RunRecord,
    load_per_user,  # noqa: F401 (a public name: lwbench.grid.runner.load_per_user)
    save_per_user,
    write_failure,
    write_record,
)
from lwbench.registry import get_method
from lwbench.training.persistence import RESUME_FILE, shared_stage_dirs
from lwbench.training.trainer import Trainer, code_version_warnings, loss_warnings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run, resolved before any training starts."""

    method: str
    label: str
    seed: int
    budget_text: str
    budget: Budget | None
    options: dict
    planned: ParamCount
    trainer: TrainerConfig
    config: dict
    config_hash: str

    @property
    def run_id(self) -> str:
        return f"{self.config['dataset']['name']}-{self.label}-s{self.seed}-{self.config_hash[:10]}"

    def plan_entry(self) -> dict:
        applies = get_method(self.method).budgeted
        return {"run_id": self.run_id, "method": self.method, "label": self.label, "seed": self.seed,
                "budget": {**budget_entry(self.budget_text, self.budget, applies),
                           "note": ("sized to the budget" if applies else
                                    f"{self.method} ignores the budget (an unbudgeted reference)")},
                "dataset": {**self.config["dataset"]["stats"], **self.config["dataset"]["checks"]},
                "params": self.planned.to_dict(), **budget_fractions(self.planned, self.budget, applies),
                "options": self.options, "stages": self.config["stages"], "trainer": self.config["trainer"]}


def budget_entry(text: str, budget: Budget | None, applies: bool) -> dict:
    """A plan's or record's budget: its text, its accounting convention and its limit in that unit
    (``params`` holds the limit, parameters or bytes, as ``unit`` says)."""
    return {"text": text, "accounting": budget.accounting if budget else TABLE3,
            "params": budget.limit if budget else None, "unit": budget.unit if budget else None, "applies": applies}


def budget_fractions(count: ParamCount, budget: Budget | None, applies: bool) -> dict:
    """Both numbers of docs/protocol.md §5.2 against the budget: ``budget_fraction`` in the budget's own
    convention, and the Table-3 count and stored bytes beside it."""
    fraction = None if budget is None or not applies else count.measure(budget.accounting) / budget.limit
    return {"budget_fraction": fraction, "table3_params": count.table3, "stored_bytes": count.storage_bytes}


def with_item_bias(count: ParamCount, trainer: TrainerConfig, n_items: int) -> ParamCount:
    """The trainer's item bias is trained and kept, but outside the Table-3 count (docs/protocol.md §2.3)."""
    return dataclasses.replace(count, aux_params=count.aux_params + (n_items if trainer.item_bias else 0))


def resolve_trainer(dataset: LoadedDataset, method: Method, overrides: dict) -> TrainerConfig:
    """defaults -> dataset card -> method -> command line."""
    config = TrainerConfig()
    for layer in (dataset.card.trainer if dataset.card else {}, method.trainer_defaults, overrides):
        config = config.replace(**layer)
    return config


def resolve_options(dataset: LoadedDataset, method: Method, overrides: dict) -> dict:
    """The method's declared defaults -> dataset card -> command line, each value converted and checked."""
    return resolve(method, dataset.card.methods.get(method.name, {}) if dataset.card else {}, overrides)


def check_owners(owners: list[str], methods: list[str]) -> None:
    """Every ``--set``/``--sweep`` owner must be ``trainer`` or one of the methods (never silently ignored)."""
    unknown = sorted(set(owners) - {"trainer"} - set(methods))
    if unknown:
        raise ConfigError(f"--set/--sweep name {', '.join(unknown)}, which is neither 'trainer' nor one of the "
                          f"grid's methods ({', '.join(methods)})")


def plan_runs(method_names: list[str], dataset: LoadedDataset, budget_text: str, seeds: list[int],
              overrides: dict[str, dict] | None = None, accounting: str = TABLE3) -> list[RunSpec]:
    """Resolve every (method, seed) run; fails before training on any bad name, option or budget.
    ``accounting``: the convention the budget is counted in (docs/protocol.md §5.2)."""
    overrides = dict(overrides or {})
    methods = [get_method(name) for name in method_names]
    check_owners(list(overrides), method_names)
    data = dataset.interactions
    stats = data.stats()
    limit = parse_budget(budget_text, data.n_users, data.n_items, accounting=accounting)
    budget = None if limit is None else Budget(limit, accounting)
    specs = []
    for method in methods:
        if method.budgeted and budget is None:
            raise BudgetError(f"{method.name} needs a budget; --budget none only suits unbudgeted methods")
        trainer = resolve_trainer(dataset, method, overrides.get("trainer", {}))
        own = {**(method.storage_options if budget and budget.accounting == STORAGE else {}),
               **overrides.get(method.name, {})}
        options = size_to_budget(method, resolve_options(dataset, method, own), budget, stats)
        planned = with_item_bias(plan_count(method, options, stats), trainer, data.n_items)
        check_within_budget(method, planned, budget)
        stages = [dataclasses.asdict(stage) for stage in method.stages(options)]
        for seed in seeds:
            config = {
                "method": {"name": method.name, "options": options, "budgeted": method.budgeted},
                "dataset": {"name": data.name, "source": "generated" if dataset.source == "generated" else "files",
                            "verification": dataset.verification, "split_seed": data.split_seed,
                            "split_mode": data.split_mode, "stats": dataclasses.asdict(stats),
                            "checks": data.checks},
                "budget": {"text": budget_text, "accounting": accounting, "params": limit},
                "trainer": dataclasses.asdict(trainer),
                "stages": stages,
                "seed": seed,
            }
            specs.append(RunSpec(method=method.name, label=method.label(options), seed=seed, budget_text=budget_text,
                                 budget=budget, options=options, planned=planned, trainer=trainer,
                                 config=config, config_hash=config_hash(config)))
    return specs


def cache_dir(out: Path) -> Path:
    """Where the runs of an output folder keep what they share (METIS partitions, shared stages)."""
    return Path(out) / "cache"


def shared_stages(spec: RunSpec, dataset: LoadedDataset, out: Path) -> dict[str, Path]:
    """Stage name -> the cache folder of each stage the run shares with other runs (``Stage.shared``, e.g.
    C2F's coarse stage), as its trainer will name it: a plan can tell which stages are trained already."""
    stages = get_method(spec.method).stages(spec.options)
    if all(stage.shared is None for stage in stages):
        return {}
    dirs = shared_stage_dirs(cache_dir(out), spec.method, stages, spec.trainer, spec.seed,
                             dataset.interactions.digest())
    return {stages[index].name: folder for index, folder in dirs.items()}


def execute_run(spec: RunSpec, dataset: LoadedDataset, out: Path, device: torch.device, *,
                show_progress: bool | None = None) -> RunRecord:
    """Train and evaluate one run and write its record; returns the record."""
    runs = Path(out) / "runs"
    work = Path(out) / "work" / spec.run_id
    started = dt.datetime.now(dt.timezone.utc)
    version = code_version()   # the code this run starts with (fixed for the process: environment.code_version)
    method = get_method(spec.method)
    trainer = Trainer(method, spec.options, dataset.interactions, spec.trainer, seed=spec.seed, device=device,
                      work_dir=work, cache_dir=cache_dir(out), label=spec.label, show_progress=show_progress)
    result = trainer.fit()
    profile = inference_profile(trainer, seed=spec.seed)
    count = with_item_bias(result.param_count, spec.trainer, dataset.interactions.n_items)
    check_within_budget(method, count, spec.budget)
    reported = result.reported_checkpoint
    record = {
        "run_id": spec.run_id, "method": spec.method, "label": spec.label,
        "dataset": dataset.interactions.name, "seed": spec.seed,
        "budget": {**budget_entry(spec.budget_text, spec.budget, method.budgeted),
                   "fraction": budget_fractions(count, spec.budget, method.budgeted)["budget_fraction"]},
        "params": count.table3, "bytes": count.storage_bytes, "inference_profile": profile,
        "param_count": count.to_dict(), "planned_param_count": spec.planned.to_dict(),
        "within_budget": spec.budget is None or not method.budgeted or spec.budget.fits(count),
        "metrics": {"valid": reported.valid, "test": reported.test},
        "reported_checkpoint": result.reported, "shared_stages": result.shared_stages,
        "checkpoints": {name: {"epoch": c.epoch, "valid": c.valid, "test": c.test}
                        for name, c in result.checkpoints.items()},
        "config": spec.config, "config_hash": spec.config_hash,
        "epochs_run": result.schedule.epochs_run,
        "train_seconds": result.schedule.train_seconds, "eval_seconds": result.schedule.eval_seconds,
        "peak_memory_bytes": result.peak_memory_bytes,
        "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "versions": library_versions(), "code_version": version,
        "device": str(device), "device_name": device_name(device),
        "started_at": started.isoformat(), "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "final_diagnostics": result.diagnostics, "history": result.history,
        "warnings": loss_warnings(result.history) + code_version_warnings(result.code_versions),
        "per_user_file": f"{spec.run_id}.peruser.npz",
    }
    if len(result.code_versions) > 1:
        record["code_versions"] = result.code_versions
    save_per_user(runs / record["per_user_file"], result.checkpoints)
    record = write_record(out, record)
    (work / RESUME_FILE).unlink(missing_ok=True)
    return record


def run_or_record_failure(spec: RunSpec, dataset: LoadedDataset, out: Path, device: torch.device, *,
                          show_progress: bool | None = None) -> tuple[RunRecord | None, dict | None]:
    """Execute one run; returns (record, None), or (None, failure) after writing ``<run_id>.failed.json``.
    A failed run must not stop the others, so its error is kept on disk instead."""
    try:
        return execute_run(spec, dataset, out, device, show_progress=show_progress), None
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        failure = {"run_id": spec.run_id, "method": spec.method, "seed": spec.seed, "error": repr(exc),
                   "error_type": type(exc).__name__,   # tune reuses only a DivergedError's failure (study.py)
                   "traceback": traceback.format_exc(), "config": spec.config, "config_hash": spec.config_hash}
        write_failure(out, failure)
        return None, failure
