"""The command line: one argparse tree, ``lwbench [run] | grid | reproduce NAME | report``.

The plain form (``lwbench --methods ud,legcf --budget 500buckets``, also ``run_bench.py``) is the ``run``
command: a grid of one cell per method, executed by the same code as ``grid``. With no arguments it runs
the demo: UD on the built-in synthetic dataset, on the GPU when one is visible, else the CPU. Options
shared by several commands come from parent parsers, so each is declared once.

Importing this module and building the parser import neither torch nor numpy, pandas or the methods, so
``--help`` is quick (``bench/startup.py`` measures it); each command imports what it needs. Ctrl-C ends a
command with one line saying where it stopped and exit status 130 (:func:`main`)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from pathlib import Path

from lwbench import logs
from lwbench.budget import ACCEPTED_FORMS, BudgetError
from lwbench.config import ConfigError, parse_set_options
from lwbench.openmp import apply_wait_policy_default

logger = logging.getLogger(__name__)

# lwbench.data.interactions' choices, repeated here so that --help needs neither numpy nor scipy
# (tests/test_cli.py checks that they agree)
COLD_MODES, OVERLAP_MODES, VALID_MODES = ("keep", "drop"), ("error", "drop"), ("test", "file")
INTERRUPTED = 130   # the exit status of a command ended by Ctrl-C (128 + SIGINT), as shells report it

SUBCOMMANDS = ("run", "grid", "reproduce", "report", "compare", "prepare", "tune")
ALTERNATIVES = ("two-sided", "greater", "less")


def program_name() -> str:
    """The name the tool was invoked by (``lwbench``, ``run_bench.py``, ``python -m lwbench``)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "lwbench"
    return "python -m lwbench" if name in ("__main__.py", "-m", "-c", "") else name


def epilog(prog: str) -> str:
    return f"""budget forms: {'; '.join(ACCEPTED_FORMS)}

examples:
  {prog}                                      # demo: ud on synthetic data
  {prog} --methods ud --budget 500buckets --dataset gowalla --data-dir ../shared/datasets
  {prog} --methods ud --set ud.dim=64 --set trainer.batch_size=2048 --plan
  {prog} --list --verbose                     # every method with its options

commands (each has --help):
  {prog} grid --datasets gowalla --methods ud,legcf --budgets 1%,2% --seeds 2024,2025 --jobs 4
  {prog} reproduce table3 --data-dir ../shared/datasets     # a reproduction target: plan, run, tables
  {prog} reproduce table3 --quick                            # CPU smoke test on synthetic data
  {prog} report --out results                                # tables and figures from records only
  {prog} compare qr legcf --out results --metric ndcg@20     # is qr better than legcf? (paired tests)
"""


# --- parent parsers: each shared option is declared once ----------------------------------------------

def output_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more detail on the terminal")
    group.add_argument("-q", "--quiet", action="count", default=0, help="only warnings and errors on the terminal")
    return parent


def data_parent() -> argparse.ArgumentParser:
    """Where datasets come from and how they are split."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("data")
    group.add_argument("--data-dir", help="folder holding <dataset>/train.txt[.gz] (else $LWBENCH_DATA, "
                       "then the user cache, then a download)")
    group.add_argument("--split-seed", type=int, default=2024, help="seed of the validation/test split (default 2024)")
    group.add_argument("--legacy-split", action="store_true",
                       help="draw the split from each run's seed, as the official code does")
    group.add_argument("--offline", action="store_true", help="never try to download datasets")
    group.add_argument("--cold", choices=COLD_MODES, default="keep", help="test pairs of items or users without "
                       "a training pair: keep them, as the official loaders do (default), or drop them")
    group.add_argument("--overlap", choices=OVERLAP_MODES, default="error", help="test pairs that are also training "
                       "pairs: an error (default), or drop them from test")
    group.add_argument("--valid-from", choices=VALID_MODES, default="test", help="validation: a third of each "
                       "user's test items (default), or the dataset folder's valid.txt[.gz] with all of test tested")
    return parent


def training_parent() -> argparse.ArgumentParser:
    """What every command that trains accepts."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("training")
    group.add_argument("--epochs", type=int, help="maximum epochs per stage (default: the trainer's 1000, "
                       "with early stopping)")
    group.add_argument("--set", dest="sets", action="append", default=[], metavar="OWNER.OPTION=VALUE",
                       help="override a trainer or method option in every run whose method owns it, e.g. "
                       "trainer.lr=3e-3 or ud.dim=64 (repeatable)")
    return parent


