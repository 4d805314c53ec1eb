"""C2F (docs/protocol.md §8): fine-stage initialisation, forward pass, S^r refresh, the variant and ablation
switches, parameter counts, and the two-stage protocol (frozen coarse tensors, shared coarse stages),
checked against dense numpy constructions of the formulas, scikit-learn and scipy."""
import dataclasses

import numpy as np
import pytest
import torch
from conftest import assert_same_outcome, count_stage_epochs, crash_and_resume
from sklearn.decomposition import SparsePCA
from test_legcf import dense_expanded

from lwbench.budget import BudgetError, parse_budget
from lwbench.config import ConfigError, TrainerConfig
from lwbench.data.cards import available_cards, load_dataset
from lwbench.data.interactions import DatasetStats
from lwbench.evaluate import Evaluator
from lwbench.kernels.graph import normalized_adjacency
from lwbench.methods.c2f.module import (
    CoarseToFineTable,
    FineSettings,
    FineStreams,
    initial_fine_codebook,
    remix_layer,
    soft_threshold,
)
from lwbench.methods.common import metis, sparse_pca
from lwbench.methods.common.assignment import SparseAssignment
from lwbench.options import resolve
from lwbench.plugin import FIXED, UPDATE, BuildContext, Stage
from lwbench.registry import get_method
from lwbench.training.persistence import seed_everything, torch_load
from lwbench.training.trainer import Trainer

SMALL = {"coarse_buckets": 12, "fine_buckets": 6, "fine_topk": 3, "fine_components": 5, "dim": 16}
FINE = Stage("fine", two_phase=True)


def configured(toy, **options):
    method = get_method("c2f")
    return method.configure(resolve(method, SMALL, options), None, toy.stats())


def build_module(toy, tmp_path, seed=0, **options) -> CoarseToFineTable:
    ctx = BuildContext(interactions=toy, graph=normalized_adjacency(toy.train), device=torch.device("cpu"),
                       options=configured(toy, **options), seed=seed, cache_dir=tmp_path / "cache")
    torch.manual_seed(seed)
    return get_method("c2f").build(ctx)


def enter_fine(module, stage_seed=5):
    """What the trainer does when the fine stage starts: seed every RNG with the stage's seed, begin it."""
    seed_everything(stage_seed)
    module.begin_stage(FINE)
    return module


def streams_of(stage_seed=5) -> FineStreams:
    """The streams the module draws after the trainer seeded the fine stage with ``stage_seed``."""
    seed_everything(stage_seed)
    return FineStreams.spawn(int(np.random.randint(2**31)))


def settings_of(options) -> FineSettings:
    return FineSettings(n_fine=options["fine_buckets"], per_row=options["fine_topk"],
                        components=options["fine_components"], threshold=options["threshold"], gate=options["gate"],
                        anchor_weight=options["fine_anchor_weight"], variant=options["variant"],
                        ablation=options["ablation"])


def np_softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def assert_top_t(assignment: SparseAssignment, scores: np.ndarray, t: int, atol=1e-6):
    """``assignment`` keeps, per row, t distinct columns holding the t largest ``scores`` (any of tied
    ones), with those scores as values (negatives clamped to 0)."""
    columns, values = assignment.columns.numpy(), assignment.values.double().numpy()
    assert columns.shape == (scores.shape[0], t) and all(len(set(row)) == t for row in columns)
    kth = -np.sort(-scores, axis=1)[:, t - 1:t]
    kept = np.take_along_axis(scores, columns, 1)
    assert (kept >= kth - atol).all()
    assert np.allclose(values, np.maximum(kept, 0), atol=atol, rtol=1e-4)


def fine_init_scores(toy, module, softmax):
    """The scores S^r is cut from (docs/protocol.md §8.4), written out: dense S~ from METIS, (S^c)^T S~, an
    optional row softmax."""
    settings = module.fine_settings
    parts = metis.metis_parts(metis.user_item_adjacency(toy.train), settings.n_fine, seed=0)
    spread = np.full((toy.n_entities, settings.n_fine), (1 - settings.anchor_weight) / (settings.n_fine - 1))
    spread[np.arange(toy.n_entities), parts] = settings.anchor_weight
    scores = module.assignment.to_dense().double().numpy().T @ spread
    return np_softmax(scores) if softmax else scores


