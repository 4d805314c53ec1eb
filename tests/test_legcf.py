"""LEGCF (docs/protocol.md §7) and its reusable pieces (lwbench.methods.common.assignment, lwbench.methods.common.metis), checked against
dense numpy constructions of the formulas, scipy edge cuts, and the paper's parameter counts."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import assert_resumes_identically

from lwbench.budget import BudgetError, parse_budget
from lwbench.config import TrainerConfig
from lwbench.data.cards import load_dataset
from lwbench.data.interactions import DatasetStats
from lwbench.evaluate import Evaluator
from lwbench.kernels.graph import normalized_adjacency
from lwbench.methods.common import metis
from lwbench.methods.common.assignment import (
    ExpandedGraphBuilder,
    RefreshSchedule,
    SparseAssignment,
    anchored_assignment,
    pinv_scores,
    top_t_assignment,
)
from lwbench.methods.common.meta_embedding import MetaEmbeddingTable
from lwbench.options import resolve
from lwbench.plugin import FIXED, UPDATE, BuildContext, Step
from lwbench.registry import get_method
from lwbench.training.trainer import Trainer


def build_module(toy, tmp_path, seed=0, **options):
    method = get_method("legcf")
    options = method.configure(resolve(method, options), None, toy.stats())
    ctx = BuildContext(interactions=toy, graph=normalized_adjacency(toy.train), device=torch.device("cpu"),
                       options=options, seed=seed, cache_dir=tmp_path / "cache")
    return method.build(ctx)


def dense_expanded(a_hat: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    """D^-1/2 M D^-1/2 with M = [[Â, S1, 0], [S1^T, 0, S2], [0, S2^T, 0]], written out densely."""
    sizes = [a_hat.shape[0]] + [b.shape[1] for b in blocks]
    starts = np.cumsum([0] + sizes)
    m = np.zeros((starts[-1],) * 2)
    m[:sizes[0], :sizes[0]] = a_hat
    for k, block in enumerate(blocks):
        m[starts[k]:starts[k + 1], starts[k + 1]:starts[k + 2]] = block
        m[starts[k + 1]:starts[k + 2], starts[k]:starts[k + 1]] = block.T
    degree = m.sum(1)
    inv = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0)
    return inv[:, None] * m * inv[None, :]


def edge_cut(adjacency: sp.csr_matrix, parts: np.ndarray) -> int:
    coo = adjacency.tocoo()
    return int((parts[coo.row] != parts[coo.col]).sum() // 2)


# --- METIS ---------------------------------------------------------------------------------------
def test_metis_partition_is_a_real_cut_deterministic_and_cached(toy, tmp_path, monkeypatch):
    adjacency = metis.user_item_adjacency(toy.train)
    assert adjacency.shape == (toy.n_entities,) * 2 and adjacency.diagonal().sum() == 0
    assert (adjacency != adjacency.T).nnz == 0 and adjacency.nnz == 2 * toy.train.nnz
    parts = metis.metis_parts(adjacency, 8, seed=3, cache_dir=tmp_path)
    assert parts.shape == (toy.n_entities,) and set(np.unique(parts)) == set(range(8))
    # METIS minimises the edge cut: far below a random balanced assignment's (about 7/8 of the edges).
    random_parts = np.random.default_rng(0).integers(0, 8, toy.n_entities)
    assert edge_cut(adjacency, parts) < 0.6 * edge_cut(adjacency, random_parts)
    assert np.array_equal(metis.metis_parts(adjacency, 8, seed=3), parts)      # deterministic, no cache
    cached = list((tmp_path / "metis").glob("*-k8-s3-*.npy"))
    assert len(cached) == 1

    def no_metis(*args):
        raise AssertionError("METIS ran although the partition is cached")

    monkeypatch.setattr(metis, "_partition", no_metis)
    assert np.array_equal(metis.metis_parts(adjacency, 8, seed=3, cache_dir=tmp_path), parts)
    with pytest.raises(AssertionError, match="cached"):   # another seed is another cache entry
        metis.metis_parts(adjacency, 8, seed=4, cache_dir=tmp_path)


def test_metis_rejects_bad_graphs_and_part_counts(toy):
    adjacency = metis.user_item_adjacency(toy.train)
    with pytest.raises(ValueError, match="between 1 and"):
        metis.metis_parts(adjacency, toy.n_entities + 1, seed=0)
    with pytest.raises(ValueError, match="symmetric"):
        metis.metis_parts(sp.triu(adjacency, format="csr"), 4, seed=0)
    assert not metis.metis_parts(adjacency, 1, seed=0).any()


# --- initialisation (docs/protocol.md §7.2) ---------------------------------------------------------------
@pytest.mark.parametrize("per_row,anchor_weight", [(2, 0.9), (3, 0.5), (1, 0.9)])
def test_metis_init_rows_follow_the_anchor_weight(toy, tmp_path, per_row, anchor_weight):
    module = build_module(toy, tmp_path, seed=7, num_buckets=12, buckets_per_entity=per_row,
                          anchor_weight=anchor_weight)
    columns, values = module.assignment_columns.numpy(), module.assignment_values.numpy()
    assert columns.shape == values.shape == (toy.n_entities, per_row)
    parts = metis.metis_parts(metis.user_item_adjacency(toy.train), 12, seed=7)
    assert np.array_equal(columns[:, 0], parts)                                   # anchor = METIS part
    expected_anchor = 1.0 if per_row == 1 else anchor_weight
    assert np.allclose(values[:, 0], expected_anchor)
    if per_row > 1:
        assert np.allclose(values[:, 1:], (1 - anchor_weight) / (per_row - 1))
        assert all(len(set(row)) == per_row for row in columns)                  # distinct columns
        others = columns[:, 1:].ravel()
        assert len(np.unique(others)) == 12                                     # drawn over all parts
    assert np.allclose(values.sum(1), 1.0)
    assert np.allclose(module.assignment.to_dense().numpy().sum(1), 1.0)


def test_anchored_assignment_fills_every_column_when_asked():
    """C2F's S~ (docs/protocol.md §8.4): the anchor gets w*, every other column (1-w*)/(m-1)."""
    anchors = torch.tensor([0, 3, 1, 3])
    dense = anchored_assignment(anchors, 4, 4, 0.5).to_dense().numpy()
    expected = np.full((4, 4), 0.5 / 3)
    expected[np.arange(4), anchors.numpy()] = 0.5
    assert np.allclose(dense, expected)


