"""The built-in ``synthetic`` dataset: small, deterministic, and learnable.

Users and items belong to planted communities; user activity and item popularity follow power
laws. Each user draws most of its items from its own community (popularity-weighted) and the rest
from the whole catalogue, so collaborative filtering has real structure to find and a trained model
beats a random one by a wide margin. Everything is a function of the generator parameters and seed.
"""
from __future__ import annotations

import numpy as np

from lwbench.data.interactions import RawSplit


def generate(n_users: int = 3000, n_items: int = 2000, n_communities: int = 20, min_degree: int = 5,
             mean_degree: int = 20, in_community: float = 0.8, test_fraction: float = 0.2,
             seed: int = 7) -> tuple[RawSplit, RawSplit]:
    """Return (train, test) pair lists in the same form as a loaded LightGCN-format dataset."""
    if not 0 < test_fraction < 1 or not 0 <= in_community <= 1:
        raise ValueError("test_fraction must be in (0, 1) and in_community in [0, 1]")
    if min_degree < 2 or mean_degree <= min_degree or n_items < 4 * mean_degree:
        raise ValueError("need 2 <= min_degree < mean_degree and n_items >= 4 * mean_degree")
    rng = np.random.default_rng(seed)
    user_comm = rng.integers(0, n_communities, n_users)
    item_comm = rng.permutation(np.arange(n_items) % n_communities)
    popularity = rng.pareto(1.2, n_items) + 1.0  # heavy-tailed item popularity

    # Power-law activity with the requested mean, capped so every user keeps unseen items.
    raw = rng.pareto(2.0, n_users) + 1.0
    degree = min_degree + np.floor(raw / raw.mean() * (mean_degree - min_degree)).astype(np.int64)
    degree = np.minimum(degree, n_items // 4)

    # Popularity-weighted sampling without replacement via Gumbel top-k, one community at a time.
    comm_weight = np.where(item_comm[None, :] == np.arange(n_communities)[:, None],
                           in_community / np.bincount(item_comm, minlength=n_communities)[:, None], 0.0)
    comm_weight += (1.0 - in_community) / n_items
    log_weight = np.log(comm_weight * popularity[None, :])
    users, items = [], []
    for comm in range(n_communities):
        members = np.flatnonzero(user_comm == comm)
        if not len(members):
            continue
        gumbel = rng.gumbel(size=(len(members), n_items))
        ranked = np.argsort(-(log_weight[comm][None, :] + gumbel), axis=1)
        take = np.arange(n_items)[None, :] < degree[members][:, None]
        users.append(np.broadcast_to(members[:, None], ranked.shape)[take])
        items.append(ranked[take])
    users = np.concatenate(users)
    items = np.concatenate(items)

    # Per-user holdout: a test_fraction of each user's items (at least one) goes to test.
    order = np.lexsort((rng.random(len(users)), users))
    users, items = users[order], items[order]
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(users)) - np.repeat(starts, counts)
    n_test = np.maximum(1, np.round(counts * test_fraction)).astype(np.int64)
    is_test = rank < n_test[users]
    return (_raw(users[~is_test], items[~is_test], "synthetic/train"),
            _raw(users[is_test], items[is_test], "synthetic/test"))


def _raw(users: np.ndarray, items: np.ndarray, path: str) -> RawSplit:
    order = np.lexsort((items, users))
    return RawSplit(users=users[order].astype(np.int64), items=items[order].astype(np.int64), path=path)
