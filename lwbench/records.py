"""The run record, and everything else an output folder holds: failures, per-user metrics, manifests.

Layout of an output folder::

    <out>/runs/<run_id>.json          the run record (:class:`RunRecord`; atomic write; the source of truth)
    <out>/runs/<run_id>.peruser.npz   per-user test metrics of every evaluated checkpoint
    <out>/runs/<run_id>.failed.json   error and traceback of a failed run (removed when it succeeds)
    <out>/grids/<name>.json           the manifest of a reproduction target
    <out>/work/<run_id>/              best checkpoints, and last.pt while the run is unfinished
    <out>/logs/<run_id>.log           the run's log

This module owns the record's format: :func:`write_record` validates before writing, :func:`read_record`
validates what it reads, and a record of another schema version, or one that cannot be parsed, is
never used silently. It imports no torch, so reports and statistics can be built on any machine.

A grid manifest lists the points of one reproduction target (dataset, method, budget, seed, overrides
and report coordinates) with the run id of each, written when the target is planned. Reports are
rebuilt from manifests and records alone, so ``report`` needs neither the datasets nor a re-plan, and a
point whose run failed or never finished shows up as missing rather than silently disappearing.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from lwbench.config import FIXED, SINGLE, UPDATE
from lwbench.files import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2   # 2: inference_profile; the budget's accounting


class RecordError(ValueError):
    """A record file that cannot be used: unreadable, another schema version, or fields missing."""


class RunRecord(TypedDict):
    """One finished run (schema version :data:`SCHEMA_VERSION`); written once, read by every report."""

    schema_version: int
    run_id: str
    method: str
    label: str                      # display name, e.g. ``ud-64``
    dataset: str
    seed: int
    budget: dict                    # {"text", "accounting", "params" (the limit in "unit"), "unit", "applies",
                                    #  "fraction"}
    params: int                     # Table-3 count of the trained module
    bytes: int                      # storage bytes of the trained module
    inference_profile: dict         # bytes by component and inference times (lwbench.profile)
    param_count: dict               # ParamCount of the trained module (both conventions)
    planned_param_count: dict       # what the plan predicted
    within_budget: bool
    metrics: dict                   # {"valid": {...}, "test": {...}} of the reported checkpoint
    reported_checkpoint: str        # e.g. ``train/single``, ``fine/update``
    shared_stages: dict             # stage name -> folder of its shared outcome
    checkpoints: dict               # name -> {"epoch", "valid", "test"}
    config: dict                    # the fully resolved configuration
    config_hash: str
    epochs_run: int
    train_seconds: float
    eval_seconds: float
    peak_memory_bytes: int
    peak_memory_kind: str
    versions: dict                  # library versions
    code_version: str
    device: str
    device_name: str
    started_at: str
    finished_at: str
    final_diagnostics: dict
    history: list
    per_user_file: str
    # Optional (absent in older records): ``warnings``, a list of what the run warned about (e.g. a rising
    # training loss, lwbench.training.trainer.loss_warnings).


RECORD_FIELDS = tuple(RunRecord.__annotations__)


def record_path(out: Path, run_id: str) -> Path:
    return Path(out) / "runs" / f"{run_id}.json"


def failure_path(out: Path, run_id: str) -> Path:
    return Path(out) / "runs" / f"{run_id}.failed.json"


def validate_record(record: Any, where: str = "record") -> RunRecord:
    """``record`` if it is a complete record of this schema version, else a :class:`RecordError`."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: a run record is a JSON object, got {type(record).__name__}")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(f"{where}: schema version {version!r}, this lwbench reads version {SCHEMA_VERSION}; "
                          "rerun the run (the same command, with --force) to write it anew")
    missing = [name for name in RECORD_FIELDS if name not in record]
    if missing:
        raise RecordError(f"{where}: fields missing: {', '.join(missing)}")
    if record["reported_checkpoint"] not in record["checkpoints"]:
        raise RecordError(f"{where}: the reported checkpoint {record['reported_checkpoint']!r} is not among its "
                          f"checkpoints ({', '.join(record['checkpoints'])})")
    for split in ("valid", "test"):
        if not isinstance(record["metrics"].get(split), dict):
            raise RecordError(f"{where}: metrics.{split} is missing")
    return record


def write_record(out: Path, record: dict) -> RunRecord:
    """Stamp the schema version, validate, and write ``<out>/runs/<run_id>.json`` atomically; a failure
    file of the same run is removed (the run has now succeeded)."""
    record = {k: v for k, v in record.items() if k != "_path"}   # where a record was read from is not its content
    record = validate_record({**record, "schema_version": SCHEMA_VERSION}, f"record of {record.get('run_id')}")
    atomic_write_json(record_path(out, record["run_id"]), record)
    failure_path(out, record["run_id"]).unlink(missing_ok=True)
    return record


