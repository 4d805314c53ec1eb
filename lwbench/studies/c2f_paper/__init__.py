"""The C2F paper (coarse-to-fine lightweight meta-embeddings): Tables 3-4 and Figures 4-6.

* :mod:`.targets`: C2F's option names, the grids and builders of the targets (registered on import);
* :mod:`.tables`, :mod:`.figures`: the paper's own tables and Figure 6;
* :mod:`.reference`: the published numbers and logs;
* :mod:`.protocol`: the paper's Table-4 test; ``python -m lwbench.studies.c2f_paper`` re-derives its
  p-values from the logs.
"""
from lwbench.studies.c2f_paper import targets  # noqa: F401 (registers the targets)