def dense(assignment: SparseAssignment) -> np.ndarray:
    return assignment.to_dense().double().numpy()


def dense_layer0(module, fine_rows, code):
    """Layer 0 of docs/protocol.md §8.5 (code) or eqs. 17-19 (paper), from dense matrices."""
    sc, sr = dense(module.assignment), dense(module.fine_assignment)
    meta = module.meta.detach().double().numpy()
    w = module.fine_settings.gate
    refined = (1 - w) * meta + w * sr @ fine_rows
    if code:
        return np.concatenate([np.tanh(sc @ meta), refined, np.tanh(fine_rows)])
    return np.concatenate([sc @ refined, refined, fine_rows])


def dense_propagation(module, x0, n_layers, code):
    graph = module.graph().matrix.to_dense().double().numpy()
    sc, sr = dense(module.assignment), dense(module.fine_assignment)
    n, m, w = module.n_entities, module.n_meta, module.fine_settings.gate
    layers = [x0]
    for _ in range(n_layers):
        y = graph @ layers[-1]
        if code:
            f, c, r = y[:n], y[n:n + m], y[n + m:]
            c_new = (1 - w) * (c - sr @ r) + w * sr @ r
            y = np.concatenate([f - sc @ c + sc @ c_new, c_new, r])
        layers.append(y)
    return np.mean(layers, axis=0)


# --- parameter counts and budgets (docs/protocol.md §5.1, §5.5, §8.8) ---------------------------------------
PAPER_COUNTS = {"gowalla": 194078, "yelp2020": 284796, "amazon-book": 340884}   # docs/protocol.md §5.1


@pytest.mark.parametrize("card", sorted(available_cards().values(), key=lambda c: c.name), ids=lambda c: c.name)
def test_released_configuration_fits_500buckets_on_every_dataset_card(card):
    method = get_method("c2f")
    n_users, n_items = (card.n_users, card.n_items) if card.generator is None else \
        (card.generator["n_users"], card.generator["n_items"])
    stats = DatasetStats(name=card.name, n_users=n_users, n_items=n_items, n_train=1)
    budget = parse_budget("500buckets", n_users, n_items)
    options = method.configure(resolve(method, card.methods.get("c2f", {})), budget, stats)
    assert (options["coarse_buckets"], options["fine_buckets"], options["coarse_topk"], options["fine_topk"]) == \
        (300, 100, 2, 4)
    count = method.planned_count(options, stats)
    n = n_users + n_items
    assert count.table3 == count.float_values == 300 * 128 + 2 * n + 100 * 128 + 4 * 300 <= budget
    assert count.table3 == PAPER_COUNTS.get(card.name, count.table3)
    assert count.int_indices == 2 * n + 4 * 300


def test_budget_scaling_keeps_the_ratio_and_fails_below_the_smallest_configuration():
    method = get_method("c2f")
    stats = DatasetStats(name="gowalla", n_users=29858, n_items=40981, n_train=1)
    n = stats.n_entities
    count = lambda c, r: c * 128 + 2 * n + r * 128 + 4 * c  # noqa: E731

    budget = parse_budget("200buckets", 29858, 40981)
    options = method.configure(resolve(method), budget, stats)
    c, r = options["coarse_buckets"], options["fine_buckets"]
    assert r == c * 100 // 300 and count(c, r) <= budget < count(c + 1, (c + 1) * 100 // 300)
    assert method.planned_count(options, stats).table3 == count(c, r)
    with pytest.raises(BudgetError, match=f"at least {count(300, 100)}"):
        method.configure(resolve(method, {"scale_to_budget": False}), budget, stats)
    with pytest.raises(BudgetError, match=f"at least {count(300, 100)}"):     # filling never shrinks
        method.configure(resolve(method, {"scale_to_budget": False, "fill_budget": True}), budget, stats)
    filled = method.configure(resolve(method, {"fill_budget": True}), budget, stats)
    assert (filled["coarse_buckets"], filled["fine_buckets"]) == (c, r)
    smallest = count(12, 4)                                  # t^r = 4 fine rows need m^c = 12 at 3:1
    assert method.configure(resolve(method), smallest, stats)["coarse_buckets"] == 12
    with pytest.raises(BudgetError, match=f"at least {smallest} parameters"):
        method.configure(resolve(method), smallest - 1, stats)


