"""Pruned embedding tables, shared by the pruning baselines (PEP, CERP, magnitude pruning).

All three train dense tables, fix a binary mask once, then keep training with the mask applied on
every forward: PEP and CERP fix it when their learnable soft thresholds bring the non-zeros to the
target (by default keeping exactly the target's largest soft-thresholded values, ``target_rule``,
docs/protocol.md §6.3 and §6.4), magnitude pruning from the largest entries of a trained table.
A deployment keeps a masked table in a standard sparse layout (:class:`SparseLayout`, docs/protocol.md
§5.2): CSR (narrow column indices and row pointers) or a packed bitmap, each with the kept values,
whichever takes fewer bytes. That layout is the module's :class:`InferenceState`, what the plan prices
before training, and what the forward pass reads at inference.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from lwbench.budget import BudgetError, ParamCount, index_width
from lwbench.options import Option
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


CSR, BITMAP = "csr", "bitmap"


@dataclass(frozen=True)
class SparseLayout:
    """How a deployment stores a pruned ``rows x cols`` table of ``nnz`` kept values (docs/protocol.md §5.2):
    the values in row-major order (at the store dtype) plus their positions, as the smaller of

    * CSR: one column index per value at the narrowest unsigned width that holds ``cols`` (1 byte for
      ``d <= 256``), and ``rows + 1`` row pointers at the narrowest width that holds ``nnz``:
      ``nnz * index_width(cols) + (rows + 1) * index_width(nnz + 1)`` bytes;
    * a bitmap: one bit per table entry, packed into ``ceil(rows * cols / 8)`` bytes.

    CSR when it is strictly smaller, else the bitmap. The choice does not depend on the values' dtype, and
    the bytes never fall as ``nnz`` grows (so a byte budget can be bisected over the kept values)."""

    rows: int
    cols: int
    nnz: int

    @property
    def csr_index_bytes(self) -> int:
        return self.nnz * index_width(self.cols) + (self.rows + 1) * index_width(self.nnz + 1)

    @property
    def bitmap_bytes(self) -> int:
        return math.ceil(self.rows * self.cols / 8)

    @property
    def kind(self) -> str:
        return CSR if self.csr_index_bytes < self.bitmap_bytes else BITMAP

    @property
    def index_bytes(self) -> int:
        """Bytes of the positions (column indices and row pointers, or the bitmap)."""
        return self.csr_index_bytes if self.kind == CSR else self.bitmap_bytes

    def count(self) -> ParamCount:
        """The stored inventory (float32 values; :func:`lwbench.plugin.plan_count` reprices them at the store
        dtype). Integer indices are CSR's column indices and row pointers; a bitmap is no integer index."""
        indices = self.nnz + self.rows + 1 if self.kind == CSR else 0
        return ParamCount(table3=self.nnz, float_values=self.nnz, int_indices=indices, index_bytes=self.index_bytes)


def sparse_count(nnz: int, rows: int, cols: int) -> ParamCount:
    """A ``rows x cols`` table pruned to ``nnz`` values, stored in its :class:`SparseLayout`."""
    return SparseLayout(rows, cols, nnz).count()


def narrow_indices(indices: torch.Tensor, span: int) -> torch.Tensor:
    """Non-negative ``indices`` below ``span`` stored at ``index_width(span)`` bytes each: ``uint8`` for one
    byte; for two, four or eight the unsigned bit pattern in ``int16`` / ``int32`` / ``int64`` (torch has no
    general unsigned 16- or 32-bit arithmetic). :func:`widen_indices` reads them back."""
    width = index_width(span)
    if width == 1:
        return indices.to(torch.uint8)
    dtype = {2: torch.int16, 4: torch.int32, 8: torch.int64}[width]
    if width < 8:
        half = 2 ** (8 * width - 1)
        indices = torch.where(indices >= half, indices - 2 * half, indices)
    return indices.to(dtype)


def widen_indices(stored: torch.Tensor) -> torch.Tensor:
    """The ``int64`` indices that :func:`narrow_indices` stored."""
    wide = stored.to(torch.int64)
    if stored.dtype in (torch.int16, torch.int32):
        wide = wide & (2 ** (8 * stored.element_size()) - 1)
    return wide


BIT_WEIGHTS = [1 << bit for bit in range(8)]


