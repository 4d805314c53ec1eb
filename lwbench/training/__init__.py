"""Training: the LightGCN model, BPR sampling on the device, the trainer loop and what it keeps on disk
(the sparse operators it runs on are :mod:`lwbench.kernels`)."""
