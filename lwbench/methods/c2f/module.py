"""The C2F module (docs/protocol.md §8): LEGCF's coarse meta-embeddings, refined by a small fine codebook.

**Coarse stage.** Exactly LEGCF (:class:`~lwbench.methods.common.meta_embedding.MetaEmbeddingTable`, docs/protocol.md §7 and
8.1) with ``m^c`` meta-embeddings ``E^c`` and ``t^c`` entries per entity row of ``S^c``. The official
coarse stage also carries a zero fine table that enters the graph as isolated zero rows; it changes
nothing, so it is left out.

**Fine stage** (:meth:`CoarseToFineTable.begin_stage`, after the trainer loaded the coarse stage's best
checkpoint). ``E^c`` is frozen (an ``lr=0`` Adam group, docs/protocol.md §3.2 / §8.2) and ``S^c`` is never
refreshed again. New tensors:

* ``E^r`` (``m^r x d``, trained): ``m^r`` coarse rows selected at random, SparsePCA scores of them with
  ``d^r`` components, zero-padded to ``d`` (8.3);
* ``S^r`` (``m^c x m^r``, ``t^r`` entries per coarse row, not trained by gradient): a METIS partition
  into ``m^r`` parts spread to a dense ``S~`` (anchor weight ``w*``), bridged through ``S^c`` as
  ``(S^c)^T S~`` and cut to the top ``t^r`` per row (8.4); refreshed at batch 0 of UPDATE epochs by
  weight bridging ``(H_full pinv(Ĥ^c))^T (H_full pinv(H^r))`` (eqs. 23-24, 8.6).

Forward pass (8.5): ``Ẽ^r = S_λ(E^r)`` (soft threshold), ``Ê^c = (1-w) E^c + w S^r Ẽ^r``, the 3-block
graph ``[[Â, S^c, 0], [S^cᵀ, 0, S^r], [0, S^rᵀ, 0]]`` normalised twice (eq. 14), LightGCN mean over layers.

``variant`` selects between the official code (``code``, which produced the published numbers) and the
paper's equations (``paper``) wherever they differ (docs/protocol.md §8 and §11):

=========================== ===================================== =========================================
behaviour                   ``code``                              ``paper``
=========================== ===================================== =========================================
selection of coarse rows    uniform, with replacement             uniform, without replacement
padding of the ``d^r`` PCA  ``d^r`` random sorted positions per   the first ``d^r`` positions of every row
scores to ``d``             row                                   (zeros appended)
``S^r`` init and refresh    row softmax, then top ``t^r``         top ``t^r`` of the raw scores (a kept
                                                                  negative is clamped to 0, as LEGCF's)
layer 0                     ``[tanh(S^c E^c); Ê^c; tanh(Ẽ^r)]``   ``[S^c Ê^c; Ê^c; Ẽ^r]`` (eqs. 18-19)
propagation                 per-layer re-mixing (8.5 step 5)      plain ``X_{l+1} = Ã X_l`` (eq. 20)
=========================== ===================================== =========================================

The coarse stage is the released LEGCF in both variants, so both share one coarse checkpoint.

``ablation`` removes one component (Figure 4, docs/protocol.md §8.10): ``A`` random ``N(0, 1)`` rows instead of
selected coarse rows (SparsePCA and padding kept); ``B`` selected rows copied densely (no SparsePCA, no
padding); ``C`` no soft thresholding (``S_λ`` = identity, so no entry is dead); ``D`` the ``S^r``
refresh by direct matching ``Ĥ^c pinv(H^r)`` instead of weight bridging (the init is unchanged).

**Random streams.** The fine-stage initialisation draws one entropy value from the global numpy RNG,
which the trainer seeds with the fine stage's seed just before :meth:`begin_stage`, and spawns
independent streams from it for the selection, the padding positions, ablation A's random rows and
SparsePCA's ``random_state``: a switch that skips or replaces one step leaves the others' draws as they
are. The fine METIS partition is seeded like the coarse one (the module's initialisation seed), so
fine runs over one coarse checkpoint share it, as in the official code (whose METIS call is unseeded).

**Checkpoints.** The fine tensors exist only in the fine stage. The coarse stage's checkpoints - shared
between runs with different fine settings - therefore hold none, and loading a state dict puts the
module in the mode that state was saved in (a load pre-hook creates or drops the fine tensors).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lwbench.budget import ParamCount, index_width
from lwbench.kernels.graph import lightgcn_propagate
from lwbench.methods.common.assignment import RefreshSchedule, SparseAssignment, pinv_scores, top_t_assignment
from lwbench.methods.common.meta_embedding import MetaEmbeddingTable, metis_anchors
from lwbench.methods.common.pruning import soft_threshold  # Eq. 16: S_λ(x) = sign(x) relu(|x| - λ)
from lwbench.methods.common.sparse_pca import sparse_pca_scores
from lwbench.plugin import BuildContext, EmbeddingModule, InferenceState, Stage

FINE_STAGE = "fine"
VARIANTS = ("code", "paper")
ABLATIONS = ("none", "A", "B", "C", "D")
FINE_BUFFERS = ("fine_columns", "fine_values", "fine_refreshes", "fine_zero_kept")


@dataclass(frozen=True)
class FineSettings:
    """The fine stage's knobs (docs/protocol.md §8.2-§8.6; option names of the ``c2f`` method in brackets)."""

    n_fine: int              # m^r [fine_buckets]
    per_row: int             # t^r [fine_topk]
    components: int          # d^r [fine_components]
    threshold: float         # λ [threshold]
    gate: float              # w_cr [gate]
    anchor_weight: float     # w* of S~ [fine_anchor_weight]
    variant: str = "code"
    ablation: str = "none"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant {self.variant!r} is not one of {', '.join(VARIANTS)}")
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation {self.ablation!r} is not one of {', '.join(ABLATIONS)}")

    @property
    def code(self) -> bool:
        return self.variant == "code"


