"""LEGCF: lightweight embeddings for graph collaborative filtering (Liang et al., SIGIR'24; docs/protocol.md §7).

``m`` meta-embeddings are extra nodes of an expanded LightGCN graph; each entity is a sparse
combination of ``t`` of them, ``tanh(S E_meta)``. ``S`` starts from a METIS partition and is refreshed
by least squares in the UPDATE phase. The module is :class:`lwbench.methods.common.meta_embedding.MetaEmbeddingTable`
(shared with C2F's coarse stage); this file sizes it to the budget and declares its options and
trainer defaults.

``anchor_weight`` (w*) defaults to 0.9 because the official LEGCF code hard-codes 0.9 and ignores its
command line; the README's per-dataset values are Gowalla 0.5, Yelp2020 0.6, Amazon-book 0.9, e.g.
``--set legcf.anchor_weight=0.5`` (C2F's coarse stage hard-codes 0.5). ``meta_init=normal`` is the
code's N(0, 1); ``xavier`` is the paper's text.
"""
from __future__ import annotations

from lwbench.budget import BudgetError, ParamCount, meta_embedding_count
from lwbench.methods.common.assignment import RefreshSchedule
from lwbench.methods.common.meta_embedding import ASSIGNMENT_INITS, META_INITS, MetaEmbeddingTable
from lwbench.options import TO_BUDGET, ConfigError, Option, uniform
from lwbench.plugin import STORE_DTYPE, BuildContext, Method, Stage
from lwbench.registry import register


@register
class LEGCF(Method):
    name = "legcf"
    description = "meta-embeddings as graph nodes, sparse METIS-initialised assignment refreshed by pinv (SIGIR'24)"
    options = {
        "num_buckets": Option(0, min=1, special=TO_BUDGET,
                              help="meta-embeddings m (sized: the largest m with m*d + t*N <= budget)"),
        "buckets_per_entity": Option(2, min=1, help="meta-embeddings t combined per entity"),
        "dim": Option(128, min=1, help="embedding dimension d"),
        # w*: the official README's values per dataset span 0.5 (Gowalla) to 0.9 (Amazon-book, the code's constant)
        "anchor_weight": Option(0.9, min=0, max=1, help="w*: the initial weight of the entity's own METIS part",
                                search=uniform(0.5, 0.9)),
        "assignment_init": Option("metis", choices=ASSIGNMENT_INITS,
                                  help="anchor part of each entity: its METIS part, or uniform at random"),
        "meta_init": Option("normal", choices=META_INITS, help="initialization of the meta-embeddings"),
        "assignment_update_frequency": Option("every-epoch",
                                              help=f"UPDATE-phase refreshes of S: {RefreshSchedule.CHOICES}"),
        "store_dtype": STORE_DTYPE,
    }
    # docs/protocol.md §7.4 / §9.2 (set_parse.py defaults with the README's l2 factor 5).
    trainer_defaults = {"batch_size": 2048, "lr": 1e-3, "l2_factor": 5.0, "eval_every": 1,
                        "patience_fixed": 10, "patience_update": 10, "max_epochs": 1000}

    def configure(self, options: dict, budget: int | None, stats) -> dict:
        self._validate(options)
        per_row, dim, n = options["buckets_per_entity"], options["dim"], stats.n_entities
        requested = options["num_buckets"]
        if budget is None:
            if requested == 0:
                raise BudgetError("legcf sizes its codebook to a budget: give --budget, or set legcf.num_buckets")
            return dict(options)
        largest = min((budget - per_row * n) // dim, n)   # more meta-embeddings than entities is pointless
        if largest < per_row:
            smallest = meta_embedding_count(per_row, dim, per_row, n).table3
            raise BudgetError(f"legcf with t={per_row} needs a budget of at least {smallest} parameters (the minimum: "
                              f"m=t={per_row} meta-embeddings of dimension {dim} plus t*N={per_row * n} assignment "
                              f"values, N={n}); got {budget}. Raise the budget or lower legcf.buckets_per_entity")
        if requested == 0:
            return {**options, "num_buckets": int(largest)}
        if requested > largest:
            raise BudgetError(f"legcf.num_buckets={requested} needs {meta_embedding_count(requested, dim, per_row, n).table3} "
                              f"parameters, above the budget of {budget}, or exceeds N={n}; at most {largest} meta-embeddings "
                              "fit (set num_buckets=0 to size it automatically)")
        return dict(options)

    @staticmethod
    def _validate(options: dict) -> None:
        """What the declarations cannot say: num_buckets against buckets_per_entity, and the schedule's format."""
        per_row, requested = options["buckets_per_entity"], options["num_buckets"]
        if 0 < requested < per_row:
            raise ConfigError(f"legcf.num_buckets={requested} cannot hold {per_row} distinct meta-embeddings per "
                              "entity; raise num_buckets or lower buckets_per_entity")
        try:
            RefreshSchedule.parse(options["assignment_update_frequency"])
        except ValueError as exc:
            raise ConfigError(f"legcf.assignment_update_frequency: {exc}") from None

    def planned_count(self, options: dict, stats) -> ParamCount:
        return meta_embedding_count(options["num_buckets"], options["dim"], options["buckets_per_entity"], stats.n_entities)

    def stages(self, options: dict) -> list[Stage]:
        return [Stage("train", two_phase=True)]

    def build(self, ctx: BuildContext) -> MetaEmbeddingTable:
        o = ctx.options
        return MetaEmbeddingTable(ctx, o["num_buckets"], o["buckets_per_entity"], o["dim"], o["anchor_weight"],
                                  o["assignment_init"], o["meta_init"],
                                  RefreshSchedule.parse(o["assignment_update_frequency"]))