def test_paper_best_profile_is_per_dataset_and_refuses_conflicts():
    method = get_method("c2f")
    for name, expected in (("gowalla", (3.0, 0.5, 5)), ("yelp2020", (3.0, 0.3, 3))):
        stats = DatasetStats(name=name, n_users=29858, n_items=40981, n_train=1)
        options = method.configure(resolve(method, {"profile": "paper_best"}), None, stats)
        assert (options["threshold"], options["gate"], options["fine_topk"]) == expected
        assert method.configure(options, None, stats) == options             # idempotent
    gowalla = DatasetStats(name="gowalla", n_users=29858, n_items=40981, n_train=1)
    assert method.planned_count(method.configure(resolve(method, {"profile": "paper_best"}), None, gowalla),
                                gowalla).table3 == 194378                     # t^r = 5 (docs/protocol.md §5.1)
    with pytest.raises(ConfigError, match="conflicts"):
        method.configure(resolve(method, {"profile": "paper_best", "gate": 0.7}), None, gowalla)
    with pytest.raises(ConfigError, match="gowalla, yelp2020 only"):
        method.configure(resolve(method, {"profile": "paper_best"}), None,
                         DatasetStats(name="amazon-book", n_users=5, n_items=5, n_train=1))


def test_stages_share_the_coarse_stage_by_its_options_and_seed():
    method = get_method("c2f")
    coarse, fine = method.stages(resolve(method))
    assert (coarse.name, coarse.two_phase, coarse.seed, coarse.start_from_best) == ("coarse", True, 2024, False)
    assert coarse.shared == {"coarse_buckets": 300, "coarse_topk": 2, "coarse_anchor_weight": 0.5, "dim": 128}
    assert (fine.name, fine.two_phase, fine.start_from_best, fine.shared) == ("fine", True, True, None)
    assert fine.trainer == {"lr": 3e-3, "batch_size": 32768}
    assert method.stages(resolve(method, {"coarse_seed": -1}))[0].seed is None      # the run's seed
    # Fine-stage knobs leave the coarse stage (its key) unchanged.
    other = resolve(method, {"variant": "paper", "ablation": "D", "threshold": 3.0, "fine_buckets": 40})
    assert method.stages(other)[0] == coarse
    assert method.stages(resolve(method, {"fine_layers": 4}))[1].trainer["layers"] == 4
    # Labels (summary tables group by them) tell the protocols and switches apart.
    assert method.label(resolve(method)) == "c2f"
    assert method.label({**other, "coarse_seed": -1}) == "c2f-paper-caseD-coarse-per-seed"


# --- fine-stage initialisation (docs/protocol.md §8.3, §8.4) ------------------------------------------------
def test_fine_init_follows_selection_sparse_pca_padding_and_bridging(toy, tmp_path):
    module = enter_fine(build_module(toy, tmp_path))
    options = configured(toy)
    streams = streams_of()
    meta = module.meta.detach().numpy()
    selection = streams.selection.choice(12, size=6, replace=True)
    scores = SparsePCA(n_components=5, alpha=1, random_state=streams.sparse_pca_state).fit_transform(meta[selection])
    table = module.fine_meta.detach().numpy()
    assert table.shape == (6, 16)
    for row in range(6):                       # d^r = 5 scores in ascending slots, zeros elsewhere
        slots = np.flatnonzero(table[row])
        assert len(slots) == 5 and np.allclose(table[row, slots], scores[row], atol=1e-5)
    assert len({tuple(np.flatnonzero(row)) for row in table}) > 1                 # random slots per row
    assert torch.equal(module.fine_meta, initial_fine_codebook(module.meta, settings_of(options), streams_of()).table)
    # S^r: exactly t^r distinct columns per coarse row, the dense reference's values.
    assert module.fine_columns.shape == module.fine_values.shape == (12, 3)
    assert all(len(set(row)) == 3 for row in module.fine_columns.tolist())
    assert_top_t(module.fine_assignment, fine_init_scores(toy, module, softmax=True), 3)
    # The 3-block graph, doubly normalised and symmetric (eq. 14).
    graph = module.graph().matrix.to_dense().numpy()
    a_hat = normalized_adjacency(toy.train).matrix.to_dense().numpy()
    expected = dense_expanded(a_hat, [dense(module.assignment), dense(module.fine_assignment)])
    assert graph.shape == (toy.n_entities + 18,) * 2
    assert np.allclose(graph, expected, atol=1e-6) and np.allclose(graph, graph.T, atol=1e-7)
    assert graph.min() >= 0 and graph.max() <= 1
    assert module.param_groups(FINE)[1] == {"params": [module.meta], "lr": 0.0}     # E^c frozen
    # d^r >= d: the SparsePCA scores are used unpadded (docs/protocol.md §8.3 step 5).
    unpadded = enter_fine(build_module(toy, tmp_path, fine_components=40)).fine_meta.detach().numpy()
    full_rank = SparsePCA(n_components=16, alpha=1, random_state=streams.sparse_pca_state).fit_transform(meta[selection])
    assert unpadded.shape == (6, 16) and np.allclose(unpadded, full_rank, atol=1e-5)