def coarse_to_fine_count(n_coarse: int, n_fine: int, coarse_per_row: int, fine_per_row: int, dim: int,
                         n_entities: int) -> ParamCount:
    """Table 3: ``m^c d + t^c N + m^r d + t^r m^c`` (the fine table counted densely, the values of
    ``S^c`` and ``S^r`` but not their indices); storage adds ``t^c N + t^r m^c`` indices over ``m^c`` and
    ``m^r`` columns (docs/protocol.md §5.1, §5.2)."""
    values = n_coarse * dim + coarse_per_row * n_entities + n_fine * dim + fine_per_row * n_coarse
    return ParamCount(table3=values, float_values=values,
                      int_indices=coarse_per_row * n_entities + fine_per_row * n_coarse,
                      index_bytes=(coarse_per_row * n_entities * index_width(n_coarse)
                                   + fine_per_row * n_coarse * index_width(n_fine)))


# --- fine-stage initialisation (docs/protocol.md §8.3, §8.4) ---------------------------------------------------
@dataclass
class FineStreams:
    """Independent random streams of the fine-stage initialisation (see the module docstring)."""

    selection: np.random.Generator
    padding: np.random.Generator
    random_rows: np.random.Generator
    sparse_pca_state: int

    @classmethod
    def spawn(cls, entropy: int) -> FineStreams:
        selection, padding, random_rows, sparse_pca = np.random.SeedSequence(entropy).spawn(4)
        return cls(np.random.default_rng(selection), np.random.default_rng(padding),
                   np.random.default_rng(random_rows), int(sparse_pca.generate_state(1)[0] % 2**31))


@dataclass(frozen=True)
class FineCodebookInit:
    table: torch.Tensor                # E^r, (m^r, d)
    selection: np.ndarray | None       # the coarse rows it came from (None: ablation A selects none)
    positions: np.ndarray | None       # (m^r, d^r) columns holding each row's scores (None: not padded)


def padding_positions(n_rows: int, n_components: int, dim: int, random: bool,
                      rng: np.random.Generator) -> np.ndarray | None:
    """Columns that receive the ``n_components`` scores of each row, ascending: ``n_components`` distinct
    uniform columns per row (``random``, the code) or the first ``n_components`` (zeros appended).
    ``None`` when nothing needs padding (``n_components >= dim``, docs/protocol.md §8.3 step 5)."""
    if n_components >= dim:
        return None
    if random:
        return np.sort(np.argsort(rng.random((n_rows, dim)), axis=1)[:, :n_components], axis=1)
    return np.tile(np.arange(n_components), (n_rows, 1))


