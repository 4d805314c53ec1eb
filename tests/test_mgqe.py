"""DPQ and MGQE: counts equal the docs/protocol.md §5.5 formulas on the paper's dataset statistics, sizing
picks the largest codebook under the budget, tiers follow training degree, the folded batch norm
equals a dense reference, codes stay in range, and evaluation reads the stored codes."""
import math

import numpy as np
import pytest
import torch

from lwbench.budget import parse_budget
from lwbench.config import TrainerConfig
from lwbench.data.interactions import DatasetStats
from lwbench.kernels.graph import normalized_adjacency
from lwbench.options import resolve
from lwbench.plugin import BuildContext
from lwbench.registry import get_method
from lwbench.training.trainer import Trainer

# docs/protocol.md §1 and §5.5: (users, items), DPQ K=256 D=8, MGQE K=256/64 D=8 with a top-10% head
PAPER = {"gowalla": ((29858, 40981), 174_446, 142_568),
         "yelp2020": ((71135, 45063), 265_164, 212_875),
         "amazon-book": ((52643, 91599), 321_252, 256_343)}


@pytest.mark.parametrize("dataset", sorted(PAPER))
def test_counts_equal_the_budget_table(dataset):
    (users, items), dpq_count, mgqe_count = PAPER[dataset]
    stats = DatasetStats(dataset, users, items, 0)
    for name, expected in (("dpq", dpq_count), ("mgqe", mgqe_count)):
        method = get_method(name)
        options = method.with_k(resolve(method), 256)
        assert method.planned_count(options, stats).table3 == expected, name
    # independently: K*d floats + codes as bits/32 (ceil), head = floor(10%) of users plus of items
    head = users // 10 + items // 10
    assert 256 * 128 + math.ceil((head * 8 * 8 + (users + items - head) * 8 * 6) / 32) == mgqe_count


@pytest.mark.parametrize("name", ["dpq", "mgqe"])
@pytest.mark.parametrize("dataset", sorted(PAPER))
def test_sizing_takes_the_largest_codebook_that_fits(name, dataset):
    (users, items), _, _ = PAPER[dataset]
    stats = DatasetStats(dataset, users, items, 0)
    budget = parse_budget("500buckets", users, items)
    method = get_method(name)
    options = method.configure(resolve(method), budget, stats)
    assert method.planned_count(options, stats).table3 <= budget
    bigger = method.with_k(resolve(method), options["k"] + 1)
    assert method.planned_count(bigger, stats).table3 > budget


def build(name, toy, **overrides):
    method = get_method(name)
    budget = parse_budget("10%", toy.n_users, toy.n_items)
    options = method.configure(resolve(method, overrides), budget, toy.stats())
    torch.manual_seed(0)
    ctx = BuildContext(interactions=toy, graph=normalized_adjacency(toy.train), device=torch.device("cpu"),
                       options=options, seed=0, cache_dir=None)
    return method.build(ctx), options


