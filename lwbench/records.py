"""The run record, and everything else an output folder holds: failures, per-user metrics, manifests.

Layout of an output folder::

    <out>/runs/<run_id>.json          the run record (:class:`RunRecord`; atomic write; the source of truth)
    <out>/runs/<run_id>.peruser.npz   per-user test metrics of every evaluated checkpoint
    <out>/runs/<run_id>.failed.json   error, its type and traceback of a failed run (removed when it succeeds)
    <out>/grids/<name>.json           the manifest of a reproduction target
    <out>/work/<run_id>/              best checkpoints, and last.pt while the run is unfinished
    <out>/logs/<run_id>.log           the run's log

This module owns the record's format: :func:`write_record` validates before writing, :func:`read_record`
validates what it reads, and a record of another schema version, one that cannot be parsed, or one whose
fields do not have their schema's types (``"metrics": null``, a metric that is text, a per-user file name
that is a path) is never used: it is named in a warning and left out, and the run command trains it again.
Manifests are validated the same way when read (:func:`read_manifests`). It imports no torch, so reports
and statistics can be built on any machine.

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
import math
import zipfile
from pathlib import Path
from typing import Any, TypedDict, get_type_hints

import numpy as np
import pandas as pd

from lwbench.config import FIXED, SINGLE, UPDATE
from lwbench.files import atomic_write_bytes, atomic_write_json, json_default

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2   # 2: inference_profile; the budget's accounting


class RecordError(ValueError):
    """A record or manifest file that cannot be used: unreadable, another schema version, fields missing, or a
    field whose value does not have its schema's type (``"metrics": null``, a metric that is text, a per-user
    file name that is a path; :func:`validate_record`, :func:`validate_manifest`)."""


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
    # training loss, lwbench.training.trainer.loss_warnings). Only where a resume crossed a code change:
    # ``code_versions``, [{"code_version", "stage", "epoch"}] from where each version took over
    # (lwbench.training.trainer.Trainer.code_versions); ``code_version`` is then the last of them.


RECORD_FIELDS = tuple(RunRecord.__annotations__)
RECORD_TYPES: dict[str, type] = get_type_hints(RunRecord)   # field -> its JSON type (int, float, str, ...)


def record_path(out: Path, run_id: str) -> Path:
    return Path(out) / "runs" / f"{run_id}.json"


def failure_path(out: Path, run_id: str) -> Path:
    return Path(out) / "runs" / f"{run_id}.failed.json"


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _has_type(value: Any, kind: type) -> bool:
    """JSON's view of a type: a bool is not a number, and an integer is a valid float."""
    if kind is float:
        return _is_number(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check(ok: bool, where: str, field: str, expected: str, value: Any) -> None:
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise RecordError(f"{where}: {field} must be {expected}, got {_kind(value)} {shown}")


def _check_metrics(where: str, field: str, metrics: Any) -> None:
    """``metrics`` is an object of metric name -> number (``{"ndcg@20": 0.1, ...}``)."""
    _check(isinstance(metrics, dict), where, field, "an object of metric -> number", metrics)
    for name, value in metrics.items():
        _check(_is_number(value), where, f"{field}[{name!r}]", "a number", value)


def validate_record(record: Any, where: str = "record") -> RunRecord:
    """``record`` if it is a complete record of this schema version whose fields have the types of
    :class:`RunRecord` (and whose metrics are numbers), else a :class:`RecordError` naming ``where`` and
    the first field that is wrong."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: a run record is a JSON object, got {_kind(record)}")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(f"{where}: schema version {version!r}, this lwbench reads version {SCHEMA_VERSION}; "
                          "rerun the run (the same command, with --force) to write it anew")
    missing = [name for name in RECORD_FIELDS if name not in record]
    if missing:
        raise RecordError(f"{where}: fields missing: {', '.join(missing)}")
    for name, kind in RECORD_TYPES.items():
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        expected = {dict: "an object", list: "a list", str: "a string", float: "a number"}.get(
            kind, f"{article} {kind.__name__}")
        _check(_has_type(record[name], kind), where, name, expected, record[name])
    for split in ("valid", "test"):
        _check_metrics(where, f"metrics.{split}", record["metrics"].get(split))
    for name, checkpoint in record["checkpoints"].items():
        _check(isinstance(checkpoint, dict), where, f"checkpoints[{name!r}]", "an object", checkpoint)
        if "epoch" in checkpoint:
            _check(_has_type(checkpoint["epoch"], int), where, f"checkpoints[{name!r}].epoch", "an int",
                   checkpoint["epoch"])
        for split in ("valid", "test"):
            if split in checkpoint:
                _check_metrics(where, f"checkpoints[{name!r}].{split}", checkpoint[split])
    if record["reported_checkpoint"] not in record["checkpoints"]:
        raise RecordError(f"{where}: the reported checkpoint {record['reported_checkpoint']!r} is not among its "
                          f"checkpoints ({', '.join(record['checkpoints'])})")
    budget = record["budget"]
    for key, kinds, expected in (("text", (str,), "a string"), ("applies", (bool,), "true or false"),
                                 ("params", (int, float, type(None)), "a number or null"),
                                 ("fraction", (int, float, type(None)), "a number or null")):
        if key in budget:
            value = budget[key]
            _check(isinstance(value, kinds) and (key == "applies" or not isinstance(value, bool)), where,
                   f"budget.{key}", expected, value)
    for key in ("method", "dataset", "trainer"):
        if key in record["config"]:
            _check(isinstance(record["config"][key], dict), where, f"config.{key}", "an object",
                   record["config"][key])
    name = record["per_user_file"]
    _check(name not in ("", ".", "..") and "/" not in name and "\\" not in name, where, "per_user_file",
           "a file name in the record's folder (not a path)", name)
    if "warnings" in record:
        _check(isinstance(record["warnings"], list), where, "warnings", "a list", record["warnings"])
    return record


def write_record(out: Path, record: dict) -> RunRecord:
    """Stamp the schema version, validate, and write ``<out>/runs/<run_id>.json`` atomically; a failure
    file of the same run is removed (the run has now succeeded)."""
    record = {k: v for k, v in record.items() if k != "_path"}   # where a record was read from is not its content
    record = {**record, "schema_version": SCHEMA_VERSION}
    # Validated as readers will see it: what JSON makes of it (a numpy scalar is written as its Python value, any
    # other object as text, which validation then refuses where a number belongs).
    validate_record(json.loads(json.dumps(record, default=json_default)), f"record of {record.get('run_id')}")
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


def copy_record(source_out: Path, record: dict, out: Path, **fields) -> RunRecord:
    """Write ``record`` (a record in ``source_out``) and its per-user file into ``out`` as another run's record:
    ``fields`` replace the record's own (``run_id`` at least; the per-user file is named after it). How a run
    is reused rather than trained again; the caller adds what says where the copy came from."""
    per_user = f"{fields['run_id']}.peruser.npz"
    atomic_write_bytes(Path(out) / "runs" / per_user, (Path(source_out) / "runs" / record["per_user_file"]).read_bytes())
    return write_record(out, {**record, **fields, "per_user_file": per_user})


def stage_shares(record: dict) -> dict[str, float]:
    """The share of a record's training seconds spent in each stage (from its history's epoch times)."""
    seconds: dict[str, float] = {}
    for entry in record.get("history", []):
        if "seconds" in entry:
            seconds[entry["stage"]] = seconds.get(entry["stage"], 0.0) + entry["seconds"]
    total = sum(seconds.values())
    return {stage: value / total for stage, value in seconds.items()} if total > 0 else {}


def compute_seconds(records: list[dict]) -> tuple[float, int]:
    """(seconds of training and evaluation the ``records`` took, how many of them are copies): each record's
    ``train_seconds + eval_seconds`` (summed over the sessions of a resumed run), a stage shared between runs
    (C2F's coarse stage, whose seconds every record that reused it repeats) counted once (runs of one output
    folder share its cache; a folder that trained the same stage again, as a tuned table retraining beside
    its trials' folder does, is charged for it once), and a record copied from another run (``adopted_from``:
    a configuration twin, a tuned run copied from the untuned table, or the chosen trial's run copied from a
    study's trials) not at all: its seconds are its source's. A record
    listed twice counts once."""
    unique = {r["run_id"]: r for r in records}
    own = sorted((r for r in unique.values() if not r.get("adopted_from")), key=lambda r: r.get("started_at", ""))
    counted, seconds = set(), 0.0
    for record in own:
        own_seconds = record["train_seconds"] + record["eval_seconds"]
        shares = stage_shares(record)
        for stage, key in record.get("shared_stages", {}).items():
            if key in counted:
                seconds -= shares.get(stage, 0.0) * own_seconds
            counted.add(key)
        seconds += own_seconds
    return seconds, len(unique) - len(own)


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
    """``<out>/grids/<name>.json``. A value that does not apply (NaN, e.g. a swept coordinate on a row that
    sweeps nothing) is written as ``null``, so the file is strict JSON that any parser reads; :func:`points`
    reads a coordinate's ``null`` back as NaN."""
    path = Path(out) / "grids" / f"{name}.json"
    atomic_write_json(path, _nan_as_null({"name": name, "written_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                                          **info, "rows": rows}))
    return path


def _nan_as_null(value):
    """``value`` with every NaN (Python's or numpy's, at any depth) replaced by None."""
    if isinstance(value, dict):
        return {k: _nan_as_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_as_null(v) for v in value]
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return None
    return value


MANIFEST_ROW_TYPES = {"run_id": str, "dataset": str, "method": str, "label": str, "budget": str, "seed": int,
                      "coords": dict}


def validate_manifest(manifest: Any, where: str = "manifest") -> dict:
    """``manifest`` if it has the shape :func:`write_manifest` writes (the target's name and one object per
    point, with its run id, coordinates and the fields reports group by), else a :class:`RecordError` naming
    ``where`` and the first field that is wrong."""
    if not isinstance(manifest, dict):
        raise RecordError(f"{where}: a manifest is a JSON object, got {_kind(manifest)}")
    missing = [key for key in ("target", "rows") if key not in manifest]
    if missing:
        raise RecordError(f"{where}: fields missing: {', '.join(missing)}")
    _check(isinstance(manifest["target"], str), where, "target", "a string", manifest["target"])
    _check(isinstance(manifest["rows"], list), where, "rows", "a list", manifest["rows"])
    for key in ("quick",):
        if key in manifest:
            _check(isinstance(manifest[key], bool), where, key, "true or false", manifest[key])
    for key in ("seeds", "missing_methods", "skipped_datasets", "dropped"):
        if key in manifest:
            _check(isinstance(manifest[key], list), where, key, "a list", manifest[key])
    for i, row in enumerate(manifest["rows"]):
        _check(isinstance(row, dict), where, f"rows[{i}]", "an object", row)
        missing = [key for key in MANIFEST_ROW_TYPES if key not in row]
        if missing:
            raise RecordError(f"{where}: rows[{i}]: fields missing: {', '.join(missing)}")
        for key, kind in MANIFEST_ROW_TYPES.items():
            expected = {dict: "an object", str: "a string", int: "an int"}[kind]
            _check(_has_type(row[key], kind), where, f"rows[{i}].{key}", expected, row[key])
    return manifest


def read_manifest(path: Path) -> dict:
    """A validated manifest; :class:`RecordError` naming the file when it cannot be used."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: unreadable manifest ({exc})") from exc
    return validate_manifest(manifest, str(path))


def read_manifests(out: Path) -> dict[str, dict]:
    """Every usable manifest in ``<out>/grids`` by name; an unusable one (truncated, edited) is named in a
    warning and left out (``reproduce NAME`` writes it anew)."""
    manifests = {}
    for path in sorted((Path(out) / "grids").glob("*.json")):
        try:
            manifests[path.stem] = read_manifest(path)
        except RecordError as exc:
            logger.warning("%s; left out (`reproduce %s` writes it anew)", exc, path.stem)
    return manifests


def points(out: Path, manifest: dict, records: list[RunRecord] | None = None) -> pd.DataFrame:
    """One row per manifest point: its coordinates, ``status`` (done / failed / missing), the record
    (column ``record``, None unless done) and the reported test metrics as ``test:<metric>`` columns.
    ``records``: ``out``'s records as :func:`load_records` gave them (a report builds every target from one
    reading); by default each point's record is read from its file."""
    rows = []
    by_file = None if records is None else {Path(record["_path"]).name: record for record in records}
    for row in manifest["rows"]:
        path = record_path(out, row["run_id"])
        record = None
        if by_file is not None:
            record = by_file.get(path.name)   # an unusable file was named by load_records, and counts as missing
        elif path.exists():
            try:
                record = read_record(path)
            except RecordError as exc:
                logger.warning("%s; shown as missing", exc)
        status = "done" if record else ("failed" if failure_path(out, row["run_id"]).exists() else "missing")
        coords = {k: math.nan if v is None else v for k, v in row["coords"].items()}   # null: does not apply
        entry = {**{k: v for k, v in row.items() if k != "coords"}, **coords, "status": status,
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


def per_user_problems(out: Path, records: list[RunRecord]) -> list[str]:
    """One message per record of ``out`` (as :func:`load_records` gave them, which names the unusable ones)
    whose per-user file is missing or unreadable, naming the file (what ``report`` warns about: such a run
    keeps its row, but its across-users tests and per-user intervals cannot be computed)."""
    problems = []
    for record in records:
        try:
            per_user_arrays(Path(out) / "runs" / record["per_user_file"])
        except RecordError as exc:
            problems.append(str(exc))
    return problems


def load_per_user(path: Path, checkpoint: str) -> pd.DataFrame:
    """The per-user test metrics of ``checkpoint`` in the file at ``path``; a missing or unreadable file, or
    one without that checkpoint, is a :class:`RecordError` naming the file."""
    arrays = per_user_arrays(path)
    if f"{checkpoint}::values" not in arrays:
        held = sorted({name.split("::")[0] for name in arrays})
        raise RecordError(f"{path}: no per-user metrics of checkpoint {checkpoint!r} (it holds "
                          f"{', '.join(held) or 'none'})")
    with np.load(path) as data:
        return pd.DataFrame(data[f"{checkpoint}::values"], columns=list(data[f"{checkpoint}::columns"]),
                            index=pd.Index(data[f"{checkpoint}::users"], name="user"))
