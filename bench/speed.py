#!/usr/bin/env python3
"""Speed and memory of one method on one dataset: seconds per training epoch, seconds per full-ranking
evaluation over all test users (split into propagation and ranking), and peak memory. A benchmark, not a test: run it on the machine you
want numbers for (targets in the README are for one H100 on Gowalla).

    python bench/speed.py --method ud --dataset gowalla --data-dir ../shared/datasets --batch-size 8192

``--stage NAME`` times a later stage of a multi-stage method (e.g. ``--method c2f --stage fine``): the
stages before it are entered (their start hooks run) but not trained, so the timed stage starts from
freshly initialised weights, which does not change its cost. A stage's own trainer settings apply (C2F's
fine stage trains at ``c2f.fine_batch_size``, 32768 unless ``--set c2f.fine_batch_size=...``).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch

from lwbench.config import parse_set_options
from lwbench.data.cards import load_dataset
from lwbench.environment import device_name, keep_freed_memory, resolve_device
from lwbench.grid.runner import plan_runs
from lwbench.registry import get_method
from lwbench.training.trainer import Trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_epochs(trainer: Trainer, stage_index: int, epochs: int, phase: str | None = None) -> list[float]:
    """Seconds of ``epochs + 1`` training epochs of a stage (the first is a warm-up), in ``phase`` (default:
    the stage's last, so an UPDATE phase's refresh hook is included). The trainer must have been built."""
    stage = trainer.stages[stage_index]
    config = trainer.stage_config(stage)
    phase = phase or stage.phases[-1]
    if phase != stage.phases[0]:
        trainer.module.begin_phase(stage, phase)
    times = []
    for epoch in range(epochs + 1):
        started = time.perf_counter()
        trainer.train_epoch(stage, phase, epoch, config)
        sync(trainer.device)
        times.append(time.perf_counter() - started)
    return times


def timed_evaluations(trainer: Trainer, evals: int) -> tuple[list[float], list[float]]:
    """(propagation, ranking) seconds of ``evals + 1`` full evaluations of the test split (the first a warm-up):
    propagation of the layer-0 rows, then scoring every item, masking training items, top-k and metrics."""
    propagation, ranking = [], []
    for _ in range(evals + 1):
        started = time.perf_counter()
        tables = trainer.propagated_tables()
        sync(trainer.device)
        propagated = time.perf_counter()
        trainer.evaluator.per_user("test", *tables)
        sync(trainer.device)
        propagation.append(propagated - started)
        ranking.append(time.perf_counter() - propagated)
    return propagation, ranking


def prepared_trainer(dataset, method: str, budget: str, overrides: dict, device: torch.device, scratch: Path,
                     stage: str | None = None) -> tuple[Trainer, int, float]:
    """A built trainer entered into ``stage`` (default: the first) without training the stages before it
    (their start hooks run, so the timed stage starts from fresh weights, which does not change its cost);
    returns (trainer, stage index, set-up seconds)."""
    spec = plan_runs([method], dataset, budget, [2024], overrides)[0]
    trainer = Trainer(get_method(spec.method), spec.options, dataset.interactions, spec.trainer,
                      seed=2024, device=device, work_dir=scratch / spec.run_id, cache_dir=scratch, show_progress=False)
    names = [s.name for s in trainer.stages]
    if stage is not None and stage not in names:
        raise SystemExit(f"{spec.method} has no stage {stage!r}; its stages are {', '.join(names)}")
    index = 0 if stage is None else names.index(stage)
    started = time.perf_counter()
    trainer.build()
    for i in range(index + 1):
        trainer.start_stage(i, hand_off=False)
    sync(device)
    return trainer, index, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="ud")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data-dir")
    parser.add_argument("--budget", default="500buckets")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--evals", type=int, default=3, help="timed full evaluations (after one warm-up)")
    parser.add_argument("--stage", help="name of the stage to time (default: the first stage)")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--out", default="bench/out", help="scratch folder for the trainer's work files")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's malloc returning freed memory, as before lwbench kept it (the "
                             "grid workers call keep_freed_memory)")
    args = parser.parse_args()
    if args.epochs < 1 or args.evals < 1:
        parser.error("--epochs and --evals must be at least 1 (one more untimed warm-up run comes first)")

    if not args.default_allocator:
        keep_freed_memory()
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, data_dir=args.data_dir)
    overrides = parse_set_options(args.sets)
    overrides.setdefault("trainer", {})["batch_size"] = args.batch_size
    trainer, index, setup_seconds = prepared_trainer(dataset, args.method, args.budget, overrides, device,
                                                     Path(args.out), args.stage)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stage = trainer.stages[index]
    config = trainer.stage_config(stage)
    epoch_times = timed_epochs(trainer, index, args.epochs)
    propagation_times, ranking_times = timed_evaluations(trainer, args.evals)
    eval_times = [p + r for p, r in zip(propagation_times, ranking_times)]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    report = {
        "method": trainer.label, "stage": stage.name, "dataset": dataset.interactions.name, "device": device_name(device),
        "batch_size": config.batch_size, "layers": config.layers, "triplets_per_epoch":
            config.n_negatives * dataset.interactions.train.nnz, "setup_seconds": round(setup_seconds, 3),
        "epoch_seconds_median": round(statistics.median(epoch_times[1:]), 3),
        "epoch_seconds_all": [round(t, 3) for t in epoch_times],
        "eval_seconds_median": round(statistics.median(eval_times[1:]), 3),
        "eval_propagation_seconds_median": round(statistics.median(propagation_times[1:]), 3),
        "eval_ranking_seconds_median": round(statistics.median(ranking_times[1:]), 3),
        "eval_users": int(len(trainer.evaluator.users["test"])),
        "peak_gpu_memory_gib": None if peak is None else round(peak / 2**30, 3),
        "minor_page_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
        "cpu_seconds": round(time.process_time(), 2), "threads": torch.get_num_threads(),
        "allocator": "default" if args.default_allocator else "keep_freed_memory",
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