def execution_parent() -> argparse.ArgumentParser:
    """Where and how many runs at once, resuming, progress."""
    from lwbench.grid import BACKENDS
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("execution")
    group.add_argument("--plan", action="store_true", help="print the plan and exit")
    group.add_argument("--device", default="auto", help="auto (GPUs if visible), cpu, cuda or cuda:N, e.g. cuda:1 "
                       "(default auto)")
    group.add_argument("--jobs", type=int, help="runs at a time (default: one per GPU times --runs-per-gpu; "
                       "with a dask/ray cluster, all its workers)")
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
    group.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parent


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    prog = prog or program_name()
    output, data, training, execution = output_parent(), data_parent(), training_parent(), execution_parent()
    parser = argparse.ArgumentParser(prog=prog, description="lwbench: lightweight ID embeddings for graph "
                                     "recommenders, compared under one trainer and one budget.",
                                     epilog=epilog(prog), formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="{run,grid,reproduce,report,compare,prepare,tune}")

    run = commands.add_parser("run", parents=[output, data, training, execution], epilog=epilog(prog),
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              help="train methods on one dataset and budget (the default command)",
                              description="Train the methods on one dataset at one budget, for each seed.")
    run.add_argument("--methods", default="ud", help="comma-separated method names (default: ud); "
                     "--list shows the registered ones")
    run.add_argument("--budget", default="500buckets", help="memory budget (default: 500buckets)")
    add_accounting(run)
    run.add_argument("--dataset", default="synthetic",
                     help="a dataset card name (--list shows them) or a folder holding train.txt[.gz] and "
                          "test.txt[.gz] (default: synthetic)")
    run.add_argument("--seeds", default="2024", help="comma-separated training seeds (default: 2024)")
    run.add_argument("--out", help="output folder (default: results/<dataset>, e.g. results/synthetic)")
    run.add_argument("--json", action="store_true", help="with --plan: every run's full resolved configuration "
                     "as JSON instead of one line per run")
    run.add_argument("--list", action="store_true", help="list registered methods, trainer options and dataset "
                     "cards, then exit (with --verbose: every option's type, default and range)")
    run.set_defaults(handler=run_command)

    grid = commands.add_parser("grid", parents=[output, data, training, execution],
                               help="datasets x methods x budgets x seeds x sweeps, in parallel, resumable",
                               description="Run datasets x methods x budgets x seeds x option sweeps in "
                                           "parallel; rerun the same command to resume.")
    grid.add_argument("--datasets", default="synthetic", help="comma-separated dataset cards or folders")
    grid.add_argument("--methods", default="ud", help="comma-separated method names")
    grid.add_argument("--budgets", default="500buckets", help="comma-separated budgets, e.g. 1%%,2%%,500buckets")
    add_accounting(grid)
    grid.add_argument("--seeds", default="2024", help="comma-separated training seeds")
    grid.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="OWNER.OPTION=V1,V2",
                      help="sweep an option over values (repeatable; sweeps multiply)")
    grid.add_argument("--out", default="results/grid", help="output folder (default results/grid)")
    grid.set_defaults(handler=grid_command)

    reproduce = commands.add_parser("reproduce", parents=[output, data, training, execution],
                                    formatter_class=argparse.RawDescriptionHelpFormatter,
                                    help="plan, run and report one reproduction target",
                                    description="Plan, run (reusing existing runs) and report one target.")
    lazy_epilog(reproduce, lambda: "targets:\n" + target_lines())
    reproduce.add_argument("name", metavar="NAME", help="the target (listed below)")
    reproduce.add_argument("--quick", action="store_true", help="synthetic dataset, few epochs, one or two seeds: "
                           "a CPU smoke test of the whole pipeline")
    reproduce.add_argument("--datasets", help="comma-separated datasets (default: the target's, where available)")
    reproduce.add_argument("--methods", help="restrict to these methods (default: every registered one)")
    reproduce.add_argument("--seeds", help="comma-separated seeds (default 2024,2025,2026)")
    reproduce.add_argument("--out", help="records and tables (default results, or results/quick with --quick)")
    reproduce.add_argument("--figures", help="figures folder (default figures, or figures/quick with --quick)")
    add_alternative(reproduce)
    reproduce.set_defaults(handler=reproduce_command)

    report = commands.add_parser("report", parents=[output], help="rebuild tables and figures from records",
                                 description="Regenerate every table and figure from the records and target "
                                             "manifests in an output folder (no training).")
    report.add_argument("--out", default="results", help="output folder holding runs/ and grids/ (default results)")
    report.add_argument("--figures", default="figures", help="figures folder (default figures)")
    add_alternative(report)
    report.set_defaults(handler=report_command)
    add_compare(commands, output)
    add_prepare(commands, output)
    from lwbench.tuning.command import add_tune  # equal-effort tuning: lwbench/tuning/
    add_tune(commands, [output, data, training, execution], tune_command, add_accounting=add_accounting,
             add_alternative=add_alternative)
    return parser


