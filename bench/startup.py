#!/usr/bin/env python3
"""CPU seconds of the commands that should answer at once: ``--help``, ``--list`` and ``report --help``
(issue target: ``--help`` under 0.5 CPU seconds). A benchmark, not a test.

    python bench/startup.py --rounds 5 --json results/cpu/startup.json

Each command runs ``--rounds`` times as a fresh ``python run_bench.py ...`` process; the CPU seconds (user +
system) of the child come from ``resource.getrusage(RUSAGE_CHILDREN)``, so they count the interpreter's own
start (about 0.05 s) and are little affected by other jobs on the machine, unlike wall seconds (shown beside
them). ``--list`` needs the method registry, which imports the methods and with them torch, so it cannot be
as quick as ``--help``; the script also reports whether each command imported torch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"--help": ["--help"], "--list": ["--list"], "report --help": ["report", "--help"],
            "reproduce --help": ["reproduce", "--help"]}
# Run in the child after the command, to say whether it imported torch (run_bench.py's main, then a check).
PROBE = ("import runpy, sys; sys.argv = ['run_bench.py', *sys.argv[1:]]\n"
         "try:\n    runpy.run_path({script!r}, run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "sys.stderr.write('torch imported: %s\\n' % ('torch' in sys.modules))")


def timed(arguments: list[str]) -> tuple[float, float, bool]:
    """(CPU seconds, wall seconds, whether torch was imported) of one command in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PROBE.format(script=str(ROOT / "run_bench.py")), *arguments],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, "torch imported: True" in result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="runs of each command (the median is reported)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    results = {}
    for name, arguments in COMMANDS.items():
        rounds = [timed(arguments) for _ in range(args.rounds)]
        cpu = statistics.median(r[0] for r in rounds)
        wall = statistics.median(r[1] for r in rounds)
        results[name] = {"cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3), "torch": rounds[0][2],
                         "cpu_rounds": [round(r[0], 3) for r in rounds]}
        print(f"{name:<18} {cpu:6.2f} CPU s  {wall:6.2f} wall s  torch {'imported' if rounds[0][2] else 'not imported'}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"({args.rounds} rounds each, median; load average {load:.1f} on {os.cpu_count()} cores)"
          if load is not None else f"({args.rounds} rounds each, median)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"commands": results, "rounds": args.rounds, "load_average": load,
                                         "cores": os.cpu_count(), "python": platform.python_version(),
                                         "machine": platform.processor() or platform.machine()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
