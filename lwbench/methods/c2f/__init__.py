"""C2F: coarse-to-fine lightweight meta-embeddings (Wang et al.; docs/protocol.md §8, §9.3, §9.4).

Two stages over one module (:class:`lwbench.methods.c2f.module.CoarseToFineTable`):

1. ``coarse``: LEGCF with ``m^c`` meta-embeddings (two-phase, batch 8192, lr 1e-3, l2 factor 5,
   evaluation every 5 epochs, patience 5/5, at most 900 epochs: the run's trainer settings). The stage is
   **shared**: it depends only on ``coarse_buckets``, ``coarse_topk``, ``coarse_anchor_weight``, ``dim``,
   its trainer settings, its seed and the data, so it is trained once and reused by every run with the
   same key (e.g. fine seeds, variants, ablations and sensitivity sweeps over one coarse checkpoint).
2. ``fine``: starts from the coarse stage's reported (UPDATE-phase best) checkpoint with ``E^c`` and
   ``S^c`` frozen; two-phase again, lr ``fine_lr`` and batch ``fine_batch_size``.

The run's record holds ``checkpoints["coarse/fixed"]``, ``["coarse/update"]``, ``["fine/fixed"]`` and
``["fine/update"]``; the reported metrics are ``fine/update`` (Table 4 compares it with ``coarse/update``).

Options (``--set c2f.<option>=<value>``; ``lwbench --list --verbose`` lists them all) that need more than
their one-line help:

* ``coarse_anchor_weight`` / ``fine_anchor_weight`` (w* of ``S^c``'s init and of ``S~``): both 0.5,
  hard-coded in the official code;
* ``variant``: ``code`` (default; the official code, which produced the published numbers) or ``paper``
  (the paper's equations); the differences are tabulated in :mod:`lwbench.methods.c2f.module`;
* ``ablation``: ``none`` or Figure 4's cases ``A`` (no coarse selection), ``B`` (no SparsePCA), ``C`` (no
  soft thresholding), ``D`` (no weight bridging), docs/protocol.md §8.10;
* ``profile``: ``released`` (the released fine settings, the default) or ``paper_best`` (the paper's
  sensitivity optima, docs/protocol.md §9.4: λ=3 on both datasets, w_cr=0.5 / 0.3 and t^r=5 / 3 on Gowalla /
  Yelp2020). The paper states them only for those two datasets, so ``paper_best`` is keyed by the dataset
  name (``gowalla``, ``yelp2020``) and is an error on any other; it sets ``threshold``, ``gate`` and
  ``fine_topk``, which must then be left at their released values (or already equal the profile's);
* ``coarse_seed``: the seed of the coarse stage and of the module's initialisation. Default 2024, the
  paper's protocol (every fine seed starts from the seed-2024 coarse checkpoint, docs/protocol.md §11.5 item 12);
  ``-1`` is the fully seeded protocol (the coarse stage uses the run's seed, one coarse run per seed).
  The fine stage always uses the run's seed;
* ``fine_layers``: the released Yelp2020 seed-2025 fine run used 4 layers over a 3-layer coarse stage
  (docs/protocol.md §11.5 item 10);
* ``fill_budget``: grow ``m^c`` and ``m^r`` as well (keeping their ratio) to the largest configuration that
  fits; on under the storage convention (``storage_options``), where every method uses its bytes, and in
  tables that compare methods at one budget (``comparison_options``: Table 3, the budget curve), so that C2F
  stores 95-100% of the budget there as every other method does. Table 4 and Figures 4-6, which study C2F
  itself, keep the released 300 + 100.

Budget rule (docs/protocol.md §5.1, §5.5): the count is ``m^c d + t^c N + m^r d + t^r m^c``. If the configured
``(m^c, m^r)`` fits the budget it is kept - the released 300 + 100 fits ``500buckets`` on every dataset
(Gowalla 194,078, Yelp2020 284,796, Amazon-book 340,884). Otherwise both are scaled down by the same
factor, keeping their ratio: the largest ``m^c`` below the configured one with
``m^r = floor(m^c * m^r_configured / m^c_configured)`` that fits. With ``scale_to_budget=false`` a
configuration that does not fit is an error. Either way a budget below the smallest configuration
(``t^c`` and ``t^r`` still distinct columns per row) is an error that names that smallest budget.

Layers come from the dataset card (Gowalla 3, Yelp2020 4, Amazon-book 4, as the README and the paper say);
the released Yelp2020 logs used 3 (docs/protocol.md §9.3), which the C2F paper's reproduction targets set per
seed (docs/protocol.md §12.5 item 6).
Amazon-book: the official C2F code accepts only Gowalla and Yelp2020 and no logs exist, so C2F on
Amazon-book (the card's L=4, m^c=300, the released fine settings) is a **[suite]** configuration.
"""
from __future__ import annotations

