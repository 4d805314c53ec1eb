"""Contract tests run for every registered method, so a new plugin is covered automatically:
it sizes itself to generous, 500buckets-equivalent and tight budgets (or refuses with a message
saying what it needs), its built module's count matches the plan and the budget (a pruning method's
after training), and it trains and evaluates for an epoch per stage."""
import re

import pytest
import torch

from lwbench.budget import BudgetError, parse_budget
from lwbench.config import TrainerConfig
from lwbench.training.graph import normalized_adjacency
from lwbench.plugin import BuildContext, Method
from lwbench.registry import get_method, method_names, register
from lwbench.training.trainer import Trainer

TIGHT = "0.6%"
BUDGETS = ("10%", "500buckets", TIGHT)
PLUGINS = [name for name in method_names() if not name.startswith("test-")]  # "test-*": fixtures of other tests


def configured(name, budget_text, toy, overrides=None):
    method = get_method(name)
    budget = parse_budget(budget_text, toy.n_users, toy.n_items)
    options = method.configure({**method.options, **(overrides or {})}, budget if method.budgeted else None,
                               toy.stats())
    return method, budget, options


def stated_minimum(message):
    """The smallest budget a refusal names ("the smallest budget it supports is N" / "a budget of at least N")."""
    found = re.search(r"smallest budget it supports is (\d+)", message) or re.search(r"budget of at least (\d+)", message)
    assert found, f"a refused budget must name the smallest one that fits: {message}"
    return int(found.group(1))


def fits(method, budget, toy):
    try:
        method.configure(dict(method.options), budget, toy.stats())
    except BudgetError:
        return False
    return True


@pytest.mark.parametrize("budget_text", BUDGETS)
@pytest.mark.parametrize("name", PLUGINS)
def test_count_fits_budget_and_matches_built_module(name, budget_text, toy):
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
    assert module.layer0().shape[0] >= toy.n_entities
    assert_count_matches_kept_tensors(module)


def assert_count_matches_kept_tensors(module):
    """The reported storage equals a recount of the tensors the module says it keeps for inference."""
    count = module.param_count()
    floats, ints, bits = module.inference_state().counts()
    assert (count.float_values, count.int_indices, count.code_bits) == (floats, ints, bits)


@pytest.mark.parametrize("name", PLUGINS)
def test_trains_one_epoch_and_evaluates(name, toy, tmp_path):
    method, budget, options = configured(name, "500buckets", toy, get_method(name).smoke_options)
    config = TrainerConfig(max_epochs=1, eval_every=1, batch_size=4096, layers=2)  # caps every stage
    trainer = Trainer(method, options, toy, config, seed=1, device="cpu", work_dir=tmp_path / "w",
                      cache_dir=tmp_path / "c", show_progress=False)
    result = trainer.fit()
    test = result.reported_checkpoint.test
    assert 0.0 <= test["ndcg@20"] <= 1.0 and 0.0 <= test["recall@20"] <= 1.0
    assert_count_matches_kept_tensors(trainer.module)  # after training (pruning changes counts)
    if method.budgeted:
        assert trainer.module.param_count().table3 <= budget


def test_registry_rejects_duplicates_and_non_methods():
    with pytest.raises(TypeError):
        register(object)

    class First(Method):
        name = "test-dup"

    class Second(Method):
        name = "test-dup"

    register(First)
    with pytest.raises(ValueError, match="registered twice"):
        register(Second)
