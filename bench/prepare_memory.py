#!/usr/bin/env python3
"""Time and peak memory of ``lwbench prepare`` on a generated CSV (a benchmark, not a test).

    python bench/prepare_memory.py --rows 10000000 --work /tmp/prep-bench

Writes ``ratings.csv`` (string user and item ids, a rating and a timestamp; power-law item popularity)
with ``--rows`` rows into ``--work``, then runs ``prepare`` on it in a child process (temporal split,
rating threshold 3, 5-core users) and reports the child's wall time and peak resident memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def generate(path: Path, rows: int, seed: int = 0, chunk: int = 1_000_000) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items = max(10, rows // 50), max(10, rows // 20)
    with open(path, "w") as out:
        out.write("user_id,item_id,rating,timestamp\n")
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            users = rng.integers(0, n_users, n)
            items = np.minimum((rng.pareto(1.2, n) * n_items / 50).astype(np.int64), n_items - 1)
            frame = pd.DataFrame({"user_id": np.char.add("user", users.astype(str)),
                                  "item_id": np.char.add("sku-", items.astype(str)),
                                  "rating": rng.integers(1, 6, n), "timestamp": rng.integers(1e9, 1.7e9, n)})
            frame.to_csv(out, header=False, index=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (the CSV and the output)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    csv, out = args.work / f"ratings-{args.rows}.csv", args.work / f"prepared-{args.rows}-{time.time_ns()}"
    if not csv.exists():
        started = time.perf_counter()
        generate(csv, args.rows)
        print(f"generated {csv} ({csv.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lwbench", "prepare", str(csv), "--out", str(out), "--split",
                           "temporal", "--min-rating", "3", "--user-core", "5"], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024   # Linux: KiB
    print(done.stdout + done.stderr)
    print(json.dumps({"rows": args.rows, "csv_mib": round(csv.stat().st_size / 2**20), "seconds": round(seconds, 1),
                      "peak_rss_mib": round(peak_mib), "returncode": done.returncode}))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
