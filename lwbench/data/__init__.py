"""Datasets: the LightGCN text format and its split (:mod:`.interactions`), dataset cards and where files
come from (:mod:`.cards`, cards in ``cards/*.toml``), and the built-in synthetic dataset."""
