"""``python -m lwbench``: the same command line as ``lwbench`` and ``run_bench.py``."""
import sys

from lwbench.cli import main

sys.exit(main())