def add_compare(commands, output: argparse.ArgumentParser) -> None:
    compare = commands.add_parser(
        "compare", parents=[output], help="test one row of an output folder against another (records only)",
        description="Paired tests of configuration A against B from the records in --out (no training, no "
                    "torch): across the seeds both have and across test users, with the paired t-test and the "
                    "Wilcoxon signed-rank test, CIs, effect sizes and n.")
    compare.add_argument("a", metavar="A", help="a run label in --out, e.g. qr, ud-64 or a plugin's label; "
                         "LABEL:SETTING=VALUE[,...] picks one configuration of it, e.g. qr:trainer.lr=0.003")
    compare.add_argument("b", metavar="B", help="the label to compare A with (same forms)")
    compare.add_argument("--out", required=True, help="output folder holding runs/")
    compare.add_argument("--metric", default="ndcg@20", help="test metric (default ndcg@20)")
    compare.add_argument("--dataset", help="only runs on this dataset (when a label has several)")
    compare.add_argument("--budget", help="only runs at this budget, as the tables name it (when a label has several): "
                                          "500buckets counts Table-3 parameters, '500buckets (storage)' stored bytes")
    compare.add_argument("--where", action="append", default=[], metavar="SETTING=VALUE",
                         help="only runs with this setting, e.g. trainer.lr=0.003 or dim=64 (repeatable; applies "
                              "to both A and B)")
    compare.set_defaults(handler=compare_command)


def add_prepare(commands, output: argparse.ArgumentParser) -> None:
    prepare = commands.add_parser("prepare", parents=[output], help="turn LightGCN text, CSV/TSV or RecBole .inter data into a "
                                  "verified dataset folder and card",
                                  description="Prepare a dataset folder (train.txt.gz, test.txt.gz, id maps, "
                                  "card.toml) that runs with --dataset DIR. See docs/adding-a-dataset.md.")
    prepare.add_argument("input", metavar="INPUT", help="a LightGCN folder or file, a CSV/TSV file with a header, "
                         "or a RecBole .inter file")
    prepare.add_argument("--out", required=True, help="the new dataset folder (must not exist)")
    prepare.add_argument("--test", help="a separate test file of the same format (then no split is drawn)")
    for key in ("user", "item", "rating", "time"):
        prepare.add_argument(f"--{key}-col", help=f"the {key} column (default: recognised by name)")
    prepare.add_argument("--sep", help="column separator (default: tab for .tsv/.inter, else comma)")
    prepare.add_argument("--encoding", default="utf-8", help="text encoding of a CSV/TSV/.inter file (default utf-8; "
                         "e.g. latin-1, cp1252)")
    prepare.add_argument("--on-bad-lines", choices=("error", "warn", "skip"), default="error",
                         help="rows with a wrong field count, an empty id or a rating/timestamp that is no number: "
                              "an error listing the first ten (default), or left out with a warning listing them, "
                              "or left out (counted)")
    prepare.add_argument("--dedup", choices=("first", "last"), default="first",
                         help="which occurrence of a repeated pair counts for a temporal split (default first)")
    prepare.add_argument("--min-rating", type=float, help="keep rows with rating >= this (implicit feedback)")
    prepare.add_argument("--user-core", type=int, default=0, help="k-core: keep users with >= this many pairs")
    prepare.add_argument("--item-core", type=int, default=0, help="k-core: keep items with >= this many pairs")
    prepare.add_argument("--split", choices=("random", "temporal"), default="random",
                         help="per-user split of unsplit input: random (--seed) or each user's latest pairs")
    prepare.add_argument("--test-fraction", type=float, default=0.2, help="per-user test fraction (default 0.2)")
    prepare.add_argument("--valid-fraction", type=float, help="also write valid.txt.gz, a per-user validation "
                         "fraction drawn from the training pairs (run the folder with --valid-from file)")
    prepare.add_argument("--cold", choices=COLD_MODES, default="keep", help="test/validation pairs of a user or item "
                         "without a training pair: keep (default) or drop them")
    prepare.add_argument("--overlap", choices=OVERLAP_MODES, default="error", help="given test pairs that are also "
                         "training pairs: an error (default) or drop them from test")
    prepare.add_argument("--seed", type=int, default=2024, help="seed of the random split (default 2024)")
    prepare.set_defaults(handler=prepare_command)


