"""The ``tuned`` target: the tables of a ``tune`` study's retrained runs (docs/protocol.md §10.12).

``run_bench.py tune`` writes, in its output folder ``OUT``,

* ``OUT/tuning/<study>.json``, the study file: per bracket (dataset, method label, budget) the search space,
  every trial's settings, each rung's runs and validation values, who was promoted, the chosen trial and the
  seconds the trials took (:func:`study_path`, :func:`read_study`);
* ``OUT/tuning/<study>/``, the trials' own output folder (ordinary records, logs, locks), so that the trials
  never mix with the tables' runs in ``OUT/runs`` (:func:`trials_folder`);
* ``OUT/grids/tuned-<study>.json``, a manifest of the retrained runs in the format of the reproduction targets,
  with ``target: tuned``, so that ``report`` rebuilds the study's tables from records alone.

The target's builder writes ``tuned-<study>`` (the results: the base target's tables when the study tuned a
target's cells, e.g. Table 3 with the paper's values beside each cell, else a comparison table with its
significance marks and ``tuned-<study>-stats``) and
``tuned-<study>-settings`` (what each bracket chose, from which trials, at what cost). Like every builder, it
imports no torch; the target cannot be reproduced (its cells come from a study, not from a grid).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd

from lwbench.logs import format_duration
from lwbench.reports import summaries
from lwbench.reports.tables import Table
from lwbench.reports.targets import Outputs, Target, TargetError, get_target, register_target

TUNED = "tuned"
METRICS = ("ndcg@10", "recall@10", "ndcg@20", "recall@20")


def study_path(out: Path, study: str) -> Path:
    return Path(out) / "tuning" / f"{study}.json"


def trials_folder(out: Path, study: str) -> Path:
    """Where a study's trials are trained and recorded (an ordinary output folder)."""
    return Path(out) / "tuning" / study


def manifest_name(study: str) -> str:
    return f"{TUNED}-{study}"


def read_study(out: Path, study: str) -> dict | None:
    """The study file, or None when there is none."""
    path = study_path(out, study)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TargetError(f"{path}: unreadable study file ({exc})") from exc


def _cells(datasets, methods):
    raise TargetError("the tuned target is written by `run_bench.py tune` (its cells are what a study chose); "
                      "run that command, or `run_bench.py report` to rebuild its tables")


def _renamed(name: str, base: str, study_manifest: str) -> str:
    """A base target's output name after the study: kept where the builder named it from the manifest already
    (:func:`lwbench.reports.targets.output_name`), else its target's prefix replaced."""
    if name == study_manifest or name.startswith(f"{study_manifest}-"):
        return name
    return study_manifest + name[len(base):] if name.startswith(base) else f"{study_manifest}-{name}"


