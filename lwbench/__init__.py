"""lwbench: lightweight ID embeddings for graph recommenders, compared under one trainer, one budget
and one evaluation protocol. See README.md for the command line and the plugin API."""

__version__ = "0.1.0"