def add_accounting(parser: argparse.ArgumentParser) -> None:
    from lwbench.budget import ACCOUNTINGS, TABLE3
    parser.add_argument("--accounting", choices=ACCOUNTINGS, default=TABLE3,
                        help="what the budget counts: table3 (default, the paper's: float values at inference) or "
                             "storage (stored bytes at inference: values and indices by dtype, packed codes)")


def add_alternative(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alternative", choices=ALTERNATIVES, default="two-sided",
                        help="alternative hypothesis of the significance tests (default two-sided)")


def lazy_epilog(parser: argparse.ArgumentParser, make) -> None:
    """Give ``parser`` the epilog ``make()`` when its help is printed, not when it is built (the targets'
    list imports the studies, which ``lwbench --help`` does not need)."""
    format_help = parser.format_help

    def with_epilog() -> str:
        parser.epilog = make()
        return format_help()
    parser.format_help = with_epilog


def target_lines() -> str:
    from lwbench.reports.targets import targets
    return "\n".join(f"  {name:<13} {t.description}" for name, t in targets().items())


# --- shared argument handling -------------------------------------------------------------------------

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


def data_options(args: argparse.Namespace) -> dict:
    """The data parent's options, as :func:`lwbench.grid.plan.plan_grid` takes them."""
    return dict(data_dir=args.data_dir, split_seed=args.split_seed, legacy_split=args.legacy_split,
                offline=args.offline or None, cold=args.cold, overlap=args.overlap, valid_from=args.valid_from)


def overrides_from(args: argparse.Namespace) -> dict:
    """``--set`` options by owner, with ``--epochs`` as ``trainer.max_epochs``; bad counts are errors
    naming the flag before anything is planned."""
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    if args.split_seed < 0:
        raise ConfigError(f"--split-seed must be at least 0, got {args.split_seed}")
    overrides = parse_set_options(args.sets)
    if args.epochs is not None:
        overrides.setdefault("trainer", {})["max_epochs"] = args.epochs
    return overrides


def execution_request(args: argparse.Namespace):
    from lwbench.grid.workers import ExecutionRequest
    return ExecutionRequest(jobs=args.jobs, device=args.device, gpus=args.gpus, backend=args.backend,
                            scheduler=args.scheduler, runs_per_gpu=args.runs_per_gpu, threads=args.threads)


def show_progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress or args.quiet else None


# --- commands -----------------------------------------------------------------------------------------