import math

from lwbench.budget import BudgetError, ParamCount
from lwbench.methods.c2f.module import (
    ABLATIONS,
    FINE_STAGE,
    VARIANTS,
    CoarseToFineTable,
    FineSettings,
    coarse_to_fine_count,
)
from lwbench.options import ConfigError, Option, integers, log_uniform, uniform
from lwbench.plugin import BuildContext, Method, Stage
from lwbench.registry import register

FULLY_SEEDED = -1          # coarse_seed: one coarse stage per run seed
PROFILES = ("released", "paper_best")
PROFILE_OPTIONS = ("threshold", "gate", "fine_topk")
# docs/protocol.md §9.4: the optima stated in the paper's sensitivity analysis (section 4.4), per dataset.
PAPER_BEST = {"gowalla": {"threshold": 3.0, "gate": 0.5, "fine_topk": 5},
              "yelp2020": {"threshold": 3.0, "gate": 0.3, "fine_topk": 3}}
# What the coarse stage (and the module's initialisation) depends on; the stage is shared by these.
COARSE_OPTIONS = ("coarse_buckets", "coarse_topk", "coarse_anchor_weight", "dim")


@register
class C2F(Method):
    name = "c2f"
    description = "coarse LEGCF meta-embeddings refined by a sparse fine codebook in a second stage"
    options = {
        "coarse_buckets": Option(300, min=1, help="m^c: coarse meta-embeddings (METIS parts)"),
        "fine_buckets": Option(100, min=1, help="m^r: fine meta-embeddings"),
        "coarse_topk": Option(2, min=1, help="t^c: coarse meta-embeddings per entity"),
        # tune searches the three Figure-5 factors whose optima the paper states (λ, w_cr, t^r), over the
        # Figure-5 grids' spans; d^r is left out (the paper states no optimum, and each value is a new SparsePCA)
        "fine_topk": Option(4, min=1, help="t^r: fine meta-embeddings per coarse one", search=integers(2, 6)),
        "fine_components": Option(80, min=1, help="d^r: SparsePCA components of the fine codebook"),
        "threshold": Option(1.0, min=0, help="λ: soft threshold of the fine codebook", search=log_uniform(0.5, 10)),
        "gate": Option(0.2, min=0, max=1, help="w_cr: weight of the fine refinement in the coarse rows",
                       search=uniform(0.1, 0.9)),
        "ablation": Option("none", choices=ABLATIONS, help="Figure 4's cases: remove one component"),
        "variant": Option("code", choices=VARIANTS, help="the official code's behaviour or the paper's equations"),
        "profile": Option("released", choices=PROFILES, help="the released fine settings or the paper's optima"),
        "coarse_anchor_weight": Option(0.5, min=0, max=1, help="w* of the coarse assignment's METIS init"),
        "fine_anchor_weight": Option(0.5, min=0, max=1, help="w* of the fine assignment's METIS init"),
        "coarse_seed": Option(2024, min=0, special={FULLY_SEEDED: "the run's seed"},
                              help="seed of the coarse stage and of the module's initialisation"),
        "dim": Option(128, min=1, help="embedding dimension d"),
        "fine_lr": Option(3e-3, above=0, help="the fine stage's learning rate"),
        "fine_batch_size": Option(32768, min=1, help="the fine stage's batch size"),
        "fine_layers": Option(0, min=1, special={0: "the run's layers"}, help="the fine stage's LightGCN layers"),
        "scale_to_budget": Option(True, help="shrink m^c and m^r (keeping their ratio) to fit the budget"),
        "fill_budget": Option(False, help="also grow m^c and m^r (keeping their ratio) to the largest that fits"),
    }
    # At equal memory every method uses the budget (docs/protocol.md §5.2): the released 300 + 100 would store
    # far less than most byte budgets, so under the storage convention C2F grows as well as shrinks.
    storage_options = {"fill_budget": True}
    comparison_options = {"fill_budget": True}   # Table 3 and the budget curve: m^c, m^r grown to the budget
    # docs/protocol.md §8.1 / §9.3: the coarse stage's settings (the fine stage changes lr and batch size).
    trainer_defaults = {"batch_size": 8192, "lr": 1e-3, "l2_factor": 5.0, "eval_every": 5,
                        "patience_fixed": 5, "patience_update": 5, "max_epochs": 900}
    # The fine codebook's SparsePCA fit (100 x 128 rows, d^r = 80) dominates a one-epoch contract test: 15 s on CPU.
    smoke_options = {"fine_buckets": 16, "fine_components": 4}

    def configure(self, options: dict, budget: int | None, stats) -> dict:
        options = with_profile(options, stats.name)
        validate(options, stats.n_entities)
        if budget is None:
            return options
        n, sizes = stats.n_entities, (options["coarse_buckets"], options["fine_buckets"])
        if options["fill_budget"]:
            largest = largest_fitting(options, budget, n)
            # Filling grows the sizes; shrinking them is scale_to_budget's to allow (below).
            if largest is not None and (largest >= sizes[0] or options["scale_to_budget"]):
                return {**options, "coarse_buckets": largest, "fine_buckets": largest * sizes[1] // sizes[0]}
        if count_for(options, *sizes, n).table3 <= budget:
            return options
        smallest = smallest_sizes(options)
        smallest_budget = count_for(options, *smallest, n).table3
        if not options["scale_to_budget"]:
            raise BudgetError(f"c2f with m^c={sizes[0]}, m^r={sizes[1]} needs a budget of at least "
                              f"{count_for(options, *sizes, n).table3} parameters; got {budget}. Raise the budget, "
                              "lower c2f.coarse_buckets / c2f.fine_buckets, or set c2f.scale_to_budget=true")
        for coarse in range(sizes[0] - 1, smallest[0] - 1, -1):
            fine = coarse * sizes[1] // sizes[0]
            if count_for(options, coarse, fine, n).table3 <= budget:
                return {**options, "coarse_buckets": coarse, "fine_buckets": fine}
        raise BudgetError(f"c2f needs a budget of at least {smallest_budget} parameters (the smallest configuration "
                          f"with the ratio m^c:m^r = {sizes[0]}:{sizes[1]} is m^c={smallest[0]}, m^r={smallest[1]} "
                          f"with t^c={options['coarse_topk']}, t^r={options['fine_topk']}, d={options['dim']}, "
                          f"N={n}); got {budget}")

    def planned_count(self, options: dict, stats) -> ParamCount:
        return count_for(options, options["coarse_buckets"], options["fine_buckets"], stats.n_entities)

    def stages(self, options: dict) -> list[Stage]:
        seed = None if options["coarse_seed"] == FULLY_SEEDED else options["coarse_seed"]
        fine_trainer = {"lr": options["fine_lr"], "batch_size": options["fine_batch_size"]}
        if options["fine_layers"]:
            fine_trainer["layers"] = options["fine_layers"]
        return [Stage("coarse", two_phase=True, seed=seed, shared={key: options[key] for key in COARSE_OPTIONS}),
                Stage(FINE_STAGE, two_phase=True, start_from_best=True, trainer=fine_trainer)]

    def build(self, ctx: BuildContext) -> CoarseToFineTable:
        o = ctx.options
        fine = FineSettings(n_fine=o["fine_buckets"], per_row=o["fine_topk"], components=o["fine_components"],
                            threshold=o["threshold"], gate=o["gate"], anchor_weight=o["fine_anchor_weight"],
                            variant=o["variant"], ablation=o["ablation"])
        return CoarseToFineTable(ctx, o["coarse_buckets"], o["coarse_topk"], o["dim"], o["coarse_anchor_weight"], fine)

    def label(self, options: dict) -> str:
        parts = ["c2f"]
        if options["variant"] != "code":
            parts.append(options["variant"])
        if options["profile"] != "released":
            parts.append(options["profile"].replace("_", ""))
        if options["ablation"] != "none":
            parts.append(f"case{options['ablation']}")
        seed = options["coarse_seed"]
        if seed != C2F.options["coarse_seed"].default:
            parts.append("coarse-per-seed" if seed == FULLY_SEEDED else f"coarse{seed}")
        return "-".join(parts)


def count_for(options: dict, n_coarse: int, n_fine: int, n_entities: int) -> ParamCount:
    return coarse_to_fine_count(n_coarse, n_fine, options["coarse_topk"], options["fine_topk"], options["dim"],
                                n_entities)


def largest_fitting(options: dict, budget: int, n_entities: int) -> int | None:
    """The largest ``m^c`` (at most N, as METIS parts) whose configuration at the configured ratio fits
    ``budget``, or ``None`` if not even the smallest does; the count grows with ``m^c``, so bisect."""
    coarse, fine = options["coarse_buckets"], options["fine_buckets"]
    low, high = smallest_sizes(options)[0], max(1, n_entities * coarse // max(coarse, fine))

    def fits(m: int) -> bool:
        return count_for(options, m, m * fine // coarse, n_entities).table3 <= budget

    if low > high or not fits(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def smallest_sizes(options: dict) -> tuple[int, int]:
    """The smallest ``(m^c, m^r)`` with the configured ratio that still holds ``t^c`` and ``t^r`` distinct
    columns per row."""
    coarse, fine = options["coarse_buckets"], options["fine_buckets"]
    smallest = max(options["coarse_topk"], math.ceil(options["fine_topk"] * coarse / fine))
    return smallest, smallest * fine // coarse


def with_profile(options: dict, dataset: str) -> dict:
    """Apply ``profile=paper_best`` (see the module docstring); ``released`` changes nothing."""
    if options["profile"] == "released":
        return dict(options)
    if dataset not in PAPER_BEST:
        raise ConfigError(f"c2f.profile=paper_best is defined for {', '.join(PAPER_BEST)} only (the paper states "
                          f"its optima for those datasets), not for {dataset!r}; use profile=released and set "
                          f"{', '.join(PROFILE_OPTIONS)} yourself")
    best = PAPER_BEST[dataset]
    for key in PROFILE_OPTIONS:
        if options[key] not in (C2F.options[key].default, best[key]):
            raise ConfigError(f"c2f.profile=paper_best sets c2f.{key}={best[key]}; it conflicts with "
                              f"c2f.{key}={options[key]} (use profile=released to choose {key} yourself)")
    return {**options, **best}


def validate(options: dict, n_entities: int) -> None:
    """What the declarations cannot say: checks across options and against the dataset."""
    o = options
    if o["coarse_topk"] > o["coarse_buckets"] or o["fine_topk"] > o["fine_buckets"]:
        raise ConfigError(f"c2f needs coarse_topk <= coarse_buckets and fine_topk <= fine_buckets (distinct "
                          f"meta-embeddings per row), got t^c={o['coarse_topk']}, m^c={o['coarse_buckets']}, "
                          f"t^r={o['fine_topk']}, m^r={o['fine_buckets']}")
    if max(o["coarse_buckets"], o["fine_buckets"]) > n_entities:
        raise ConfigError(f"c2f.coarse_buckets and c2f.fine_buckets are METIS part counts and cannot exceed the "
                          f"N={n_entities} entities")
    if o["variant"] == "paper" and o["fine_buckets"] > o["coarse_buckets"]:
        raise ConfigError("c2f.variant=paper selects the fine rows without replacement, so it needs "
                          f"fine_buckets <= coarse_buckets (got {o['fine_buckets']} > {o['coarse_buckets']})")