def test_sparse_pca_scores_are_cached_by_input_and_random_state(tmp_path, monkeypatch):
    rows = np.random.default_rng(0).normal(size=(6, 10)).astype(np.float32)
    first = sparse_pca.sparse_pca_scores(rows, 4, random_state=1, cache_dir=tmp_path)
    assert np.allclose(first, SparsePCA(n_components=4, alpha=1, random_state=1).fit_transform(rows))
    def no_fit(*args):
        raise TypeError("SparsePCA was fitted instead of read from the cache")

    monkeypatch.setattr(sparse_pca, "_fit_scores", no_fit)                           # any fit now fails
    assert np.array_equal(sparse_pca.sparse_pca_scores(rows, 4, random_state=1, cache_dir=tmp_path), first)
    for changed in ((rows + 1, 4, 1), (rows, 3, 1), (rows, 4, 2)):
        with pytest.raises(TypeError):
            sparse_pca.sparse_pca_scores(*changed, cache_dir=tmp_path)


def test_variant_paper_differs_exactly_in_the_listed_behaviours(toy, tmp_path):
    code = enter_fine(build_module(toy, tmp_path))
    paper = enter_fine(build_module(toy, tmp_path, variant="paper"))
    assert torch.equal(code.meta, paper.meta) and torch.equal(code.assignment_values, paper.assignment_values)
    assert torch.equal(code.assignment_columns, paper.assignment_columns)          # one shared coarse stage
    # Selection with / without replacement; random / leading padding positions; same SparsePCA state.
    settings = settings_of(configured(toy))
    inits = {variant: initial_fine_codebook(code.meta, dataclasses.replace(settings, variant=variant),
                                            streams_of()) for variant in ("code", "paper")}
    assert len(set(inits["paper"].selection)) == 6
    assert (inits["paper"].positions == np.arange(5)).all() and not (inits["code"].positions == np.arange(5)).all()
    assert torch.equal(paper.fine_meta, inits["paper"].table)
    # S^r init: the softmax is monotone, so the same columns; the values are softmax (code) or raw (paper).
    assert_top_t(paper.fine_assignment, fine_init_scores(toy, paper, softmax=False), 3, atol=1e-5)
    assert_top_t(code.fine_assignment, fine_init_scores(toy, paper, softmax=True), 3)
    # Forward: the same E^r and S^r in both, then each against its own dense formula.
    with torch.no_grad():
        paper.fine_meta.copy_(torch.randn(6, 16) * 2)
        code.fine_meta.copy_(paper.fine_meta)
    paper.fine_columns, paper.fine_values = code.fine_columns, code.fine_values
    paper.after_load()
    fine_rows = soft_threshold(code.fine_meta, 1.0).detach().double().numpy()
    for module, is_code in ((code, True), (paper, False)):
        x0 = module.layer0()
        assert np.allclose(x0.detach().numpy(), dense_layer0(module, fine_rows, is_code), atol=1e-5)
        expected = dense_propagation(module, x0.detach().double().numpy(), 2, is_code)
        assert np.allclose(module.propagate(x0, 2).detach().numpy(), expected, atol=1e-5)
    assert np.allclose(code.ego_rows(code.layer0()).detach().numpy(),
                       np.tanh(dense(code.assignment) @ code.meta.detach().numpy()), atol=1e-6)
    # Refresh: same scores, softmax (code) or not (paper) before the top t^r.
    propagated = torch.randn(toy.n_entities + 18, 16, generator=torch.Generator().manual_seed(3))
    for module, is_code in ((code, True), (paper, False)):
        module.refresh(propagated)
        scores = weight_bridging_reference(toy, propagated)
        assert_top_t(module.fine_assignment, np_softmax(scores) if is_code else scores, 3, atol=1e-4)


