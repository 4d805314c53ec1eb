"""The meta-embedding module of LEGCF (docs/protocol.md §7), shared with C2F, whose coarse stage is LEGCF (8.1).

Every entity row is a sparse combination of ``m`` shared meta-embeddings, ``E = S E_meta`` with ``t``
stored entries per row of ``S``. The meta-embeddings are extra nodes of the expanded graph
``M = [[Â, S], [S^T, 0]]`` (normalised again, as the official code does), so LightGCN propagates
between entities and meta-embeddings; layer 0 is ``[tanh(S E_meta); E_meta]`` (the tanh is in the
official code only, and is what produced the published numbers; L2 acts on the tanh rows).

``S`` is not trained by gradient. It starts from a METIS partition of the user-item graph (anchor
weight ``w*`` on the entity's part, the rest on ``t-1`` random parts) and stays fixed in the FIXED
phase; in the UPDATE phase it is refreshed at batch 0 of scheduled UPDATE epochs from that batch's
propagated tables, ``S <- top_t(H_full pinv(H_meta))``, and the graph is rebuilt.

A subclass that adds node groups (C2F's fine meta-embeddings) overrides :meth:`graph_chain` and
:meth:`layer0`; the meta rows must directly follow the entity rows.
"""
from __future__ import annotations

import torch
from torch import nn

from lwbench.kernels.graph import SymmetricGraph
from lwbench.methods.common.assignment import (
    ExpandedGraphBuilder,
    RefreshSchedule,
    SparseAssignment,
    anchored_assignment,
    pinv_scores,
    top_t_assignment,
)
from lwbench.methods.common.metis import metis_parts, user_item_adjacency
from lwbench.plugin import UPDATE, BuildContext, EmbeddingModule, InferenceState, Step

ASSIGNMENT_INITS = ("metis", "random")
META_INITS = ("normal", "xavier")


def metis_anchors(ctx: BuildContext, n_parts: int) -> torch.Tensor:
    """The METIS part of every entity (docs/protocol.md §7.2 step 1), cached under ``ctx.cache_dir`` and seeded
    with ``ctx.seed``, on the device."""
    parts = metis_parts(user_item_adjacency(ctx.interactions.train), n_parts, ctx.seed, ctx.cache_dir)
    return torch.as_tensor(parts, device=ctx.device)


def initial_assignment(ctx: BuildContext, n_meta: int, per_row: int, anchor_weight: float,
                       how: str = "metis") -> SparseAssignment:
    """Entity -> meta assignment of docs/protocol.md §7.2: anchor = the entity's METIS part (``metis``) or a
    uniform random column (``random``)."""
    if how == "metis":
        anchors = metis_anchors(ctx, n_meta)
    elif how == "random":
        anchors = torch.randint(n_meta, (ctx.interactions.n_entities,), device=ctx.device)
    else:
        raise ValueError(f"assignment initialisation {how!r} is not one of {', '.join(ASSIGNMENT_INITS)}")
    return anchored_assignment(anchors, n_meta, per_row, anchor_weight)


def initial_meta_embeddings(n_meta: int, dim: int, how: str, device: torch.device) -> torch.Tensor:
    """N(0, 1) (``normal``, the official code) or Xavier-uniform (``xavier``, the paper's text)."""
    table = torch.empty(n_meta, dim, device=device)
    if how == "normal":
        return nn.init.normal_(table)
    if how == "xavier":
        return nn.init.xavier_uniform_(table)
    raise ValueError(f"meta-embedding initialisation {how!r} is not one of {', '.join(META_INITS)}")


class MetaEmbeddingTable(EmbeddingModule):
    """``E_meta`` (trained) and ``S`` (buffers, refreshed without gradient) over the expanded graph."""

    def __init__(self, ctx: BuildContext, n_meta: int, per_row: int, dim: int, anchor_weight: float,
                 assignment_init: str, meta_init: str, schedule: RefreshSchedule):
        super().__init__(ctx)
        self.n_meta, self.per_row, self.schedule = n_meta, per_row, schedule
        initial = initial_assignment(ctx, n_meta, per_row, anchor_weight, assignment_init)
        self.meta = nn.Parameter(initial_meta_embeddings(n_meta, dim, meta_init, ctx.device))
        self.register_buffer("assignment_columns", initial.columns)
        self.register_buffer("assignment_values", initial.values)
        # Refresh counters are buffers so that checkpoints and resumes carry them.
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.long, device=ctx.device))
        self.register_buffer("clamped_last", torch.zeros((), dtype=torch.long, device=ctx.device))
        self.register_buffer("clamped_total", torch.zeros((), dtype=torch.long, device=ctx.device))
        self.builder = ExpandedGraphBuilder(ctx.graph)
        self.rebuild_graph()

    @property
    def assignment(self) -> SparseAssignment:
        return SparseAssignment(self.assignment_columns, self.assignment_values, self.n_meta)

    def graph_chain(self) -> list[SparseAssignment]:
        """The assignment blocks of the expanded graph, entities first (see ExpandedGraphBuilder)."""
        return [self.assignment]

    def rebuild_graph(self) -> None:
        self._graph = self.builder.build(self.graph_chain())

    def layer0(self) -> torch.Tensor:
        return torch.cat([torch.tanh(self.assignment.compose(self.meta)), self.meta])

    def rows(self, entities: torch.Tensor) -> torch.Tensor:
        """Only the requested rows: each entity's ``t`` meta-embeddings, weighted."""
        chosen = SparseAssignment(self.assignment_columns[entities], self.assignment_values[entities], self.n_meta)
        return torch.tanh(chosen.compose(self.meta))

    def graph(self) -> SymmetricGraph:
        return self._graph

    def after_forward(self, step: Step) -> None:
        if step.phase == UPDATE and step.batch == 0 and self.schedule.due(step.epoch, int(self.refreshes)):
            self.refresh(step.propagated.detach())

    @torch.no_grad()
    def refresh(self, propagated: torch.Tensor) -> None:
        """``S <- top_t(H_full pinv(H_meta))`` from tables propagated over the current graph, then
        rebuild the graph (docs/protocol.md §7.3). The buffers are replaced, not written in place: the
        batch whose tables these are still backpropagates through the old ``S``."""
        n = self.n_entities
        new, clamps = top_t_assignment(pinv_scores(propagated[:n], propagated[n:n + self.n_meta]), self.per_row)
        self.assignment_columns, self.assignment_values = new.columns, new.values
        self.refreshes = self.refreshes + 1
        self.clamped_last = torch.full_like(self.clamped_last, clamps)
        self.clamped_total = self.clamped_total + clamps
        self.rebuild_graph()

    def after_load(self) -> None:
        self.rebuild_graph()

    def diagnostics(self) -> dict:
        assignment = self.assignment
        return {"meta_in_use": assignment.columns_in_use(), "mean_kept_value": assignment.mean_nonzero_value(),
                "refreshes": int(self.refreshes), "clamped_last_refresh": int(self.clamped_last),
                "clamped_total": int(self.clamped_total)}

    def inference_state(self) -> InferenceState:
        return InferenceState(values={"meta_embeddings": self.meta.detach(),
                                      "assignment_values": self.assignment_values},
                              indices={"assignment_columns": self.assignment_columns},
                              index_ranges={"assignment_columns": self.n_meta})
