"""Parts shared by several methods: meta-embedding graphs and sparse assignments (LEGCF, C2F), METIS
partitions, pruned tables (PEP, CERP, magprune), SparsePCA (C2F) and product quantization (DPQ, MGQE)."""