def pack_bits(flags: torch.Tensor) -> torch.Tensor:
    """A flat boolean tensor packed into ``ceil(n / 8)`` bytes: flag ``8k + j`` is bit ``j`` of byte ``k``."""
    padded = torch.zeros(math.ceil(flags.numel() / 8) * 8, dtype=torch.uint8, device=flags.device)
    padded[:flags.numel()] = flags
    weights = torch.tensor(BIT_WEIGHTS, dtype=torch.uint8, device=flags.device)
    return (padded.view(-1, 8) * weights).sum(dim=1, dtype=torch.int32).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` boolean flags that :func:`pack_bits` packed."""
    bits = torch.arange(8, device=packed.device, dtype=torch.uint8)
    return ((packed.unsqueeze(1) >> bits) & 1).flatten()[:n].bool()   # in bytes: no 4-byte copy of every flag


@torch.no_grad()
def encode_layout(table: torch.Tensor, mask: torch.Tensor, name: str) -> InferenceState:
    """``table``'s values under ``mask`` in its :class:`SparseLayout`: ``values[name]`` (row-major), and
    ``indices[name_columns]`` with ``indices[name_row_pointers]`` (CSR) or ``bitmaps[name_bitmap]``. Every
    index tensor has the element size its ``index_ranges`` entry prices, so the stored bytes are the
    tensors' ``nbytes``."""
    rows, cols = table.shape
    flags = mask.flatten()
    positions = flags.nonzero().squeeze(1)
    nnz = positions.numel()
    state = InferenceState(values={name: table.flatten()[positions]})
    if SparseLayout(rows, cols, nnz).kind == CSR:
        per_row = torch.bincount(positions // cols, minlength=rows)
        pointers = torch.cat((per_row.new_zeros(1), per_row.cumsum(0)))
        state.indices[f"{name}_columns"] = narrow_indices(positions % cols, cols)
        state.indices[f"{name}_row_pointers"] = narrow_indices(pointers, nnz + 1)
        state.index_ranges.update({f"{name}_columns": cols, f"{name}_row_pointers": nnz + 1})
    else:
        state.bitmaps[f"{name}_bitmap"] = pack_bits(flags)
    return state


def decode_layout(state: InferenceState, name: str, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    """The dense ``rows x cols`` table (in ``dtype``) that :func:`encode_layout` stored: the stored values at
    their positions, zeros elsewhere."""
    values = state.values[name].to(dtype)
    dense = torch.zeros(rows * cols, dtype=dtype, device=values.device)
    if f"{name}_bitmap" in state.bitmaps:
        dense.masked_scatter_(unpack_bits(state.bitmaps[f"{name}_bitmap"], rows * cols), values)
    else:
        pointers = widen_indices(state.indices[f"{name}_row_pointers"])
        row = torch.repeat_interleave(torch.arange(rows, device=values.device), pointers.diff(),
                                      output_size=values.numel())
        dense[row * cols + widen_indices(state.indices[f"{name}_columns"])] = values
    return dense.view(rows, cols)


def decode_rows(state: InferenceState, name: str, rows: torch.Tensor, n_rows: int, cols: int,
                dtype: torch.dtype) -> torch.Tensor:
    """Rows ``rows`` of the ``n_rows x cols`` table that :func:`encode_layout` stored, as :func:`decode_layout`
    gives them. A CSR layout reads only those rows' slices (its row pointers say where each starts); a bitmap
    holds no per-row offsets, so a reader of it decodes (popcounts) the whole table, and so does this."""
    if f"{name}_bitmap" in state.bitmaps:
        return decode_layout(state, name, n_rows, cols, dtype)[rows]
    pointers = widen_indices(state.indices[f"{name}_row_pointers"])
    starts, counts = pointers[rows], pointers[rows + 1] - pointers[rows]
    total = int(counts.sum())
    owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts, output_size=total)
    positions = starts[owner] + torch.arange(total, device=rows.device) - (counts.cumsum(0) - counts)[owner]
    out = torch.zeros(len(rows), cols, dtype=dtype, device=rows.device)
    out[owner, widen_indices(state.indices[f"{name}_columns"][positions])] = state.values[name][positions].to(dtype)
    return out


class PrunedToBudget:
    """Method mixin for a full ``N x dim`` table pruned to ``target_nnz`` values (0: the budget): sizing and
    the planned count, which the pruned module reaches only after training (``prunes = True``)."""

    prunes = True

    def configure(self, options: dict, budget: int, stats) -> dict:
        target = pruning_target(self.name, options["target_nnz"], budget, stats.n_entities * options["dim"])
        return {**options, "target_nnz": target}

    def planned_count(self, options: dict, stats) -> ParamCount:
        return sparse_count(options["target_nnz"], stats.n_entities, options["dim"])


def soft_threshold(values: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``sign(v) * ReLU(|v| - threshold)``: entries with ``|v| <= threshold`` become exactly 0."""
    return torch.sign(values) * torch.relu(values.abs() - threshold)


def largest_entries(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly ``min(k, numel)`` entries of ``scores``: the largest, ties going to the earlier
    position (a stable sort, so the same mask on every device, where ``topk`` may break ties differently)."""
    flat = scores.detach().flatten()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
    return mask.view_as(scores)


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
    def margin(self) -> torch.Tensor:
        """``|weight| - sigmoid(threshold)`` (``|weight|`` without a threshold), the soft threshold before its
        ReLU: where positive it is the magnitude of the soft-thresholded value, and below zero it ranks the
        entries the thresholds set to zero by how close they came to staying."""
        magnitude = self.weight.detach().abs()
        if self.threshold is None:
            return magnitude
        return (magnitude - torch.sigmoid(self.threshold.detach())).expand_as(magnitude)


class PrunedEmbedding(EmbeddingModule):
    """Base of the pruning baselines: named :class:`PrunableTable` s of one width, a target number of stored
    values, stored as one :class:`SparseLayout` over the tables stacked row-wise (PEP and magnitude pruning:
    the ``N x d`` table; CERP: ``P`` over ``Q``, ``2b x w``), so that the stored bytes depend on the kept
    values' number only. Subclasses build ``X_0`` from :meth:`tables_in_use` and decide when the masks are
    fixed."""

    def __init__(self, ctx: BuildContext, tables: dict[str, PrunableTable], target: int):
        super().__init__(ctx)
        self.tables = nn.ModuleDict(tables)
        self.target = target
        widths = {table.weight.shape[1] for table in tables.values()}
        if len(widths) != 1:
            raise ValueError(f"pruned tables are stored stacked and need one width, got {sorted(widths)}")
        self.layout_name = "+".join(tables)
        self._stored = None       # (weights' versions, store dtype, stored state): the layout read at inference

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

    @torch.no_grad()
    def inference_state(self) -> InferenceState:
        """The stacked tables in use, under their stored positions (the fixed masks, or the current non-zeros
        before that), in their :class:`SparseLayout` (docs/protocol.md §5.2)."""
        tables = self.tables.values()
        return encode_layout(torch.cat([table() for table in tables]),
                             torch.cat([table.stored_mask() for table in tables]), self.layout_name)

    def tables_in_use(self) -> dict[str, torch.Tensor]:
        """Each table as the forward pass uses it. In training, and before the masks are fixed, the table's own
        forward; at inference with the masks fixed, the tables decoded from the stored layout
        (:meth:`stored_state`), which equal ``weight * mask`` value for value (docs/protocol.md §5.2). The
        stored state is encoded once per state of the weights and decoded at every call."""
        if self.training or not self.masks_fixed:
            return {name: table() for name, table in self.tables.items()}
        weights = [table.weight for table in self.tables.values()]
        stacked = decode_layout(self._stored_layout(), self.layout_name, sum(w.shape[0] for w in weights),
                                weights[0].shape[1], weights[0].dtype)
        return dict(zip(self.tables, stacked.split([w.shape[0] for w in weights])))

    def rows_in_use(self, wanted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The rows ``wanted[name]`` of each named table as :meth:`tables_in_use` gives them, at inference with
        the masks fixed read from the stored layout without decoding the other rows where the layout allows
        it (:func:`decode_rows`): what a deployment pays to form a few rows (docs/protocol.md §5.6)."""
        if self.training or not self.masks_fixed:
            tables = self.tables_in_use()
            return {name: tables[name][rows] for name, rows in wanted.items()}
        weights = [table.weight for table in self.tables.values()]
        heights = [w.shape[0] for w in weights]
        first = dict(zip(self.tables, itertools.accumulate([0, *heights])))   # each table's first stacked row
        stacked = decode_rows(self._stored_layout(), self.layout_name,
                              torch.cat([rows + first[name] for name, rows in wanted.items()]),
                              sum(heights), weights[0].shape[1], weights[0].dtype)
        return dict(zip(wanted, stacked.split([len(rows) for rows in wanted.values()])))

    def _stored_layout(self) -> InferenceState:
        """The stored state, encoded once per state of the weights and masks."""
        key = (tuple((t.weight.data_ptr(), t.weight._version, t.mask._version) for t in self.tables.values()),
               self.store_dtype)
        if self._stored is None or self._stored[0] != key:
            self._stored = (key, self.stored_state())
        return self._stored[1]

    def train(self, mode: bool = True):
        self._stored = None
        return super().train(mode)

    def diagnostics(self) -> dict:
        nnz = self.nnz()
        return {"nnz": nnz, "target_nnz": self.target, "masks_fixed": self.masks_fixed,
                "density": nnz / sum(table.weight.numel() for table in self.tables.values())}


EXACT, FIRST_WITHIN = "exact", "first_within"
TARGET_RULE = Option(
    EXACT, choices=(EXACT, FIRST_WITHIN),
    help="how the search fixes the mask: exact keeps exactly the target's largest soft-thresholded values once "
         "the non-zeros cross the target (or the search ends above it); first_within keeps the non-zeros of the "
         "first step within the target (the official rule: the kept count is wherever that step lands, and a "
         "search that ends above the target fails)")
# How the mask was fixed (diagnostic mask_rule; the code is checkpointed in the buffer mask_rule):
# reached: a step's non-zeros equalled the target; first_within: the first step within it, kept as it was;
# crossed: the first step within it, then the target's largest values (exact); stalled: search_epochs ended
# above the target, then the target's largest values (exact); cut_short: the epoch cap ended the search first.
MASK_RULES = ("not_fixed", "reached", "first_within", "crossed", "stalled", "cut_short")


class ThresholdPruned(PrunedEmbedding):
    """PEP and CERP (docs/protocol.md §6.3, §6.4): a search stage trains weights and soft thresholds (the
    thresholds in their own optimizer group, whose weight decay raises them) until the stored values fit
    the target (checked after every step); the retrain stage rewinds the weights to their initialization
    under the found masks.

    How the masks are fixed (option ``target_rule``):

    * ``exact`` (default): at the first step whose non-zeros fit the target, or when ``search_epochs``
      end above it, keep exactly ``target`` entries: those of largest soft-thresholded magnitude, the
      ranking continued below zero by the soft threshold's margin (:meth:`PrunableTable.margin`), ties
      broken by position (a stable sort), so every run stores the target's count whatever the last step's
      jump;
    * ``first_within`` (the official rule): keep the non-zeros of the first step within the target, as
      many as that step left; a search that uses all its ``search_epochs`` without reaching the target
      fails the run.

    A search cut shorter by the run's epoch cap (``--epochs``, a smoke run) keeps the target's largest
    values under either rule, says so in a warning, and records it (diagnostic ``search_cut_short``).
    The diagnostics record how the masks were fixed (``mask_rule``, ``mask_epoch``, ``mask_batch``,
    ``search_nnz``, ``mask_note``)."""

    SEARCH, RETRAIN = "search", "retrain"

    def __init__(self, ctx: BuildContext, tables: dict[str, PrunableTable], target: int, threshold_lr: float,
                 method: str):
        super().__init__(ctx, tables, target)
        self.threshold_lr = threshold_lr
        self.method = method
        self.search_epochs = ctx.options["search_epochs"]
        self.target_rule = ctx.options["target_rule"]
        # Checkpointed with the module: epochs the search ran, whether it was completed by magnitude, and
        # how the masks were fixed: the rule (an index of MASK_RULES), the search's epoch and batch (1-based;
        # batch 0: at the end of the stage) and the soft-thresholded non-zeros there.
        self.register_buffer("search_epochs_run", torch.zeros((), dtype=torch.int64))
        self.register_buffer("search_cut_short", torch.zeros((), dtype=torch.bool))
        self.register_buffer("mask_rule", torch.zeros((), dtype=torch.int64))
        self.register_buffer("mask_epoch", torch.zeros((), dtype=torch.int64))
        self.register_buffer("mask_batch", torch.zeros((), dtype=torch.int64))
        self.register_buffer("search_nnz", torch.zeros((), dtype=torch.int64))
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
        nnz = self.nnz()
        if nnz > self.target:
            return False
        if nnz == self.target or self.target_rule == FIRST_WITHIN:
            for table in self.tables.values():
                table.fix_mask()
            self.record_mask("reached" if nnz == self.target else "first_within", nnz, step.epoch + 1, step.batch + 1)
        else:
            self.keep_largest("crossed", nnz, step.epoch + 1, step.batch + 1)
        return True

    def end_epoch(self, stage: Stage, epoch: int) -> bool:
        if stage.name == self.SEARCH:
            self.search_epochs_run.fill_(epoch)
        return super().end_epoch(stage, epoch)

    def check_thresholds_can_rise(self, steps_per_epoch: int) -> None:
        """Fail after the first search epoch, not after the last, when the search cannot succeed.

        Adam moves a threshold by at most about its learning rate per step, so in ``search_epochs`` of
        ``steps_per_epoch`` steps the thresholds rise at most ``threshold_lr * steps`` from
        ``threshold_init``. Ending below :data:`NOTHING_PRUNED_BELOW`, they would prune next to nothing
        (and ``exact`` would keep the largest entries of a next-to-unpruned table: magnitude pruning, not
        the method): a small dataset (few steps per epoch) needs a faster threshold clock than a large one."""
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
        epochs = int(self.search_epochs_run)
        batch = 0   # at the end of the stage: the same whether or not this process ran its last epoch
        if epochs >= self.search_epochs:
            if self.target_rule == FIRST_WITHIN:
                raise RuntimeError(
                    f"{self.method}: the {self.SEARCH} stage ended with {nnz:,} non-zeros, above the target of "
                    f"{self.target:,}; let the thresholds rise faster ({self.method}.threshold_lr), search longer "
                    f"({self.method}.search_epochs and --epochs), give a larger budget, or keep the target's "
                    f"largest values ({self.method}.target_rule={EXACT})")
            self.keep_largest("stalled", nnz, epochs, batch)
            logger.warning("%s: the %s stage used its %d epochs and ended with %s non-zeros, above the target; "
                           "kept the %s largest soft-thresholded values (target_rule=%s)", self.method,
                           self.SEARCH, epochs, f"{nnz:,}", f"{self.target:,}", EXACT)
            return
        self.keep_largest("cut_short", nnz, epochs, batch)
        self.search_cut_short.fill_(True)
        logger.warning("%s: the %s stage was cut short by the epoch cap after %d of %d epochs with %s non-zeros; "
                       "kept the %s largest soft-thresholded values (a smoke run: give --epochs >= %d for the "
                       "real search)", self.method, self.SEARCH, epochs, self.search_epochs,
                       f"{nnz:,}", f"{self.target:,}", self.search_epochs)

    @torch.no_grad()
    def keep_largest(self, rule: str, nnz: int, epoch: int, batch: int) -> None:
        """Fix the masks to exactly ``target`` entries over all tables (CERP: ``P`` and ``Q`` together, whose
        sum is the target): those of largest soft-thresholded magnitude, ranked by :meth:`PrunableTable.margin`
        so that the ranking goes on below the values the thresholds set to zero; ties go to the earlier
        position (:func:`largest_entries`)."""
        tables = list(self.tables.values())
        keep = largest_entries(torch.cat([table.margin().flatten() for table in tables]), self.target)
        for table, mask in zip(tables, keep.split([t.weight.numel() for t in tables])):
            table.fix_mask(mask.view_as(table.weight))
        self.record_mask(rule, nnz, epoch, batch)

    def record_mask(self, rule: str, nnz: int, epoch: int, batch: int) -> None:
        self.mask_rule.fill_(MASK_RULES.index(rule))
        self.mask_epoch.fill_(epoch)
        self.mask_batch.fill_(batch)
        self.search_nnz.fill_(nnz)

    def mask_note(self) -> str:
        """One sentence saying how the masks were fixed (diagnostic ``mask_note``)."""
        rule = MASK_RULES[int(self.mask_rule)]
        nnz, target = int(self.search_nnz), self.target
        at = f"epoch {int(self.mask_epoch)}" + (f", step {int(self.mask_batch)}" if int(self.mask_batch) else "")
        largest = f"kept the target's {target:,} largest soft-thresholded values"
        return {
            "not_fixed": "the masks are not fixed yet",
            "reached": f"the search's non-zeros reached the target ({target:,}) exactly at {at}",
            "first_within": f"first_within: kept the {nnz:,} non-zeros of the first step within the target, at "
                            f"{at} ({nnz / target:.1%} of the target)",
            "crossed": f"exact: {largest} after the search crossed the target at {at} ({nnz:,} non-zeros there)",
            "stalled": f"exact: {largest} after the search's {int(self.mask_epoch)} epochs ended above the target "
                       f"({nnz:,} non-zeros)",
            "cut_short": f"{largest}: the epoch cap cut the search short at {at} ({nnz:,} non-zeros there)",
        }[rule]

    def diagnostics(self) -> dict:
        return {**super().diagnostics(), "search_cut_short": bool(self.search_cut_short),
                "target_rule": self.target_rule, "mask_rule": MASK_RULES[int(self.mask_rule)],
                "mask_epoch": int(self.mask_epoch), "mask_batch": int(self.mask_batch),
                "search_nnz": int(self.search_nnz), "mask_note": self.mask_note()}

    def begin_stage(self, stage: Stage) -> None:
        if stage.name == self.RETRAIN:
            for table in self.tables.values():
                table.rewind(self.fresh_weights(table))

    def fresh_weights(self, table: PrunableTable) -> torch.Tensor | None:
        """A new initialization to retrain from, or None to rewind to the step-0 weights."""
        return None
