"""Full-ranking evaluation on the device (docs/protocol.md §4).

Every item is scored for every evaluated user, training items are masked, the top ``max(ks)`` are
taken on the device, and per-user NDCG@k / Recall@k are computed from the hit matrix:

* ``Recall@k = |top_k ∩ T_u| / |T_u|``
* ``NDCG@k = DCG@k / IDCG@k`` with ``DCG@k = Σ_{r≤k} 1[item_r ∈ T_u] / log2(r+1)`` and the ideal list
  truncated at ``min(k, |T_u|)``.

Users are processed in chunks sized so that one chunk's score matrix fits a memory budget.
:func:`rank_metrics` (dense scores given) and :class:`Evaluator` (scores formed from embeddings)
share :func:`metrics_from_scores`, so the public function and the trainer compute the same thing.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from lwbench.config import metric_columns
from lwbench.kernels.csr import DeviceCSR

DEFAULT_KS = (1, 5, 10, 20, 50)


def metrics_from_scores(scores: torch.Tensor, users: torch.Tensor, train: DeviceCSR, test: DeviceCSR,
                        ks) -> torch.Tensor:
    """Per-user metrics for one chunk: ``scores`` is ``(len(users), n_items)`` and is modified in place
    (training items set to ``-inf``). Returns ``(len(users), 2*len(ks))`` ordered as
    :func:`metric_columns`. Every user must have at least one test item."""
    position, items = train.gather_rows(users)
    scores[position, items] = -torch.inf
    k_max = min(max(ks), scores.shape[1])
    top = torch.topk(scores, k_max, dim=1, sorted=True).indices
    hits = test.contains(users[:, None], top).to(torch.float64)
    n_relevant = test.degree[users].to(torch.float64)
    discount = 1.0 / torch.log2(torch.arange(2, k_max + 2, device=scores.device, dtype=torch.float64))
    dcg = torch.cumsum(hits * discount, dim=1)
    ideal = torch.cumsum(discount, dim=0)
    found = torch.cumsum(hits, dim=1)
    ndcg, recall = [], []
    for k in ks:
        col = min(k, k_max) - 1
        ideal_k = ideal[torch.clamp(n_relevant.long(), max=min(k, k_max)) - 1]
        ndcg.append(dcg[:, col] / ideal_k)
        recall.append(found[:, col] / n_relevant)
    return torch.stack(ndcg + recall, dim=1)


def _users_with_items(matrix: sp.csr_matrix) -> np.ndarray:
    return np.flatnonzero(np.diff(sp.csr_matrix(matrix).indptr) > 0)


def rank_metrics(scores, train: sp.csr_matrix, test: sp.csr_matrix, ks=DEFAULT_KS,
                 chunk_elements: int = 2**26) -> pd.DataFrame:
    """Per-user NDCG@k and Recall@k from a dense score matrix.

    ``scores``: ``(n_users, n_items)`` torch tensor or numpy array (computed on its own device).
    ``train`` / ``test``: binary scipy CSR matrices of the same shape. Training items are excluded
    from the ranking. Returns a DataFrame indexed by user id (users with at least one test item) with
    columns ``ndcg@k`` and ``recall@k``.
    """
    scores = torch.as_tensor(scores)
    if not scores.is_floating_point():
        scores = scores.double()
    if tuple(scores.shape) != tuple(train.shape) or tuple(train.shape) != tuple(test.shape):
        raise ValueError(f"shape mismatch: scores {tuple(scores.shape)}, train {train.shape}, test {test.shape}")
    device = scores.device
    train_d, test_d = DeviceCSR(train, device), DeviceCSR(test, device)
    users = torch.as_tensor(_users_with_items(test), device=device)
    chunk = max(1, chunk_elements // max(1, scores.shape[1]))
    parts = [metrics_from_scores(scores[users[s:s + chunk]], users[s:s + chunk], train_d, test_d, ks)
             for s in range(0, len(users), chunk)]
    values = torch.cat(parts).cpu().numpy() if parts else np.zeros((0, 2 * len(ks)))
    return pd.DataFrame(values, index=pd.Index(users.cpu().numpy(), name="user"), columns=metric_columns(ks))


class Evaluator:
    """Scores users against all items from propagated embeddings, chunk by chunk, on the device."""

    def __init__(self, train: sp.csr_matrix, targets: dict[str, sp.csr_matrix], ks=DEFAULT_KS,
                 device: torch.device | str = "cpu", chunk_elements: int = 2**26):
        self.device = torch.device(device)
        self.ks = tuple(ks)
        self.train = DeviceCSR(train, self.device)
        self.targets = {name: DeviceCSR(m, self.device) for name, m in targets.items()}
        self.users = {name: torch.as_tensor(_users_with_items(m), device=self.device)
                      for name, m in targets.items()}
        self.chunk = max(1, chunk_elements // max(1, train.shape[1]))

    @torch.no_grad()
    def per_user(self, split: str, user_emb: torch.Tensor, item_emb: torch.Tensor,
                 item_bias: torch.Tensor | None) -> pd.DataFrame:
        users = self.users[split]
        parts = []
        for start in range(0, len(users), self.chunk):
            chunk = users[start:start + self.chunk]
            scores = user_emb[chunk] @ item_emb.T
            if item_bias is not None:
                scores += item_bias[None, :]
            parts.append(metrics_from_scores(scores, chunk, self.train, self.targets[split], self.ks))
        values = torch.cat(parts).cpu().numpy()
        return pd.DataFrame(values, index=pd.Index(users.cpu().numpy(), name="user"),
                            columns=metric_columns(self.ks))