def test_head_tier_is_the_top_tenth_of_users_and_of_items_by_training_degree(toy):
    module, options = build("mgqe", toy)
    user_degree = np.bincount(toy.train.tocoo().row, minlength=toy.n_users)
    item_degree = np.bincount(toy.train.tocoo().col, minlength=toy.n_items)
    expected = set()
    for offset, degree in ((0, user_degree), (toy.n_users, item_degree)):
        order = sorted(range(len(degree)), key=lambda e: (-degree[e], e))   # ties: lower id first
        expected |= {offset + e for e in order[:len(degree) // 10]}
    assert set(module.tier_rows("head").tolist()) == expected
    assert set(module.tier_rows("tail").tolist()) == set(range(toy.n_entities)) - expected
    assert options["tail_k"] == options["k"] // 4


def whole_responses(module, query):
    """Normalized responses ``(D, n_tier, k_tier)`` of each tier's entities, formed whole in one product."""
    augmented, keys = module.scoring(query)
    return {name: torch.bmm(augmented[:, module.tier_rows(name)], keys[:, :, :k])
            for name, k in module.tier_limits.items()}


@pytest.mark.parametrize("mode", ["vq", "sx"])
def test_folded_batch_norm_equals_a_dense_reference(toy, mode):
    module, options = build("mgqe", toy, mode=mode)
    with torch.no_grad():
        module.query.mul_(3.0).add_(0.05)        # away from the initialization's symmetry
        query = module.query.view(-1, options["groups"], options["dim"] // options["groups"])
        keys = module.keys
        if mode == "vq":
            dense = -((query.unsqueeze(2) - keys.unsqueeze(0)) ** 2).sum(-1)    # (N, D, K)
        else:
            dense = torch.einsum("ndw,dkw->ndk", query, keys)
        dense = (dense - dense.mean(0)) / torch.sqrt(dense.var(0, unbiased=False) + 1e-5)
        for name, response in whole_responses(module, module.query).items():
            rows, k = module.tier_rows(name), module.tier_limits[name]
            reference = dense[rows][:, :, :k].transpose(0, 1)
            torch.testing.assert_close(response, reference, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["dpq", "mgqe"])
def test_a_cpu_assignment_in_pieces_gives_the_codes_of_the_whole_responses(toy, name, monkeypatch):
    """The CPU forms the responses a few entities at a time (cache-sized pieces); the codes are those of the
    whole tier's responses bit for bit, pieces of one entity and uneven last pieces included."""
    from lwbench.methods.common import quantization
    module, options = build(name, toy)
    with torch.no_grad():
        module.query.mul_(3.0).add_(0.05)
        whole = torch.empty_like(module.codes)
        for tier, response in whole_responses(module, module.query).items():
            whole[module.tier_rows(tier)] = response.argmax(-1).transpose(0, 1)
        for elements in (1, 7 * options["groups"] * options["k"], quantization.ASSIGN_CHUNK_ELEMENTS):
            monkeypatch.setattr(quantization, "ASSIGN_CHUNK_ELEMENTS", elements)
            assert torch.equal(module.assign(module.query), whole)


def dense_sx_rows(module):
    """SX's layer-0 rows as the straight-through estimator reads, left whole to autograd."""
    augmented, keys = module.scoring(module.query)
    rows = torch.zeros(module.groups, module.n_entities, module.dim // module.groups)
    for name, k in module.tier_limits.items():
        tier = module.tier_rows(name)
        probs = torch.softmax(torch.bmm(augmented[:, tier], keys[:, :, :k]), dim=-1)
        onehot = torch.zeros_like(probs).scatter_(-1, probs.argmax(-1, keepdim=True), 1.0)
        rows = rows.index_copy(1, tier, torch.bmm(probs - (probs - onehot).detach(), module.values[:, :k]))
    return rows.transpose(0, 1).reshape(-1, module.dim)


@pytest.mark.parametrize("name", ["dpq", "mgqe"])
def test_sx_rows_and_gradients_in_pieces_equal_the_dense_straight_through_estimator(toy, name, monkeypatch):
    """SX forms its responses a few entities at a time in forward and backward (a hand-written backward):
    rows and the gradients of queries, keys and values equal autograd's over the whole responses, for
    pieces of one entity, uneven pieces and the default."""
    from lwbench.methods.common import quantization
    module, options = build(name, toy, mode="sx")
    with torch.no_grad():
        module.query.mul_(3.0).add_(0.05)
    weights = torch.randn(module.n_entities, module.dim, generator=torch.Generator().manual_seed(1))
    parameters = (module.query, module.keys, module.values)

    def rows_and_gradients(rows_of):
        rows = rows_of()
        return (rows.detach(),) + torch.autograd.grad((rows * weights).sum(), parameters)

    expected = rows_and_gradients(lambda: dense_sx_rows(module))
    assert expected[3].abs().sum() > 0 and expected[1].abs().sum() > 0
    for elements in (1, 7 * options["groups"] * options["k"], quantization.ASSIGN_CHUNK_ELEMENTS):
        monkeypatch.setattr(quantization, "ASSIGN_CHUNK_ELEMENTS", elements)
        for got, want in zip(rows_and_gradients(module.layer0), expected):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["vq", "sx"])
@pytest.mark.parametrize("head_fraction", [0.0, 1.0])
def test_an_empty_tier_builds_trains_and_assigns(toy, mode, head_fraction):
    """``head_fraction`` 0 or 1 leaves one tier without entities: nothing of it is formed, the other tier is."""
    module, options = build("mgqe", toy, mode=mode, head_fraction=head_fraction)
    empty = "head" if head_fraction == 0 else "tail"
    assert module.tier_rows(empty).numel() == 0
    module.layer0().square().sum().backward()
    assert module.query.grad is not None and module.query.grad.abs().sum() > 0
    module.store_codes()
    limit = options["k"] if empty == "tail" else options["tail_k"]
    assert 0 <= int(module.codes.min()) and int(module.codes.max()) < limit


@pytest.mark.parametrize("mode", ["vq", "sx"])
def test_codes_in_range_and_evaluation_uses_the_stored_codes(toy, tmp_path, mode):
    method = get_method("mgqe")
    budget = parse_budget("10%", toy.n_users, toy.n_items)
    options = method.configure(resolve(method, {"mode": mode}), budget, toy.stats())
    config = TrainerConfig(max_epochs=2, eval_every=1, batch_size=2048, layers=2)
    trainer = Trainer(method, options, toy, config, seed=3, device="cpu", work_dir=tmp_path / "w",
                      cache_dir=tmp_path / "c", show_progress=False)
    trainer.fit()
    module = trainer.module
    codes = module.codes
    assert codes.min() >= 0
    assert codes[module.tier_rows("head")].max() < options["k"]
    assert codes[module.tier_rows("tail")].max() < options["tail_k"]

    module.eval()
    stored = module.layer0()
    book = module.codebook().detach()
    by_hand = torch.stack([book[j, codes[:, j]] for j in range(options["groups"])], dim=1).reshape(-1, 128)
    torch.testing.assert_close(stored, by_hand)
    with torch.no_grad():
        module.query.copy_(torch.randn_like(module.query))   # a fresh argmax would now pick other codes
    assert not torch.equal(module.assign(module.query), codes)
    torch.testing.assert_close(module.layer0(), stored)      # evaluation does not look at the queries
    module.train()


def test_codes_are_refreshed_after_every_epoch(toy):
    module, _ = build("dpq", toy)
    with torch.no_grad():
        module.query.copy_(torch.randn_like(module.query))
    fresh = module.assign(module.query)
    assert not torch.equal(module.codes, fresh)
    module.end_epoch(stage=None, epoch=1)
    assert torch.equal(module.codes, fresh)


def test_rows_in_evaluation_are_the_stored_codes_looked_up(toy):
    """The inference profile times ``rows``: for a quantized table, the stored codes' centroids."""
    method = get_method("mgqe")
    options = method.configure(resolve(method), parse_budget("500buckets", toy.n_users, toy.n_items), toy.stats())
    module = method.build(BuildContext(interactions=toy, graph=normalized_adjacency(toy.train),
                                       device=torch.device("cpu"), options=options, seed=0, cache_dir=None))
    module.eval()
    entities = torch.tensor([0, 7, toy.n_users + 3, 499])
    assert torch.equal(module.rows(entities), module.layer0()[entities])
