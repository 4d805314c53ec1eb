#!/usr/bin/env python3
"""lwbench command line; see `python run_bench.py --help`. Thin on purpose: everything is in lwbench/."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout without installing

from lwbench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