def test_random_init_and_xavier_option(toy, tmp_path):
    module = build_module(toy, tmp_path, num_buckets=30, assignment_init="random", meta_init="xavier",
                          anchor_weight=0.9)
    values = module.assignment_values.numpy()
    assert np.allclose(values[:, 0], 0.9) and np.allclose(values[:, 1], 0.1)
    assert len(np.unique(module.assignment_columns[:, 0].numpy())) > 25         # random anchors spread out
    bound = np.sqrt(6 / (30 + 128))
    meta = module.meta.detach().numpy()
    assert np.abs(meta).max() <= bound and meta.std() > bound / 3


# --- expanded graph (docs/protocol.md §7.1, §8.5) ----------------------------------------------------------
def test_expanded_graph_is_symmetric_and_doubly_normalized(toy, tmp_path):
    module = build_module(toy, tmp_path, num_buckets=40)
    # Make one meta-embedding unused: its node must get a zero row, not a NaN.
    columns = module.assignment_columns.numpy().copy()
    for row in np.flatnonzero((columns == 5).any(1)):
        free = sorted(set(range(40)) - set(columns[row]) - {5})
        columns[row][columns[row] == 5] = free[0]
    module.assignment_columns = torch.from_numpy(columns)
    module.after_load()
    graph = module.graph().matrix.to_dense().numpy()
    a_hat = normalized_adjacency(toy.train).matrix.to_dense().numpy()
    expected = dense_expanded(a_hat, [module.assignment.to_dense().numpy()])
    assert np.allclose(graph, expected, atol=1e-6)
    assert np.allclose(graph, graph.T, atol=1e-7)
    assert graph.min() >= 0 and graph.max() <= 1
    assert not graph[toy.n_entities + 5].any()


