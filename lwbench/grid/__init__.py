"""Grids: plan datasets x methods x budgets x seeds x sweeps, execute the runs on workers, resume."""
