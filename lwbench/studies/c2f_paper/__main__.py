"""``python -m lwbench.studies.c2f_paper``: Table 4's p-values recomputed from the paper's logs."""
from lwbench.studies.c2f_paper.protocol import main

raise SystemExit(main())
