"""A binary user-item matrix held on the device for vectorized row gathers and membership tests.

Used by the negative sampler (is this a training positive?) and by evaluation (which items to mask,
which top-k items are relevant) so that neither loops over users in Python.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


class DeviceCSR:
    def __init__(self, matrix: sp.csr_matrix, device: torch.device | str = "cpu"):
        matrix = sp.csr_matrix(matrix)
        matrix.sort_indices()
        self.shape = matrix.shape
        self.device = torch.device(device)
        degree = np.diff(matrix.indptr).astype(np.int64)
        self.indptr = torch.as_tensor(matrix.indptr.astype(np.int64), device=self.device)
        self.indices = torch.as_tensor(matrix.indices.astype(np.int64), device=self.device)
        self.degree = torch.as_tensor(degree, device=self.device)
        rows = np.repeat(np.arange(self.shape[0], dtype=np.int64), degree)
        # Rows ascending and columns sorted within each row: the row-major keys are globally sorted.
        self.keys = torch.as_tensor(rows * self.shape[1] + matrix.indices.astype(np.int64), device=self.device)

    def contains(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Whether each (row, col) pair (broadcast against each other) is a stored entry."""
        query = rows * self.shape[1] + cols
        if len(self.keys) == 0:
            return torch.zeros_like(query, dtype=torch.bool)
        pos = torch.searchsorted(self.keys, query).clamp_max(len(self.keys) - 1)
        return self.keys[pos] == query

    def gather_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Entries of the given rows as (position in ``rows``, column), without a Python loop."""
        counts = self.degree[rows]
        position = torch.repeat_interleave(torch.arange(len(rows), device=self.device), counts)
        first = torch.cumsum(counts, 0) - counts
        offset = torch.arange(int(counts.sum()), device=self.device) - first[position]
        return position, self.indices[self.indptr[rows][position] + offset]
