"""Fabricated run records, per-user files and target manifests in the runner's format, so reports
can be tested without training (the values are chosen by the tests, hence known exactly); and
:data:`TINY_STUDY`, a second study registered the way an installed package would register one."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from lwbench import records
from lwbench.records import save_per_user, write_manifest
from lwbench.reports import figures, summaries
from lwbench.reports.cell import Cell
from lwbench.reports.targets import Outputs, Target, get_target

KS = (1, 5, 10, 20, 50)
METRICS = [f"ndcg@{k}" for k in KS] + [f"recall@{k}" for k in KS]


def per_user_frame(level: float, n_users: int = 120, seed: int = 0) -> pd.DataFrame:
    """Per-user metrics around ``level`` (users in a shuffled order, as a real evaluation need not sort them)."""
    rng = np.random.default_rng(seed)
    users = rng.permutation(n_users)
    values = np.clip(level + rng.normal(0, level / 2 + 1e-3, (n_users, len(METRICS))), 0, 1)
    return pd.DataFrame(values, index=pd.Index(users, name="user"), columns=METRICS)


def write_record(out: Path, *, run_id: str, dataset: str, method: str, label: str, seed: int, options: dict,
                 per_user: dict[str, pd.DataFrame], reported: str, applies: bool = True, params: int = 1000,
                 device: str = "cpu", epochs: int = 10, seconds_per_epoch: float = 2.0, trainer: dict | None = None,
                 fraction: float | None = None, accounting: str | None = None) -> dict:
    """A record whose checkpoint metrics are the means of the given per-user frames; ``trainer``: settings
    over the default ``max_epochs=100``; ``fraction``: the share of its budget the run stores; ``accounting``:
    the budget's (None: not recorded, read as table3)."""
    checkpoints = {name: {"epoch": 5, "valid": frame.mean().to_dict(), "test": frame.mean().to_dict()}
                   for name, frame in per_user.items()}
    record = {
        "run_id": run_id, "method": method, "label": label, "dataset": dataset, "seed": seed,
        "budget": {"text": "500buckets", "params": 2000, "applies": applies,
                   **({"fraction": fraction} if fraction is not None else {}),
                   **({"accounting": accounting} if accounting is not None else {})}, "params": params, "bytes": 4 * params,
        "metrics": {"valid": checkpoints[reported]["valid"], "test": checkpoints[reported]["test"]},
        "reported_checkpoint": reported, "checkpoints": checkpoints,
        "config": {"method": {"name": method, "options": options}, "trainer": {"max_epochs": 100, **(trainer or {})},
                   "seed": seed, **({"budget": {"accounting": accounting}} if accounting is not None else {})},
        "epochs_run": epochs, "train_seconds": seconds_per_epoch * epochs * 0.9,
        "eval_seconds": seconds_per_epoch * epochs * 0.1, "peak_memory_bytes": 2**30, "device": device,
        "per_user_file": f"{run_id}.peruser.npz", "final_diagnostics": {"nonzero_fraction": params / 2000, "phase": "x"},
    }
    unused = {"param_count": {"table3": params}, "planned_param_count": {"table3": params}, "within_budget": True,
              "shared_stages": {}, "config_hash": run_id, "inference_profile": {}, "peak_memory_kind": "fake", "versions": {},
              "code_version": "fake", "device_name": device, "started_at": "", "finished_at": "", "history": []}
    runs = Path(out) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    save_per_user(runs / record["per_user_file"],
                  {name: SimpleNamespace(test_per_user=frame) for name, frame in per_user.items()})
    return records.write_record(out, {**unused, **record})


def fake_target(out: Path, target: str, datasets: list[str], methods: list[str], seeds: list[int], level, *,
                checkpoints=("train/single",), applies=lambda method: method != "ud", skip=(),
                fraction=lambda cell, seed: None) -> list[dict]:
    """Write the manifest of ``target`` (from its own cell list) and a record per point.

    ``level(cell, seed, checkpoint)`` gives the mean metric level of each checkpoint; the last checkpoint
    is the reported one; ``fraction(cell, seed)``, the share of its budget a run stores (None: not recorded).
    Points whose run id is in ``skip`` get no record (unfinished runs)."""
    rows = []
    for cell in get_target(target).cells(datasets, methods):
        options = dict(cell.overrides.get(cell.method, {}))
        label = f"ud-{options.get('dim', 128)}" if cell.method == "ud" else cell.method
        for seed in seeds:
            key = json.dumps([cell.dataset, cell.method, cell.budget, options, seed], sort_keys=True, default=str)
            run_id = f"{cell.dataset}-{label}-s{seed}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
            rows.append({"dataset": cell.dataset, "method": cell.method, "label": label, "budget": cell.budget,
                         "seed": seed, "run_id": run_id, "overrides": dict(cell.overrides),
                         "coords": dict(cell.coords), "options": options})
            if run_id in skip or (Path(out) / "runs" / f"{run_id}.json").exists():
                continue
            frames = {name: per_user_frame(level(cell, seed, name), seed=seed * 7 + i)
                      for i, name in enumerate(checkpoints)}
            write_record(out, run_id=run_id, dataset=cell.dataset, method=cell.method, label=label, seed=seed,
                         options=options, per_user=frames, reported=checkpoints[-1], applies=applies(cell.method),
                         fraction=fraction(cell, seed))
    write_manifest(out, target, rows, target=target, quick=False, seeds=seeds,
                   missing_methods=["pep"] if target == "table3" else [], dropped=[])
    return rows


TINY_WIDTHS = (8, 16)
TINY_METRICS = ["ndcg@20", "recall@20"]


def _tiny_cells(datasets: list[str], methods: list[str]) -> list[Cell]:
    return [Cell(d, "ud", "none", {"ud": {"dim": dim}}, {"width": dim}) for d in datasets for dim in TINY_WIDTHS]


def _tiny_build(pts, out, manifest, alternative) -> Outputs:
    summary = summaries.summarize(pts, ["dataset", "width"], TINY_METRICS)
    table = summaries.series_table("tiny-widths", "UD at two widths", summary, ["dataset", "width"], TINY_METRICS,
                                   notes=summaries.status_notes(pts))
    figure, axes = figures.new_figure(1, 1)
    for metric in TINY_METRICS:
        figures.mean_std_line(axes[0, 0], summary, "width", metric, label=summaries.metric_label(metric))
    return Outputs([table], {"tiny-widths": figure})


# A study outside lwbench: the tests load it through the ``lwbench.studies`` entry-point group.
TINY_STUDY = Target("tiny-widths", "UD at two small widths (a study of the tests)", ("synthetic",), ("ud",),
                    _tiny_cells, _tiny_build)
