"""Grids: everything that trains. A run (:mod:`~lwbench.grid.runner`), a grid of them planned from the
targets' cells (:mod:`lwbench.reports.cell`; :mod:`~lwbench.grid.plan`), executed on workers with resume
(:mod:`~lwbench.grid.run`, :mod:`~lwbench.grid.workers`), and the reproduction targets' command
(:mod:`~lwbench.grid.reproduce`).

The layers, bottom to top (tests/test_layers.py checks that no import runs back up): ``files``, ``options``,
``openmp`` -> ``logs``, ``config``, ``budget``, ``environment`` -> ``data``, ``kernels`` (sparse operators), ``records``
-> ``plugin`` (the method contract), ``evaluate`` -> ``registry`` -> ``methods``, ``training``, ``profile``
-> ``reports`` (torch-free: cells, tables, statistics, figures) -> ``studies`` (the targets) -> ``grid``
-> ``tuning`` -> ``cli``.
"""

# Where grid runs execute (``--backend``); here, not in :mod:`lwbench.grid.workers`, so that the command line
# can offer the choices without importing the workers and torch.
BACKENDS = ("local", "dask", "ray")
