"""``run_bench.py tune``: the command line of equal-effort tuning (:mod:`lwbench.tuning.study`).

:func:`add_tune` declares the subcommand (with the shared parent parsers, the declarations of the options
it shares with other commands, and the handler that :mod:`lwbench.cli` passes in: ``cli.tune_command`` turns
the arguments into cells and a :class:`~lwbench.tuning.study.StudySettings`, so nothing here imports the
command line above it). The heavy
imports (the grid, torch) happen when the command runs, not when the parser is built.
"""
from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

from lwbench.config import ConfigError

EXAMPLES = """examples:
  %(prog)s --methods ud,qr --dataset synthetic --budget 500buckets --trials 8 --seeds 2024 --plan
  %(prog)s --target table3 --dataset lastfm --data-dir ../shared/datasets --trials 8 --seeds 2024,2025,2026 \\
      --out results/lastfm --threads 1
"""


def add_tune(commands, parents: list[argparse.ArgumentParser], handler, *,
             add_accounting: Callable[[argparse.ArgumentParser], None],
             add_alternative: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``tune`` subcommand, with ``parents`` (output, data, training and execution options) and the command
    line's own declarations of ``--accounting`` and ``--alternative`` (``cli.add_accounting``,
    ``cli.add_alternative``), so each is declared once."""
    tune = commands.add_parser(
        "tune", parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        help="equal-effort tuning: the same trials for every method, successive halving over epoch rungs, "
             "the choice retrained on the seeds",
        description=textwrap.fill(
            "Give every method the same number of trials over its declared search space (the trainer's lr and "
            "l2_factor, and the options its method declares a range for; --list --verbose shows them); stop poor "
            "trials at epoch rungs (successive halving); choose by validation only; retrain the choice on --seeds. "
            "Trials are ordinary runs in OUT/tuning/STUDY/; rerun the same command to resume. docs/protocol.md "
            "§10.12.", 100))
    tune.add_argument("--methods", help="comma-separated methods (default: ud; with --target, every registered one)")
    tune.add_argument("--dataset", default="synthetic", help="a dataset card or folder (default: synthetic)")
    tune.add_argument("--budget", help="memory budget (default: 500buckets; with --target, the target's)")
    add_accounting(tune)
    tune.add_argument("--target", help="tune the cells of a reproduction target (e.g. table3: UD-128, UD-64 and every "
                      "method at 500buckets), with its settings fixed; its tables are rebuilt over the tuned runs")
    tune.add_argument("--trials", type=int, default=8, help="trials per method, trial 0 the defaults (default 8)")
    tune.add_argument("--eta", type=int, default=3, help="1/eta of a rung's trials go on to the next (default 3)")
    tune.add_argument("--rungs", default="10,30", help="epoch caps of the rungs before the full run, e.g. 10,30 "
                      "(default), or none: every trial a full run")
    tune.add_argument("--space", help="comma-separated OWNER.OPTION names to search (default: trainer.lr, "
                      "trainer.l2_factor and every option its method declares a search range for)")
    tune.add_argument("--search-seed", type=int, default=0, help="seed of the trials' draws (default 0)")
    tune.add_argument("--trial-seed", type=int, help="training seed of the trials (default: the first of --seeds)")
    tune.add_argument("--seeds", default="2024", help="seeds the chosen configuration is retrained on (default 2024)")
    tune.add_argument("--study", help="the study's name (default: TARGET-DATASET, or tune-DATASET-BUDGET)")
    tune.add_argument("--retry-failed", action="store_true", help="train again trials that diverged before (trials that failed "
                      "otherwise are always trained again)")
    tune.add_argument("--out", default="results/tune", help="output folder (default results/tune)")
    tune.add_argument("--figures", default="figures", help="figures folder of a target's figures (default figures)")
    add_alternative(tune)
    tune.set_defaults(handler=handler)


def parse_rungs(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--rungs {text!r}: expected comma-separated epoch caps, e.g. 10,30, or none") from None


def default_study_name(target: str | None, dataset: str, budget: str) -> str:
    name = f"{target}-{Path(dataset).name}" if target else f"tune-{Path(dataset).name}-{budget}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80]