def _results(pts: pd.DataFrame, out: Path, manifest: dict, alternative: str) -> Outputs:
    """The base target's tables and figures over the retrained runs, renamed after the study; without a base
    target, the comparison table of :func:`lwbench.reports.summaries.versus_best_table` (mean ± std per
    configuration, every row tested against the best of its dataset and budget, with its statistics table)."""
    name, base = manifest["name"], manifest.get("base_target")
    title = f"tuned by study {manifest['study']}"
    if base:
        # The base builder names its tables after the manifest (tuned-<study>, tuned-<study>-stats), so that its
        # notes name this study's statistics table, not the untuned target's.
        outputs = get_target(base).build(pts, out, manifest, alternative)
        tables = [dataclasses.replace(t, name=_renamed(t.name, base, name), title=f"{t.title}, {title}")
                  for t in outputs.tables]
        figures = {_renamed(key, base, name): figure for key, figure in outputs.figures.items()}
        return Outputs(tables=tables, figures=figures)
    # Like every comparison table: one row per configuration, each tested against the best of its block.
    return Outputs(tables=summaries.versus_best_table(name, f"Methods {title}", pts, ["dataset", "budget"],
                                                      list(METRICS), out))


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def settings_table(study: dict, name: str) -> Table:
    """One row per bracket: the trials per rung, the chosen trial and its settings, its validation value
    (the only value selection looked at) and the seconds all its trials took."""
    columns = ["dataset", "method", "budget", "trials per rung", "chosen", "settings", "valid", "trial runs",
               "trial seconds"]
    rows, data = [], []
    for key, bracket in study["brackets"].items():
        schedule = ", ".join(f"{rung['trials']}@{rung['max_epochs'] or 'full'}" for rung in bracket["rungs"])
        chosen = bracket.get("chosen") or {}
        cost = bracket.get("cost", {})
        seconds = cost.get("train_seconds", 0.0) + cost.get("eval_seconds", 0.0)
        budget = bracket["budget"] if bracket.get("budgeted", True) else "–"   # an unbudgeted method ignores it
        rows.append([bracket["dataset"], bracket["label"], budget, schedule,
                     "–" if "trial" not in chosen else f"trial {chosen['trial']}", chosen.get("described", "–"),
                     _format(chosen.get("valid")), str(cost.get("runs", 0)), f"{seconds:,.0f}"])
        data.append({"bracket": key, "dataset": bracket["dataset"], "method": bracket["label"],
                     "budget": bracket["budget"], "metric": bracket["metric"], "trials": bracket["settings"]["trials"],
                     "chosen_trial": chosen.get("trial"), "valid": chosen.get("valid"),
                     **{f"chosen:{k}": v for k, v in chosen.get("settings", {}).items()},
                     "trial_runs": cost.get("runs", 0), "train_seconds": cost.get("train_seconds"),
                     "eval_seconds": cost.get("eval_seconds"), "status": bracket.get("status")})
    metric = next(iter(study["brackets"].values()))["metric"] if study["brackets"] else "the early-stopping metric"
    costs = [b.get("cost", {}) for b in study["brackets"].values()]
    total = sum(c.get("train_seconds", 0.0) + c.get("eval_seconds", 0.0) for c in costs)
    copied = sum(c.get("copied", 0) for c in costs)
    eta = next(iter(study["brackets"].values()))["settings"]["eta"] if study["brackets"] else "eta"
    notes = [f"Every method got the same trials and rungs; trial 0 is the defaults. trials per rung: n@E is n trials "
             f"trained for at most E epochs per stage (full: the protocol's epochs, with early stopping); the best "
             f"1/{eta} by validation {metric} go on to the next rung, and the defaults always run in full, beside the "
             "promoted trial (docs/protocol.md §10.12).",
             f"valid: validation {metric} of the chosen trial's full run (test metrics never enter the choice).",
             "trial runs, trial seconds: the runs the study trained and their training + evaluation seconds, from "
             f"their records; in all {sum(c.get('runs', 0) for c in costs)} runs, {format_duration(total)}"
             + (f". The defaults' full run is the untuned table's record where it has one, copied, and counted "
                f"there ({copied} such runs)" if copied else "") + "."]
    failed = [f"{b['label']}: {b.get('status')}" for b in study["brackets"].values() if b.get("status") != "done"]
    if failed:
        notes.append(f"Not finished: {'; '.join(failed)}.")
    return Table(f"{name}-settings", f"What study {study['study']} chose", columns, rows, pd.DataFrame(data),
                 notes=notes)


def _build(pts: pd.DataFrame, out: Path, manifest: dict, alternative: str) -> Outputs:
    outputs = _results(pts, out, manifest, alternative)
    study = read_study(out, manifest["study"])
    if study is not None:
        outputs.tables.append(settings_table(study, manifest["name"]))
    return outputs


register_target(Target(
    TUNED, "the runs a `tune` study chose, retrained on its seeds (written by `run_bench.py tune`, not reproduce)",
    datasets=("synthetic",), requires=(), cells=_cells, build=_build))
