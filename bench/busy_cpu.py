#!/usr/bin/env python3
"""CPU seconds and wall seconds per training epoch of the README demo (UD-128 on the synthetic dataset, the
run path's batch size) on an idle CPU and under a competing load, for torch threads 1 and 2 and OpenMP wait
policies. A benchmark, not a test.

    python bench/busy_cpu.py --json results/cpu/busy_cpu.json

The competing load (``--loads``) is one busy-looping Python process per core (``busy``) or a single one
(``one``), which the script starts before and stops after each loaded round; ``idle`` starts none (other jobs
on the machine still count: the load averages of every round are in the JSON). Every configuration trains in a fresh subprocess (the OpenMP runtime reads its settings when
torch loads it), one warm-up epoch and then ``--epochs`` timed ones; a round reports the median epoch, and the
table the median of ``--rounds`` rounds. Configurations are interleaved round by round, so a change in the
machine's other load spreads over all of them. CPU seconds are the training process's own (every thread), so
a waiting thread that spins shows as CPU seconds that train nothing.

``--policies``: ``unset`` (nothing set: the OpenMP runtime's own default; libgomp spins about 300,000 rounds
before it sleeps), ``PASSIVE`` (``OMP_WAIT_POLICY=PASSIVE``: sleep at once), ``ACTIVE`` (spin for minutes),
``spin:N`` (libgomp's ``GOMP_SPINCOUNT=N``: spin N rounds, then sleep), and ``default`` (nothing set by the
script: the training process applies lwbench's default, as the command line does; ``lwbench/openmp.py``).
torch's CPU wheels use GNU libgomp (``torch.__config__.parallel_info()``; the JSON names the runtime loaded),
so Intel's ``KMP_BLOCKTIME`` does nothing there.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lwbench.openmp import USER_SETTINGS  # imports no torch

ROOT = Path(__file__).resolve().parent
POLICIES = ("unset", "PASSIVE", "ACTIVE", "default")
LOADS = ("idle", "one", "busy")   # none started; one busy-looping process; one per core


def child(threads: int, epochs: int, apply_default: bool) -> None:
    """Train the demo's UD-128 for one warm-up and ``epochs`` timed epochs; print one JSON line."""
    if apply_default:   # before torch loads the OpenMP runtime, as the command line does
        from lwbench.openmp import apply_wait_policy_default
        apply_wait_policy_default()
    import torch
    from speed import prepared_trainer

    from lwbench.data.cards import load_dataset
    from lwbench.environment import keep_freed_memory

    torch.set_num_threads(threads)      # as a grid task does (lwbench.grid.workers.execute_task)
    keep_freed_memory()
    dataset = load_dataset("synthetic")
    with tempfile.TemporaryDirectory(prefix="lwbench-busy-") as scratch:
        trainer, index, _ = prepared_trainer(dataset, "ud", "500buckets", {}, torch.device("cpu"), Path(scratch))
        stage = trainer.stages[index]
        config = trainer.stage_config(stage)
        walls, cpus = [], []
        for epoch in range(epochs + 1):
            wall, cpu = time.perf_counter(), time.process_time()
            trainer.train_epoch(stage, stage.phases[-1], epoch, config)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    print(json.dumps({"wall": walls[1:], "cpu": cpus[1:], "threads": torch.get_num_threads(),
                      "batch_size": config.batch_size, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                      "gomp_spincount": os.environ.get("GOMP_SPINCOUNT")}))


def start_load(processes: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]


def stop_load(load: list[subprocess.Popen]) -> None:
    for process in load:
        process.kill()
    for process in load:
        process.wait()


def one_round(load: str, threads: int, policy: str, epochs: int, cores: int) -> dict:
    env = dict(os.environ)
    for name in USER_SETTINGS:
        env.pop(name, None)
    if policy in ("PASSIVE", "ACTIVE"):
        env["OMP_WAIT_POLICY"] = policy
    elif policy.startswith("spin:"):
        env["GOMP_SPINCOUNT"] = policy.removeprefix("spin:")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT.parent), env.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--child", "--threads", str(threads), "--epochs", str(epochs)]
    if policy == "default":
        command.append("--apply-default")
    busy = start_load({"idle": 0, "one": 1, "busy": cores}[load])
    try:
        time.sleep(0.5 if busy else 0)
        started = os.getloadavg()[0]
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        ended = os.getloadavg()[0]
    finally:
        stop_load(busy)
    result = json.loads(output.strip().splitlines()[-1])
    return {"wall": statistics.median(result["wall"]), "cpu": statistics.median(result["cpu"]),
            "load_1m_at_start": started, "load_1m_at_end": ended, "batch_size": result["batch_size"],
            "omp_wait_policy_seen": result["omp_wait_policy"], "gomp_spincount_seen": result["gomp_spincount"], "torch_threads": result["threads"]}


