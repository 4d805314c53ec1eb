"""BPR training triplets drawn on the device, one epoch at a time, without per-row Python loops.

Follows docs/protocol.md §3.1: ``n_train`` users drawn uniformly with replacement (users without training
items skipped), one training positive each, ``n_negatives`` distinct negatives each drawn uniformly
from the items the user has not trained on, then one triplet per negative, shuffled.

Negatives are found by vectorized rejection sampling: draw all candidates at once, then redraw only
the entries that hit a training positive or repeat an earlier negative of the same row, until none
do. Each round is a few tensor ops over the rows still invalid, and the expected number of rounds is
tiny at recommender densities. Rejection keeps the draw exactly uniform over the allowed items.
"""
from __future__ import annotations

import scipy.sparse as sp
import torch

from lwbench.kernels.csr import DeviceCSR


class BPRSampler:
    def __init__(self, train: sp.csr_matrix, n_negatives: int = 5, device: torch.device | str = "cpu"):
        self.n_users, self.n_items = train.shape
        self.n_negatives = n_negatives
        self.n_train = int(train.nnz)
        self.device = torch.device(device)
        self.train = DeviceCSR(train, self.device)
        crowded = torch.nonzero(self.train.degree > self.n_items - n_negatives).flatten()
        if len(crowded):
            user = int(crowded[0])
            raise ValueError(f"user {user} has {int(self.train.degree[user])} training items out of "
                             f"{self.n_items}: fewer than {n_negatives} items are left to sample as negatives")

    def sample_negatives(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``(len(users), n_negatives)`` distinct non-positive items per row."""
        k = self.n_negatives
        negatives = torch.randint(0, self.n_items, (len(users), k), device=self.device, generator=generator)
        rows = torch.arange(len(users), device=self.device)
        earlier = torch.ones(k, k, dtype=torch.bool, device=self.device).tril(-1)
        while len(rows):
            cand = negatives[rows]
            duplicate = ((cand[:, :, None] == cand[:, None, :]) & earlier).any(dim=2)
            invalid = self.train.contains(users[rows, None], cand) | duplicate
            keep = invalid.any(dim=1)
            rows, invalid = rows[keep], invalid[keep]
            redraw = torch.randint(0, self.n_items, invalid.shape, device=self.device, generator=generator)
            negatives[rows] = torch.where(invalid, redraw, negatives[rows])
        return negatives

    def epoch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A shuffled epoch of (user, positive item, negative item) triplets, items 0-based."""
        users = torch.randint(0, self.n_users, (self.n_train,), device=self.device, generator=generator)
        users = users[self.train.degree[users] > 0]
        offset = torch.floor(torch.rand(len(users), device=self.device, generator=generator)
                             * self.train.degree[users]).long()
        positives = self.train.indices[self.train.indptr[users] + offset]
        negatives = self.sample_negatives(users, generator)
        k = self.n_negatives
        order = torch.randperm(len(users) * k, device=self.device, generator=generator)
        return (users.repeat_interleave(k)[order], positives.repeat_interleave(k)[order],
                negatives.reshape(-1)[order])