def list_command(verbose: bool) -> int:
    from types import SimpleNamespace

    from lwbench.config import described_trainer_options
    from lwbench.data.cards import available_cards
    from lwbench.options import describe_options
    from lwbench.registry import get_method, method_names
    print("methods (--list --verbose shows their options; --set method.option=value changes one):")
    for name in method_names():
        method = get_method(name)
        print(f"  {name:<10} {method.description}" + ("" if method.budgeted else " [unbudgeted]"))
        if verbose:
            print(textwrap.indent(describe_options(method), " " * 6))
    trainer = described_trainer_options()
    if verbose:
        print("trainer options (--set trainer.option=value; a dataset card or a method may set other defaults, "
              "which --plan shows):")
        print(textwrap.indent(describe_options(SimpleNamespace(options=trainer)), " " * 6))
    else:
        print(f"trainer options (--set trainer.option=value): {', '.join(trainer)}")
    print("datasets:", ", ".join(available_cards()))
    return 0


def run_command(args: argparse.Namespace) -> int:
    """The plain command: a grid with one cell per method on one dataset and budget."""
    if args.list:
        return list_command(args.verbose > 0)
    from lwbench.environment import resolve_device
    from lwbench.grid.plan import expand, plan_grid
    device = resolve_device(args.device)       # a missing GPU is an error before anything is planned
    methods = comma_list(args.methods)
    if not methods:
        raise ConfigError("--methods is empty; --list shows the registered methods")
    cells = expand([args.dataset], methods, [args.budget], overrides=overrides_from(args),
                   accounting=args.accounting)
    plan = plan_grid(cells, parse_seeds(args.seeds), drop_unfit=False, **data_options(args))
    runs = plan.unique_runs()
    # The default folder says what it holds: the runs of one dataset (its card's or its folder's name).
    out = Path(args.out) if args.out else Path("results") / runs[0].dataset_name
    if args.plan:
        if args.json:
            from lwbench.files import json_default
            print(json.dumps({"dataset": args.dataset, "device": str(device), "out": str(out),
                              "runs": [run.spec.plan_entry() for run in runs]}, indent=1, default=json_default))
        else:
            print(plan_lines(runs, device, out))
        return 0
    return execute(plan, out, args)


def plan_lines(runs, device, out: Path) -> str:
    """The plan, one line per run: run id, label, method options, Table-3 parameters and stored bytes, the
    budget and the share of it used, the stages with their epoch caps (``--plan --json`` has everything)."""
    from lwbench.grid.run import configuration_twins, existing_records
    # As the run finds them: same configuration hash and usable files, or a twin under another budget it copies.
    existing = {**existing_records(runs, out), **configuration_twins(runs, out)}
    lines = [f"{len(runs)} run(s) on {runs[0].dataset_name if runs else '-'}, device {device}, records to "
             f"{out / 'runs'} (--plan --json: every resolved setting)"]
    for run in runs:
        entry = run.spec.plan_entry()
        options = " ".join(f"{k}={v}" for k, v in entry["options"].items()) or "-"
        budget = entry["budget"]["text"] + ("" if entry["budget"]["accounting"] == "table3"
                                            else f" ({entry['budget']['accounting']})")
        used = (f"budget {budget}: {100 * entry['budget_fraction']:.1f}% used"
                if entry["budget_fraction"] is not None else f"budget {budget}: not applied (unbudgeted)")
        cap = entry["trainer"]["max_epochs"]
        stages = ", ".join(f"{stage['name']} (at most {min(stage['trainer'].get('max_epochs', cap), cap)} epochs"
                           + (", fixed+update)" if stage["two_phase"] else ")") for stage in entry["stages"])
        exists = "  [record exists]" if run.run_id in existing else ""
        lines.append(f"  {run.run_id}  {entry['label']}  seed {entry['seed']}  {options}  "
                     f"{entry['table3_params']:,} params / {entry['stored_bytes']:,} bytes  {used}  "
                     f"stages: {stages}{exists}")
    return "\n".join(lines)


def grid_command(args: argparse.Namespace) -> int:
    from lwbench.grid.plan import expand, parse_sweeps, plan_grid
    axes = {flag: comma_list(getattr(args, flag[2:])) for flag in ("--datasets", "--methods", "--budgets")}
    for flag, values in axes.items():
        if not values:
            raise ConfigError(f"{flag} is empty: a grid needs at least one value on every axis")
    cells = expand(*axes.values(), overrides=overrides_from(args), sweeps=parse_sweeps(args.sweeps),
                   accounting=args.accounting)
    plan = plan_grid(cells, parse_seeds(args.seeds), **data_options(args))
    return execute(plan, Path(args.out), args)


