#!/usr/bin/env python3
"""lwbench command line from a checkout (the installed command is ``lwbench``); see ``--help``.
Needs lwbench installed (``pip install -e .``): nothing here edits ``sys.path``."""
import sys

from lwbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
