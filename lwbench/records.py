"""Read what an output folder holds: run records, failures, and grid manifests.

A grid manifest (``<out>/grids/<name>.json``) lists the points of one reproduction target (dataset,
method, budget, seed, overrides and report coordinates) with the run id of each, written when the
target is planned. Reports are rebuilt from manifests and records alone, so ``run_bench.py report``
needs neither the datasets nor a re-plan, and a point whose run failed or never finished shows up
as missing rather than silently disappearing.
"""
from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from lwbench.config import FIXED, SINGLE, UPDATE
from lwbench.files import atomic_write_bytes, atomic_write_json


def load_records(out: Path) -> list[dict]:
    """Every finished run record in ``<out>/runs``."""
    runs = Path(out) / "runs"
    return [json.loads(p.read_text()) for p in sorted(runs.glob("*.json")) if not p.name.endswith(".failed.json")]


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
    runs = Path(out) / "runs"
    rows = []
    for row in manifest["rows"]:
        record_path = runs / f"{row['run_id']}.json"
        record = json.loads(record_path.read_text()) if record_path.exists() else None
        status = "done" if record else ("failed" if (runs / f"{row['run_id']}.failed.json").exists() else "missing")
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


def load_per_user(path: Path, checkpoint: str) -> pd.DataFrame:
    with np.load(path) as data:
        return pd.DataFrame(data[f"{checkpoint}::values"], columns=list(data[f"{checkpoint}::columns"]),
                            index=pd.Index(data[f"{checkpoint}::users"], name="user"))
