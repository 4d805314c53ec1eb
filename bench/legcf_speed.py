#!/usr/bin/env python3
"""Speed of the assignment machinery of LEGCF (docs/protocol.md §7.2, §7.3) and C2F (8.4, 8.6). A benchmark, not a
test.

``--method legcf`` (default): METIS initialisation (uncached), and one assignment refresh
``S <- top_t(H_full pinv(H_meta))`` including the rebuild of the expanded graph, split into its two halves.
Targets on one H100 (Gowalla, m=500, t=2): refresh + rebuild <= 1 s (the official code takes 124-132 s),
METIS <= 10 s.

``--method c2f``: METIS for the coarse stage (uncached), the fine-stage initialisation (METIS into m^r parts,
SparsePCA, bridging; uncached), and one ``S^r`` update by weight bridging (eqs. 23-24) including the rebuild
of the 3-block graph, split into scores + top-t^r and rebuild. Target on one H100 (Gowalla, m^c=300,
m^r=100): update + rebuild <= 1 s.

Training epochs (with the refresh at batch 0) are timed by ``bench/speed.py --method legcf`` and
``bench/speed.py --method c2f --stage fine``.

    python bench/legcf_speed.py --dataset gowalla --data-dir ../shared/datasets
    python bench/legcf_speed.py --method c2f --dataset gowalla --data-dir ../shared/datasets
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lwbench.config import parse_set_options
from lwbench.data.cards import load_dataset
from lwbench.environment import device_name, resolve_device
from lwbench.grid.runner import plan_runs
from lwbench.methods.c2f.module import fine_assignment, weight_bridging_scores
from lwbench.methods.common.assignment import pinv_scores, top_t_assignment
from lwbench.methods.common.metis import metis_parts, user_item_adjacency
from lwbench.registry import get_method
from lwbench.training.trainer import Trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls after one untimed warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        function()
        sync(device)
        times.append(time.perf_counter() - started)
    return times


def once(function, device: torch.device) -> float:
    sync(device)
    started = time.perf_counter()
    function()
    sync(device)
    return time.perf_counter() - started


def summary(times: list[float]) -> dict:
    return {"median": round(statistics.median(times), 4), "all": [round(t, 4) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="legcf", choices=("legcf", "c2f"))
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data-dir")
    parser.add_argument("--budget", default="500buckets")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (after one warm-up)")
    parser.add_argument("--metis-repeats", type=int, default=1, help="timed METIS runs (after one warm-up)")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()

    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, data_dir=args.data_dir)
    data = dataset.interactions
    spec = plan_runs([args.method], dataset, args.budget, [2024], parse_set_options(args.sets))[0]
    options = spec.options
    coarse = args.method == "c2f"
    n_meta = options["coarse_buckets"] if coarse else options["num_buckets"]
    per_row = options["coarse_topk"] if coarse else options["buckets_per_entity"]

    adjacency = user_item_adjacency(data.train)
    metis_times = timed(lambda: metis_parts(adjacency, n_meta, seed=2024), device, args.metis_repeats)

    report = {"method": args.method, "dataset": data.name, "device": device_name(device),
              "n_entities": data.n_entities, "num_buckets": n_meta, "buckets_per_entity": per_row,
              "metis_seconds": summary(metis_times)}
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(get_method(args.method), options, data, spec.trainer, seed=2024, device=device,
                          work_dir=Path(scratch) / "work", cache_dir=Path(scratch) / "cache", show_progress=False)
        report["module_build_seconds"] = round(once(trainer.build, device), 3)  # METIS (uncached), init, graph
        if coarse:  # the fine stage's initialisation: METIS into m^r parts and SparsePCA, both uncached
            report.update(fine_buckets=options["fine_buckets"], fine_topk=options["fine_topk"])
            report["fine_init_seconds"] = round(once(lambda: trainer.start_stage(1, hand_off=False), device), 3)
    module = trainer.module
    with torch.no_grad():
        _, propagated = trainer.model()
    n, m = module.n_entities, n_meta
    if coarse:
        settings = module.fine_settings
        scores_and_top_t = lambda: fine_assignment(  # noqa: E731
            weight_bridging_scores(propagated[:n], propagated[n:n + m], propagated[n + m:]), settings.per_row,
            softmax=settings.code)
    else:
        scores_and_top_t = lambda: top_t_assignment(pinv_scores(propagated[:n], propagated[n:]), per_row)  # noqa: E731
    report.update({
        "graph_nnz": module.graph().nnz,
        "refresh_with_rebuild_seconds": summary(timed(lambda: module.refresh(propagated), device, args.repeats)),
        "scores_and_top_t_seconds": summary(timed(scores_and_top_t, device, args.repeats)),
        "graph_rebuild_seconds": summary(timed(lambda: module.builder.build(module.graph_chain()), device,
                                               args.repeats)),
        "torch_threads": torch.get_num_threads(),
    })
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