def weight_bridging_reference(toy, propagated, n_coarse=12):
    """Eq. 23 with the N-row matrices formed explicitly: (H_full pinv(Ĥ^c))^T (H_full pinv(H^r))."""
    h = propagated.double().numpy()
    n = toy.n_entities
    a1 = h[:n] @ np.linalg.pinv(h[n:n + n_coarse])
    a2 = h[:n] @ np.linalg.pinv(h[n + n_coarse:])
    return a1.T @ a2


# --- forward pieces (docs/protocol.md §8.5) ----------------------------------------------------------------
def test_remix_layer_equals_the_formula_on_a_dense_case():
    generator = torch.Generator().manual_seed(0)
    n, m_c, m_r, d, w = 7, 4, 3, 5, 0.2
    coarse = SparseAssignment(torch.tensor([[0, 1], [1, 2], [3, 0], [2, 3], [0, 2], [1, 3], [3, 1]]),
                              torch.rand(7, 2, generator=generator), m_c)
    fine = SparseAssignment(torch.tensor([[0, 1], [2, 0], [1, 2], [0, 2]]), torch.rand(4, 2, generator=generator), m_r)
    layer = torch.randn(n + m_c + m_r, d, generator=generator, dtype=torch.float64)
    sc, sr = dense(coarse), dense(fine)
    f, c, r = layer[:n].numpy(), layer[n:n + m_c].numpy(), layer[n + m_c:].numpy()
    c_new = (1 - w) * (c - sr @ r) + w * sr @ r
    f_new = f - sc @ c + sc @ c_new
    out = remix_layer(layer, n, SparseAssignment(coarse.columns, coarse.values.double(), m_c),
                      SparseAssignment(fine.columns, fine.values.double(), m_r), w).numpy()
    assert np.allclose(out, np.concatenate([f_new, c_new, r]), atol=1e-12)
    assert np.allclose(c_new, (1 - w) * c + (2 * w - 1) * sr @ r)                   # the simplified form (docs/protocol.md §8.5)


def test_soft_threshold_zeroes_small_entries_and_blocks_their_gradient(toy, tmp_path):
    x = torch.tensor([-2.5, -1.0, -0.3, 0.0, 0.7, 1.0, 1.5], requires_grad=True)
    y = soft_threshold(x, 1.0)
    assert y.tolist() == pytest.approx([-1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5])
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]                  # |x| <= λ: dead
    # In the module: dead entries of E^r (all padding zeros included) get exactly zero gradient.
    module = enter_fine(build_module(toy, tmp_path, threshold=0.5))
    module.propagate(module.layer0(), 2).square().sum().backward()
    dead = module.fine_meta.detach().abs() <= 0.5
    assert dead.any() and (~dead).any()
    assert not module.fine_meta.grad[dead].any() and module.fine_meta.grad[~dead].abs().min() > 0
    assert module.diagnostics()["fine_nonzeros"] == int((~dead).sum())


