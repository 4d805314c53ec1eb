"""CERP: compact compositional embeddings via regularized pruning (Liang et al., ICDM'23; docs/protocol.md §6.4).

Two meta tables ``P, Q`` (``b x d``, Xavier) compose every entity: ``e_x = P~[x mod b] + Q~[x // ceil(N/b)]``
(or their concatenation, each table ``d/2`` wide), with ``P~ = sign(P) * ReLU(|P| - sigmoid(S_p))`` and
likewise ``Q~``. The element-wise thresholds start at -100 and rise through their own weight decay.

Prune stage: BPR + L2 of the common trainer plus the regularized-pruning loss
``-gamma * ||tanh(eta * E_batch)||_F^2`` over the layer-0 rows of the batch's distinct users and items
(``gamma`` starts at 1 and halves once per official epoch, ``eta = 100``), which rewards the two tables
for zeroing complementary coordinates. It ends the first time ``nnz(P~) + nnz(Q~)`` fits the target
(checked after every step). The target is one total over both tables (docs/protocol.md §6.4): with
``target_rule=exact`` (the default) the masks then keep exactly the target's largest soft-thresholded
values of ``P~`` and ``Q~`` together (ranked by ``|P| - sigmoid(S_P)`` and likewise, so the ranking goes
on below the values that step set to zero), and a prune stage whose ``search_epochs`` end above the
target keeps the target's largest values too; with ``target_rule=first_within`` (the official rule) the
masks are the non-zeros of the first step within the target, and a stage that never gets there fails
the run. The diagnostics record which happened (``mask_rule``, ``mask_note``).
Retrain stage (reported): ``P <- P_init * M_P``, ``Q <- Q_init * M_Q``, masks applied on every forward.
The two tables are stored as one sparse layout of ``P`` stacked over ``Q`` (``2b x w``: CSR or a bitmap,
with the kept values; docs/protocol.md §5.2), whose bytes depend only on the kept values' total, and the
forward pass reads it at inference.

Sizing (docs/protocol.md §5.5): ``b = floor(B / (2 * w * (1 - sparsity)))`` with the nominal ``sparsity = 0.5``
(``w = d``, or ``d/2`` for concat), pruned to ``min(B, 2 * b * w)`` stored values.

[suite] ``threshold_lr`` defaults to 1e-2, not the official 1e-3: the official prune stage takes
steps of 60 rows, about 81k steps per Gowalla epoch, so weight decay lifts the thresholds from -100
to the pruning range (about -3.5) within 1-2 epochs; with the common trainer's batches of 8192
triplets (495 steps per Gowalla epoch) 1e-3 would need about 195 epochs, far past the 50-epoch cap.

gamma's clock (docs/protocol.md §6.4): the official run halves gamma after every official epoch, one pass
over the ``n_train`` training pairs in steps of 10 pairs (``ceil(n_train / 10)`` steps, about 81k on
Gowalla), while its thresholds rise by about ``1e-3`` per step. An lwbench step moves the thresholds by
``threshold_lr``, i.e. as far as ``threshold_lr / 1e-3`` official steps, so it counts as that many official
steps (``10 * threshold_lr / 1e-3`` training pairs at the official pace), and gamma halves each time
those reach another ``n_train`` pairs. gamma then stands where it stood in the official run when the
thresholds reach the same height, whatever the batch size or ``threshold_lr``: about 0.5 when they
enter the pruning range on Gowalla, where halving per lwbench epoch left about 1e-6.
"""
import math

import torch
from torch import nn

from lwbench.budget import BudgetError
from lwbench.methods.common.pruning import TARGET_RULE, PrunableTable, ThresholdPruned, pruning_target, sparse_count
from lwbench.options import TO_BUDGET, Option
from lwbench.plugin import STORE_DTYPE, BuildContext, Method, Stage, Step
from lwbench.registry import register

