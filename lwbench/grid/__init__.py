"""Grids: everything that trains. A run (:mod:`~lwbench.grid.runner`), a grid of them planned from cells
(:mod:`~lwbench.grid.cell`, the one torch-free part; :mod:`~lwbench.grid.plan`), executed on workers with
resume (:mod:`~lwbench.grid.run`, :mod:`~lwbench.grid.workers`), and the reproduction targets' command
(:mod:`~lwbench.grid.reproduce`).

The layers, bottom to top: ``kernels`` (sparse operators) -> ``plugin`` (the method contract), ``evaluate``
-> ``methods``, ``training`` -> ``grid``, ``tuning`` -> ``cli``; beside them, torch-free: ``records``,
``reports`` and ``studies`` (tables, statistics, figures), which ``grid`` and ``cli`` use.
"""

# Where grid runs execute (``--backend``); here, not in :mod:`lwbench.grid.workers`, so that the command line
# can offer the choices without importing the workers and torch.
BACKENDS = ("local", "dask", "ray")