def is_spin(policy: str) -> bool:
    return policy.startswith("spin:") and policy.removeprefix("spin:").isdigit()


def row_order(row: dict) -> tuple:
    policy = row["policy"]
    return (LOADS.index(row["load"]), row["threads"], POLICIES.index(policy) if policy in POLICIES else len(POLICIES),
            int(policy.removeprefix("spin:")) if is_spin(policy) else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per round (after one warm-up)")
    parser.add_argument("--threads", default="1,2", help="torch threads to compare")
    parser.add_argument("--policies", default="unset,PASSIVE,default", help=f"of {', '.join(POLICIES)}, spin:N")
    parser.add_argument("--loads", default="idle,busy", help="idle (no load started), one (one busy-looping "
                        "process), busy (one busy-looping process per core)")
    parser.add_argument("--json", type=Path, help="also write the numbers here; rows of configurations measured "
                        "before and not this time are kept (e.g. --loads idle, then --loads busy)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--apply-default", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.threads), args.epochs, args.apply_default)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # a killed benchmark stops its busy loops too
    policies, loads = args.policies.split(","), args.loads.split(",")
    if bad := [p for p in policies if p not in POLICIES and not is_spin(p)] + [x for x in loads if x not in LOADS]:
        parser.error(f"unknown policy or load: {', '.join(bad)}")
    from lwbench.grid.workers import available_cores
    cores = available_cores()
    configurations = list(itertools.product(loads, [int(t) for t in args.threads.split(",")], policies))
    rounds = {c: [] for c in configurations}
    started, stamp = time.time(), time.strftime("%Y-%m-%d %H:%M:%S")
    for _ in range(args.rounds):
        for configuration in configurations:
            rounds[configuration].append(one_round(*configuration, args.epochs, cores))
            load, threads, policy = configuration
            last = rounds[configuration][-1]
            print(f"  {load:4s} threads {threads} {policy:10s} {last['cpu']:6.2f} CPU s {last['wall']:6.2f} wall s "
                  f"per epoch (load {last['load_1m_at_start']:.2f} -> {last['load_1m_at_end']:.2f})", flush=True)
    rows = []
    for (load, threads, policy), measured in rounds.items():
        rows.append({"load": load, "threads": threads, "policy": policy, "measured": stamp,
                     "cpu_seconds_per_epoch": round(statistics.median(r["cpu"] for r in measured), 3),
                     "wall_seconds_per_epoch": round(statistics.median(r["wall"] for r in measured), 3),
                     "rounds": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
                                for r in measured]})
    import torch

    from lwbench.environment import code_version, device_name
    report = {"measured": stamp, "command": shlex.join(["python", "bench/busy_cpu.py", *sys.argv[1:]]),
              "machine": device_name(torch.device("cpu")), "torch": torch.__version__,
              "openmp_runtime": openmp_runtime(), "cores": cores,
              "competing_load": f"busy: {cores} busy-looping processes (one per core); one: one such process; idle: none "
                                "started (the "
                                "load averages in the rounds include the training process itself)",
              "epochs_per_round": args.epochs, "rounds": args.rounds, "seconds": round(time.time() - started),
              "load_average_1m_at_end": os.getloadavg()[0], "code_version": code_version()}
    runs = [report]
    if args.json and args.json.exists():   # rows of configurations not measured this time are kept
        earlier = json.loads(args.json.read_text())
        measured = {(r["load"], r["threads"], r["policy"]) for r in rows}
        kept = [r for r in earlier.get("rows", []) if (r["load"], r["threads"], r["policy"]) not in measured]
        if kept:
            runs, rows = earlier.get("runs", [])[-5:] + runs, kept + rows
    rows.sort(key=row_order)
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**report, "runs": runs, "rows": rows}, indent=1) + "\n")


def openmp_runtime() -> str:
    """The OpenMP runtime loaded into this process (torch's: GNU libgomp in the pip wheels)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    for marker, name in (("libgomp", "GNU libgomp"), ("libiomp", "Intel OpenMP"), ("libomp", "LLVM OpenMP")):
        if marker in maps:
            return name
    return "none found"


def print_table(rows: list[dict]) -> None:
    idle = {(r["threads"], r["policy"]): r["cpu_seconds_per_epoch"] for r in rows if r["load"] == "idle"}
    print(f"\n{'load':5s} {'threads':>7s} {'policy':10s} {'CPU s/epoch':>11s} {'wall s/epoch':>12s} "
          f"{'CPU vs idle':>11s}")
    for row in rows:
        base = idle.get((row["threads"], row["policy"]))
        ratio = f"{row['cpu_seconds_per_epoch'] / base:.2f}x" if base else "-"
        print(f"{row['load']:5s} {row['threads']:7d} {row['policy']:10s} {row['cpu_seconds_per_epoch']:11.2f} "
              f"{row['wall_seconds_per_epoch']:12.2f} {ratio:>11s}")

if __name__ == "__main__":
    main()
