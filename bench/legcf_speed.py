#!/usr/bin/env python3
"""Speed of LEGCF's assignment machinery (methods.md 7.2, 7.3): METIS initialisation (uncached), and one
assignment refresh ``S <- top_t(H_full pinv(H_meta))`` including the rebuild of the expanded graph,
split into its two halves. A benchmark, not a test. Targets on one H100 (Gowalla, m=500, t=2): refresh
+ rebuild <= 1 s (the official code takes 124-132 s), METIS <= 10 s. Training epochs (with the refresh
at batch 0) are timed by ``bench/speed.py --method legcf``.

    python bench/legcf_speed.py --dataset gowalla --data-dir ../shared/datasets
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lwbench.assignment import pinv_scores, top_t_assignment  # noqa: E402
from lwbench.config import parse_set_options  # noqa: E402
from lwbench.datasets import load_dataset  # noqa: E402
from lwbench.environment import device_name, resolve_device  # noqa: E402
from lwbench.metis import metis_parts, user_item_adjacency  # noqa: E402
from lwbench.registry import get_method  # noqa: E402
from lwbench.runner import plan_runs  # noqa: E402
from lwbench.trainer import Trainer  # noqa: E402


def timed(function, device: torch.device, repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls after one untimed warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return times


def summary(times: list[float]) -> dict:
    return {"median": round(statistics.median(times), 4), "all": [round(t, 4) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    spec = plan_runs(["legcf"], dataset, args.budget, [2024], parse_set_options(args.sets))[0]
    n_meta, per_row = spec.options["num_buckets"], spec.options["buckets_per_entity"]

    adjacency = user_item_adjacency(data.train)
    metis_times = timed(lambda: metis_parts(adjacency, n_meta, seed=2024), device, args.metis_repeats)

    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(get_method("legcf"), spec.options, data, spec.trainer, seed=2024, device=device,
                          work_dir=Path(scratch) / "work", cache_dir=Path(scratch) / "cache", show_progress=False)
        started = time.perf_counter()
        trainer.build()                       # METIS (uncached here), init, first graph
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        build_seconds = time.perf_counter() - started
    module = trainer.module
    with torch.no_grad():
        _, propagated = trainer.model()
    n = module.n_entities
    scores_and_top_t = timed(lambda: top_t_assignment(pinv_scores(propagated[:n], propagated[n:]), per_row),
                             device, args.repeats)
    rebuild = timed(lambda: module.builder.build([module.assignment]), device, args.repeats)
    refresh = timed(lambda: module.refresh(propagated), device, args.repeats)
    report = {
        "dataset": data.name, "device": device_name(device), "n_entities": n, "num_buckets": n_meta,
        "buckets_per_entity": per_row, "graph_nnz": module.graph().nnz,
        "metis_seconds": summary(metis_times),
        "module_build_seconds": round(build_seconds, 3),
        "refresh_with_rebuild_seconds": summary(refresh),
        "pinv_and_top_t_seconds": summary(scores_and_top_t),
        "graph_rebuild_seconds": summary(rebuild),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
