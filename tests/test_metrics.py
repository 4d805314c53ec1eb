"""rank_metrics against a brute-force numpy implementation of docs/protocol.md §4."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lwbench.evaluate import Evaluator, rank_metrics


def brute_force(scores, train, test, ks):
    """Per-user metrics, one user at a time, straight from the definitions."""
    train, test = train.toarray() > 0, test.toarray() > 0
    out = {}
    for user in range(scores.shape[0]):
        relevant = set(np.flatnonzero(test[user]))
        if not relevant:
            continue
        candidates = [i for i in np.argsort(-scores[user], kind="stable") if not train[user, i]]
        row = {}
        for k in ks:
            top = candidates[:k]
            dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(top) if item in relevant)
            idcg = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
            row[f"ndcg@{k}"] = dcg / idcg
            row[f"recall@{k}"] = sum(item in relevant for item in top) / len(relevant)
        out[user] = row
    return out


def random_case(rng, n_users, n_items, train_density, test_density):
    train = rng.random((n_users, n_items)) < train_density
    test = (rng.random((n_users, n_items)) < test_density) & ~train
    test[rng.integers(0, n_users, 3)] = False  # some users without test items
    return rng.normal(size=(n_users, n_items)), sp.csr_matrix(train.astype(np.float32)), sp.csr_matrix(test.astype(np.float32))


@pytest.mark.parametrize("case", range(6))
def test_rank_metrics_matches_brute_force(case):
    rng = np.random.default_rng(case)
    n_users, n_items = int(rng.integers(5, 40)), int(rng.integers(20, 120))
    scores, train, test = random_case(rng, n_users, n_items, rng.uniform(0.05, 0.3), rng.uniform(0.01, 0.2))
    ks = (1, 5, 10, 20, 50)
    expected = brute_force(scores, train, test, ks)
    got = rank_metrics(scores, train, test, ks, chunk_elements=3 * n_items)  # several chunks
    assert sorted(got.index) == sorted(expected)
    for user, row in expected.items():
        for column, value in row.items():
            assert got.loc[user, column] == pytest.approx(value, abs=1e-12), (user, column)


def test_users_with_fewer_relevant_items_than_k_can_reach_one():
    # One relevant item ranked first: NDCG@k = Recall@k = 1 for every k (ideal list truncated at |T_u|).
    scores = np.array([[5.0, 1.0, 0.5, 0.1, 0.0, -1.0]])
    train = sp.csr_matrix(np.zeros((1, 6), dtype=np.float32))
    test = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0]], dtype=np.float32))
    got = rank_metrics(scores, train, test, ks=(1, 5, 20))
    assert got.to_numpy() == pytest.approx(np.ones((1, 6)))


def test_training_items_are_masked_but_other_split_items_are_not():
    scores = np.array([[9.0, 8.0, 7.0, 1.0]])
    train = sp.csr_matrix(np.array([[1, 0, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 1, 0]], dtype=np.float32))
    got = rank_metrics(scores, train, test, ks=(1, 2))
    # item 0 is masked, item 1 (e.g. a validation item) stays a candidate and outranks the test item
    assert got.loc[0, "recall@1"] == 0.0
    assert got.loc[0, "recall@2"] == 1.0
    assert got.loc[0, "ndcg@2"] == pytest.approx(1 / math.log2(3))


def test_torch_input_and_evaluator_agree_with_numpy_path():
    rng = np.random.default_rng(7)
    scores, train, test = random_case(rng, 30, 50, 0.1, 0.1)
    user_emb = torch.tensor(rng.normal(size=(30, 8)))
    item_emb = torch.tensor(rng.normal(size=(50, 8)))
    bias = torch.tensor(rng.normal(size=50))
    dense = (user_emb @ item_emb.T + bias).numpy()
    expected = rank_metrics(dense, train, test)
    from_torch = rank_metrics(torch.tensor(dense), train, test)
    evaluator = Evaluator(train, {"test": test}, chunk_elements=7 * 50)
    from_embeddings = evaluator.per_user("test", user_emb, item_emb, bias)
    assert np.allclose(from_torch.to_numpy(), expected.to_numpy())
    assert np.allclose(from_embeddings.to_numpy(), expected.to_numpy())
    assert list(from_embeddings.index) == list(expected.index)


def test_shape_mismatch_is_an_error():
    train = sp.csr_matrix((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="shape mismatch"):
        rank_metrics(np.zeros((3, 5)), train, train)


@pytest.mark.parametrize("chunk_rows", [1, 7, 30])
def test_evaluation_chunking_does_not_change_a_single_bit(chunk_rows):
    """trainer.eval_chunk_elements only decides how many users are scored at once, so it never splits
    comparable runs (lwbench.reports.comparable.RESULT_NEUTRAL): the metrics must be equal to the bit."""
    rng = np.random.default_rng(11)
    _, train, test = random_case(rng, 30, 50, 0.1, 0.1)
    user_emb = torch.tensor(rng.normal(size=(30, 16)), dtype=torch.float32)
    item_emb = torch.tensor(rng.normal(size=(50, 16)), dtype=torch.float32)
    bias = torch.tensor(rng.normal(size=50), dtype=torch.float32)
    whole = Evaluator(train, {"test": test}, chunk_elements=30 * 50).per_user("test", user_emb, item_emb, bias)
    chunked = Evaluator(train, {"test": test}, chunk_elements=chunk_rows * 50).per_user("test", user_emb, item_emb, bias)
    assert np.array_equal(whole.to_numpy(), chunked.to_numpy()) and list(whole.index) == list(chunked.index)
