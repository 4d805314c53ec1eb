"""Pruned embedding tables, shared by the pruning baselines (PEP, CERP, magnitude pruning).

All three train dense tables, fix a binary mask once, then keep training with the mask applied on
every forward: PEP and CERP fix it the first time their learnable soft thresholds bring the non-zeros
under the target (docs/protocol.md §6.3 and §6.4), magnitude pruning from the largest entries of a trained table.
A deployment keeps each masked table sparsely, as its non-zero values plus one position per value
(docs/protocol.md §5.5), so that is what :class:`PrunedEmbedding` counts and reports.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from lwbench.budget import BudgetError, ParamCount, index_width
from lwbench.plugin import BuildContext, EmbeddingModule, InferenceState, Stage, Step

logger = logging.getLogger(__name__)

THRESHOLD_WEIGHT_DECAY = 1e-5   # PEP and CERP: the weight decay that raises the thresholds (docs/protocol.md §6.3, §6.4)
# Below this threshold s, sigmoid(s) < 5e-5 prunes next to nothing of an initialized table; around this one
# (sigmoid 0.018, the scale of Xavier-initialized entries) the pruning is under way.
NOTHING_PRUNED_BELOW, PRUNING_UNDER_WAY = -10.0, -4.0


def pruning_target(method: str, requested: int, budget: int, dense: int) -> int:
    """How many values to keep: ``requested`` (0 means the budget), at most the dense size."""
    target = requested or min(budget, dense)
    if target > budget:
        raise BudgetError(f"{method}.target_nnz={target} exceeds the budget of {budget}; leave it 0 to use the budget")
    return target


def sparse_count(nnz: int, span: int) -> ParamCount:
    """Tables of ``span`` entries each stored sparsely: ``nnz`` float values and one flat position per value,
    priced at the narrowest type that addresses ``span`` entries (docs/protocol.md §5.2)."""
    return ParamCount(table3=nnz, float_values=nnz, int_indices=nnz, index_bytes=nnz * index_width(span))


class PrunedToBudget:
    """Method mixin for a full ``N x dim`` table pruned to ``target_nnz`` values (0: the budget): sizing and
    the planned count, which the pruned module reaches only after training (``prunes = True``)."""

    prunes = True

    def configure(self, options: dict, budget: int, stats) -> dict:
        target = pruning_target(self.name, options["target_nnz"], budget, stats.n_entities * options["dim"])
        return {**options, "target_nnz": target}

    def planned_count(self, options: dict, stats) -> ParamCount:
        return sparse_count(options["target_nnz"], stats.n_entities * options["dim"])


def soft_threshold(values: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``sign(v) * ReLU(|v| - threshold)``: entries with ``|v| <= threshold`` become exactly 0."""
    return torch.sign(values) * torch.relu(values.abs() - threshold)


