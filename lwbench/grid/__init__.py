"""Grids: plan datasets x methods x budgets x seeds x sweeps, execute the runs on workers, resume."""

# Where grid runs execute (``--backend``); here, not in :mod:`lwbench.grid.workers`, so that the command line
# can offer the choices without importing the workers and torch.
BACKENDS = ("local", "dask", "ray")
