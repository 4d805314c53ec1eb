"""Storage accounting (docs/protocol.md §5.2): budgets in bytes, every budgeted method sized so that its stored
bytes fit, indices priced by their range, values by their dtype (store_dtype), MGQE's tier bits, and the
inference profile of every record."""
import json

import pytest
import torch

from lwbench.budget import STORAGE, Budget, BudgetError, ParamCount, index_width, parse_budget
from lwbench.cli import main
from lwbench.kernels.graph import normalized_adjacency
from lwbench.options import resolve
from lwbench.plugin import BuildContext, plan_count, size_to_budget
from lwbench.registry import builtin_method_names, get_method

BUDGETED = ["qr", "pep", "cerp", "dpq", "mgqe", "legcf", "c2f", "magprune"]
INDEXED = ["pep", "cerp", "legcf", "c2f", "magprune"]   # QR, DPQ, MGQE: 4 bytes per Table-3 parameter
GOWALLA = (29858, 40981)


def test_storage_budgets_are_bytes():
    n_users, n_items = GOWALLA
    n = n_users + n_items
    assert parse_budget("1MB", n_users, n_items, accounting=STORAGE) == 10**6
    assert parse_budget("1MB", n_users, n_items) == 250_000                     # table3: float32 parameters
    assert parse_budget("250k", n_users, n_items, accounting=STORAGE) == 10**6  # parameters as float32 bytes
    # 500buckets: what LEGCF (m=500, t=2) stores: float32 values, 2-byte column indices (m <= 65,536)
    assert parse_budget("500buckets", n_users, n_items, accounting=STORAGE) == 4 * (500 * 128 + 2 * n) + 2 * 2 * n
    with pytest.raises(BudgetError, match="accounting"):
        parse_budget("1MB", n_users, n_items, accounting="floats")


def test_indices_are_priced_at_the_narrowest_type_that_holds_their_range():
    assert [index_width(span) for span in (2, 256, 257, 65_536, 65_537, 2**32, 2**32 + 1)] == [1, 1, 2, 2, 4, 4, 8]
    assert ParamCount(table3=1, float_values=1, int_indices=3, index_bytes=3).storage_bytes == 4 + 3


@pytest.mark.parametrize("name", BUDGETED)
def test_every_budgeted_method_sizes_its_stored_bytes_to_a_storage_budget(name, toy):
    """Under storage the planned bytes fit the budget and use most of it."""
    method, stats = get_method(name), toy.stats()
    options = resolve(method, method.smoke_options if name == "c2f" else {})
    limit = parse_budget("30%", toy.n_users, toy.n_items, accounting=STORAGE)
    budget = Budget(limit, STORAGE)
    sized = size_to_budget(method, options, budget, stats)
    stored = plan_count(method, sized, stats).storage_bytes
    assert 0.8 * limit <= stored <= limit, (name, stored, limit)
    if name in INDEXED:   # sized to parameters, a method that stores indices stores more bytes than asked
        table3 = size_to_budget(method, options, Budget(parse_budget("30%", toy.n_users, toy.n_items)), stats)
        assert plan_count(method, table3, stats).storage_bytes > limit


def test_a_storage_budget_too_small_names_the_smallest_configuration(toy):
    method = get_method("legcf")
    with pytest.raises(BudgetError, match="cannot fit 100 bytes.*smallest configuration stores"):
        size_to_budget(method, resolve(method), Budget(100, STORAGE), toy.stats())