def largest_magnitudes(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly ``min(k, numel)`` entries: those of largest ``|value|``."""
    flat = values.detach().abs().flatten()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[torch.topk(flat, min(k, flat.numel()), sorted=False).indices] = True
    return mask.view_as(values)


class PrunableTable(nn.Module):
    """A dense trainable table that is pruned once and then kept sparse.

    Before the mask is fixed the table in use is ``weight``, soft-thresholded by
    ``sigmoid(threshold)`` when a threshold is given (broadcast: one per table, column, row or entry);
    afterwards it is ``weight * mask`` and the threshold is no longer used. ``initial`` keeps the
    weights at construction (step 0) for lottery-ticket rewinding.
    """

    def __init__(self, weight: torch.Tensor, threshold: torch.Tensor | None = None, keep_initial: bool = False):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.threshold = None if threshold is None else nn.Parameter(threshold)
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool))
        # On the CPU wherever the table lives: read on every forward without a device sync.
        self.register_buffer("mask_fixed", torch.zeros((), dtype=torch.bool))
        self.register_buffer("initial", weight.detach().clone() if keep_initial else None)

    def forward(self) -> torch.Tensor:
        if bool(self.mask_fixed):
            return self.weight * self.mask
        if self.threshold is not None:
            return soft_threshold(self.weight, torch.sigmoid(self.threshold))
        return self.weight

    @torch.no_grad()
    def stored_mask(self) -> torch.Tensor:
        """Positions a deployment stores: the fixed mask, or the current non-zeros before that."""
        return self.mask if bool(self.mask_fixed) else self.forward() != 0

    def nnz(self) -> int:
        return int(self.stored_mask().sum())

    @torch.no_grad()
    def fix_mask(self, mask: torch.Tensor | None = None) -> None:
        """Fix the mask (default: the current non-zeros) and stop thresholding."""
        self.mask.copy_(self.stored_mask() if mask is None else mask)
        self.mask_fixed.fill_(True)

    @torch.no_grad()
    def rewind(self, fresh: torch.Tensor | None = None) -> None:
        """``weight <- initial * mask`` (lottery-ticket rewinding), or ``fresh * mask``."""
        start = self.initial if fresh is None else fresh
        if start is None:
            raise RuntimeError("rewind() needs keep_initial=True at construction or a fresh initialization")
        self.weight.copy_(start * self.mask)

    @torch.no_grad()
    def storage(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sparse values at the stored positions, the flat positions): what a deployment keeps."""
        positions = self.stored_mask().flatten().nonzero().squeeze(1)
        columns = self.weight.shape[1]
        coordinates = torch.stack((positions // columns, positions % columns))
        values = self.forward().flatten()[positions]
        # built from a mask's own positions (valid by construction), so torch's checks are opted out of
        return torch.sparse_coo_tensor(coordinates, values, self.weight.shape, check_invariants=False), positions


class PrunedEmbedding(EmbeddingModule):
    """Base of the pruning baselines: named :class:`PrunableTable` s, a target number of stored
    values, storage counted sparsely. Subclasses build ``X_0`` from the tables and decide when the
    masks are fixed."""

    def __init__(self, ctx: BuildContext, tables: dict[str, PrunableTable], target: int):
        super().__init__(ctx)
        self.tables = nn.ModuleDict(tables)
        self.target = target

    def nnz(self) -> int:
        return sum(table.nnz() for table in self.tables.values())

    @torch.no_grad()
    def round_stored_values(self) -> None:
        """The stored values are sparse copies of the weights (under the mask), so round the weights."""
        for table in self.tables.values():
            table.weight.copy_(table.weight.to(self.store_dtype).to(table.weight.dtype))

    @property
    def masks_fixed(self) -> bool:
        return all(bool(table.mask_fixed) for table in self.tables.values())

    def inference_state(self) -> InferenceState:
        state = InferenceState()
        for name, table in self.tables.items():
            state.values[name], state.indices[f"{name}_positions"] = table.storage()
            state.index_ranges[f"{name}_positions"] = table.weight.numel()
        return state

    def diagnostics(self) -> dict:
        nnz = self.nnz()
        return {"nnz": nnz, "target_nnz": self.target, "masks_fixed": self.masks_fixed,
                "density": nnz / sum(table.weight.numel() for table in self.tables.values())}


class ThresholdPruned(PrunedEmbedding):
    """PEP and CERP (docs/protocol.md §6.3, §6.4): a search stage trains weights and soft thresholds (the
    thresholds in their own optimizer group, whose weight decay raises them) and ends the first time
    the stored values fit the target (checked after every step); the retrain stage rewinds the
    weights to their initialization under the found masks. A search that uses all its ``search_epochs``
    without reaching the target fails the run rather than retraining an over-budget table. A search cut
    shorter by the run's epoch cap (``--epochs``, a smoke run) keeps the target's largest soft-thresholded
    values instead, says so in a warning, and records it (diagnostic ``search_cut_short``)."""

    SEARCH, RETRAIN = "search", "retrain"

    def __init__(self, ctx: BuildContext, tables: dict[str, PrunableTable], target: int, threshold_lr: float,
                 method: str):
        super().__init__(ctx, tables, target)
        self.threshold_lr = threshold_lr
        self.method = method
        self.search_epochs = ctx.options["search_epochs"]
        # Checkpointed with the module: epochs the search ran, and whether it was completed by magnitude.
        self.register_buffer("search_epochs_run", torch.zeros((), dtype=torch.int64))
        self.register_buffer("search_cut_short", torch.zeros((), dtype=torch.bool))
        self.threshold_init = ctx.options["threshold_init"]
        self.first_epoch_steps = 0   # steps of the search's first epoch, as seen by this process

    @classmethod
    def schedule(cls, search_epochs: int) -> list[Stage]:
        """The method's stages: the search (no early stopping, ended by the target), then the reported retrain."""
        return [Stage(cls.SEARCH, early_stopping=False, reported=False, trainer={"max_epochs": search_epochs}),
                Stage(cls.RETRAIN)]

    def param_groups(self, stage: Stage) -> list[dict]:
        groups = [{"params": [table.weight for table in self.tables.values()]}]
        if stage.name == self.SEARCH:
            groups.append({"params": [table.threshold for table in self.tables.values()],
                           "lr": self.threshold_lr, "weight_decay": THRESHOLD_WEIGHT_DECAY})
        return groups

    def after_step(self, step: Step) -> bool:
        if step.stage.name != self.SEARCH or self.masks_fixed:
            return False
        if step.epoch == 0:
            self.first_epoch_steps = step.batch + 1
        elif step.epoch == 1 and step.batch == 0 and self.first_epoch_steps:
            self.check_thresholds_can_rise(self.first_epoch_steps)   # a smoke run cut at one epoch never gets here
        if self.nnz() > self.target:
            return False
        for table in self.tables.values():
            table.fix_mask()
        return True

    def end_epoch(self, stage: Stage, epoch: int) -> bool:
        if stage.name == self.SEARCH:
            self.search_epochs_run.fill_(epoch)
        return super().end_epoch(stage, epoch)

    def check_thresholds_can_rise(self, steps_per_epoch: int) -> None:
        """Fail after the first search epoch, not after the last, when the search cannot succeed.

        Adam moves a threshold by at most about its learning rate per step, so in ``search_epochs`` of
        ``steps_per_epoch`` steps the thresholds rise at most ``threshold_lr * steps`` from
        ``threshold_init``. Ending below :data:`NOTHING_PRUNED_BELOW`, they would prune next to nothing:
        a small dataset (few steps per epoch) needs a faster threshold clock than a large one."""
        steps = steps_per_epoch * self.search_epochs
        if self.threshold_init + self.threshold_lr * steps >= NOTHING_PRUNED_BELOW:
            return
        needed = (PRUNING_UNDER_WAY - self.threshold_init) / (steps / 2)
        raise RuntimeError(
            f"{self.method}: the {self.SEARCH} stage cannot reach its target: in {self.search_epochs} epochs of "
            f"{steps_per_epoch} steps its thresholds rise at most {self.threshold_lr:g} per step from "
            f"{self.threshold_init:g}, to {self.threshold_init + self.threshold_lr * steps:.1f} (sigmoid < 5e-5), "
            f"where next to nothing is pruned; set {self.method}.threshold_lr={needed:.2g} (under way by half the "
            f"search), or give more {self.method}.search_epochs or a smaller trainer.batch_size")

    def end_stage(self, stage: Stage) -> None:
        if stage.name != self.SEARCH or self.masks_fixed:
            return
        nnz = self.nnz()
        if int(self.search_epochs_run) >= self.search_epochs:
            raise RuntimeError(
                f"{self.method}: the {self.SEARCH} stage ended with {nnz:,} non-zeros, above the target of "
                f"{self.target:,}; let the thresholds rise faster ({self.method}.threshold_lr), search longer "
                f"({self.method}.search_epochs and --epochs), or give a larger budget")
        self.keep_largest()
        logger.warning("%s: the %s stage was cut short by the epoch cap after %d of %d epochs with %s non-zeros; "
                       "kept the %s largest soft-thresholded values (a smoke run: give --epochs >= %d for the "
                       "real search)", self.method, self.SEARCH, int(self.search_epochs_run), self.search_epochs,
                       f"{nnz:,}", f"{self.target:,}", self.search_epochs)

    @torch.no_grad()
    def keep_largest(self) -> None:
        """Fix the masks to the ``target`` largest soft-thresholded values over all tables."""
        values = torch.cat([table().flatten() for table in self.tables.values()])
        keep = largest_magnitudes(values, self.target) & (values != 0)
        for table, mask in zip(self.tables.values(), keep.split([t.weight.numel() for t in self.tables.values()])):
            table.fix_mask(mask.view_as(table.weight))
        self.search_cut_short.fill_(True)

    def diagnostics(self) -> dict:
        return {**super().diagnostics(), "search_cut_short": bool(self.search_cut_short)}

    def begin_stage(self, stage: Stage) -> None:
        if stage.name == self.RETRAIN:
            for table in self.tables.values():
                table.rewind(self.fresh_weights(table))

    def fresh_weights(self, table: PrunableTable) -> torch.Tensor | None:
        """A new initialization to retrain from, or None to rewind to the step-0 weights."""
        return None
