"""QR: the remainder size is the largest that fits (docs/protocol.md §5.5 table, checked by brute force),
every entity gets its own (quotient, remainder) pair, and the per-type split stores the most values
the budget allows."""
import math

import pytest
import torch

from lwbench.budget import BudgetError, parse_budget
from lwbench.data.interactions import DatasetStats
from lwbench.kernels.graph import normalized_adjacency
from lwbench.options import resolve
from lwbench.plugin import BuildContext
from lwbench.registry import get_method

# docs/protocol.md §5.5: (users, items) -> (b, q, count) at the 500-bucket budget
TABLE = {"gowalla": ((29858, 40981), (1560, 46, 205_568)),
         "yelp2020": ((71135, 45063), (2263, 52, 296_320)),
         "amazon-book": ((52643, 91599), (2699, 54, 352_384))}


@pytest.mark.parametrize("dataset", sorted(TABLE))
def test_remainder_size_matches_the_budget_table(dataset):
    (users, items), (b, q, count) = TABLE[dataset]
    stats = DatasetStats(dataset, users, items, 0)
    budget = parse_budget("500buckets", users, items)
    method = get_method("qr")
    options = method.configure(resolve(method), budget, stats)
    assert options["buckets"] == b and math.ceil((users + items) / b) == q
    assert method.planned_count(options, stats).table3 == count <= budget
    # brute force: no larger remainder size fits
    assert not any((larger + math.ceil((users + items) / larger)) * 128 <= budget
                   for larger in range(b + 1, budget // 128 + 1))


def build(toy, budget_text="10%", **overrides):
    method = get_method("qr")
    budget = parse_budget(budget_text, toy.n_users, toy.n_items)
    options = method.configure(resolve(method, overrides), budget, toy.stats())
    torch.manual_seed(0)
    ctx = BuildContext(interactions=toy, graph=normalized_adjacency(toy.train), device=torch.device("cpu"),
                       options=options, seed=0, cache_dir=None)
    return method.build(ctx), options, budget


@pytest.mark.parametrize("budget_text, overrides", [("10%", {}), ("20%", {"per_type": True}),
                                                    ("10%", {"combine": "add"}), ("10%", {"combine": "concat"}),
                                                    ("10%", {"init": "normal"})])
def test_every_entity_gets_a_distinct_pair_and_row(toy, budget_text, overrides):
    module, options, budget = build(toy, budget_text, **overrides)
    pairs = set()
    for part in module.parts:
        quotient, remainder = module.index_pairs(part)
        pairs |= {(part, q, r) for q, r in zip(quotient.tolist(), remainder.tolist())}
        assert quotient.max() < module.tables[f"{part}_quotient"].shape[0]
        assert remainder.max() < module.tables[f"{part}_remainder"].shape[0]
    assert len(pairs) == toy.n_entities
    rows = module.layer0().detach()
    assert rows.shape == (toy.n_entities, 128)
    assert torch.unique(rows, dim=0).shape[0] == toy.n_entities
    tables = torch.cat([t.detach().flatten() for t in module.tables.values()])
    assert (tables < 0).any() and (tables > 0).any()          # not DLRM's all-positive uniform_ init
    assert module.param_count().table3 <= budget


def test_mult_composition_by_hand(toy):
    module, options, _ = build(toy)
    b = options["buckets"]
    x = 217
    expected = module.tables["entity_quotient"][x // b] * module.tables["entity_remainder"][x % b]
    torch.testing.assert_close(module.layer0()[x], expected)


def test_per_type_split_stores_the_most_values_within_budget(toy):
    method = get_method("qr")
    budget = parse_budget("20%", toy.n_users, toy.n_items)
    options = method.configure(resolve(method, {"per_type": True}), budget, toy.stats())
    chosen = method.planned_count(options, toy.stats()).table3
    rows = budget // 128
    best = max((bu + math.ceil(toy.n_users / bu) + bi + math.ceil(toy.n_items / bi)) * 128
               for bu in range(1, toy.n_users + 1) for bi in range(1, toy.n_items + 1)
               if bu + math.ceil(toy.n_users / bu) + bi + math.ceil(toy.n_items / bi) <= rows)
    assert chosen == best <= budget


def test_budget_below_the_smallest_qr_is_refused_with_its_minimum(toy):
    method = get_method("qr")
    smallest = min(b + math.ceil(toy.n_entities / b) for b in range(1, toy.n_entities + 1)) * 128
    with pytest.raises(BudgetError, match=f"smallest budget it supports is {smallest}"):
        method.configure(resolve(method), smallest - 1, toy.stats())
    assert method.configure(resolve(method), smallest, toy.stats())["buckets"] > 0
