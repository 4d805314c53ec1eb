#!/usr/bin/env python3
"""Wall time of the commands a new user waits for: the README demo (``python run_bench.py``, UD on the
synthetic dataset) and ``reproduce table3 --quick``, each in a fresh output folder, so nothing is
reused. A benchmark, not a test: run it on an idle machine (README targets: demo <= 60 s, quick
target <= 3 min on a 2-core CPU).

    python bench/wait_times.py --json results/cpu/wait_times.json

Each command runs ``--rounds`` times as a subprocess (median and all rounds are reported), with the
process's CPU seconds beside its wall seconds, so a loaded machine shows as wall >> CPU / cores.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lwbench.environment import code_version, device_name

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {   # name -> (arguments of run_bench.py, target seconds)
    "demo": ([], 60),
    "reproduce table3 --quick": (["reproduce", "table3", "--quick"], 180),
}


def timed(arguments: list[str], out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one command writing under ``out``."""
    extra = ["--out", str(out / "results")] + (["--figures", str(out / "figures")] if arguments else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "run_bench.py"), *arguments, *extra, "--no-progress", "-q"],
                   check=True, cwd=out)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each command")
    parser.add_argument("--only", choices=sorted(COMMANDS), help="time one command")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    results = {}
    for name, (arguments, target) in COMMANDS.items():
        if args.only and name != args.only:
            continue
        rounds = []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="lwbench-wait-") as scratch:
                rounds.append(timed(arguments, Path(scratch)))
        wall = statistics.median(w for w, _ in rounds)
        results[name] = {"target_seconds": target, "median_wall_seconds": round(wall, 1),
                         "rounds": [{"wall_seconds": round(w, 1), "cpu_seconds": round(c, 1)} for w, c in rounds],
                         "met": wall <= target}
        print(f"{name:28s} median {wall:6.1f} s wall (target {target} s: {'met' if wall <= target else 'MISSED'}); "
              + ", ".join(f"{w:.1f} s wall / {c:.1f} s CPU" for w, c in rounds), flush=True)
    report = {"machine": device_name(torch.device("cpu")), "torch": torch.__version__,
              "load_average_1m_at_end": os.getloadavg()[0],
              "code_version": code_version(), "commands": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
