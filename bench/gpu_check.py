#!/usr/bin/env python3
"""The prepared GPU check: every speed figure the README promises for one H100/H200 on Gowalla, measured in one
script that fits in 8 minutes, written as one JSON and a Markdown table with each figure beside its target.

    python bench/gpu_check.py --data-dir ../shared/datasets --out results/gpu        # on the GPU machine
    python bench/gpu_check.py --quick --out /tmp/gpu-check                            # CPU, synthetic, < 1 min

What it measures (Gowalla, d = 128, 3 layers, the 500-bucket budget):

* UD-128 training epochs at batch 8192 and 2048, and one full-ranking evaluation of the test users;
* LEGCF: METIS initialisation (uncached), one assignment refresh with the rebuild of the expanded graph,
  epochs of the FIXED and of the UPDATE phase (the latter includes the refresh at batch 0);
* C2F: epochs of the fine stage at batch 8192 (its set-up: METIS into m^r parts and SparsePCA, uncached);
* the peak GPU memory of the UD-128 measurements;
* a 20-epoch UD-128 run through the normal run path: its test N@20 and R@20 (a check that training on the
  GPU learns, not a reproduction of Table 3, which trains to early stopping).

Each section is skipped, and says so, once ``--time-limit`` seconds have passed, so a slow machine still
writes what it measured. ``--quick`` runs the same sections on the synthetic dataset on the CPU with tiny
settings: it checks the script, its numbers mean nothing (CI runs it).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from speed import prepared_trainer, sync, timed_epochs, timed_evaluations

from lwbench.config import parse_set_options
from lwbench.data.cards import load_dataset
from lwbench.environment import code_version, device_name, library_versions, resolve_device
from lwbench.grid.runner import execute_run, plan_runs
from lwbench.methods.common.metis import metis_parts, user_item_adjacency

# README targets on one H100 (Gowalla): (figure, target, unit, comparison).
TARGETS = {
    "ud_epoch_8192_s": ("UD-128 epoch, batch 8192", 3.5, "s", "<="),
    "ud_epoch_2048_s": ("UD-128 epoch, batch 2048", 12.0, "s", "<="),
    "evaluation_s": ("full-ranking evaluation (test users)", 1.5, "s", "<="),
    "peak_memory_gib": ("peak GPU memory (UD-128)", 6.0, "GiB", "<="),
    "legcf_metis_s": ("LEGCF METIS initialisation (uncached)", 10.0, "s", "<="),
    "legcf_refresh_s": ("LEGCF refresh + expanded-graph rebuild", 1.0, "s", "<="),
    "legcf_fixed_epoch_s": ("LEGCF FIXED-phase epoch, batch 8192", None, "s", ""),
    "legcf_update_epoch_s": ("LEGCF UPDATE-phase epoch (refresh included)", None, "s", ""),
    "legcf_epoch_ratio": ("LEGCF UPDATE epoch / UD-128 epoch", 1.3, "x", "<="),
    "c2f_fine_setup_s": ("C2F fine-stage set-up (METIS m^r, SparsePCA; uncached)", None, "s", ""),
    "c2f_fine_epoch_s": ("C2F fine-stage epoch, batch 8192", None, "s", ""),
    "c2f_epoch_ratio": ("C2F fine epoch / UD-128 epoch", 1.3, "x", "<="),
    "ud_20_epochs_test_ndcg@20": ("UD-128, 20 epochs: test N@20", None, "", ""),
    "ud_20_epochs_test_recall@20": ("UD-128, 20 epochs: test R@20", None, "", ""),
}
# Tiny settings for --quick: every section runs within seconds on the CPU.
QUICK_SETS = ["legcf.num_buckets=40", "c2f.coarse_buckets=30", "c2f.fine_buckets=10", "c2f.fine_components=8",
              "c2f.fine_batch_size=8192"]


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


class Check:
    """Runs the sections in order, each only while time is left, collecting figures and notes."""

    def __init__(self, limit: float):
        self.started, self.limit = time.perf_counter(), limit
        self.figures: dict[str, float] = {}
        self.notes: list[str] = []

    def section(self, name: str, measure) -> None:
        elapsed = time.perf_counter() - self.started
        if elapsed > self.limit:
            self.notes.append(f"{name}: skipped, {elapsed:.0f} s of the {self.limit:.0f} s limit were used")
            return
        began = time.perf_counter()
        measure()
        self.notes.append(f"{name}: {time.perf_counter() - began:.1f} s")
        print(f"gpu_check: {name} done ({time.perf_counter() - self.started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding gowalla/train.txt[.gz] (not needed with --quick)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="results/gpu", help="where gpu_check.json and gpu_check.md go")
    parser.add_argument("--quick", action="store_true", help="synthetic data on the CPU, tiny settings")
    parser.add_argument("--epochs", type=int, help="timed epochs per measurement, after a warm-up (default 2; "
                        "1 with --quick)")
    parser.add_argument("--time-limit", type=float, default=420.0, help="seconds after which sections are skipped")
    args = parser.parse_args()

    args.epochs = args.epochs or (1 if args.quick else 2)
    device = resolve_device("cpu" if args.quick else args.device)
    dataset = load_dataset("synthetic" if args.quick else "gowalla", data_dir=args.data_dir)
    sets = parse_set_options(QUICK_SETS if args.quick else [])
    run_epochs = 2 if args.quick else 20
    check = Check(args.time_limit)
    figures = check.figures
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))

    def with_batch(method: str, batch: int) -> dict:
        overrides = {owner: dict(options) for owner, options in sets.items() if owner in (method, "trainer")}
        overrides.setdefault("trainer", {})["batch_size"] = batch
        return overrides

    def ud() -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for batch in (8192, 2048):
            trainer, index, _ = prepared_trainer(dataset, "ud", "500buckets", with_batch("ud", batch), device, scratch)
            figures[f"ud_epoch_{batch}_s"] = median(timed_epochs(trainer, index, args.epochs)[1:])
        propagation, ranking = timed_evaluations(trainer, args.epochs)
        figures["evaluation_s"] = median([p + r for p, r in zip(propagation, ranking)][1:])
        if device.type == "cuda":
            figures["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)

    def legcf() -> None:
        spec = plan_runs(["legcf"], dataset, "500buckets", [2024], with_batch("legcf", 8192))[0]
        adjacency = user_item_adjacency(dataset.interactions.train)
        began = time.perf_counter()
        metis_parts(adjacency, spec.options["num_buckets"], seed=2024)
        figures["legcf_metis_s"] = round(time.perf_counter() - began, 3)
        trainer, index, _ = prepared_trainer(dataset, "legcf", "500buckets", with_batch("legcf", 8192), device, scratch)
        stage = trainer.stages[index]
        figures["legcf_fixed_epoch_s"] = median(timed_epochs(trainer, index, args.epochs, stage.phases[0])[1:])
        figures["legcf_update_epoch_s"] = median(timed_epochs(trainer, index, args.epochs, stage.phases[-1])[1:])
        module = trainer.module
        with torch.no_grad():
            _, propagated = trainer.model()
        refreshes = []
        for _ in range(args.epochs + 1):
            sync(device)
            began = time.perf_counter()
            module.refresh(propagated)
            sync(device)
            refreshes.append(time.perf_counter() - began)
        figures["legcf_refresh_s"] = median(refreshes[1:])

    def c2f() -> None:
        trainer, index, setup = prepared_trainer(dataset, "c2f", "500buckets", with_batch("c2f", 8192), device,
                                                 scratch, stage="fine")
        figures["c2f_fine_setup_s"] = round(setup, 3)
        figures["c2f_fine_epoch_s"] = median(timed_epochs(trainer, index, args.epochs)[1:])

    def ud_run() -> None:
        overrides = {"trainer": {"max_epochs": run_epochs, "eval_every": 5}}
        spec = plan_runs(["ud"], dataset, "500buckets", [2024], overrides)[0]
        record = execute_run(spec, dataset, scratch / "run", device, show_progress=False)
        for metric in ("ndcg@20", "recall@20"):
            figures[f"ud_20_epochs_test_{metric}"] = round(record["metrics"]["test"][metric], 4)

    check.section("UD-128 epochs and evaluation", ud)
    check.section("LEGCF", legcf)
    check.section("C2F fine stage", c2f)
    check.section(f"UD-128 {run_epochs}-epoch run", ud_run)
    for name, numerator in (("legcf_epoch_ratio", "legcf_update_epoch_s"), ("c2f_epoch_ratio", "c2f_fine_epoch_s")):
        if numerator in figures and "ud_epoch_8192_s" in figures:
            figures[name] = round(figures[numerator] / figures["ud_epoch_8192_s"], 3)
    write(Path(args.out), {
        "quick": args.quick, "dataset": dataset.interactions.name, "device": device_name(device),
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(), "code_version": code_version(),
        "versions": library_versions(), "timed_epochs": args.epochs, "figures": figures, "notes": check.notes,
        "targets": {key: {"figure": label, "target": target, "unit": unit} for key, (label, target, unit, _) in TARGETS.items()},
        "command": "python bench/gpu_check.py" + (" --quick" if args.quick else f" --data-dir {args.data_dir}"),
    })


def write(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# GPU check: {report['dataset']} on {report['device']}", "",
             f"`{report['command']}` at {report['measured_at']} (code {report['code_version']})"
             + (" — QUICK: synthetic data on the CPU, the numbers mean nothing" if report["quick"] else ""), "",
             "| figure | measured | target | met |", "|---|---|---|---|"]
    for key, (label, target, unit, comparison) in TARGETS.items():
        value = report["figures"].get(key)
        shown = "not measured" if value is None else f"{value:g} {unit}".strip()
        goal = "–" if target is None else f"{comparison} {target:g} {unit}".strip()
        met = "–" if target is None or value is None else ("yes" if value <= target else "NO")
        lines.append(f"| {label} | {shown} | {goal} | {met} |")
    lines += ["", "Sections: " + "; ".join(report["notes"]) + "."]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
