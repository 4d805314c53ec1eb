"""Equal-effort tuning, ``run_bench.py tune`` (docs/protocol.md §10.12): :mod:`~lwbench.tuning.space` declares
what is searched and draws the trials, :mod:`~lwbench.tuning.study` runs them through the grid with successive
halving and retrains the chosen configuration, :mod:`~lwbench.tuning.command` is the command line. The report
side (the ``tuned`` target and the study file's location) is :mod:`lwbench.studies.tuned`, which imports no torch."""
