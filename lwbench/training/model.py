"""The recommender every method shares: a plugin's embedding module, LightGCN propagation, and the
FM-style score of the official code (dot product plus an item bias, docs/protocol.md §2.3)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lwbench.plugin import EmbeddingModule, Stage


class _GatherRows(torch.autograd.Function):
    """``table[i]`` for each index tensor ``i``. The backward pass accumulates every part's row gradients into
    one table gradient, part after part, with ``index_add_``, which adds rows in index order; in the
    trainer's deterministic mode (its default) the accumulating ``index_put_`` behind ``table[i]``'s backward
    does the same, so the sums equal, bit for bit, those of one advanced-indexing gather over the
    concatenated indices followed by a split. (Without deterministic mode, ``index_put_`` adds in parallel on
    a CPU and ``index_add_`` uses atomics on a GPU: neither is reproducible then.) ``index_select`` and
    ``index_add_`` take a third of the time of ``table[i]`` and ``index_put_`` on a CPU, and the split's
    backward no longer copies the parts' gradients into one tensor."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, *indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.save_for_backward(*indices)
        ctx.table_shape = table.shape
        return tuple(table.index_select(0, index) for index in indices)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        indices = ctx.saved_tensors
        table_grad = grads[0].new_zeros(ctx.table_shape)
        for index, grad in zip(indices, grads):
            table_grad.index_add_(0, index, grad)
        return (table_grad,) + (None,) * len(indices)


def gather_rows(table: torch.Tensor, *indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rows of ``table`` at each of ``indices``, differentiable in ``table`` (see :class:`_GatherRows`)."""
    return _GatherRows.apply(table, *indices)


class _SquaredSum(torch.autograd.Function):
    """``x.square().sum()`` with a one-pass backward, ``x * 2g``, where autograd's ``pow`` backward makes three
    (a copy of ``x``, times 2, times ``g``). The gradient is the same bit for bit: doubling is exact."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.square().sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return x * (2 * grad)


class Recommender(nn.Module):
    def __init__(self, embedding: EmbeddingModule, n_layers: int, item_bias: bool, device: torch.device):
        super().__init__()
        self.embedding = embedding
        self.n_layers = n_layers
        # N(0, 1) as the official nn.Embedding(N, 1). The user half of that table and the global
        # offset cancel in BPR and in per-user ranking, so only the item half is kept.
        self.item_bias = (nn.Parameter(torch.randn(embedding.n_items, device=device))
                          if item_bias else None)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(layer-0 rows X_0, propagated rows H), over entities and any virtual nodes."""
        x0 = self.embedding.layer0()
        return x0, self.embedding.propagate(x0, self.n_layers)

    def user_item_tables(self, propagated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_users, n_items = self.embedding.n_users, self.embedding.n_items
        return propagated[:n_users], propagated[n_users:n_users + n_items]

    def bpr_loss(self, propagated: torch.Tensor, users, positives, negatives) -> torch.Tensor:
        """mean softplus(s_uj - s_ui) (docs/protocol.md §3.2)."""
        user_vec, pos_vec, neg_vec = self.batch_rows(propagated, users, positives, negatives)
        pos = (user_vec * pos_vec).sum(-1)
        neg = (user_vec * neg_vec).sum(-1)
        if self.item_bias is not None:
            pos = pos + self.item_bias[positives]
            neg = neg + self.item_bias[negatives]
        return F.softplus(neg - pos).mean()

    def l2_loss(self, x0: torch.Tensor, users, positives, negatives, factor: float) -> torch.Tensor:
        """(factor * 1e-4) * (|E0[u]|^2 + |E0[i+]|^2 + |E0[j]|^2) / B over layer-0 entity rows."""
        rows = self.batch_rows(self.embedding.ego_rows(x0), users, positives, negatives)
        return factor * 1e-4 * sum(_SquaredSum.apply(r) for r in rows) / len(users)

    def batch_rows(self, table: torch.Tensor, users, positives, negatives) -> tuple[torch.Tensor, ...]:
        """The rows of a batch's users, positives and negatives (items are offset by ``n_users``)."""
        offset = self.embedding.n_users
        return gather_rows(table, users, positives + offset, negatives + offset)

    def param_groups(self, stage: Stage) -> list[dict]:
        groups = self.embedding.param_groups(stage)
        if self.item_bias is not None:
            groups.append({"params": [self.item_bias]})
        return groups

