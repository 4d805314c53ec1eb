"""Command line: ``python run_bench.py [options]`` (see ``--help``). With no arguments it runs the demo:
UD on the built-in synthetic dataset, on the GPU when one is visible, else the CPU.

The subcommands ``grid``, ``reproduce NAME`` and ``report`` are in :mod:`lwbench.commands`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lwbench.budget import ACCEPTED_FORMS, BudgetError
from lwbench.config import ConfigError, parse_set_options
from lwbench.data.interactions import DataError
from lwbench.data.cards import available_cards, load_dataset
from lwbench.environment import resolve_device
from lwbench.registry import UnknownMethodError, get_method, method_names
from lwbench.runner import plan_runs, run_all, summary_table

EPILOG = """budget forms: """ + "; ".join(ACCEPTED_FORMS) + """

examples:
  python run_bench.py                                     # demo: ud on synthetic data
  python run_bench.py --methods ud --budget 500buckets --dataset gowalla --data-dir ../shared/datasets
  python run_bench.py --methods ud --set ud.dim=64 --set trainer.batch_size=2048 --plan

subcommands (each has --help):
  python run_bench.py grid --datasets gowalla --methods ud,legcf --budgets 1%,2% --seeds 2024,2025 --jobs 4
  python run_bench.py reproduce table3 --data-dir ../shared/datasets     # also table4, fig4, fig5, fig6, budget-curve
  python run_bench.py reproduce table3 --quick                            # CPU smoke test on synthetic data
  python run_bench.py report --out results                                # tables and figures from records only
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_bench.py", description="lwbench: lightweight ID embeddings "
                                     "for graph recommenders, compared under one trainer and one budget.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="ud", help="comma-separated method names (default: ud); "
                        "--list shows the registered ones")
    parser.add_argument("--budget", default="500buckets", help="memory budget (default: 500buckets)")
    parser.add_argument("--dataset", default="synthetic",
                        help="a dataset card name (synthetic, gowalla, yelp2020, amazon-book) or a folder "
                             "holding train.txt[.gz] and test.txt[.gz] (default: synthetic)")
    parser.add_argument("--seeds", default="2024", help="comma-separated training seeds (default: 2024)")
    parser.add_argument("--device", default="auto", help="auto (GPU if visible), cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", default="results/demo", help="output folder for run records (default: results/demo)")
    add_override_options(parser)
    add_data_options(parser)
    parser.add_argument("--legacy-split", action="store_true",
                        help="draw the split from each run's seed, as the official code does (methods.md 1.1)")
    parser.add_argument("--plan", action="store_true", help="print the planned runs as JSON and exit")
    parser.add_argument("--force", action="store_true", help="re-run even when a record with the same config exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--list", action="store_true", help="list registered methods and dataset cards, then exit")
    return parser


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Where datasets come from and how they are split: what every command that loads data accepts."""
    parser.add_argument("--data-dir", help="folder holding <dataset>/train.txt[.gz] (else $LWBENCH_DATA, "
                        "then the user cache, then a download)")
    parser.add_argument("--split-seed", type=int, default=2024, help="seed of the validation/test split (default 2024)")
    parser.add_argument("--offline", action="store_true", help="never try to download datasets")


def add_override_options(parser: argparse.ArgumentParser) -> None:
    """``--epochs`` and ``--set``: what every command that trains accepts."""
    parser.add_argument("--epochs", type=int, help="maximum epochs per stage (default: the trainer's 1000, "
                        "with early stopping)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="OWNER.OPTION=VALUE",
                        help="override a trainer or method option in every run whose method owns it, e.g. "
                        "trainer.lr=3e-3 or ud.dim=64 (repeatable)")


def overrides_from(args: argparse.Namespace) -> dict:
    """``--set`` options by owner, with ``--epochs`` as ``trainer.max_epochs``."""
    overrides = parse_set_options(args.sets)
    if args.epochs is not None:
        overrides.setdefault("trainer", {})["max_epochs"] = args.epochs
    return overrides


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in comma_list(text)]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. 2024,2025,2026") from None
    if not seeds:
        raise ConfigError("--seeds is empty")
    return seeds


SUBCOMMANDS = ("grid", "reproduce", "report")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            from lwbench.commands import run_subcommand  # imported on demand: plain runs skip its imports
            return run_subcommand(argv[0], argv[1:])
        return _run(build_parser().parse_args(argv))
    except (ConfigError, BudgetError, DataError, UnknownMethodError, FileNotFoundError, RuntimeError) as exc:
        print(f"run_bench.py: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.list:
        print("methods (options: --plan shows them resolved; --set method.option=value):")
        for name in method_names():
            method = get_method(name)
            print(f"  {name:<10} {method.description}" + ("" if method.budgeted else " [unbudgeted]"))
        print("datasets:", ", ".join(available_cards()))
        return 0
    methods = comma_list(args.methods)
    seeds = parse_seeds(args.seeds)
    overrides = overrides_from(args)
    device = resolve_device(args.device)
    # The fixed split is shared by all seeds; the legacy split differs per seed (methods.md 1.1).
    split_seeds = seeds if args.legacy_split else [None]
    loaded = {s: load_dataset(args.dataset, data_dir=args.data_dir, split_seed=args.split_seed,
                              legacy_split_seed=s, offline=args.offline or None) for s in split_seeds}
    plans = {s: plan_runs(methods, data, args.budget, seeds if s is None else [s], overrides)
             for s, data in loaded.items()}
    if args.plan:
        print(json.dumps({"dataset": args.dataset, "device": str(device), "out": args.out,
                          "runs": [spec.plan_entry() for plan in plans.values() for spec in plan]},
                         indent=1, default=str))
        return 0
    records, failures = [], []
    for s, plan in plans.items():
        got, failed = run_all(plan, loaded[s], Path(args.out), device, force=args.force,
                              show_progress=False if args.no_progress else None)
        records += got
        failures += failed
    if records:
        print(summary_table(records).to_string(index=False))
        print(f"\nrecords: {Path(args.out) / 'runs'}")
    for failure in failures:
        print(f"FAILED {failure['run_id']}: {failure['error']}", file=sys.stderr)
    return 1 if failures else 0
