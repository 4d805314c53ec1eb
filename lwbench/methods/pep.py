"""PEP: learnable embedding sizes by soft-threshold pruning (Liu et al., ICLR'21; docs/protocol.md §6.3).

Search: a dense Xavier table ``V`` is soft-thresholded, ``V~ = sign(V) * ReLU(|V| - sigmoid(s))``;
the thresholds ``s`` (init -15) sit in their own optimizer group with weight decay 1e-5, which is
what raises them while ``sigmoid`` is saturated. ``nnz(V~)`` is checked after every step. With
``target_rule=exact`` (the default) the first step at which it fits the target fixes the mask
``M`` to exactly the target's largest soft-thresholded values (ranked by ``|V| - sigmoid(s)``, so the
ranking goes on below the values that step set to zero), and a search whose ``search_epochs`` end
above the target keeps the target's largest values too: every run stores the target's count, whatever
the last threshold step's jump. With ``target_rule=first_within`` (the official rule) the mask is
``M = 1[V~ != 0]`` at the first step within the target, and a search that never gets there fails
the run. The diagnostics record which happened (``mask_rule``, ``mask_note``). Retrain (reported):
``V <- V_init * M`` (lottery-ticket rewinding; ``re_init=true`` draws a fresh Xavier table instead),
thresholds off, ``V * M`` on every forward, early stopping as every method. The table is stored in its
sparse layout (CSR or a bitmap, with the kept values; docs/protocol.md §5.2), which the forward pass
reads at inference.
"""
import torch
from torch import nn

from lwbench.methods.common.pruning import TARGET_RULE, PrunableTable, PrunedToBudget, ThresholdPruned
from lwbench.options import TO_BUDGET, Option
from lwbench.plugin import STORE_DTYPE, BuildContext, Method, Stage
from lwbench.registry import register

GRANULARITIES = ("global", "dimension", "feature", "feature_dim")


def threshold_shape(granularity: str, n_entities: int, dim: int) -> tuple[int, int]:
    """One threshold per table, per column, per entity, or per entry (broadcast against ``V``)."""
    return {"global": (1, 1), "dimension": (1, dim), "feature": (n_entities, 1),
            "feature_dim": (n_entities, dim)}[granularity]


def xavier(rows: int, cols: int, device) -> torch.Tensor:
    return nn.init.xavier_uniform_(torch.empty(rows, cols, device=device))


class PEPTable(ThresholdPruned):
    def __init__(self, ctx: BuildContext):
        options = ctx.options
        dim = options["dim"]
        threshold = torch.full(threshold_shape(options["granularity"], ctx.interactions.n_entities, dim),
                               options["threshold_init"], device=ctx.device)
        table = PrunableTable(xavier(ctx.interactions.n_entities, dim, ctx.device), threshold, keep_initial=True)
        super().__init__(ctx, {"table": table}, options["target_nnz"], options["threshold_lr"], "pep")
        self.re_init = options["re_init"]

    def layer0(self) -> torch.Tensor:
        return self.tables_in_use()["table"]

    def rows(self, entities: torch.Tensor) -> torch.Tensor:
        return self.rows_in_use({"table": entities})["table"]

    def fresh_weights(self, table: PrunableTable) -> torch.Tensor | None:
        return xavier(*table.weight.shape, table.weight.device) if self.re_init else None

    def diagnostics(self) -> dict:
        threshold = self.tables["table"].threshold.detach()
        return {**super().diagnostics(), "mean_sigmoid_threshold": float(torch.sigmoid(threshold).mean())}


@register
class PEP(PrunedToBudget, Method):
    name = "pep"
    description = "soft-threshold pruning of a full table to the budget's density, then retraining under the mask"
    options = {
        "dim": Option(128, min=1, help="embedding dimension d"),
        "granularity": Option("feature_dim", choices=GRANULARITIES,
                              help="one threshold per table, per column, per entity or per entry"),
        "threshold_init": Option(-15.0, help="initial threshold s (the threshold in use is sigmoid(s))"),
        "threshold_lr": Option(1e-3, above=0, help="learning rate of the thresholds' optimizer group"),
        "search_epochs": Option(50, min=1, help="epochs the search may take to reach the target (then "
                                                "target_rule=exact keeps the target's largest values; "
                                                "first_within fails the run)"),
        "target_rule": TARGET_RULE,
        "re_init": Option(False, help="retrain from a fresh Xavier table instead of rewinding to the initial one"),
        "target_nnz": Option(0, min=1, special=TO_BUDGET, help="stored values to prune down to"),
        "store_dtype": STORE_DTYPE,
    }
    # A fast threshold clock: every target is reached within the few steps of one toy epoch.
    smoke_options = {"threshold_init": -4.0, "threshold_lr": 0.2}  # reaches 500buckets on synthetic in 12 steps

    def stages(self, options: dict) -> list[Stage]:
        return PEPTable.schedule(options["search_epochs"])

    def build(self, ctx: BuildContext) -> PEPTable:
        return PEPTable(ctx)
