"""QR: quotient-remainder compositional embedding (Shi et al., KDD'20; docs/protocol.md §6.2).

Entity ``x`` (global index) is ``W_q[x // b] o W_r[x mod b]``: a remainder table of ``b`` rows and a
quotient table of ``ceil(N/b)`` rows. The two partitions are complementary, so every entity gets a
distinct (quotient, remainder) pair. ``o`` is the element-wise product (``mult``, default), ``add``,
or ``concat`` (each table ``d/2`` wide). ``per_type=true`` gives users and items separate QR tables.

Sizing: the largest ``b`` with ``(b + ceil(N/b)) * w <= B`` (docs/protocol.md §5.5: Gowalla b=1560, q=46,
205,568 values); with ``per_type``, the pair ``(b_users, b_items)`` that stores the most values within
the budget, the most even split between the types among equals.

Init: Xavier-uniform per table (default) or ``N(0, init_std^2)``. Not DLRM's
``uniform_(W, sqrt(1/n))``, which sets the lower bound and makes every entry positive.
"""
import math

import numpy as np
import torch
from torch import nn

from lwbench.budget import BudgetError, ParamCount
from lwbench.options import TO_BUDGET, ConfigError, Option, one_of
from lwbench.plugin import STORE_DTYPE, BuildContext, EmbeddingModule, InferenceState, Method
from lwbench.registry import register

COMBINES = ("mult", "add", "concat")
INITS = ("xavier", "normal")


def rows_used(n: int, b: int) -> int:
    """Rows of a QR pair over ``n`` entities with ``b`` remainder buckets."""
    return b + math.ceil(n / b)