def test_expanded_graph_chains_assignment_blocks(toy):
    """The 3-block graph of C2F: entities -> coarse meta -> fine meta, including an empty block."""
    generator = torch.Generator().manual_seed(1)
    base = normalized_adjacency(toy.train)
    coarse = anchored_assignment(torch.randint(10, (toy.n_entities,), generator=generator), 10, 2, 0.6,
                                 generator=generator)
    fine = SparseAssignment(torch.randint(4, (10, 3), generator=generator).sort(1).values.unique_consecutive(dim=1)[:, :1],
                            torch.rand(10, 1, generator=generator), 4)
    builder = ExpandedGraphBuilder(base)
    a_hat = base.matrix.to_dense().numpy()
    for chain in ([coarse, fine], [coarse, SparseAssignment(torch.zeros(10, 0, dtype=torch.long), torch.zeros(10, 0), 4)]):
        graph = builder.build(chain)
        assert graph.n_nodes == toy.n_entities + 14
        expected = dense_expanded(a_hat, [s.to_dense().numpy() for s in chain])
        assert np.allclose(graph.matrix.to_dense().numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        builder.build([fine])
    with pytest.raises(ValueError, match="negative"):
        builder.build([SparseAssignment(coarse.columns, -coarse.values, 10)])


# --- refresh (docs/protocol.md §7.3) ----------------------------------------------------------------------
def test_refresh_equals_dense_numpy_reference(toy, tmp_path):
    module = build_module(toy, tmp_path, num_buckets=150, buckets_per_entity=3)   # m > d as in the paper
    n, m = toy.n_entities, 150
    generator = np.random.default_rng(2)
    propagated = generator.normal(size=(n + m, 128)).astype(np.float32)
    propagated[n:] *= np.linspace(0.1, 3, m)[:, None]                          # an uneven spectrum
    scores = propagated[:n] @ np.linalg.pinv(propagated[n:].astype(np.float64))
    order = np.argsort(-scores, axis=1)[:, :3]
    kept = np.take_along_axis(scores, order, axis=1)
    module.refresh(torch.from_numpy(propagated))
    columns, values = module.assignment_columns.numpy(), module.assignment_values.numpy()
    assert np.array_equal(np.sort(columns, 1), np.sort(order, 1))
    assert np.allclose(np.sort(values, 1), np.sort(np.maximum(kept, 0), 1), atol=1e-4)
    assert int(module.clamped_last) == int((kept < 0).sum()) and int(module.refreshes) == 1
    a_hat = normalized_adjacency(toy.train).matrix.to_dense().numpy()
    dense_s = np.zeros((n, m))
    np.put_along_axis(dense_s, order, np.maximum(kept, 0), axis=1)
    assert np.allclose(module.graph().matrix.to_dense().numpy(), dense_expanded(a_hat, [dense_s]), atol=1e-5)


def test_top_t_keeps_signed_largest_and_counts_clamps():
    scores = torch.tensor([[-1.0, -2.0, -3.0, -0.5], [3.0, -1.0, 2.0, 0.5], [0.1, 0.3, -5.0, 0.2]])
    assignment, clamps = top_t_assignment(scores, 2)
    assert clamps == 2
    assert assignment.to_dense().tolist() == [[0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 2.0, 0.0],
                                              [0.0, pytest.approx(0.3), 0.0, pytest.approx(0.2)]]
    assert assignment.columns[0].sort().values.tolist() == [0, 3]   # clamped entries keep their slots
    assert pinv_scores(torch.eye(3), 2 * torch.eye(3)).allclose(0.5 * torch.eye(3))


def test_refresh_schedule():
    assert [RefreshSchedule.parse("every-epoch").due(e, 5) for e in range(3)] == [True] * 3
    assert [RefreshSchedule.parse("only-once").due(4, done) for done in (0, 1)] == [True, False]
    assert [RefreshSchedule.parse("every-3-epochs").due(e, 0) for e in range(7)] == [e % 3 == 0 for e in range(7)]
    for bad in ("every-0-epochs", "sometimes", "every-x-epochs"):
        with pytest.raises(ValueError, match="every-K-epochs"):
            RefreshSchedule.parse(bad)


@pytest.mark.parametrize("frequency,expected", [("every-epoch", [3, 4, 5]), ("only-once", [3]),
                                                ("every-2-epochs", [4])])
def test_refresh_happens_at_batch_0_of_scheduled_update_epochs(toy, tmp_path, frequency, expected):
    module = build_module(toy, tmp_path, num_buckets=30, assignment_update_frequency=frequency)
    propagated = torch.randn(toy.n_entities + 30, 128)
    refreshed = []
    for phase, epoch, batch in [(FIXED, 0, 0), (FIXED, 2, 0), (UPDATE, 3, 0), (UPDATE, 3, 1), (UPDATE, 4, 0),
                                (UPDATE, 4, 2), (UPDATE, 5, 0)]:
        before = int(module.refreshes)
        module.after_forward(Step(stage=None, phase=phase, epoch=epoch, batch=batch, x0=None, propagated=propagated,
                                  users=None, positives=None, negatives=None))
        if int(module.refreshes) > before:
            refreshed.append(epoch)
    assert refreshed == expected


# --- budget (docs/protocol.md §5.1, §5.5) ----------------------------------------------------------------
@pytest.mark.parametrize("n_users,n_items,table3", [(29858, 40981, 205678), (71135, 45063, 296396),
                                                     (52643, 91599, 352484)])
def test_500buckets_gives_the_paper_configuration(n_users, n_items, table3):
    method = get_method("legcf")
    stats = DatasetStats(name="paper", n_users=n_users, n_items=n_items, n_train=1)
    budget = parse_budget("500buckets", n_users, n_items)
    options = method.configure(resolve(method), budget, stats)
    assert (options["num_buckets"], options["buckets_per_entity"]) == (500, 2)
    count = method.planned_count(options, stats)
    assert count.table3 == table3 <= budget
    assert count.int_indices == 2 * (n_users + n_items) and count.float_values == table3
    assert method.planned_count({**options, "num_buckets": 501}, stats).table3 > budget   # the largest m
    with pytest.raises(BudgetError, match="at most 500"):
        method.configure(resolve(method, {"num_buckets": 501}), budget, stats)
    assert method.configure(resolve(method, {"num_buckets": 300}), budget, stats)["num_buckets"] == 300


def test_budget_below_the_minimum_says_what_the_minimum_is():
    method = get_method("legcf")
    stats = DatasetStats(name="paper", n_users=29858, n_items=40981, n_train=1)
    minimum = 2 * 128 + 2 * 70839
    assert method.configure(resolve(method), minimum, stats)["num_buckets"] == 2
    with pytest.raises(BudgetError, match=f"at least {minimum} parameters"):
        method.configure(resolve(method), minimum - 1, stats)


# --- training --------------------------------------------------------------------------------------
def legcf_trainer(data, options, config, work, seed=3):
    method = get_method("legcf")
    options = method.configure(resolve(method, options), None, data.stats())
    return Trainer(method, options, data, config, seed=seed, device="cpu", work_dir=work,
                   cache_dir=work.parent / "cache", show_progress=False)


# A high learning rate so that FIXED plateaus within a few epochs and UPDATE is reached.
TOY_CONFIG = TrainerConfig(max_epochs=14, eval_every=1, patience_fixed=1, patience_update=2, batch_size=4096,
                           lr=5e-2, layers=2, checkpoint_seconds=0)  # a resume file per epoch


def test_fixed_phase_keeps_s_and_every_refresh_keeps_t_entries_per_row(toy, tmp_path, monkeypatch):
    original = MetaEmbeddingTable.refresh
    seen = []

    def checked_refresh(self, propagated):
        original(self, propagated)
        columns, values = self.assignment_columns, self.assignment_values
        assert columns.shape == values.shape == (self.n_entities, 2)
        assert (columns[:, 0] != columns[:, 1]).all()                           # t distinct columns
        assert int((values != 0).sum()) == 2 * self.n_entities - int(self.clamped_last)
        assert (values >= 0).all()
        seen.append(int(self.refreshes))

    monkeypatch.setattr(MetaEmbeddingTable, "refresh", checked_refresh)
    trainer = legcf_trainer(toy, {"num_buckets": 30}, TOY_CONFIG, tmp_path / "run")
    initial = trainer_initial_assignment(trainer)
    result = trainer.fit()
    update_epochs = [h for h in result.history if "loss" in h and h["phase"] == UPDATE]
    assert update_epochs and seen == list(range(1, len(update_epochs) + 1))    # one refresh per UPDATE epoch
    assert result.checkpoints[f"train/{FIXED}"].epoch > 0                        # a trained FIXED checkpoint
    fixed = torch.load(tmp_path / "run" / "best-train-fixed.pt", weights_only=False)["model"]
    assert torch.equal(fixed["embedding.assignment_columns"], initial[0])
    assert torch.equal(fixed["embedding.assignment_values"], initial[1])
    diagnostics = [h["diagnostics"] for h in result.history if "valid" in h]
    assert diagnostics[0]["refreshes"] == 0 and diagnostics[-1]["refreshes"] == len(update_epochs)
    assert diagnostics[-1]["mean_kept_value"] != pytest.approx(0.5)             # the refresh changed S


def trainer_initial_assignment(trainer):
    """S right after the module is built (what FIXED must keep), from a throw-away build with the same seed."""
    trainer.build()
    return trainer.module.assignment_columns.clone(), trainer.module.assignment_values.clone()


def test_resume_after_a_crash_equals_an_uninterrupted_run(toy, tmp_path, monkeypatch):
    options = {"num_buckets": 30}
    reference = legcf_trainer(toy, options, TOY_CONFIG, tmp_path / "reference").fit()
    phases = [h["phase"] for h in reference.history if "loss" in h]
    assert phases.count(UPDATE) >= 2, "the run must reach UPDATE for the resume to test refreshed S"
    first_update = phases.index(UPDATE)
    assert_resumes_identically(   # crashes in FIXED, and after two refreshes in UPDATE
        reference, lambda name: legcf_trainer(toy, options, TOY_CONFIG, tmp_path / name),
        (1, first_update + 2), monkeypatch)

def test_learns_on_synthetic_in_both_phases_and_beats_random_embeddings(tmp_path):
    data = load_dataset("synthetic").interactions
    config = TrainerConfig(max_epochs=12, eval_every=1, patience_fixed=1, patience_update=2, batch_size=8192,
                           lr=5e-2, layers=2)
    result = legcf_trainer(data, {"num_buckets": 100, "dim": 32}, config, tmp_path / "syn", seed=2024).fit()
    assert set(result.checkpoints) == {f"train/{FIXED}", f"train/{UPDATE}"}
    trained = result.reported_checkpoint.test["ndcg@20"]
    generator = torch.Generator().manual_seed(0)
    users = torch.randn(data.n_users, 32, generator=generator)
    items = torch.randn(data.n_items, 32, generator=generator)
    random_ndcg = Evaluator(data.train, {"test": data.test}).per_user("test", users, items, None)["ndcg@20"].mean()
    assert trained > 3 * random_ndcg and trained > random_ndcg + 0.05, (trained, random_ndcg)
