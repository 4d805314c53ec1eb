"""Reports: statistics, tables, figures and the target registry, built from records alone (no torch);
:mod:`lwbench.grid.reproduce` alone plans and trains (it imports the grid)."""