# --- ablations (docs/protocol.md §8.10) --------------------------------------------------------------------
def test_ablation_switches_change_what_they_claim_and_nothing_else(toy, tmp_path):
    cases = {case: enter_fine(build_module(toy, tmp_path, ablation=case)) for case in ("none", "A", "B", "C", "D")}
    full = cases["none"]
    settings = settings_of(configured(toy))
    inits = {case: initial_fine_codebook(full.meta, dataclasses.replace(settings, ablation=case),
                                         streams_of()) for case in cases}
    graph = full.graph().matrix.to_dense()
    for case, module in cases.items():
        assert torch.equal(module.fine_columns, full.fine_columns) and torch.equal(module.fine_values, full.fine_values)
        assert torch.equal(module.graph().matrix.to_dense(), graph)                # S^r init unchanged (8.4)
        assert torch.equal(module.fine_meta, inits[case].table)
        assert torch.equal(module.fine_meta, full.fine_meta) == (case not in ("A", "B"))
    # A: random rows, same padding positions; B: the selected coarse rows themselves, no padding.
    assert inits["A"].selection is None and np.array_equal(inits["A"].positions, inits["none"].positions)
    assert np.array_equal(inits["B"].selection, inits["none"].selection) and inits["B"].positions is None
    assert torch.equal(inits["B"].table, full.meta.detach()[inits["none"].selection])
    # C: S_λ is the identity - the forward of threshold 0, but every entry keeps its gradient.
    zero_threshold = enter_fine(build_module(toy, tmp_path, threshold=0.0))
    assert torch.equal(cases["C"].layer0(), zero_threshold.layer0())
    assert not torch.equal(cases["C"].layer0(), full.layer0())
    cases["C"].layer0().sum().backward()
    assert (cases["C"].fine_meta.grad != 0).all()
    # D: the refresh matches coarse to fine rows directly; the others bridge through the entities.
    propagated = torch.randn(toy.n_entities + 18, 16, generator=torch.Generator().manual_seed(3))
    for module in cases.values():
        module.refresh(propagated)
    h = propagated.double().numpy()
    n = toy.n_entities
    direct = h[n:n + 12] @ np.linalg.pinv(h[n + 12:])
    assert_top_t(cases["D"].fine_assignment, np_softmax(direct), 3, atol=1e-4)
    bridged = np_softmax(weight_bridging_reference(toy, propagated))
    for case in ("none", "A", "B", "C"):
        assert_top_t(cases[case].fine_assignment, bridged, 3, atol=1e-4)


# --- training: two stages, frozen coarse tensors, shared coarse stages ------------------------------
# A high learning rate so that both phases of both stages plateau within a few epochs.
TOY_CONFIG = TrainerConfig(max_epochs=30, eval_every=1, patience_fixed=1, patience_update=2, batch_size=4096,
                           lr=1e-1, layers=2, checkpoint_seconds=0)  # a resume file per epoch
TOY_OPTIONS = {**SMALL, "fine_lr": 1e-1, "fine_batch_size": 4096}


def c2f_trainer(data, tmp_path, name, seed=1, config=TOY_CONFIG, **options):
    method = get_method("c2f")
    options = method.configure(resolve(method, TOY_OPTIONS, options), None, data.stats())
    return Trainer(method, options, data, config, seed=seed, device="cpu", work_dir=tmp_path / name,
                   cache_dir=tmp_path / "cache", show_progress=False)


def test_fine_stage_keeps_coarse_tensors_bit_identical_and_t_entries_per_row(toy, tmp_path, monkeypatch):
    original = CoarseToFineTable.refresh
    fine_refreshes = []

    def checked_refresh(self, propagated):
        original(self, propagated)
        if self.fine_active:
            assert self.fine_columns.shape == self.fine_values.shape == (12, 3)
            assert all(len(set(row)) == 3 for row in self.fine_columns.tolist())
            assert int((self.fine_values > 0).sum()) == 12 * 3                        # exactly t^r non-zeros
            fine_refreshes.append(int(self.fine_refreshes))

    monkeypatch.setattr(CoarseToFineTable, "refresh", checked_refresh)
    trainer = c2f_trainer(toy, tmp_path, "run")
    result = trainer.fit()
    assert set(result.checkpoints) == {"coarse/fixed", "coarse/update", "fine/fixed", "fine/update"}
    assert result.reported == "fine/update"
    update_epochs = [h for h in result.history if h.get("stage") == "fine" and h.get("phase") == UPDATE
                     and "loss" in h]
    assert update_epochs and fine_refreshes == list(range(1, len(update_epochs) + 1))
    coarse = torch_load(trainer.files.shared_dirs[0] / "best-coarse-update.pt")["model"]
    assert not any(key.startswith("embedding.fine") for key in coarse)              # the shared stage holds none
    for phase in (FIXED, UPDATE):
        fine = torch_load(tmp_path / "run" / f"best-fine-{phase}.pt")["model"]
        for key in ("embedding.meta", "embedding.assignment_columns", "embedding.assignment_values"):
            assert torch.equal(fine[key], coarse[key]), (phase, key)
    diagnostics = [h["diagnostics"] for h in result.history if "valid" in h and h["stage"] == "fine"]
    assert {"fine_in_use", "fine_mean_kept_value", "fine_nonzeros", "params_sparse_aware"} <= set(diagnostics[-1])
    assert diagnostics[-1]["params_sparse_aware"] == (result.param_count.table3 - 6 * 16
                                                      + diagnostics[-1]["fine_nonzeros"])
    assert result.param_count.table3 == 12 * 16 + 2 * toy.n_entities + 6 * 16 + 3 * 12