def read_record(path: Path) -> RunRecord:
    """A validated record; :class:`RecordError` naming the file when it cannot be used. The file it was
    read from is noted in memory as ``_path`` (never written), so that messages can name it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: unreadable run record ({exc})") from exc
    return {**validate_record(record, str(path)), "_path": str(path)}


def find_record(out: Path, run_id: str, config_hash: str) -> RunRecord | None:
    """The finished record of a run with this configuration hash, or None. A record that cannot be used
    (corrupt, another schema) is reported and treated as absent, so the run is trained again."""
    path = record_path(out, run_id)
    if not path.exists():
        return None
    try:
        record = read_record(path)
        if record["config_hash"] != config_hash:
            return None
        per_user_arrays(Path(out) / "runs" / record["per_user_file"])
    except RecordError as exc:
        logger.warning("%s; the run will be trained again", exc)
        return None
    return record


def load_records(out: Path) -> list[RunRecord]:
    """Every usable run record in ``<out>/runs``; unusable ones are named in a warning and left out."""
    records = []
    for path in sorted((Path(out) / "runs").glob("*.json")):
        if path.name.endswith(".failed.json"):
            continue
        try:
            records.append(read_record(path))
        except RecordError as exc:
            logger.warning("%s; left out", exc)
    return records


def write_failure(out: Path, failure: dict) -> None:
    atomic_write_json(failure_path(out, failure["run_id"]), failure)


def write_manifest(out: Path, name: str, rows: list[dict], **info) -> Path:
    path = Path(out) / "grids" / f"{name}.json"
    atomic_write_json(path, {"name": name, "written_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                             **info, "rows": rows})
    return path


def read_manifests(out: Path) -> dict[str, dict]:
    folder = Path(out) / "grids"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def points(out: Path, manifest: dict) -> pd.DataFrame:
    """One row per manifest point: its coordinates, ``status`` (done / failed / missing), the record
    (column ``record``, None unless done) and the reported test metrics as ``test:<metric>`` columns."""
    rows = []
    for row in manifest["rows"]:
        path = record_path(out, row["run_id"])
        record = None
        if path.exists():
            try:
                record = read_record(path)
            except RecordError as exc:
                logger.warning("%s; shown as missing", exc)
        status = "done" if record else ("failed" if failure_path(out, row["run_id"]).exists() else "missing")
        entry = {**{k: v for k, v in row.items() if k != "coords"}, **row["coords"], "status": status,
                 "record": record, "params": record["params"] if record else None}
        if record:
            entry.update({f"test:{m}": v for m, v in record["metrics"]["test"].items()})
        rows.append(entry)
    return pd.DataFrame(rows)


def stage_checkpoint(record: dict, stage: str) -> str:
    """The checkpoint that stands for a stage of a run, as the trainer reports one: the stage's last
    phase that produced a checkpoint (UPDATE, else FIXED; e.g. C2F's ``coarse/update``). A short run
    may never reach UPDATE; callers can compare the result with ``f"{stage}/update"`` to say so."""
    for phase in (UPDATE, FIXED, SINGLE):
        if f"{stage}/{phase}" in record["checkpoints"]:
            return f"{stage}/{phase}"
    raise KeyError(f"{record['run_id']} has no checkpoint of stage {stage!r}; it has {', '.join(record['checkpoints'])}")


def checkpoint_metric(record: dict, checkpoint: str, metric: str) -> float:
    """A test metric of any evaluated checkpoint of a run (e.g. C2F's ``coarse/update``)."""
    checkpoints = record["checkpoints"]
    if checkpoint not in checkpoints:
        raise KeyError(f"{record['run_id']} has no checkpoint {checkpoint!r}; it has {', '.join(checkpoints)}")
    return checkpoints[checkpoint]["test"][metric]


def per_user(out: Path, record: dict, checkpoint: str | None = None) -> pd.DataFrame:
    """Per-user test metrics of a checkpoint (default: the reported one)."""
    return load_per_user(Path(out) / "runs" / record["per_user_file"], checkpoint or record["reported_checkpoint"])

def save_per_user(path: Path, checkpoints: dict) -> None:
    """Per-user test metrics of every checkpoint, as ``<checkpoint>::users`` / ``::values`` / ``::columns``."""
    arrays = {}
    for name, result in checkpoints.items():
        frame = result.test_per_user
        arrays[f"{name}::users"] = frame.index.to_numpy()
        arrays[f"{name}::values"] = frame.to_numpy()
        arrays[f"{name}::columns"] = np.array(frame.columns, dtype=str)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def per_user_arrays(path: Path) -> list[str]:
    """The arrays a per-user file holds; a missing or unreadable file is a :class:`RecordError` naming it
    (its run then counts as not done: the run command trains it again and writes both files anew)."""
    try:
        with np.load(path) as data:
            return list(data.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise RecordError(f"{path}: per-user file missing or unreadable ({exc}); run the command that made "
                          "it again to regenerate it") from None


def load_per_user(path: Path, checkpoint: str) -> pd.DataFrame:
    per_user_arrays(path)
    with np.load(path) as data:
        return pd.DataFrame(data[f"{checkpoint}::values"], columns=list(data[f"{checkpoint}::columns"]),
                            index=pd.Index(data[f"{checkpoint}::users"], name="user"))