def initial_fine_codebook(coarse_meta: torch.Tensor, settings: FineSettings, streams: FineStreams,
                          cache_dir: Path | None = None) -> FineCodebookInit:
    """``E^r`` of docs/protocol.md §8.3 from the raw (unpropagated) coarse rows ``E^c``."""
    n_coarse, dim = coarse_meta.shape
    n_fine = settings.n_fine
    if settings.ablation == "A":
        selection = None
        rows = streams.random_rows.standard_normal((n_fine, dim)).astype(np.float32)
    else:
        selection = streams.selection.choice(n_coarse, size=n_fine, replace=settings.code)
        rows = coarse_meta.detach().cpu().numpy()[selection]
    if settings.ablation == "B":
        return FineCodebookInit(torch.from_numpy(rows).to(coarse_meta.device), selection, None)
    n_components = min(settings.components, dim)
    scores = sparse_pca_scores(rows, n_components, streams.sparse_pca_state, cache_dir).astype(np.float32)
    positions = padding_positions(n_fine, n_components, dim, settings.code, streams.padding)
    if positions is None:
        table = scores
    else:
        table = np.zeros((n_fine, dim), dtype=np.float32)
        np.put_along_axis(table, positions, scores, axis=1)
    return FineCodebookInit(torch.from_numpy(table).to(coarse_meta.device), selection, positions)


def bridged_scores(coarse: SparseAssignment, fine_parts: torch.Tensor, n_fine: int,
                   anchor_weight: float) -> torch.Tensor:
    """``(S^c)^T S~`` (m^c x m^r, docs/protocol.md §8.4 steps 2-3), where ``S~`` gives every entity ``w*`` on its
    METIS part and ``(1-w*)/(m^r-1)`` on every other fine column."""
    others = (1.0 - anchor_weight) / (n_fine - 1) if n_fine > 1 else 0.0
    spread = torch.full((fine_parts.shape[0], n_fine), others, device=fine_parts.device)
    spread[torch.arange(fine_parts.shape[0], device=fine_parts.device), fine_parts.long()] = \
        anchor_weight if n_fine > 1 else 1.0
    return coarse.transpose_compose(spread)


def fine_assignment(scores: torch.Tensor, per_row: int, softmax: bool) -> tuple[SparseAssignment, int]:
    """``S^r`` from dense scores (docs/protocol.md §8.4 steps 4-5, 8.6 step 3): an optional row softmax (the
    code), then the top ``t^r`` values per row, unrenormalised; returns the clamp count of
    :func:`~lwbench.methods.common.assignment.top_t_assignment` (always 0 after a softmax)."""
    return top_t_assignment(torch.softmax(scores, dim=1) if softmax else scores, per_row)


def weight_bridging_scores(h_full: torch.Tensor, h_coarse: torch.Tensor, h_fine: torch.Tensor) -> torch.Tensor:
    """Eq. 23: ``A1^T A2`` with ``A1 = H_full pinv(Ĥ^c)`` (N x m^c) and ``A2 = H_full pinv(H^r)``
    (N x m^r), evaluated as ``pinv(Ĥ^c)^T (H_full^T H_full) pinv(H^r)``: the same product, without
    forming the two N-row matrices (a d x d Gram matrix instead)."""
    gram = h_full.T @ h_full
    return torch.linalg.pinv(h_coarse).T @ gram @ torch.linalg.pinv(h_fine)


def direct_matching_scores(h_coarse: torch.Tensor, h_fine: torch.Tensor) -> torch.Tensor:
    """Ablation D (docs/protocol.md §8.10): ``Ĥ^c pinv(H^r)``, matching coarse to fine rows without the entities."""
    return pinv_scores(h_coarse, h_fine)


# --- forward pieces (docs/protocol.md §8.5) ------------------------------------------------------------------
def remix_layer(layer: torch.Tensor, n_entities: int, coarse: SparseAssignment, fine: SparseAssignment,
                gate: float) -> torch.Tensor:
    """The code-only per-layer re-mixing (docs/protocol.md §8.5 step 5) of ``Y = Ã X_l = [F; C; R]``::

        C' = (1-w) (C - S^r R) + w S^r R,   F' = F - S^c C + S^c C' = F + S^c (C' - C),   X_{l+1} = [F'; C'; R]
    """
    n, n_coarse = n_entities, coarse.n_cols
    entities, coarse_rows, fine_rows = layer[:n], layer[n:n + n_coarse], layer[n + n_coarse:]
    from_fine = fine.compose(fine_rows)
    remixed = (1.0 - gate) * (coarse_rows - from_fine) + gate * from_fine
    return torch.cat([entities + coarse.compose(remixed - coarse_rows), remixed, fine_rows])