def test_fine_seeds_reuse_one_coarse_stage_and_fully_seeded_runs_do_not(toy, tmp_path, monkeypatch):
    trained = count_stage_epochs(monkeypatch)
    first = c2f_trainer(toy, tmp_path, "a", seed=1, coarse_seed=7).fit()
    # Another seed and other fine settings (other fine tensor shapes) over the same coarse stage.
    second = c2f_trainer(toy, tmp_path, "b", seed=2, coarse_seed=7, fine_buckets=4, fine_topk=2, threshold=0.5).fit()
    coarse_epochs = [seed for seed, stage in trained if stage == "coarse"]
    assert coarse_epochs and set(coarse_epochs) == {1}                                 # trained once, by run 1
    assert {seed for seed, stage in trained if stage == "fine"} == {1, 2}
    for key in ("coarse/fixed", "coarse/update"):
        assert first.checkpoints[key].test == second.checkpoints[key].test
    assert first.checkpoints["fine/update"].test != second.checkpoints["fine/update"].test
    # Reusing the coarse stage gives the same run as training it: seed 2 alone, with its own cache.
    alone = c2f_trainer(toy, tmp_path / "alone", "b", seed=2, coarse_seed=7, fine_buckets=4, fine_topk=2,
                        threshold=0.5).fit()
    assert {key: c.test for key, c in alone.checkpoints.items()} == \
        {key: c.test for key, c in second.checkpoints.items()}
    trained.clear()
    seeded = [c2f_trainer(toy, tmp_path, f"s{seed}", seed=seed, coarse_seed=-1).fit() for seed in (1, 2)]
    assert {seed for seed, stage in trained if stage == "coarse"} == {1, 2}            # one coarse stage per seed
    assert seeded[0].checkpoints["coarse/update"].test != seeded[1].checkpoints["coarse/update"].test
    # The fully seeded coarse stage of seed 2 is the one an explicit coarse_seed=2 asks for: reused.
    trained.clear()
    explicit = c2f_trainer(toy, tmp_path, "explicit", seed=5, coarse_seed=2).fit()
    assert [stage for _, stage in trained if stage == "coarse"] == []
    assert explicit.checkpoints["coarse/update"].test == seeded[1].checkpoints["coarse/update"].test


def test_resume_in_the_fine_stage_equals_an_uninterrupted_run(toy, tmp_path, monkeypatch):
    reference = c2f_trainer(toy, tmp_path / "ref", "run").fit()
    stages = [(h["stage"], h["phase"]) for h in reference.history if "loss" in h]
    crash_after = stages.index(("fine", UPDATE)) + 2                                 # after two S^r refreshes
    resumed = crash_and_resume(lambda name: c2f_trainer(toy, tmp_path, name), "run", crash_after, monkeypatch)
    assert_same_outcome(resumed, reference)


def test_learns_on_synthetic_and_beats_random_embeddings(tmp_path):
    data = load_dataset("synthetic").interactions
    config = TrainerConfig(max_epochs=8, eval_every=2, patience_fixed=1, patience_update=2, batch_size=8192,
                           lr=1e-1, layers=2)
    trainer = c2f_trainer(data, tmp_path, "syn", seed=2024, config=config, coarse_buckets=60, fine_buckets=20,
                          fine_components=10, dim=32, fine_batch_size=8192)
    result = trainer.fit()
    trained = result.reported_checkpoint.test["ndcg@20"]
    generator = torch.Generator().manual_seed(0)
    users = torch.randn(data.n_users, 32, generator=generator)
    items = torch.randn(data.n_items, 32, generator=generator)
    random_ndcg = Evaluator(data.train, {"test": data.test}).per_user("test", users, items, None)["ndcg@20"].mean()
    assert result.reported == "fine/update"
    assert trained > 3 * random_ndcg and trained > random_ndcg + 0.05, (trained, random_ndcg)
