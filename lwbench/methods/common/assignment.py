"""Sparse assignment matrices of meta-embedding methods (LEGCF, C2F; docs/protocol.md §7, §8) on the device.

An assignment ``S`` (rows x columns) links each row (an entity, or a coarse meta-embedding in C2F)
to a few columns (meta-embeddings) with a weight. Every row stores exactly ``t`` entries, so ``S`` is
two dense ``(rows, t)`` tensors - column indices and values - which index, checkpoint and count
trivially (``t`` values and ``t`` indices per row, docs/protocol.md §5.1). This module holds the operations
the methods share:

* :func:`anchored_assignment` - the initialisation of docs/protocol.md §7.2 (one anchor column with weight
  ``w*``, ``t-1`` random others sharing ``1-w*``);
* :func:`pinv_scores` and :func:`top_t_assignment` - the refresh ``top_t(H_rows pinv(H_meta))`` of 7.3;
* :class:`ExpandedGraphBuilder` - the expanded, doubly normalised propagation graph of 7.1 / 8.5 with
  assignment blocks chained off the diagonal;
* :class:`RefreshSchedule` - the ``assignment_update_frequency`` option.

Everything is vectorised torch on the assignment's device; the only dense intermediate is the
``rows x columns`` score matrix of a refresh.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lwbench.kernels.graph import SymmetricGraph, symmetric_normalize


@dataclass(frozen=True)
class SparseAssignment:
    """``S`` with exactly ``per_row`` stored entries per row: ``S[r, columns[r, j]] = values[r, j]``.

    Columns within a row are distinct. A stored value may be 0 (a clamped refresh value); it still
    occupies its slot, as it does in storage.
    """

    columns: torch.Tensor   # (n_rows, per_row), int64
    values: torch.Tensor    # (n_rows, per_row), float
    n_cols: int

    def __post_init__(self):
        if self.columns.dim() != 2 or self.columns.shape != self.values.shape:
            raise ValueError(f"assignment columns {tuple(self.columns.shape)} and values {tuple(self.values.shape)} "
                             "must both be (rows, entries per row)")

    @property
    def n_rows(self) -> int:
        return self.columns.shape[0]

    @property
    def per_row(self) -> int:
        return self.columns.shape[1]

    def compose(self, table: torch.Tensor) -> torch.Tensor:
        """``S @ table`` for a ``(n_cols, d)`` table (differentiable in ``table``)."""
        return (table[self.columns] * self.values.unsqueeze(-1)).sum(1)

    def transpose_compose(self, rows: torch.Tensor) -> torch.Tensor:
        """``S^T @ rows`` for a ``(n_rows, k)`` table: ``(n_cols, k)`` (e.g. C2F's bridge ``(S^c)^T S~``, 8.4)."""
        weighted = (self.values.unsqueeze(-1) * rows.unsqueeze(1)).reshape(-1, rows.shape[1])
        out = torch.zeros(self.n_cols, rows.shape[1], dtype=weighted.dtype, device=rows.device)
        return out.index_add_(0, self.columns.reshape(-1), weighted)

    def to_dense(self) -> torch.Tensor:
        dense = torch.zeros(self.n_rows, self.n_cols, dtype=self.values.dtype, device=self.values.device)
        return dense.scatter_add_(1, self.columns, self.values)

    def columns_in_use(self) -> int:
        """How many distinct columns carry a non-zero weight somewhere (the official log's
        "#centroids utilized", docs/protocol.md §10.10)."""
        return int(self.columns[self.values != 0].unique().numel())

    def mean_nonzero_value(self) -> float:
        """Mean of the non-zero stored values (the official log's "avg non-zero value")."""
        nonzero = self.values[self.values != 0]
        return float(nonzero.mean()) if nonzero.numel() else 0.0


def anchored_assignment(anchors: torch.Tensor, n_cols: int, per_row: int, anchor_weight: float,
                        generator: torch.Generator | None = None) -> SparseAssignment:
    """Row ``r`` gets ``anchor_weight`` at column ``anchors[r]`` and ``(1 - anchor_weight)/(per_row - 1)``
    at ``per_row - 1`` distinct other columns drawn uniformly; with ``per_row = 1`` the anchor gets 1.
    Every row sums to 1 (docs/protocol.md §7.2 step 2). ``anchors`` come from METIS (7.2) or are uniform
    random (the non-METIS option, 7.2 step 4); ``per_row = n_cols`` fills every column."""
    if not 1 <= per_row <= n_cols:
        raise ValueError(f"each row needs {per_row} distinct columns out of {n_cols}; "
                         f"choose between 1 and {n_cols} entries per row")
    if not 0.0 <= anchor_weight <= 1.0:
        raise ValueError(f"the anchor weight must lie in [0, 1], got {anchor_weight}")
    anchors = anchors.long().reshape(-1, 1)
    if per_row == 1:
        return SparseAssignment(anchors, torch.ones(anchors.shape, device=anchors.device), n_cols)
    # A uniformly random subset of the other columns: the top keys of i.i.d. uniform noise over the
    # n_cols - 1 non-anchor columns, then shifted past the anchor.
    keys = torch.rand(anchors.shape[0], n_cols - 1, device=anchors.device, generator=generator)
    others = keys.topk(per_row - 1, dim=1).indices
    others = others + (others >= anchors).long()
    values = torch.full((anchors.shape[0], per_row), (1.0 - anchor_weight) / (per_row - 1), device=anchors.device)
    values[:, 0] = anchor_weight
    return SparseAssignment(torch.cat([anchors, others], dim=1), values, n_cols)


def pinv_scores(h_rows: torch.Tensor, h_meta: torch.Tensor) -> torch.Tensor:
    """Dense ``H_rows pinv(H_meta)`` (rows x meta): the minimum-norm least-squares ``S`` with
    ``S H_meta ~ H_rows`` (docs/protocol.md §7.3 step 2, eq. 10; ``torch.linalg.pinv`` at default tolerance)."""
    return h_rows @ torch.linalg.pinv(h_meta)


def top_t_assignment(scores: torch.Tensor, per_row: int) -> tuple[SparseAssignment, int]:
    """Keep the ``per_row`` largest signed scores of every row, unnormalised (docs/protocol.md §7.3 step 3).

    A kept negative value would give a negative degree in the expanded graph (a NaN after the
    ``D^-1/2`` normalisation), so kept values are clamped at 0 (7.3 step 5). Returns the assignment
    and the number of clamped values.
    """
    if not 1 <= per_row <= scores.shape[1]:
        raise ValueError(f"cannot keep {per_row} of {scores.shape[1]} columns per row")
    values, columns = scores.topk(per_row, dim=1, largest=True)
    negative = values < 0
    clamps = int(negative.sum())
    if clamps:
        values = values.masked_fill(negative, 0.0)
    return SparseAssignment(columns, values, scores.shape[1]), clamps


class ExpandedGraphBuilder:
    """Builds ``D_M^-1/2 M D_M^-1/2`` for the expanded graph of LEGCF/C2F (docs/protocol.md §7.1, §8.5)::

        M = [[B,    S1,   0 ],      B  = the base graph (LightGCN's normalised Â: the code puts the
             [S1^T, 0,    S2],           already normalised matrix inside M and normalises again)
             [0,    S2^T, 0 ]]      S1 = entities -> meta-embeddings, S2 = meta -> finer meta, ...

    Node groups are the base nodes, then the columns of each assignment in ``chain``; assignment ``k``
    links group ``k`` (its rows) to group ``k+1`` (its columns). ``D_M`` holds the row sums of ``M``;
    a node with none (an unused meta-embedding) gets a zero row. The result is symmetric.
    """

    def __init__(self, base: SymmetricGraph):
        self.base_indices, self.base_values = base.to_coo()
        self.n_base = base.n_nodes

    def build(self, chain: Sequence[SparseAssignment]) -> SymmetricGraph:
        indices, values = [self.base_indices], [self.base_values]
        group_start, group_size = 0, self.n_base
        for level, assignment in enumerate(chain):
            if assignment.n_rows != group_size:
                raise ValueError(f"assignment {level} has {assignment.n_rows} rows, but the node group it starts "
                                 f"from has {group_size} nodes")
            if assignment.values.numel() and bool((assignment.values < 0).any()):
                raise ValueError(f"assignment {level} has negative values; the expanded graph needs non-negative "
                                 "degrees (clamp them, as top_t_assignment does)")
            next_start = group_start + group_size
            rows = group_start + torch.arange(assignment.n_rows, device=assignment.columns.device
                                              ).repeat_interleave(assignment.per_row)
            columns = next_start + assignment.columns.reshape(-1)
            weights = assignment.values.reshape(-1).to(self.base_values.dtype)
            indices += [torch.stack([rows, columns]), torch.stack([columns, rows])]
            values += [weights, weights]
            group_start, group_size = next_start, assignment.n_cols
        n_nodes = group_start + group_size
        return SymmetricGraph(*symmetric_normalize(torch.cat(indices, dim=1), torch.cat(values), n_nodes), n_nodes)


@dataclass(frozen=True)
class RefreshSchedule:
    """When an UPDATE epoch refreshes the assignment (option ``assignment_update_frequency``):

    * ``every-epoch`` (default): at batch 0 of every UPDATE epoch;
    * ``only-once``: at batch 0 of the first UPDATE epoch only;
    * ``every-K-epochs``: at batch 0 of UPDATE epochs whose epoch index is a multiple of K (the
      official code's rule; the index counts epochs of the stage, FIXED ones included).
    """

    every: int | None          # None: only once

    CHOICES = "'every-epoch', 'only-once' or 'every-K-epochs' with an integer K >= 1"

    @classmethod
    def parse(cls, text: str) -> RefreshSchedule:
        if text == "every-epoch":
            return cls(1)
        if text == "only-once":
            return cls(None)
        match = re.fullmatch(r"every-(\d+)-epochs", text)
        if match and int(match.group(1)) >= 1:
            return cls(int(match.group(1)))
        raise ValueError(f"assignment update frequency {text!r} is not valid; use {cls.CHOICES}")

    def due(self, epoch: int, refreshes_done: int) -> bool:
        if self.every is None:
            return refreshes_done == 0
        return epoch % self.every == 0