class CoarseToFineTable(MetaEmbeddingTable):
    """LEGCF in the coarse stage; ``E^r`` and ``S^r`` join in the fine stage (see the module docstring)."""

    def __init__(self, ctx: BuildContext, n_coarse: int, coarse_per_row: int, dim: int, coarse_anchor_weight: float,
                 fine: FineSettings):
        super().__init__(ctx, n_coarse, coarse_per_row, dim, coarse_anchor_weight, assignment_init="metis",
                         meta_init="normal", schedule=RefreshSchedule(1))
        self.fine_settings = fine
        self.context = ctx
        # Empty slots: not in state_dict() until the fine stage fills them.
        self.register_parameter("fine_meta", None)
        for name in FINE_BUFFERS:
            self.register_buffer(name, None)
        self.register_load_state_dict_pre_hook(self._match_mode_of_loaded_state)

    # --- mode ------------------------------------------------------------------------------------
    @property
    def fine_active(self) -> bool:
        # getattr: the base class builds the graph (graph_chain) before the fine slots are registered.
        return getattr(self, "fine_meta", None) is not None

    @property
    def fine_assignment(self) -> SparseAssignment:
        return SparseAssignment(self.fine_columns, self.fine_values, self.fine_settings.n_fine)

    def _enter_fine(self, table: torch.Tensor, assignment: SparseAssignment) -> None:
        self.fine_meta = nn.Parameter(table)
        self.fine_columns, self.fine_values = assignment.columns, assignment.values
        self.fine_refreshes = torch.zeros((), dtype=torch.long, device=table.device)
        self.fine_zero_kept = torch.full_like(self.fine_refreshes, int((assignment.values == 0).sum()))

    def _match_mode_of_loaded_state(self, module, state_dict, prefix, *args) -> None:
        """Create (or drop) the fine tensors so that the module's mode matches the state being loaded."""
        names = ("fine_meta",) + FINE_BUFFERS
        incoming = prefix + "fine_meta" in state_dict
        if incoming and not self.fine_active:
            device = self.meta.device
            self.fine_meta = nn.Parameter(torch.empty_like(state_dict[prefix + "fine_meta"], device=device))
            for name in FINE_BUFFERS:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=device))
        elif not incoming and self.fine_active:
            for name in names:
                setattr(self, name, None)

    # --- stage hooks ------------------------------------------------------------------------------
    def begin_stage(self, stage: Stage) -> None:
        if stage.name == FINE_STAGE:
            self.start_fine_stage()

    @torch.no_grad()
    def start_fine_stage(self) -> None:
        """Initialise ``E^r`` (8.3) and ``S^r`` (8.4) from the loaded coarse ``E^c`` and ``S^c``."""
        settings = self.fine_settings
        streams = FineStreams.spawn(int(np.random.randint(2**31)))
        init = initial_fine_codebook(self.meta, settings, streams, self.context.cache_dir)
        scores = bridged_scores(self.assignment, metis_anchors(self.context, settings.n_fine), settings.n_fine,
                                settings.anchor_weight)
        assignment, _ = fine_assignment(scores, settings.per_row, softmax=settings.code)
        self._enter_fine(init.table, assignment)
        self.rebuild_graph()

    def param_groups(self, stage: Stage) -> list[dict]:
        if not self.fine_active:
            return super().param_groups(stage)
        return [{"params": [self.fine_meta]}, {"params": [self.meta], "lr": 0.0}]

    # --- forward ----------------------------------------------------------------------------------
    def graph_chain(self) -> list[SparseAssignment]:
        return [self.assignment, self.fine_assignment] if self.fine_active else [self.assignment]

    def fine_rows(self) -> torch.Tensor:
        """``Ẽ^r = S_λ(E^r)``, or ``E^r`` itself under ablation C."""
        if self.fine_settings.ablation == "C":
            return self.fine_meta
        return soft_threshold(self.fine_meta, self.fine_settings.threshold)

    def rows(self, entities: torch.Tensor) -> torch.Tensor:
        """Every row is formed and picked (:meth:`EmbeddingModule.rows`): the fine refinement of a row goes
        through its coarse meta-embeddings' fine rows, which the coarse-only shortcut would leave out."""
        return EmbeddingModule.rows(self, entities)

    def layer0(self) -> torch.Tensor:
        if not self.fine_active:
            return super().layer0()
        settings = self.fine_settings
        fine = self.fine_rows()
        meta = self.meta.detach()   # E^c is frozen in the fine stage: no gradient work for it
        refined = (1.0 - settings.gate) * meta + settings.gate * self.fine_assignment.compose(fine)
        if settings.code:
            return torch.cat([torch.tanh(self.assignment.compose(meta)), refined, torch.tanh(fine)])
        return torch.cat([self.assignment.compose(refined), refined, fine])

    def propagate(self, x0: torch.Tensor, n_layers: int) -> torch.Tensor:
        if not (self.fine_active and self.fine_settings.code):
            return super().propagate(x0, n_layers)
        coarse, fine, gate = self.assignment, self.fine_assignment, self.fine_settings.gate
        return lightgcn_propagate(self.graph(), x0, n_layers,
                                  after_layer=lambda layer: remix_layer(layer, self.n_entities, coarse, fine, gate))

    # --- S^r refresh (docs/protocol.md §8.6) --------------------------------------------------------------
    @torch.no_grad()
    def refresh(self, propagated: torch.Tensor) -> None:
        """Coarse stage: LEGCF's refresh of ``S^c``. Fine stage: ``S^r`` by weight bridging (or direct
        matching, ablation D), then the graph is rebuilt; ``S^c`` stays as loaded."""
        if not self.fine_active:
            return super().refresh(propagated)
        n, n_coarse = self.n_entities, self.n_meta
        h_full, h_coarse, h_fine = propagated[:n], propagated[n:n + n_coarse], propagated[n + n_coarse:]
        if self.fine_settings.ablation == "D":
            scores = direct_matching_scores(h_coarse, h_fine)
        else:
            scores = weight_bridging_scores(h_full, h_coarse, h_fine)
        new, _ = fine_assignment(scores, self.fine_settings.per_row, softmax=self.fine_settings.code)
        self.fine_columns, self.fine_values = new.columns, new.values
        self.fine_refreshes = self.fine_refreshes + 1
        self.fine_zero_kept = torch.full_like(self.fine_zero_kept, int((new.values == 0).sum()))
        self.rebuild_graph()

    # --- reporting --------------------------------------------------------------------------------
    def diagnostics(self) -> dict:
        """LEGCF's numbers for ``S^c`` (``meta_in_use``, ``mean_kept_value``, ...) and, in the fine stage,
        ``fine_in_use`` (the log's "#refine utilized"), ``fine_mean_kept_value``, ``fine_zero_kept``
        (kept ``S^r`` values that are 0: clamped, or a softmax that underflowed), ``fine_nonzeros``
        (``nnz(S_λ(E^r))``), ``fine_density`` and ``params_sparse_aware`` (Table 3 with ``m^r d``
        replaced by ``nnz(S_λ(E^r))``, docs/protocol.md §8.8)."""
        out = super().diagnostics()
        if self.fine_active:
            assignment = self.fine_assignment
            nonzeros = int(torch.count_nonzero(self.fine_rows()))
            out.update({"fine_in_use": assignment.columns_in_use(),
                        "fine_mean_kept_value": assignment.mean_nonzero_value(),
                        "fine_refreshes": int(self.fine_refreshes), "fine_zero_kept": int(self.fine_zero_kept),
                        "fine_nonzeros": nonzeros, "fine_density": nonzeros / self.fine_meta.numel(),
                        "params_sparse_aware": self.param_count().table3 - self.fine_meta.numel() + nonzeros})
        return out

    def inference_state(self) -> InferenceState:
        """``E^c``, ``S^c``, ``S_λ(E^r)`` (stored densely, as Table 3 counts it) and ``S^r``. Before the
        fine stage the fine part is the zero table and zero assignment the official coarse stage keeps."""
        if self.fine_active:
            fine_table, fine = self.fine_rows().detach(), self.fine_assignment
        else:
            settings = self.fine_settings
            fine_table = torch.zeros(settings.n_fine, self.meta.shape[1], device=self.meta.device)
            slots = (self.n_meta, settings.per_row)
            fine = SparseAssignment(torch.zeros(slots, dtype=torch.long, device=self.meta.device),
                                    torch.zeros(slots, device=self.meta.device), settings.n_fine)
        state = super().inference_state()
        state.values.update({"fine_meta_embeddings": fine_table, "fine_assignment_values": fine.values})
        state.indices["fine_assignment_columns"] = fine.columns
        state.index_ranges["fine_assignment_columns"] = self.fine_settings.n_fine
        return state
