"""The C2F paper (coarse-to-fine lightweight meta-embeddings): Tables 3-4 and Figures 4-6."""