def row_costs(n: int, most: int) -> np.ndarray:
    """``rows_used(n, b)`` for ``b = 1 .. min(n, most)`` (index ``b - 1``)."""
    b = np.arange(1, max(1, min(n, most)) + 1, dtype=np.int64)
    return b + -(-n // b)


def largest_buckets(n: int, rows: int) -> int:
    """The largest ``b <= n`` with ``rows_used(n, b) <= rows``, or 0 if there is none."""
    fits = np.flatnonzero(row_costs(n, rows) <= rows)
    return int(fits[-1]) + 1 if len(fits) else 0


def best_split(n_users: int, n_items: int, rows: int) -> tuple[int, int]:
    """``(b_users, b_items)`` using the most rows ``<= rows``; ties go to the most even split
    (closest buckets-per-entity ratios). ``(0, 0)`` if no pair fits."""
    user_cost, item_cost = row_costs(n_users, rows), row_costs(n_items, rows)
    # largest b_items for every row allowance r = 0 .. rows
    best_item = np.zeros(rows + 1, dtype=np.int64)
    fits = item_cost <= rows
    np.maximum.at(best_item, item_cost[fits], np.flatnonzero(fits) + 1)
    best_item = np.maximum.accumulate(best_item)
    remaining = rows - user_cost
    valid = remaining >= 0
    b_users = np.flatnonzero(valid) + 1
    b_items = best_item[remaining[valid]]
    keep = b_items > 0
    if not keep.any():
        return 0, 0
    b_users, b_items = b_users[keep], b_items[keep]
    used = user_cost[b_users - 1] + item_cost[b_items - 1]
    imbalance = np.abs(b_users / n_users - b_items / n_items)
    best = np.lexsort((imbalance, -used))[0]
    return int(b_users[best]), int(b_items[best])


def smallest_rows(n: int) -> int:
    return int(row_costs(n, n).min())


class QRTables(EmbeddingModule):
    """One quotient and one remainder table per part (all entities, or users then items)."""

    def __init__(self, ctx: BuildContext, parts: list[tuple[str, int, int]]):
        """``parts``: (name, number of entities, remainder buckets b), in global-index order."""
        super().__init__(ctx)
        options = ctx.options
        self.combine = options["combine"]
        width = options["dim"] // 2 if self.combine == "concat" else options["dim"]
        self.tables = nn.ParameterDict()
        for name, count, b in parts:
            local = torch.arange(count, device=ctx.device)
            self.register_buffer(f"{name}_quotient_index", local // b)
            self.register_buffer(f"{name}_remainder_index", local % b)
            for kind, rows in (("quotient", math.ceil(count / b)), ("remainder", b)):
                self.tables[f"{name}_{kind}"] = nn.Parameter(self._init(rows, width, options, ctx.device))
        self.parts = [name for name, *_ in parts]

    @staticmethod
    def _init(rows: int, width: int, options: dict, device) -> torch.Tensor:
        table = torch.empty(rows, width, device=device)
        if options["init"] == "xavier":
            return nn.init.xavier_uniform_(table)
        return nn.init.normal_(table, std=options["init_std"])

    def index_pairs(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"{part}_quotient_index"), getattr(self, f"{part}_remainder_index")

    def part_rows(self, part: str, local: torch.Tensor | None = None) -> torch.Tensor:
        """Rows of the part's entities (``local``: their indices within the part; ``None``: all)."""
        quotient, remainder = self.index_pairs(part)
        if local is not None:
            quotient, remainder = quotient[local], remainder[local]
        q = self.tables[f"{part}_quotient"][quotient]
        r = self.tables[f"{part}_remainder"][remainder]
        return q * r if self.combine == "mult" else q + r if self.combine == "add" else torch.cat((q, r), dim=1)

    def layer0(self) -> torch.Tensor:
        rows = [self.part_rows(part) for part in self.parts]
        return torch.cat(rows) if len(rows) > 1 else rows[0]

    def rows(self, entities: torch.Tensor) -> torch.Tensor:
        """Only the requested rows: two table lookups per entity."""
        if len(self.parts) == 1:
            return self.part_rows(self.parts[0], entities)
        is_item = entities >= self.n_users
        out = torch.empty(len(entities), self.tables[f"{self.parts[0]}_quotient"].shape[1] * (
            2 if self.combine == "concat" else 1), device=entities.device)
        out[~is_item] = self.part_rows("user", entities[~is_item])
        out[is_item] = self.part_rows("item", entities[is_item] - self.n_users)
        return out

    def inference_state(self) -> InferenceState:
        # The (quotient, remainder) indices are arithmetic on the entity id: nothing to store.
        return InferenceState(values={name: table.detach() for name, table in self.tables.items()})


@register
class QR(Method):
    name = "qr"
    description = "quotient-remainder compositional embedding: two small tables combined per entity"
    options = {
        "dim": Option(128, min=1, help="embedding dimension d (each table d/2 wide with combine=concat)"),
        "combine": Option("mult", choices=COMBINES, help="how the quotient and remainder rows combine",
                          search=one_of(*COMBINES)),   # the three operations of the QR paper
        "init": Option("xavier", choices=INITS, help="Xavier-uniform per table, or N(0, init_std^2)"),
        "init_std": Option(0.3, above=0, help="standard deviation of init=normal"),
        "per_type": Option(False, help="separate QR tables for users and for items"),
        "buckets": Option(0, min=1, special=TO_BUDGET, help="remainder buckets b of the shared tables"),
        "user_buckets": Option(0, min=1, special=TO_BUDGET, help="remainder buckets of the user tables (per_type)"),
        "item_buckets": Option(0, min=1, special=TO_BUDGET, help="remainder buckets of the item tables (per_type)"),
        "store_dtype": STORE_DTYPE,
    }

    def configure(self, options: dict, budget: int, stats) -> dict:
        if options["combine"] == "concat" and options["dim"] % 2:
            raise ConfigError(f"qr.combine=concat needs an even qr.dim, got {options['dim']}")
        width = self.width(options)
        rows = budget // width
        if options["per_type"]:
            if options["buckets"]:
                raise ConfigError("qr.buckets applies without qr.per_type; set qr.user_buckets / qr.item_buckets")
            split = best_split(stats.n_users, stats.n_items, rows)
            b_users = options["user_buckets"] or split[0]
            b_items = options["item_buckets"] or split[1]
            least = smallest_rows(stats.n_users) + smallest_rows(stats.n_items)
            chosen = {"user_buckets": b_users, "item_buckets": b_items}
        else:
            if options["user_buckets"] or options["item_buckets"]:
                raise ConfigError("qr.user_buckets / qr.item_buckets need qr.per_type=true; set qr.buckets")
            chosen = {"buckets": options["buckets"] or largest_buckets(stats.n_entities, rows)}
            least = smallest_rows(stats.n_entities)
        configured = {**options, **chosen}
        if 0 in chosen.values() or self.planned_count(configured, stats).table3 > budget:
            raise BudgetError(f"qr ({'per type' if options['per_type'] else 'shared'}, {options['combine']}) cannot "
                              f"fit {budget} parameters{'' if 0 in chosen.values() else f' with {chosen}'}; the "
                              f"smallest budget it supports is {least * width}")
        return configured

    @staticmethod
    def width(options: dict) -> int:
        return options["dim"] // 2 if options["combine"] == "concat" else options["dim"]

    @staticmethod
    def parts(options: dict, stats) -> list[tuple[str, int, int]]:
        if options["per_type"]:
            return [("user", stats.n_users, options["user_buckets"]), ("item", stats.n_items, options["item_buckets"])]
        return [("entity", stats.n_entities, options["buckets"])]

    def planned_count(self, options: dict, stats) -> ParamCount:
        values = sum(rows_used(count, b) for _, count, b in self.parts(options, stats)) * self.width(options)
        return ParamCount(table3=values, float_values=values)

    def build(self, ctx: BuildContext) -> QRTables:
        return QRTables(ctx, self.parts(ctx.options, ctx.stats))