def execute(plan, out: Path, args: argparse.Namespace) -> int:
    """Describe the plan, then (unless ``--plan``) run it and print the summary of its records."""
    from lwbench.files import prepare_output
    from lwbench.grid.run import describe_plan, run_grid, summarize_failures
    from lwbench.grid.workers import make_execution
    from lwbench.records import load_records
    from lwbench.reports.summaries import summary_table
    if not args.plan:
        prepare_output(out)   # an unusable --out is one error naming it, before planning output
    records = load_records(out)
    execution, how = make_execution(execution_request(args), plan.unique_runs(), records)
    logger.info("%s", describe_plan(plan, out, records, execution, how))
    if args.plan:
        return 0
    outcome = run_grid(plan, out, execution, force=args.force, show_progress=show_progress(args))
    done = [outcome.records[r.run_id] for r in plan.unique_runs() if r.run_id in outcome.records]
    if done:
        for table in summary_table(done, out):
            print(table.to_markdown())
    if outcome.failures:
        logger.error("%s", summarize_failures(outcome.failures, out))
    print(f"\nrecords: {out / 'runs'} ({len(done)} run(s), {len(outcome.failures)} failed); tables from them: "
          f"{program_name()} report --out {out}")
    return 1 if outcome.failures else 0


def reproduce_command(args: argparse.Namespace) -> int:
    from lwbench.files import prepare_output
    from lwbench.grid.reproduce import ReproduceOptions, reproduce
    suffix = "/quick" if args.quick else ""
    if not args.plan:
        prepare_output(Path(args.out or f"results{suffix}"))
    options = ReproduceOptions(
        quick=args.quick, datasets=comma_list(args.datasets) if args.datasets else None,
        methods=comma_list(args.methods) if args.methods else None,
        seeds=parse_seeds(args.seeds) if args.seeds else None, overrides=overrides_from(args),
        data=data_options(args), out=Path(args.out or f"results{suffix}"),
        figures_dir=Path(args.figures or f"figures{suffix}"),
        alternative=args.alternative, force=args.force, plan_only=args.plan, show_progress=show_progress(args))
    return reproduce(args.name, options, execution_request(args))


def prepare_command(args: argparse.Namespace) -> int:
    from lwbench.data.prepare import command
    return command(args)


def report_command(args: argparse.Namespace) -> int:
    from lwbench.records import load_records, per_user_problems
    from lwbench.reports.targets import build_report
    records = load_records(Path(args.out))   # read once, for every table
    for problem in per_user_problems(Path(args.out), records):
        logger.warning("%s; its run keeps its row, but its across-users tests and per-user intervals are left out "
                       "of the tables", problem)
    _, errors = build_report(Path(args.out), Path(args.figures), args.alternative, records)
    for error in errors:
        logger.error("report: could not build %s", error)
    return 1 if errors else 0


def compare_command(args: argparse.Namespace) -> int:
    from lwbench.reports.compare import Selection, compare, parse_where
    where = parse_where(args.where)
    selections = [Selection.parse(text, args.dataset, args.budget, where) for text in (args.a, args.b)]
    header, table = compare(Path(args.out), *selections, metric=args.metric)
    print("\n".join(header) + "\n\n" + table.to_markdown())
    return 0


