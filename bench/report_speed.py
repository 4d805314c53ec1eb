#!/usr/bin/env python3
"""Wall and CPU seconds of ``report`` and ``compare`` on an output folder of many records (issue target:
200 records in under 5 s each). A benchmark, not a test.

    python bench/report_speed.py --records 200 --json results/cpu/report_speed.json

The folder is made from the committed Last.fm records (``results/lastfm/runs``): the whole set is copied
under new budget names (``copy1``, ``copy2``, ...; each record with its per-user file) until there are
``--records`` records, as a budget sweep of ten methods with one to three seeds each would look, and a
``table3`` manifest lists them all, so ``report`` builds Table 3 and the summary with their significance
tests (about 10 blocks of 10 rows) and the inference profile, and ``compare`` reads every record and the
per-user files of two rows. Each command
runs as a subprocess ``--rounds`` times; the median is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lwbench.environment import code_version, device_name
from lwbench.records import load_records, write_manifest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "results" / "lastfm"


def make_folder(folder: Path, n_records: int) -> int:
    """Copies of the committed records under new seeds, and a manifest listing every copy."""
    runs = folder / "runs"
    runs.mkdir(parents=True)
    originals = load_records(SOURCE)
    rows, copy = [], 0
    while len(rows) < n_records:
        for record in originals:
            if len(rows) == n_records:
                break
            seed, budget = record["seed"], f"copy{copy}"
            run_id = f"{record['run_id']}-{budget}"
            per_user = f"{run_id}.peruser.npz"
            shutil.copy(SOURCE / "runs" / record["per_user_file"], runs / per_user)
            clone = {k: v for k, v in record.items() if k != "_path"}
            clone.update(run_id=run_id, per_user_file=per_user, budget={**record["budget"], "text": budget},
                         config={**record["config"], "budget": {**record["config"]["budget"], "text": budget}})
            (runs / f"{run_id}.json").write_text(json.dumps(clone))
            rows.append({"dataset": record["dataset"], "method": record["method"], "label": record["label"],
                         "budget": budget, "seed": seed, "run_id": run_id, "overrides": {},
                         "coords": {}, "options": record["config"]["method"]["options"]})
        copy += 1
    write_manifest(folder, "table3", rows, target="table3", quick=False, seeds=sorted({r["seed"] for r in rows}),
                   missing_methods=[], dropped=[])
    return len(rows)


def timed(arguments: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "run_bench.py"), *arguments], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the measurement here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "out"
        n = make_folder(folder, args.records)
        commands = {"report": ["report", "--out", str(folder), "--figures", str(Path(tmp) / "figures")],
                    "compare": ["compare", "dpq", "mgqe", "--budget", "copy0", "--out", str(folder)]}
        result = {"command": shlex.join(["python", "bench/report_speed.py", *sys.argv[1:]]),
                  "machine": device_name(torch.device("cpu")), "records": n, "code_version": code_version(),
                  "load_average": list(os.getloadavg()), "commands": {}}
        for name, arguments in commands.items():
            rounds = [timed(arguments) for _ in range(args.rounds)]
            result["commands"][name] = {"wall_s": statistics.median(w for w, _ in rounds),
                                        "cpu_s": statistics.median(c for _, c in rounds),
                                        "rounds": [{"wall_s": w, "cpu_s": c} for w, c in rounds], "target_s": 5}
            print(f"{name}: {result['commands'][name]['wall_s']:.2f} s wall, "
                  f"{result['commands'][name]['cpu_s']:.2f} s CPU (median of {args.rounds}; {n} records)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
