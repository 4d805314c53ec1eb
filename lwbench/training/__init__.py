"""Training: the LightGCN graph and model, BPR sampling on the device, the trainer loop and what it keeps
on disk."""
