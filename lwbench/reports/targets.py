"""Reproduction targets: the registry studies add to, and ``run_bench.py report``.

A target is a grid (which cells to run) plus a builder (which tables and figures to draw from the
points). Studies register their targets with :func:`register_target`; they are discovered once, on
first use, from

1. the built-in package :mod:`lwbench.studies` (each module or sub-package a study),
2. the ``lwbench.studies`` entry-point group: a study shipped in another installed package (the entry
   point names a module that registers its targets on import, or a :class:`Target`).

:func:`build_target` and :func:`build_report` rebuild tables (Markdown, LaTeX, CSV) and figures (PNG,
PDF) from a target's manifest and the records, without training. This module and the studies import
no torch, so that reports can be built where the trainer is not installed; planning and running a
target is :mod:`lwbench.grid.reproduce`.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType

import pandas as pd

from lwbench.records import RecordError, load_records, points, read_manifests
from lwbench.reports import figures, summaries
from lwbench.reports.cell import Cell
from lwbench.reports.tables import Table

logger = logging.getLogger(__name__)

BUILTIN_PACKAGE = "lwbench.studies"
ENTRY_POINT_GROUP = "lwbench.studies"
_TARGETS: dict[str, Target] = {}
_discovered = False


@dataclass
class Outputs:
    tables: list[Table] = field(default_factory=list)
    figures: dict = field(default_factory=dict)      # name -> matplotlib Figure


@dataclass(frozen=True)
class Target:
    """``cells`` is called only when planning and may import the trainer's side (the grid, the method
    registry) inside itself; ``build`` works from records alone and must not."""

    name: str
    description: str
    datasets: tuple[str, ...]
    requires: tuple[str, ...]                                    # methods that must be registered
    cells: Callable[[list[str], list[str]], list[Cell]]          # (datasets, methods) -> cells
    build: Callable[[pd.DataFrame, Path, dict, str], Outputs]    # (points, out, manifest, alternative)
    min_seeds: int = 1                                            # seeds kept by --quick
    listed: tuple[str, ...] = ()                                  # methods its table lists even if unregistered


def output_name(manifest: Mapping, default: str) -> str:
    """The name a builder writes its main table (and ``<name>-stats``) under: its manifest's name, which is the
    target's own for ``reproduce``, and ``tuned-<study>`` where a tune study builds the target's tables over its
    runs, so that every note naming a companion table names the right one."""
    return manifest.get("name") or default


class TargetError(RuntimeError):
    """A target cannot be planned or built (unknown name, missing method, no dataset, unfit records)."""


def register_target(target: Target) -> Target:
    """Make ``target`` available under its name; a study calls this when it is imported."""
    if not isinstance(target, Target):
        raise TypeError(f"register_target expects a lwbench.reports.targets.Target, got {target!r}")
    previous = _TARGETS.get(target.name)
    if previous is not None and previous != target:
        raise ValueError(f"target name {target.name!r} is registered twice ({previous.description!r} and "
                         f"{target.description!r})")
    _TARGETS[target.name] = target
    return target


def discover() -> None:
    """Import the built-in studies and every entry point once (idempotent)."""
    global _discovered
    if _discovered:
        return
    package = importlib.import_module(BUILTIN_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{BUILTIN_PACKAGE}.{info.name}")
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        if isinstance(loaded, Target):
            register_target(loaded)
    _discovered = True


def targets() -> Mapping[str, Target]:
    """Every registered target by name, in registration order (read-only)."""
    discover()
    return MappingProxyType(_TARGETS)


def get_target(name: str) -> Target:
    known = targets()
    if name not in known:
        raise TargetError(f"unknown target {name!r}; targets: {', '.join(known)}")
    return known[name]


def build_target(name: str, out: Path, figures_dir: Path, alternative: str,
                 records: list[dict] | None = None) -> list[Path]:
    """Write a target's tables and figures from its manifest and the records in ``out`` (``records``: those
    already read by :func:`lwbench.records.load_records`; by default read here)."""
    manifest = read_manifests(out).get(name)
    if manifest is None:
        raise TargetError(f"{out}/grids/{name}.json does not exist: run `run_bench.py reproduce {name}` first")
    pts = points(out, manifest, records)
    if not len(pts):
        logger.warning("%s: the manifest lists no runs", name)
        return []
    try:
        outputs = get_target(manifest["target"]).build(pts, Path(out), manifest, alternative)
    except (KeyError, ValueError) as exc:  # records that do not fit the target (e.g. a missing checkpoint)
        raise TargetError(f"cannot build {name} from the records in {out}: {exc.args[0]}") from exc
    written = []
    for table in outputs.tables:
        print("\n" + table.to_markdown())     # the tables are the command's output
        written += table.write(out)
    finished = int((pts["status"] == "done").sum())
    for figure_name, figure in outputs.figures.items():
        if not finished:   # empty axes at a made-up scale would read as a result
            logger.warning("%s: not drawn: none of the %d runs of %s has finished", figure_name,
                           pts["run_id"].nunique(), name)
            continue
        if manifest.get("quick"):
            figures.stamp_smoke_run(figure)   # a --quick figure's numbers mean nothing: said inside the image
        written += figures.save(figure, figures_dir, figure_name)
    logger.info("wrote: %s", ", ".join(str(p) for p in written))
    return written


def build_report(out: Path, figures_dir: Path, alternative: str = "two-sided",
                 records: list[dict] | None = None) -> tuple[list[Path], list[str]]:
    """Every target with a manifest in ``out``, plus a summary of all records; no training. ``records``: the
    records of ``out`` already read by :func:`lwbench.records.load_records` (by default read here, once for
    every table). Returns (files written, errors): a target that cannot be built does not stop the others."""
    out = Path(out)
    if not (out / "runs").is_dir():
        raise TargetError(f"{out}/runs does not exist: point --out at a folder that run_bench.py wrote records to")
    records = load_records(out) if records is None else records
    written, errors = [], []
    for name in read_manifests(out):
        try:
            written += build_target(name, out, figures_dir, alternative, records)
        except (TargetError, RecordError) as exc:   # e.g. an unreadable per-user file: named, others go on
            errors.append(f"{name}: {exc}")
    profile = summaries.profile_table(records)
    for table in summaries.summary_table(records, out) + ([profile] if profile is not None else []):
        print("\n" + table.to_markdown())
        written += table.write(out)
    return written, errors