def test_mgqe_counts_its_tier_bits_in_storage_but_not_in_table3(toy):
    """One tier bit per entity: in the stored bytes (and so in storage sizing), not in Table 3's codes."""
    mgqe, dpq = get_method("mgqe"), get_method("dpq")
    budget = parse_budget("500buckets", toy.n_users, toy.n_items)
    options = mgqe.configure(resolve(mgqe, {"k": 64, "tail_k": 16}), budget, toy.stats())
    count = mgqe.planned_count(options, toy.stats())
    codes = sum(n * 8 * bits for n, bits in ((int(0.1 * 300) + int(0.1 * 200), 6), (500 - 50, 4)))
    assert count.code_bits == codes + toy.n_entities
    assert count.table3 == 64 * 128 + -(-codes // 32)
    sized = size_to_budget(mgqe, resolve(mgqe), Budget(20_000, STORAGE), toy.stats())
    assert plan_count(mgqe, sized, toy.stats()).storage_bytes <= 20_000
    assert dpq.planned_count(dpq.configure(resolve(dpq, {"k": 64}), budget, toy.stats()), toy.stats()).code_bits \
        == toy.n_entities * 8 * 6


@pytest.mark.parametrize("name", [name for name in builtin_method_names() if "store_dtype" in get_method(name).options])
def test_store_dtype_float16_halves_the_value_bytes_and_evaluates_rounded_values(name, toy):
    method = get_method(name)
    budget = None if not method.budgeted else parse_budget("30%", toy.n_users, toy.n_items)
    half = method.configure(resolve(method, {"store_dtype": "float16"}), budget, toy.stats())
    full = method.configure(resolve(method), budget, toy.stats())
    planned_half, planned_full = plan_count(method, half, toy.stats()), plan_count(method, full, toy.stats())
    assert planned_half.value_bytes * 2 == planned_full.value_bytes and planned_half.table3 == planned_full.table3
    torch.manual_seed(0)
    ctx = BuildContext(interactions=toy, graph=normalized_adjacency(toy.train), device=torch.device("cpu"),
                       options=half, seed=0, cache_dir=None)
    module = method.build(ctx)
    if not method.prunes:
        assert module.param_count() == planned_half
    else:   # the stored values of a pruned table are its weights under the fixed mask
        for table in module.tables.values():
            table.fix_mask()
    module.eval()
    for values in module.inference_state().values.values():
        values = values.to_dense() if values.is_sparse else values
        assert torch.equal(values, values.half().float()), name   # what is evaluated is what is stored


def test_records_hold_both_numbers_and_the_inference_profile(toy_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--methods", "ud,qr", "--budget", "40%", "--accounting", "storage", "--dataset", str(toy_dir),
            "--epochs", "1", "--out", str(out), "--no-progress", "--set", "trainer.eval_every=1"]
    assert main(args + ["--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    qr = next(run for run in plan["runs"] if run["method"] == "qr")
    assert qr["budget"]["accounting"] == "storage" and qr["budget"]["unit"] == "bytes"
    assert qr["stored_bytes"] <= qr["budget"]["params"] and qr["table3_params"] * 4 == qr["stored_bytes"]
    assert 0.8 <= qr["budget_fraction"] <= 1.0
    assert main(args) == 0
    records = [json.loads(path.read_text()) for path in (out / "runs").glob("*.json")]
    assert len(records) == 2
    for record in records:
        profile = record["inference_profile"]
        assert sum(profile["bytes"][k] for k in ("values", "indices", "codes")) == record["bytes"]
        assert profile["bytes"]["bias"] == 4 * 200                            # the toy's 200 items, float32
        assert profile["rows_seconds"] > 0 and profile["score_seconds"] > 0 and profile["rows_batch"] == 4096
        assert record["budget"]["accounting"] == "storage"
    capsys.readouterr()
    assert main(["report", "--out", str(out), "--figures", str(tmp_path / "figures")]) == 0
    report = capsys.readouterr().out
    assert "Inference profile" in report and "4,096 rows (ms)" in report and "40% (storage)" in report
    assert (out / "inference-profile.csv").exists()


def test_storage_targets_count_their_budgets_in_bytes(tmp_path):
    from fakes import fake_target

    from lwbench.reports.targets import build_target, get_target
    cells = get_target("table3-storage").cells(["gowalla"], ["ud", "qr", "legcf"])
    assert {(c.method, c.accounting) for c in cells} == {("ud", "storage"), ("qr", "storage"), ("legcf", "storage")}
    assert [c.budget for c in cells if c.method != "ud"] == ["500buckets", "500buckets"]
    table3 = get_target("budget-curve").cells(["gowalla"], ["ud", "qr"])
    storage = get_target("budget-curve-storage").cells(["gowalla"], ["ud", "qr"])
    assert [(c.budget, c.accounting) for c in storage if c.method == "qr"] == \
        [(c.budget, "storage") for c in table3 if c.method == "qr"]
    assert {c.accounting for c in table3} == {"table3"}
    out = tmp_path / "out"
    fake_target(out, "table3-storage", ["synthetic"], ["ud", "qr"], [1, 2], lambda cell, seed, checkpoint: 0.1)
    written = build_target("table3-storage", out, tmp_path / "figs", "two-sided")
    assert out / "table3-storage.md" in written
    markdown = (out / "table3-storage.md").read_text()
    assert "stored bytes" in markdown and "Equal storage" in markdown


def test_c2f_fills_a_storage_budget_but_keeps_its_released_sizes_under_table3(capsys):
    """Under storage every method uses its bytes: C2F grows m^c and m^r (keeping 3:1) through its
    storage_options; under table3 the released 300 + 100 stay; --set wins over storage_options."""
    def plan(*extra):
        assert main(["--methods", "c2f", "--budget", "1MB", "--dataset", "synthetic", "--plan", "--json", *extra]) == 0
        run = json.loads(capsys.readouterr().out)["runs"][0]
        return run["options"]["coarse_buckets"], run["options"]["fine_buckets"], run["budget_fraction"]
    coarse, fine, fraction = plan("--accounting", "storage")
    assert coarse > 300 and fine == coarse * 100 // 300 and 0.8 <= fraction <= 1.0
    assert plan()[:2] == (300, 100)
    assert plan("--accounting", "storage", "--set", "c2f.fill_budget=false")[:2] == (300, 100)


@pytest.mark.parametrize("name, per_type", [(name, False) for name in builtin_method_names()]
                         + [("qr", True)])          # per_type: a QR option
def test_rows_are_the_layer0_rows_of_the_entities(name, per_type, toy):
    """``rows`` (timed by the inference profile) forms exactly the entities' layer-0 rows in evaluation."""
    method = get_method(name)
    budget = None if not method.budgeted else parse_budget("30%", toy.n_users, toy.n_items)
    overrides = {"per_type": True} if per_type else method.smoke_options if name == "c2f" else {}
    options = method.configure(resolve(method, overrides), budget, toy.stats())
    torch.manual_seed(0)
    module = method.build(BuildContext(interactions=toy, graph=normalized_adjacency(toy.train),
                                       device=torch.device("cpu"), options=options, seed=0, cache_dir=None))
    module.eval()
    entities = torch.tensor([0, 5, 299, 300, 301, 499, 5])
    with torch.no_grad():
        torch.testing.assert_close(module.rows(entities), module.layer0()[entities])


PRUNED_STORAGE = [  # (method, budget under storage, option overrides, layout of the sized table)
    ("pep", "3%", {}, "csr"), ("pep", "30%", {}, "bitmap"), ("pep", "30%", {"store_dtype": "float16"}, "bitmap"),
    ("magprune", "3%", {}, "csr"), ("magprune", "30%", {}, "bitmap"),
    ("cerp", "30%", {}, "bitmap"), ("cerp", "10%", {"store_dtype": "float16"}, "bitmap"),
    ("cerp", "30%", {"buckets": 100, "sparsity": 0.95}, "csr"),   # given b at 95% sparsity: CSR is smaller
]


@pytest.mark.parametrize("name, budget_text, overrides, kind", PRUNED_STORAGE)
def test_pruned_tables_store_the_planned_layout_and_fill_a_storage_budget(name, budget_text, overrides, kind, toy):
    """The plan prices a pruned table's sparse layout (CSR or bitmap, docs/protocol.md §5.2) by the formula the
    built module stores: once the masks hold the target (however CERP's total splits between P and Q), the
    module's count equals the plan's in both conventions, its bytes are its tensors' bytes, and a table sized
    to the budget stores 95-100% of it."""
    from lwbench.methods.common.pruning import SparseLayout
    method, stats = get_method(name), toy.stats()
    limit = parse_budget(budget_text, toy.n_users, toy.n_items, accounting=STORAGE)
    sized = size_to_budget(method, resolve(method, overrides), Budget(limit, STORAGE), stats)
    planned = plan_count(method, sized, stats)
    assert planned.storage_bytes <= limit
    if "buckets" not in overrides:
        assert planned.storage_bytes >= 0.95 * limit, (planned.storage_bytes, limit)
    torch.manual_seed(0)
    module = method.build(BuildContext(interactions=toy, graph=normalized_adjacency(toy.train),
                                       device=torch.device("cpu"), options=sized, seed=0, cache_dir=None))
    tables = list(module.tables.values())
    scores = torch.rand(sum(t.weight.numel() for t in tables), generator=torch.Generator().manual_seed(2))
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[torch.topk(scores, sized["target_nnz"]).indices] = True
    for table, mask in zip(tables, keep.split([t.weight.numel() for t in tables])):
        table.fix_mask(mask.view_as(table.weight))
    rows = sum(t.weight.shape[0] for t in tables)
    assert SparseLayout(rows, tables[0].weight.shape[1], sized["target_nnz"]).kind == kind
    built = module.param_count()
    assert built == planned and built.table3 == sized["target_nnz"]
    state = module.stored_state()
    assert sum(t.nbytes for t in [*state.values.values(), *state.indices.values(), *state.bitmaps.values()]) \
        == built.storage_bytes == sum(state.component_bytes().values())
    # the Table-3 count is unchanged: the kept values, no indices, no bitmap
    table3 = method.configure(resolve(method, overrides), parse_budget(budget_text, toy.n_users, toy.n_items), stats)
    assert plan_count(method, table3, stats).table3 == table3["target_nnz"]
    # at inference a few rows are read from the stored layout alone (CSR: those rows' slices), equal to the rows of
    # the whole decoded table (docs/protocol.md §5.6)
    module.eval()
    entities = torch.tensor([0, 5, 299, 300, 301, 499, 5, 0])
    with torch.no_grad():
        assert torch.equal(module.rows(entities), module.layer0()[entities])
