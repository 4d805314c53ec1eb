"""Sparse graph operators for LightGCN-style propagation, built and applied on the device.

Every propagation graph in lwbench is symmetric (``Â = D^-1/2 A D^-1/2`` and the expanded
meta-embedding graphs of LEGCF/C2F), so the backward pass of ``Y = G X`` is ``dX = G dY`` with the
same matrix: :class:`SymmetricGraph` uses that to avoid a sparse transpose on every step.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch


def sparse_times_dense(matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``matrix @ dense`` for a CSR ``matrix``, through ``addmm`` with ``beta=0`` into a fresh output: the same
    kernel and the same bits as ``@``, which on a CPU also zero-fills and copies a temporary of the output's
    size (~20% of a propagation layer's time)."""
    if dense.requires_grad and torch.is_grad_enabled():   # out= is not differentiable (double backward)
        return matrix @ dense
    out = dense.new_empty(matrix.shape[0], dense.shape[1])
    return torch.addmm(out, matrix, dense, beta=0, out=out)


class _SymmetricSpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.matrix = matrix
        return sparse_times_dense(matrix, dense)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, sparse_times_dense(ctx.matrix, grad)


class SymmetricGraph:
    """A symmetric sparse matrix (CSR on its device) applied to dense node features."""

    def __init__(self, indices: torch.Tensor, values: torch.Tensor, n_nodes: int):
        coo = torch.sparse_coo_tensor(indices, values, (n_nodes, n_nodes), check_invariants=False).coalesce()
        with warnings.catch_warnings():  # torch flags CSR as "beta"; the ops used here are stable
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            self.matrix = coo.to_sparse_csr()
        self.n_nodes = n_nodes

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    @property
    def nnz(self) -> int:
        return int(self.matrix.values().numel())

    def __matmul__(self, dense: torch.Tensor) -> torch.Tensor:
        return _SymmetricSpMM.apply(self.matrix, dense)

    def to_coo(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices 2 x nnz, values) in row-major order."""
        coo = self.matrix.to_sparse_coo().coalesce()
        return coo.indices(), coo.values()

    def to(self, device: torch.device | str) -> SymmetricGraph:
        indices, values = self.to_coo()
        return SymmetricGraph(indices.to(device), values.to(device), self.n_nodes)


def symmetric_normalize(indices: torch.Tensor, values: torch.Tensor, n_nodes: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the values of ``D^-1/2 M D^-1/2`` for a symmetric COO matrix ``M``.

    ``D`` holds the row sums of ``M``; rows with a zero sum get a zero factor (docs/protocol.md §1).
    """
    degree = torch.zeros(n_nodes, dtype=values.dtype, device=values.device)
    degree.index_add_(0, indices[0], values)
    inv_sqrt = torch.where(degree > 0, degree.clamp_min(torch.finfo(values.dtype).tiny).rsqrt(),
                           torch.zeros_like(degree))
    return indices, values * inv_sqrt[indices[0]] * inv_sqrt[indices[1]]


def bipartite_edges(train: sp.csr_matrix, device: torch.device | str = "cpu"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """COO edges of ``A = [[0, R], [R^T, 0]]`` over the global entity index (items offset by |U|)."""
    coo = train.tocoo()
    n_users = train.shape[0]
    rows = torch.as_tensor(coo.row.astype(np.int64), device=device)
    cols = torch.as_tensor(coo.col.astype(np.int64), device=device) + n_users
    indices = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])
    values = torch.ones(indices.shape[1], dtype=torch.float32, device=device)
    return indices, values


def normalized_adjacency(train: sp.csr_matrix, device: torch.device | str = "cpu") -> SymmetricGraph:
    """LightGCN's ``Â = D^-1/2 A D^-1/2`` for the user-item training graph (docs/protocol.md §1)."""
    n_nodes = sum(train.shape)
    indices, values = symmetric_normalize(*bipartite_edges(train, device), n_nodes)
    return SymmetricGraph(indices, values, n_nodes)


def lightgcn_propagate(graph: SymmetricGraph, x0: torch.Tensor, n_layers: int,
                       after_layer: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """``H = mean(X_0, ..., X_L)`` with ``X_{l+1} = G X_l`` (docs/protocol.md §2.2), or ``X_{l+1} = f(G X_l)``
    with ``f = after_layer`` (C2F's per-layer re-mixing, docs/protocol.md §8.5 step 5)."""
    total = x0
    layer = x0
    for _ in range(n_layers):
        layer = graph @ layer
        if after_layer is not None:
            layer = after_layer(layer)
        total = total + layer
    return total / (n_layers + 1)
