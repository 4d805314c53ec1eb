"""Studies: each module or sub-package registers reproduction targets (tables and figures, with the
grids that produce them) through :func:`lwbench.reports.targets.register_target` when imported. A
paper's study keeps its option names, published numbers and logs with it (``c2f_paper``); a study
need not come from a paper (``budget_curve``). Studies are discovered on first use; a study shipped
in another package registers through the ``lwbench.studies`` entry-point group."""