COMBINES = ("add", "concat")
OFFICIAL_PAIRS_PER_STEP = 10        # the official prune stage's batch: 10 user groups (one training pair each)
OFFICIAL_THRESHOLD_LR = 1e-3        # the official prune stage's learning rate, thresholds included


def official_epochs(steps: int, threshold_lr: float, n_train: int) -> float:
    """Official prune epochs equivalent to ``steps`` lwbench steps at ``threshold_lr`` (module docstring):
    training pairs at the official pace over the official epoch's ``n_train`` pairs."""
    pairs = steps * OFFICIAL_PAIRS_PER_STEP * threshold_lr / OFFICIAL_THRESHOLD_LR
    return pairs / (OFFICIAL_PAIRS_PER_STEP * math.ceil(n_train / OFFICIAL_PAIRS_PER_STEP))


def table_width(options: dict) -> int:
    return options["dim"] // 2 if options["combine"] == "concat" else options["dim"]


def smallest_unique_buckets(n_entities: int) -> int:
    """The least ``b`` with ``ceil(N/b) <= b``, i.e. ``ceil(sqrt(N))``: below it two entities share
    both meta rows."""
    return math.isqrt(n_entities - 1) + 1


class CERPTables(ThresholdPruned):
    SEARCH = "prune"

    def __init__(self, ctx: BuildContext):
        options = ctx.options
        b, width = options["buckets"], table_width(options)
        tables = {}
        for name in ("P", "Q"):
            weight = nn.init.xavier_uniform_(torch.empty(b, width, device=ctx.device))
            threshold = torch.full((b, width), options["threshold_init"], device=ctx.device)
            tables[name] = PrunableTable(weight, threshold, keep_initial=True)
        super().__init__(ctx, tables, options["target_nnz"], options["threshold_lr"], "cerp")
        entities = torch.arange(ctx.interactions.n_entities, device=ctx.device)
        self.register_buffer("p_index", entities % b)
        self.register_buffer("q_index", entities // math.ceil(ctx.interactions.n_entities / b))
        self.combine = options["combine"]
        self.eta = options["eta"]
        self.gamma_init, self.gamma_decay = options["gamma_init"], options["gamma_decay"]
        self.n_train = int(ctx.interactions.train.nnz)
        # CPU buffers (read every step without a device sync), checkpointed with the module.
        self.register_buffer("search_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("gamma", torch.tensor(options["gamma_init"], dtype=torch.float64))

    def layer0(self) -> torch.Tensor:
        tables = self.tables_in_use()
        return self.combined(tables["P"][self.p_index], tables["Q"][self.q_index])

    def rows(self, entities: torch.Tensor) -> torch.Tensor:
        rows = self.rows_in_use({"P": self.p_index[entities], "Q": self.q_index[entities]})
        return self.combined(rows["P"], rows["Q"])

    def combined(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.cat((p, q), dim=1) if self.combine == "concat" else p + q

    def aux_loss(self, step: Step) -> torch.Tensor | None:
        if step.stage.name != self.SEARCH or self.masks_fixed:
            return None
        rows = torch.cat((torch.unique(step.users),
                          self.n_users + torch.unique(torch.cat((step.positives, step.negatives)))))
        return -float(self.gamma) * torch.tanh(self.eta * step.x0[rows]).square().sum()

    def after_step(self, step: Step) -> bool:
        if step.stage.name == self.SEARCH and not self.masks_fixed:
            self.search_steps.add_(1)
            epochs = official_epochs(int(self.search_steps), self.threshold_lr, self.n_train)
            self.gamma.fill_(self.gamma_init * self.gamma_decay ** math.floor(epochs))
        return super().after_step(step)

    def diagnostics(self) -> dict:
        thresholds = torch.cat([torch.sigmoid(t.threshold.detach()).flatten() for t in self.tables.values()])
        return {**super().diagnostics(), "gamma": float(self.gamma), "mean_sigmoid_threshold": float(thresholds.mean())}


@register
class CERP(Method):
    name = "cerp"
    description = "two soft-threshold-pruned meta tables composed per entity (regularized pruning), then retraining"
    options = {
        "dim": Option(128, min=1, help="embedding dimension d (each table d/2 wide with combine=concat)"),
        "combine": Option("add", choices=COMBINES, help="how the two meta rows compose an entity"),
        "sparsity": Option(0.5, min=0, below=1, help="nominal fraction of pruned values that sizes b"),
        "buckets": Option(0, min=1, special=TO_BUDGET, help="rows b of each meta table"),
        "target_nnz": Option(0, min=1, special=TO_BUDGET, help="stored values to prune down to"),
        "threshold_init": Option(-100.0, help="initial threshold s (the threshold in use is sigmoid(s))"),
        "threshold_lr": Option(1e-2, above=0, help="learning rate of the thresholds' optimizer group"),
        "gamma_init": Option(1.0, min=0, help="initial weight gamma of the regularized-pruning loss"),
        "gamma_decay": Option(0.5, min=0, max=1,
                              help="factor applied to gamma after every official prune epoch (see the docstring)"),
        "eta": Option(100.0, above=0, help="slope of tanh in the pruning loss"),
        "search_epochs": Option(50, min=1,
                                help="epochs the prune stage may take to reach the target (then "
                                     "target_rule=exact keeps the target's largest values; first_within fails "
                                     "the run)"),
        "target_rule": TARGET_RULE,
        "legacy_group_bpr": Option(False, help="the official per-user-group BPR (not implemented)"),
        "store_dtype": STORE_DTYPE,
    }
    prunes = True
    # A fast threshold clock, and no pruning loss (while gamma is large its gradient holds the thresholds
    # down, for longer than a one-epoch smoke test): every target is reached within one toy epoch.
    smoke_options = {"threshold_init": -4.0, "threshold_lr": 1.0, "gamma_init": 0.0}

    def configure(self, options: dict, budget: int, stats) -> dict:
        if options["legacy_group_bpr"]:
            raise NotImplementedError(
                "cerp.legacy_group_bpr is not implemented: the official per-user-group BPR (1 positive vs 5 "
                "negatives, summed over negatives) needs group-aligned batches that the common sampler does not "
                "produce; CERP trains with the common trainer's BPR (docs/protocol.md §6.4, lwbench adaptation)")
        width = table_width(options)
        n = stats.n_entities
        least = smallest_unique_buckets(n)
        per_bucket = 2 * width * (1.0 - options["sparsity"])  # kept values per bucket at the nominal sparsity
        b = options["buckets"] or min(n, math.floor(budget / per_bucket))
        if b < least:
            raise BudgetError(f"cerp needs at least {least} buckets on {stats.name} (ceil(N/b) <= b keeps every "
                              f"entity's pair of meta rows distinct); the smallest budget it supports is "
                              f"{math.ceil(least * per_bucket)} at sparsity {options['sparsity']}, got {budget}")
        # Sized from the budget, b is the largest at the nominal sparsity and the target is the budget itself
        # (docs/protocol.md §5.5: s = 0.49974 on Gowalla); with b given, the sparsity sets the target (docs/protocol.md §6.4).
        kept = math.floor(round(b * per_bucket, 6)) if options["buckets"] else 2 * b * width  # round: 0.2 * 25600
        target = pruning_target("cerp", options["target_nnz"], budget, kept)
        return {**options, "buckets": b, "target_nnz": target}

    def planned_count(self, options: dict, stats):
        return sparse_count(options["target_nnz"], 2 * options["buckets"], table_width(options))  # P over Q

    def stages(self, options: dict) -> list[Stage]:
        return CERPTables.schedule(options["search_epochs"])

    def build(self, ctx: BuildContext) -> CERPTables:
        return CERPTables(ctx)
