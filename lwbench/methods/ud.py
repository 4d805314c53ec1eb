"""UD: the full, unified-dimension embedding table (docs/protocol.md §6.1) - the unbudgeted reference.

UD-128 and UD-64 of Table 3 are ``ud`` with ``dim=128`` (default) and ``--set ud.dim=64``.
"""
import torch
from torch import nn

from lwbench.budget import ParamCount
from lwbench.options import Option
from lwbench.plugin import STORE_DTYPE, BuildContext, EmbeddingModule, InferenceState, Method
from lwbench.registry import register


class FullTable(EmbeddingModule):
    def __init__(self, ctx: BuildContext, dim: int, init_std: float):
        super().__init__(ctx)
        self.table = nn.Parameter(torch.randn(self.n_entities, dim, device=ctx.device) * init_std)

    def layer0(self) -> torch.Tensor:
        return self.table

    def inference_state(self) -> InferenceState:
        return InferenceState(values={"table": self.table.detach()})


@register
class UD(Method):
    name = "ud"
    description = "full N x d embedding table (no compression); ignores the budget"
    options = {"dim": Option(128, min=1, help="embedding dimension d"),
               "init_std": Option(0.1, above=0, help="standard deviation of the N(0, std^2) initialization"),
               "store_dtype": STORE_DTYPE}
    budgeted = False

    def planned_count(self, options: dict, stats) -> ParamCount:
        values = stats.n_entities * options["dim"]
        return ParamCount(table3=values, float_values=values)

    def build(self, ctx: BuildContext) -> FullTable:
        return FullTable(ctx, ctx.options["dim"], ctx.options["init_std"])

    def label(self, options: dict) -> str:
        return f"ud-{options['dim']}"
