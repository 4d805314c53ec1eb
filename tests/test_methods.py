"""Contract tests run for every registered method, so a new plugin is covered automatically:
it sizes itself to generous, 500buckets-equivalent and tight budgets (or refuses with a message
saying what it needs), its built module's count equals the plan (a pruning method's: at most the plan
after training) and the budget, it trains and evaluates for an epoch per stage, and its option
defaults satisfy their declarations. The example plugin of docs/adding-a-method.md runs through the
same checks."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lwbench import registry
from lwbench.budget import BudgetError, parse_budget
from lwbench.config import TrainerConfig
from lwbench.kernels.graph import normalized_adjacency
from lwbench.options import coerce_options, defaults, describe_options, resolve
from lwbench.plugin import BuildContext, Method
from lwbench.registry import get_method, method_names, register
from lwbench.training.trainer import Trainer

TIGHT = "0.6%"
BUDGETS = ("10%", "500buckets", TIGHT)
PLUGINS = [name for name in method_names() if not name.startswith("test-")]  # "test-*": fixtures of other tests


def configured(name, budget_text, toy, overrides=None):
    method = get_method(name)
    budget = parse_budget(budget_text, toy.n_users, toy.n_items)
    options = method.configure(resolve(method, overrides or {}), budget if method.budgeted else None,
                               toy.stats())
    return method, budget, options


def stated_minimum(message):
    """The smallest budget a refusal names ("the smallest budget it supports is N" / "a budget of at least N")."""
    found = re.search(r"smallest budget it supports is (\d+)", message) or re.search(r"budget of at least (\d+)", message)
    assert found, f"a refused budget must name the smallest one that fits: {message}"
    return int(found.group(1))


def fits(method, budget, toy):
    try:
        method.configure(resolve(method), budget, toy.stats())
    except BudgetError:
        return False
    return True


def check_sizing_and_built_count(name, budget_text, toy):
    """The method fits the budget (or refuses the tight one naming the exact smallest budget it fits),
    and the freshly built module's count is the plan's (a pruning method's dense tables: at least it)."""
    try:
        method, budget, options = configured(name, budget_text, toy)
    except BudgetError as exc:
        # Only the tight budget may be refused, and then the smallest budget the message names is exact.
        assert budget_text == TIGHT, f"{name} refused a budget it should fit: {exc}"
        minimum = stated_minimum(str(exc))
        method = get_method(name)
        assert fits(method, minimum, toy) and not fits(method, minimum - 1, toy), (name, minimum)
        return
    planned = method.planned_count(options, toy.stats())
    if method.budgeted:
        assert planned.table3 <= budget
    torch.manual_seed(0)
    ctx = BuildContext(interactions=toy, graph=normalized_adjacency(toy.train), device=torch.device("cpu"),
                       options=options, seed=0, cache_dir=None)
    module = method.build(ctx)
    if method.prunes:  # the dense tables before pruning hold at least the target
        assert module.param_count().table3 >= planned.table3
    else:
        assert module.param_count().table3 == planned.table3
        assert module.param_count() == planned, "the plan's storage inventory must be the built module's"
    assert module.layer0().shape[0] >= toy.n_entities
    assert_count_matches_kept_tensors(module)


def assert_count_matches_kept_tensors(module):
    """The reported storage equals a recount of the tensors the module says it keeps for inference."""
    count = module.param_count()
    floats, ints, bits = module.inference_state().counts()
    assert (count.float_values, count.int_indices, count.code_bits) == (floats, ints, bits)


def check_training(name, toy, tmp_path):
    """One epoch per stage (under the method's smoke options) trains, evaluates, and leaves a module
    whose count is the plan's (a pruning method's: at most the plan's)."""
    method, budget, options = configured(name, "500buckets", toy, get_method(name).smoke_options)
    # caps every stage; one epoch never reaches a two-phase stage's UPDATE, so a hand-off takes FIXED
    config = TrainerConfig(max_epochs=1, eval_every=1, batch_size=4096, layers=2, allow_handoff_fallback=True)
    trainer = Trainer(method, options, toy, config, seed=1, device="cpu", work_dir=tmp_path / "w",
                      cache_dir=tmp_path / "c", show_progress=False)
    result = trainer.fit()
    test = result.reported_checkpoint.test
    assert 0.0 <= test["ndcg@20"] <= 1.0 and 0.0 <= test["recall@20"] <= 1.0
    assert_count_matches_kept_tensors(trainer.module)  # after training (pruning changes counts)
    if method.budgeted:
        assert trainer.module.param_count().table3 <= budget
    planned, trained = method.planned_count(options, toy.stats()), trainer.module.param_count()
    if method.prunes:
        assert trained.table3 <= planned.table3 and trained.storage_bytes <= planned.storage_bytes
    else:
        assert trained == planned


def check_declarations(name):
    """Every default satisfies its own declaration, and --list --verbose describes every option."""
    method = get_method(name)
    assert coerce_options(name, method.options, defaults(method)) == defaults(method)
    described = describe_options(method).splitlines()
    assert [line.split(" (")[0] for line in described] == list(method.options)


@pytest.mark.parametrize("budget_text", BUDGETS)
@pytest.mark.parametrize("name", PLUGINS)
def test_count_fits_budget_and_matches_built_module(name, budget_text, toy):
    check_sizing_and_built_count(name, budget_text, toy)


@pytest.mark.parametrize("name", PLUGINS)
def test_trains_one_epoch_and_evaluates(name, toy, tmp_path):
    check_training(name, toy, tmp_path)


@pytest.mark.parametrize("name", PLUGINS)
def test_options_are_declared_consistently(name):
    check_declarations(name)


DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-a-method.md"


def test_the_documented_example_plugin_passes_the_contract(tmp_path, monkeypatch, toy, isolated_registry):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/adding-a-method.md holds one complete plugin"
    folder = tmp_path / "my_methods"
    folder.mkdir()
    (folder / "doc_example.py").write_text(blocks[0])
    before = set(method_names())
    monkeypatch.setenv("LWBENCH_PLUGINS", str(folder))
    registry._discovered = False
    added = set(method_names()) - before
    assert len(added) == 1, added
    name = added.pop()
    check_declarations(name)
    for budget_text in BUDGETS:
        check_sizing_and_built_count(name, budget_text, toy)
    check_training(name, toy, tmp_path)


def test_registry_rejects_duplicates_and_non_methods(isolated_registry):
    with pytest.raises(TypeError):
        register(object)

    class First(Method):
        name = "test-dup"

    class Second(Method):
        name = "test-dup"

    register(First)
    with pytest.raises(ValueError, match="registered twice"):
        register(Second)


@pytest.fixture(scope="module")
def toy_with_cold(toy_raw):
    """The toy graph plus one user and one item that occur only in test (docs/protocol.md §1.2): user 300
    has two test items, item 200 is a test item of users 0, 1 and 300, and neither has a training edge."""
    from lwbench.data.interactions import RawSplit, build_interactions
    train, test = toy_raw
    users = np.concatenate([test.users, [0, 1, 300, 300]])
    items = np.concatenate([test.items, [200, 200, 200, 5]])
    order = np.lexsort((items, users))
    inter = build_interactions("toy-cold", train, RawSplit(users[order], items[order], "test"))
    assert (inter.n_users, inter.n_items) == (301, 201)
    assert (inter.stats().cold_users, inter.stats().cold_items) == (1, 1)
    return inter


@pytest.mark.parametrize("name", PLUGINS)
def test_cold_user_and_item_size_train_and_score(name, toy_with_cold, tmp_path):
    """Rows without a training edge: every method sizes over the full id range, builds a row for them (METIS
    partitions and assignments cover isolated nodes), trains, and scores the cold item for every user."""
    check_sizing_and_built_count(name, "500buckets", toy_with_cold)
    check_training(name, toy_with_cold, tmp_path)


def test_metis_places_isolated_nodes_in_a_part(toy_with_cold):
    """The meta-embedding methods anchor every entity at its METIS part (docs/protocol.md §7.2): the
    partition must cover the cold user and item, which have no edge."""
    from lwbench.methods.common.metis import metis_parts, user_item_adjacency
    adjacency = user_item_adjacency(toy_with_cold.train)
    parts = metis_parts(adjacency, 8, seed=1)
    assert parts.shape == (toy_with_cold.n_entities,) and ((parts >= 0) & (parts < 8)).all()
    assert np.diff(adjacency.indptr)[[300, 301 + 200]].tolist() == [0, 0]   # both isolated


def test_a_plan_that_disagrees_with_the_built_module_fails_before_training(toy, tmp_path):
    """planned_count sizes a method to the budget; if the built module's inventory says otherwise the budget
    is not what the plan claims, so the run stops at build with both counts."""
    from lwbench.methods.ud import UD
    from lwbench.plugin import MethodContractError

    class Misplanned(UD):
        name = "test-misplanned"

        def planned_count(self, options, stats):
            count = super().planned_count(options, stats)
            return type(count)(table3=count.table3 - 1, float_values=count.float_values - 1)

    method = Misplanned()
    options = resolve(method, {"dim": 8})
    trainer = Trainer(method, options, toy, TrainerConfig(max_epochs=1), seed=0, device=torch.device("cpu"),
                      work_dir=tmp_path / "work", cache_dir=tmp_path / "cache", show_progress=False)
    with pytest.raises(MethodContractError, match="test-misplanned: planned_count"):
        trainer.fit()
    assert not (tmp_path / "work" / "last.pt").exists()
