"""BPR sampler: never a training positive, distinct negatives, uniform over the allowed items."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

from lwbench.training.sampler import BPRSampler


def test_epoch_shape_and_no_positive_negatives(toy):
    sampler = BPRSampler(toy.train, n_negatives=5)
    generator = torch.Generator().manual_seed(0)
    users, positives, negatives = sampler.epoch(generator)
    dense = toy.train.toarray() > 0
    u, p, n = users.numpy(), positives.numpy(), negatives.numpy()
    assert len(u) == 5 * toy.train.nnz  # every toy user has training items
    assert dense[u, p].all(), "positives must be training items"
    assert not dense[u, n].any(), "a negative was a training positive"


def test_negatives_of_one_draw_are_distinct():
    # A dense user (47 of 60 items) makes collisions frequent, so rejection must work for real.
    rng = np.random.default_rng(1)
    matrix = (rng.random((4, 60)) < 0.2).astype(np.float32)
    matrix[0, :47] = 1
    sampler = BPRSampler(sp.csr_matrix(matrix), n_negatives=8)
    users = torch.zeros(5000, dtype=torch.long)
    negatives = sampler.sample_negatives(users, torch.Generator().manual_seed(2)).numpy()
    assert (np.sort(negatives, axis=1)[:, 1:] != np.sort(negatives, axis=1)[:, :-1]).all()
    assert (negatives >= 47).all()


def test_negatives_are_uniform_over_allowed_items():
    matrix = np.zeros((2, 50), dtype=np.float32)
    matrix[0, [3, 7, 11, 30, 31, 32]] = 1
    matrix[1, :5] = 1
    sampler = BPRSampler(sp.csr_matrix(matrix), n_negatives=5)
    users = torch.zeros(20000, dtype=torch.long)
    negatives = sampler.sample_negatives(users, torch.Generator().manual_seed(3)).numpy().ravel()
    allowed = np.flatnonzero(matrix[0] == 0)
    counts = np.bincount(negatives, minlength=50)
    assert counts[matrix[0] > 0].sum() == 0
    result = stats.chisquare(counts[allowed])
    assert result.pvalue > 1e-3, result


def test_user_draws_are_uniform_and_skip_users_without_items():
    matrix = np.zeros((6, 30), dtype=np.float32)
    matrix[[0, 1, 2, 4, 5], 0] = 1
    matrix[:, 1] = 0
    matrix[0, 2:6] = 1
    sampler = BPRSampler(sp.csr_matrix(matrix), n_negatives=1)
    seen = []
    generator = torch.Generator().manual_seed(4)
    for _ in range(300):
        users, _, _ = sampler.epoch(generator)
        seen.append(users.numpy())
    counts = np.bincount(np.concatenate(seen), minlength=6)
    assert counts[3] == 0
    assert stats.chisquare(counts[[0, 1, 2, 4, 5]]).pvalue > 1e-3


def test_same_generator_seed_gives_same_epoch(toy):
    sampler = BPRSampler(toy.train)
    a = sampler.epoch(torch.Generator().manual_seed(9))
    b = sampler.epoch(torch.Generator().manual_seed(9))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_user_with_too_few_unseen_items_is_rejected():
    matrix = np.ones((2, 6), dtype=np.float32)
    matrix[1, 3:] = 0
    with pytest.raises(ValueError, match="user 0 has 6 training items"):
        BPRSampler(sp.csr_matrix(matrix), n_negatives=5)
