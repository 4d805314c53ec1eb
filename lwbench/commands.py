"""Subcommands of ``run_bench.py``: ``grid``, ``reproduce NAME`` and ``report`` (the plain
``run_bench.py [options]`` command lives in :mod:`lwbench.cli`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lwbench.cli import add_data_options, add_override_options, comma_list, overrides_from, parse_seeds
from lwbench.grid.workers import BACKENDS, ExecutionRequest, make_execution
from lwbench.grid.plan import describe_plan, expand, parse_sweeps, plan_grid, run_grid, summarize_failures
from lwbench.records import load_records
from lwbench.runner import summary_table


def add_execution_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("execution")
    group.add_argument("--plan", action="store_true", help="print the plan and exit")
    group.add_argument("--jobs", type=int, help="runs at a time (default: one per GPU times --runs-per-gpu; "
                       "with a dask/ray cluster, all its workers)")
    group.add_argument("--device", default="auto", help="auto (GPUs if visible), cpu, cuda, cuda:1 (default auto)")
    group.add_argument("--gpus", help="GPU indices to share out round-robin, e.g. 0,1 (default: all visible)")
    group.add_argument("--runs-per-gpu", type=int, help="runs sharing one GPU (default: as many as the peak memory "
                       "measured in existing records allows, else 1)")
    group.add_argument("--threads", type=int, help="torch CPU threads per local run (default: the cores shared "
                       "out among --jobs)")
    group.add_argument("--backend", choices=BACKENDS, default="local",
                       help="local processes (default), or a dask/ray cluster through joblib (optional extras "
                            "lwbench[dask], lwbench[ray]); the output folder must be shared with the workers")
    group.add_argument("--scheduler", help="dask scheduler address (tcp://host:8786) or ray address; "
                       "default: start a local cluster")
    group.add_argument("--force", action="store_true", help="re-run even when a record with the same config exists")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def execution_request(args: argparse.Namespace) -> ExecutionRequest:
    return ExecutionRequest(jobs=args.jobs, device=args.device, gpus=args.gpus, backend=args.backend,
                            scheduler=args.scheduler, runs_per_gpu=args.runs_per_gpu, threads=args.threads)


def grid_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_bench.py grid", description="Run datasets x methods x budgets x "
                                     "seeds x option sweeps in parallel; rerun the same command to resume.")
    parser.add_argument("--datasets", default="synthetic", help="comma-separated dataset cards or folders")
    parser.add_argument("--methods", default="ud", help="comma-separated method names")
    parser.add_argument("--budgets", default="500buckets", help="comma-separated budgets, e.g. 1%%,2%%,500buckets")
    parser.add_argument("--seeds", default="2024", help="comma-separated training seeds")
    add_override_options(parser)
    parser.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="OWNER.OPTION=V1,V2",
                        help="sweep an option over values (repeatable; sweeps multiply)")
    parser.add_argument("--legacy-split", action="store_true", help="draw the split from each run's seed")
    parser.add_argument("--out", default="results/grid", help="output folder (default results/grid)")
    add_data_options(parser)
    add_execution_options(parser)
    return parser


def run_grid_command(argv: list[str]) -> int:
    args = grid_parser().parse_args(argv)
    overrides = overrides_from(args)
    cells = expand(comma_list(args.datasets), comma_list(args.methods), comma_list(args.budgets),
                   overrides=overrides, sweeps=parse_sweeps(args.sweeps))
    plan = plan_grid(cells, parse_seeds(args.seeds), data_dir=args.data_dir, split_seed=args.split_seed,
                     legacy_split=args.legacy_split, offline=args.offline or None)
    out = Path(args.out)
    records = load_records(out)
    execution, how = make_execution(execution_request(args), plan.unique_runs(), records)
    print(describe_plan(plan, out, records, execution, how), file=sys.stderr)
    if args.plan:
        return 0
    outcome = run_grid(plan, out, execution, force=args.force, show_progress=False if args.no_progress else None)
    done = [outcome.records[r.run_id] for r in plan.unique_runs() if r.run_id in outcome.records]
    if done:
        print(summary_table(done).to_string(index=False))
        print(f"\nrecords: {out / 'runs'}")
    if outcome.failures:
        print(summarize_failures(outcome.failures, out), file=sys.stderr)
    return 1 if outcome.failures else 0


def reproduce_parser() -> argparse.ArgumentParser:
    from lwbench.reports.targets import targets
    from lwbench.reports.stats import ALTERNATIVES
    known = targets()
    listing = "\n".join(f"  {name:<13} {t.description}" for name, t in known.items())
    parser = argparse.ArgumentParser(prog="run_bench.py reproduce", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Plan, run (reusing existing runs) and report one target.",
                                     epilog=f"targets:\n{listing}")
    parser.add_argument("name", choices=list(known), metavar="NAME", help="target: " + ", ".join(known))
    parser.add_argument("--quick", action="store_true", help="synthetic dataset, few epochs, one or two seeds: "
                        "a CPU smoke test of the whole pipeline")
    parser.add_argument("--datasets", help="comma-separated datasets (default: the target's, where available)")
    parser.add_argument("--methods", help="restrict to these methods (default: every registered one)")
    parser.add_argument("--seeds", help="comma-separated seeds (default 2024,2025,2026)")
    add_override_options(parser)
    parser.add_argument("--out", help="records and tables (default results, or results/quick with --quick)")
    parser.add_argument("--figures", help="figures folder (default figures, or figures/quick with --quick)")
    parser.add_argument("--alternative", choices=ALTERNATIVES, default="two-sided",
                        help="alternative hypothesis of the significance tests (default two-sided)")
    add_data_options(parser)
    add_execution_options(parser)
    return parser


def run_reproduce_command(argv: list[str]) -> int:
    from lwbench.reports.reproduce import ReproduceOptions, reproduce
    args = reproduce_parser().parse_args(argv)
    overrides = overrides_from(args)
    suffix = "/quick" if args.quick else ""
    options = ReproduceOptions(
        quick=args.quick, datasets=comma_list(args.datasets) if args.datasets else None,
        methods=comma_list(args.methods) if args.methods else None,
        seeds=parse_seeds(args.seeds) if args.seeds else None, overrides=overrides, data_dir=args.data_dir,
        offline=args.offline or None, split_seed=args.split_seed, out=Path(args.out or f"results{suffix}"),
        figures_dir=Path(args.figures or f"figures{suffix}"), alternative=args.alternative, force=args.force,
        plan_only=args.plan, show_progress=False if args.no_progress else None)
    return reproduce(args.name, options, execution_request(args))


def report_parser() -> argparse.ArgumentParser:
    from lwbench.reports.stats import ALTERNATIVES
    parser = argparse.ArgumentParser(prog="run_bench.py report", description="Regenerate every table and figure "
                                     "from the records and target manifests in an output folder (no training).")
    parser.add_argument("--out", default="results", help="output folder holding runs/ and grids/ (default results)")
    parser.add_argument("--figures", default="figures", help="figures folder (default figures)")
    parser.add_argument("--alternative", choices=ALTERNATIVES, default="two-sided",
                        help="alternative hypothesis of the significance tests (default two-sided)")
    return parser


def run_report_command(argv: list[str]) -> int:
    from lwbench.reports.targets import build_report
    args = report_parser().parse_args(argv)
    _, errors = build_report(Path(args.out), Path(args.figures), args.alternative)
    for error in errors:
        print(f"run_bench.py report: could not build {error}", file=sys.stderr)
    return 1 if errors else 0


def run_subcommand(name: str, argv: list[str]) -> int:
    """Reproduction and reporting import scipy.stats and matplotlib; only they pay for it."""
    return {"grid": run_grid_command, "reproduce": run_reproduce_command, "report": run_report_command}[name](argv)
