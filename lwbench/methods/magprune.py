"""Magnitude pruning: the cheap floor every lightweight-embedding method should beat.

Train a full ``N x d`` table (as UD, early stopping; this stage is over budget, so it is not
reported), keep its largest-magnitude entries up to the budget (one global top-k over the best
checkpoint), then fine-tune with that mask fixed (``V * M`` on every forward, early stopping,
reported). Recent benchmarks of embedding compression found this train-prune-fine-tune recipe hard
to beat. The table is stored in its sparse layout (CSR or a bitmap, with the kept values;
docs/protocol.md §5.2), which the forward pass reads at inference.
"""
import torch

from lwbench.methods.common.pruning import PrunableTable, PrunedEmbedding, PrunedToBudget, largest_entries
from lwbench.options import TO_BUDGET, Option
from lwbench.plugin import STORE_DTYPE, BuildContext, Method, Stage
from lwbench.registry import register

DENSE, FINETUNE = "dense", "finetune"


class MagnitudePruned(PrunedEmbedding):
    def __init__(self, ctx: BuildContext):
        options = ctx.options
        weight = torch.randn(ctx.interactions.n_entities, options["dim"], device=ctx.device) * options["init_std"]
        super().__init__(ctx, {"table": PrunableTable(weight)}, options["target_nnz"])

    def layer0(self) -> torch.Tensor:
        return self.tables_in_use()["table"]

    def rows(self, entities: torch.Tensor) -> torch.Tensor:
        return self.rows_in_use({"table": entities})["table"]

    @torch.no_grad()
    def begin_stage(self, stage: Stage) -> None:
        if stage.name == FINETUNE:
            table = self.tables["table"]
            table.fix_mask(largest_entries(table.margin(), self.target))
            table.weight.mul_(table.mask)


@register
class MagPrune(PrunedToBudget, Method):
    name = "magprune"
    description = "train a full table, keep its largest entries up to the budget, fine-tune under that mask"
    options = {"dim": Option(128, min=1, help="embedding dimension d"),
               "init_std": Option(0.1, above=0, help="standard deviation of the dense table's N(0, std^2) init"),
               "target_nnz": Option(0, min=1, special=TO_BUDGET, help="largest entries kept for fine-tuning"),
               "store_dtype": STORE_DTYPE}

    def stages(self, options: dict) -> list[Stage]:
        return [Stage(DENSE, reported=False), Stage(FINETUNE, start_from_best=True)]

    def build(self, ctx: BuildContext) -> MagnitudePruned:
        return MagnitudePruned(ctx)