def tune_command(args: argparse.Namespace) -> int:
    """``tune``: the cells to tune (``--methods`` or a ``--target``'s) and the study's settings."""
    from lwbench.grid.plan import expand
    from lwbench.grid.runner import check_owners
    from lwbench.tuning.command import default_study_name, parse_rungs
    from lwbench.tuning.study import StudySettings, TuneOptions, tune
    overrides = overrides_from(args)
    methods = comma_list(args.methods) if args.methods is not None else None
    if methods is not None and not methods:
        raise ConfigError("--methods is empty; --list shows the registered methods")
    info, budget = {}, args.budget or "500buckets"
    if args.target:
        from lwbench.grid.reproduce import resolve_methods, with_user_overrides
        from lwbench.reports.targets import get_target
        from lwbench.studies.tuned import TUNED
        if args.budget:
            raise ConfigError("--budget does not apply with --target: the target's cells set their budgets")
        target = get_target(args.target)
        if target.name == TUNED:
            raise ConfigError("--target tuned is what tune writes; name the target whose cells to tune, e.g. table3")
        methods, missing = resolve_methods(target, methods)
        cells = target.cells([args.dataset], methods)
        check_owners(list(overrides), sorted({cell.method for cell in cells}))
        cells = [with_user_overrides(cell, overrides, quick=False) for cell in cells]
        info = {"missing_methods": missing}
    else:
        cells = expand([args.dataset], methods or ["ud"], [budget], overrides=overrides, accounting=args.accounting)
    settings = StudySettings(
        name=args.study or default_study_name(args.target, args.dataset, budget), trials=args.trials, eta=args.eta,
        rungs=parse_rungs(args.rungs), seeds=tuple(parse_seeds(args.seeds)), search_seed=args.search_seed,
        trial_seed=args.trial_seed, space=tuple(comma_list(args.space)) if args.space else None,
        retry_failed=args.retry_failed)
    options = TuneOptions(settings=settings, out=Path(args.out), data=data_options(args),
                          figures_dir=Path(args.figures), alternative=args.alternative, base_target=args.target,
                          manifest_info=info, force=args.force, plan_only=args.plan,
                          show_progress=show_progress(args))
    return tune(cells, options, execution_request(args))


# --- entry point --------------------------------------------------------------------------------------

def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix: one line, exit status 2, no traceback."""
    from lwbench.data.interactions import DataError
    from lwbench.environment import DeviceError
    from lwbench.files import OutputError
    from lwbench.grid.workers import GridError
    from lwbench.records import RecordError
    from lwbench.registry import UnknownMethodError
    from lwbench.reports.compare import CompareError
    from lwbench.reports.targets import TargetError
    return (ConfigError, BudgetError, DataError, RecordError, UnknownMethodError, DeviceError, GridError,
            TargetError, CompareError, FileNotFoundError, OutputError)


def main(argv: list[str] | None = None) -> int:
    apply_wait_policy_default()   # before anything loads torch: idle OpenMP threads sleep (lwbench/openmp.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = program_name()
    if not argv or argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]            # the plain form is the run command
    args = build_parser(prog).parse_args(argv)
    logs.configure(args.verbose - args.quiet, prog)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted_message(args.command)}", file=sys.stderr)
        return INTERRUPTED
    except user_errors() as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


TRAINING_COMMANDS = ("run", "grid", "reproduce", "tune")
NOT_TRAINING = {   # what Ctrl-C leaves behind in a command that trains nothing
    "prepare": "nothing was written (prepare removes its unfinished folder); run it again",
    "report": "the records are untouched, some tables and figures may not be rewritten yet; run it again",
    "compare": "nothing was written (compare only reads records)",
}


def interrupted_message(command: str | None = "run") -> str:
    """One line for Ctrl-C: the run and epoch this process was training, if any, and how to resume; for a
    command that trains nothing, what it left behind."""
    from lwbench.training.persistence import RESUME_FILE
    from lwbench.training.progress import close_bars, where
    close_bars()
    at = where()
    if not at:
        if command not in TRAINING_COMMANDS:
            return f"interrupted; {NOT_TRAINING.get(command, 'run the same command again')}"
        return ("interrupted; the same command resumes: finished runs are kept, unfinished ones continue from their "
                f"last checkpoint (<out>/work/<run_id>/{RESUME_FILE})")
    stage = (f", stage {at['stage']} after epoch {at['epoch']} of at most {at['max_epochs']}" if "stage" in at
             else " before its first epoch")
    resume = Path(at["resume"])
    checkpoint = (f"from its last checkpoint ({resume})" if resume.exists()
                  else "from the start (it had written no checkpoint yet)")
    return f"interrupted in run {at['run_id']}{stage}; the same command resumes it {checkpoint}"
