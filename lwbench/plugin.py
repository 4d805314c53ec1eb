"""The plugin API: what a lightweight-embedding method provides to the shared trainer.

A method is two objects:

* a :class:`Method` (registered by name with :func:`lwbench.registry.register`) that declares its
  options (:class:`lwbench.options.Option`), sizes itself to a budget (:meth:`Method.configure`),
  predicts its parameter count for the plan, lists its training stages, and builds
* an :class:`EmbeddingModule`: the trainable part. It produces the layer-0 rows ``X_0`` (entity rows,
  plus any virtual nodes such as meta-embeddings), the graph they propagate over, and reacts to the
  trainer through hooks (assignment refreshes, pruning targets, stage hand-offs, auxiliary losses).

The trainer only ever calls these hooks; it never looks at a method's name. When a method needs
something the hooks do not offer, extend the hooks for everyone.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from lwbench.budget import TABLE3, Budget, BudgetError, ParamCount, index_width
from lwbench.config import FIXED, SINGLE, UPDATE
from lwbench.data.interactions import DatasetStats, Interactions
from lwbench.kernels.graph import SymmetricGraph, lightgcn_propagate
from lwbench.options import Option

STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# The one line a method adds to its options where its stored values can be kept at a narrower dtype
# (docs/protocol.md §5.2): the counts price them by that dtype, and every evaluation uses them rounded to it.
STORE_DTYPE = Option("float32", choices=tuple(STORE_DTYPES),
                     help="dtype of the stored values: float16 halves their bytes (rounded to it at every "
                          "evaluation)")


@dataclass
class InferenceState:
    """Storage inventory of a trained module (docs/protocol.md §5.1, §5.2 and §5.5).

    ``values``: float tensors, priced by their dtype; a sparse tensor counts its stored non-zeros.
    ``indices``: integer tensors (sparse positions, assignments), counted per entry; ``index_ranges``
    gives each one's range (the number of positions it can address), which prices it at the narrowest
    unsigned type that holds the range (:func:`lwbench.budget.index_width`).
    ``codes``: integer code tensors with their bit width per entry (e.g. DPQ/MGQE codes).
    ``bitmaps``: packed ``uint8`` bit masks (one bit per table entry, e.g. a pruned table's kept
    positions, docs/protocol.md §5.2): position information priced at their bytes and reported with the
    indices, but neither integer indices nor codes in the counts (so never in the Table-3 count).
    Training-only tensors (thresholds, query tables, optimizer state) and the item bias are excluded.
    """

    values: dict[str, torch.Tensor] = field(default_factory=dict)
    indices: dict[str, torch.Tensor] = field(default_factory=dict)
    codes: dict[str, tuple[torch.Tensor, int]] = field(default_factory=dict)
    index_ranges: dict[str, int] = field(default_factory=dict)
    bitmaps: dict[str, torch.Tensor] = field(default_factory=dict)

    def counts(self) -> tuple[int, int, int]:
        """(float values, integer indices, code bits)."""
        floats = sum(_stored(t) for t in self.values.values())
        ints = sum(t.numel() for t in self.indices.values())
        bits = sum(t.numel() * width for t, width in self.codes.values())
        return floats, ints, bits

    def component_bytes(self) -> dict[str, int]:
        """Bytes by component: values (by dtype), indices (by range, plus the packed bitmaps) and packed codes."""
        missing = sorted(set(self.indices) - set(self.index_ranges))
        if missing:
            raise ValueError(f"InferenceState: index tensors {', '.join(missing)} have no index_ranges entry")
        unpacked = sorted(name for name, t in self.bitmaps.items() if t.dtype != torch.uint8)
        if unpacked:
            raise ValueError(f"InferenceState: bitmaps {', '.join(unpacked)} are not packed uint8 tensors")
        return {"values": sum(_stored(t) * t.element_size() for t in self.values.values()),
                "indices": sum(t.numel() * index_width(self.index_ranges[name]) for name, t in self.indices.items())
                + sum(t.numel() for t in self.bitmaps.values()),
                "codes": math.ceil(self.counts()[2] / 8)}

    def stored_as(self, dtype: torch.dtype) -> InferenceState:
        """The same inventory with its values cast to ``dtype`` (a ``store_dtype`` option)."""
        return dataclasses.replace(self, values={name: t.to(dtype) for name, t in self.values.items()})


def _stored(tensor: torch.Tensor) -> int:
    return int(tensor._nnz()) if tensor.is_sparse else tensor.numel()


@dataclass(frozen=True)
class Stage:
    """One training stage (e.g. PEP's search then retrain, C2F's coarse then fine).

    ``two_phase``: early stopping runs the FIXED then UPDATE schedule of docs/protocol.md §3.4.
    ``trainer``: trainer settings that differ in this stage (e.g. ``{"lr": 3e-3}``).
    ``early_stopping``: if False, the stage runs until ``max_epochs`` or until a hook ends it.
    ``reported``: whether this stage's best checkpoint is a candidate for the run's metrics
    (the last reported stage is the one reported).
    ``start_from_best``: begin this stage from the previous stage's best checkpoint (that of its last
    phase that saved one, whether or not the stage is reported) rather than from its last weights.
    ``seed``: the seed this stage (and, for the first stage, the module's initialization) draws from;
    ``None`` means the run's seed (for a later stage, a seed derived from the run's seed and the stage's
    position, so it never replays the initialization's random stream). Every stage after the first is
    re-seeded when it starts.
    ``shared``: if not ``None``, the stage's outcome is shared between runs: it is trained once and
    reused by every run whose stage key matches (e.g. one C2F coarse stage under several fine seeds).
    The dict names the method options the stage depends on; the key also covers the stage itself,
    its trainer settings, its seed, the data and the stages before it (which must be shared too).
    The method must make the module's initialization and this stage depend only on those options.
    """

    name: str = "train"
    two_phase: bool = False
    trainer: dict = field(default_factory=dict)
    early_stopping: bool = True
    reported: bool = True
    start_from_best: bool = False
    seed: int | None = None
    shared: dict | None = None

    @property
    def phases(self) -> tuple[str, ...]:
        return (FIXED, UPDATE) if self.two_phase else (SINGLE,)


@dataclass
class Step:
    """What hooks see of the current training step."""

    stage: Stage
    phase: str
    epoch: int
    batch: int                       # batch index within the epoch
    x0: torch.Tensor                 # layer-0 rows (with grad)
    propagated: torch.Tensor         # propagated rows H (with grad)
    users: torch.Tensor              # batch triplets (items 0-based)
    positives: torch.Tensor
    negatives: torch.Tensor


@dataclass
class BuildContext:
    """What a method gets when it builds its module."""

    interactions: Interactions
    graph: SymmetricGraph           # LightGCN-normalized user-item adjacency on the device
    device: torch.device
    options: dict                   # resolved option values (after configure)
    seed: int                       # the first stage's seed, which the module's initialization draws from
    cache_dir: Path                 # for reusable artefacts (e.g. METIS partitions)

    @property
    def stats(self) -> DatasetStats:
        return self.interactions.stats()


class EmbeddingModule(nn.Module):
    """Base class of a method's trainable module. Override :meth:`layer0`; the rest has defaults.

    Global entity index: user ``u`` is ``u`` and item ``i`` is ``n_users + i`` (docs/protocol.md §1).
    """

    def __init__(self, ctx: BuildContext):
        super().__init__()
        self.n_users = ctx.interactions.n_users
        self.n_items = ctx.interactions.n_items
        self.base_graph = ctx.graph
        # the dtype a deployment stores the values in (the method's store_dtype option, where it declares one)
        self.store_dtype = STORE_DTYPES[ctx.options.get("store_dtype", "float32")]

    @property
    def n_entities(self) -> int:
        return self.n_users + self.n_items

    def train(self, mode: bool = True):
        """Switching to evaluation rounds the stored values to the store dtype (in place, so that every
        evaluation and every checkpoint sees the values a deployment would hold)."""
        if not mode and self.training and self.store_dtype != torch.float32:
            self.round_stored_values()
        return super().train(mode)

    @torch.no_grad()
    def round_stored_values(self) -> None:
        """Round to the store dtype every parameter or buffer that is one of :meth:`inference_state`'s values;
        override where the stored values are derived from other tensors (e.g. sparse copies)."""
        stored = {t.data_ptr() for t in self.inference_state().values.values() if not t.is_sparse}
        for tensor in [*self.parameters(), *self.buffers()]:
            if tensor.is_floating_point() and tensor.data_ptr() in stored:
                tensor.copy_(tensor.to(self.store_dtype).to(tensor.dtype))

    # --- forward ---------------------------------------------------------------------------------
    def layer0(self) -> torch.Tensor:
        """``X_0``: ``(n_entities + n_virtual, d)``, entity rows first."""
        raise NotImplementedError

    def graph(self) -> SymmetricGraph:
        """The propagation graph over all rows of ``X_0`` (default: the plain user-item ``Â``)."""
        return self.base_graph

    def propagate(self, x0: torch.Tensor, n_layers: int) -> torch.Tensor:
        """``H`` for all rows of ``X_0`` (default: LightGCN mean over layers)."""
        return lightgcn_propagate(self.graph(), x0, n_layers)

    def rows(self, entities: torch.Tensor) -> torch.Tensor:
        """Layer-0 rows of the given entities as a deployment forms them (the inference profile times it,
        docs/protocol.md §5.6). The default forms every row and picks; override where a method can form a few
        rows alone."""
        return self.layer0()[entities]

    def ego_rows(self, x0: torch.Tensor) -> torch.Tensor:
        """The layer-0 entity rows that the L2 term regularizes (docs/protocol.md §3.2)."""
        return x0[: self.n_entities]

    # --- hooks -----------------------------------------------------------------------------------
    def begin_stage(self, stage: Stage) -> None:
        """Called when a stage starts (after any hand-off checkpoint is loaded)."""

    def begin_phase(self, stage: Stage, phase: str) -> None:
        """Called when a phase of a stage starts (FIXED, UPDATE or SINGLE)."""

    def param_groups(self, stage: Stage) -> list[dict]:
        """Optimizer groups for a stage. Frozen tensors belong in a group with ``lr=0`` (docs/protocol.md §3.2)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def after_forward(self, step: Step) -> None:
        """Called (under ``no_grad``) after the forward pass of every batch, before the loss backward;
        e.g. LEGCF refreshes its assignment here on batch 0 of UPDATE epochs."""

    def aux_loss(self, step: Step) -> torch.Tensor | None:
        """An extra loss term added to BPR + L2."""
        return None

    def after_step(self, step: Step) -> bool:
        """Called after each optimizer step; return True to end the current stage now."""
        return False

    def end_epoch(self, stage: Stage, epoch: int) -> bool:
        """Called after each training epoch; return True to end the current stage."""
        return False

    def end_stage(self, stage: Stage) -> None:
        """Called when a stage's epochs are over, before its checkpoints are evaluated
        (e.g. to fail loudly when a pruning target was not reached)."""

    def after_load(self) -> None:
        """Rebuild derived state (graphs, caches) after a checkpoint was loaded into the module."""

    def diagnostics(self) -> dict[str, Any]:
        """Numbers logged with every validation (e.g. non-zeros, meta-embeddings in use)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Non-tensor state to checkpoint besides ``state_dict`` (restored by :meth:`load_extra_state`)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # --- accounting ------------------------------------------------------------------------------
    def inference_state(self) -> InferenceState:
        """The tensors a deployment keeps to form layer-0 rows, as they would be stored: the one
        statement of the module's size, from which :meth:`param_count` derives."""
        raise NotImplementedError

    def stored_state(self) -> InferenceState:
        """:meth:`inference_state` with its values in the store dtype: what the counts and the inference
        profile price."""
        return self.inference_state().stored_as(self.store_dtype)

    def param_count(self) -> ParamCount:
        """Counts in both conventions of docs/protocol.md §5.1 for the current state of the module, derived
        from :meth:`stored_state`: storage is its inventory priced by dtype and index range; Table 3 counts
        its float values and its codes as float32 equivalents (``ceil(bits / 32)``), never its integer
        indices. Override only where a method's Table-3 convention leaves out something it stores,
        keeping the inventory."""
        state = self.stored_state()
        floats, ints, bits = state.counts()
        priced = state.component_bytes()
        return ParamCount(table3=floats + math.ceil(bits / 32), float_values=floats, int_indices=ints,
                          code_bits=bits, value_bytes=priced["values"], index_bytes=priced["indices"])


class Method:
    """A registered lightweight-embedding method. Subclass, set the class attributes, register."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    # option name -> lwbench.options.Option (type, default, choices or range, help), or a bare default
    options: ClassVar[dict[str, Any]] = {}
    trainer_defaults: ClassVar[dict[str, Any]] = {}  # trainer settings this method changes by default
    budgeted: ClassVar[bool] = True                  # False: the method ignores budgets (UD)
    # True: the count is reached by pruning during training (PEP, CERP, magnitude pruning), so
    # ``planned_count`` is the target the trained module must not exceed, while the freshly built
    # module still holds its dense tables.
    prunes: ClassVar[bool] = False
    # Option overrides under which every stage finishes within a few epochs on a small graph (e.g. a
    # faster pruning-threshold clock): the contract tests (one epoch per stage) and `reproduce --quick`
    # use them; real runs never do.
    smoke_options: ClassVar[dict[str, Any]] = {}
    # Option overrides under the storage accounting convention (docs/protocol.md §5.2), under the command line's:
    # e.g. a method whose default keeps a published size below the budget grows to use the stored bytes.
    storage_options: ClassVar[dict[str, Any]] = {}
    # Option overrides in tables that compare methods at one budget (lwbench.reports.cell.comparison_cell):
    # e.g. a method whose published configuration stays below the budget grows to use it, so that every
    # compared run stores 95-100% of the budget (docs/protocol.md §5.2); its own paper studies keep the
    # published configuration.
    comparison_options: ClassVar[dict[str, Any]] = {}

    def configure(self, options: dict, budget: int | None, stats: DatasetStats) -> dict:
        """Return the options with the budget-dependent knobs filled in, such that
        ``planned_count(...).table3 <= budget``; raise :class:`BudgetError` (saying the smallest
        budget supported) when that is impossible. ``options`` arrive resolved
        (:func:`lwbench.options.resolve`): every value already has its declared type, choices and
        range, so only checks across options (or against the dataset) belong here, raising
        :class:`lwbench.options.ConfigError`."""
        if self.budgeted:
            raise NotImplementedError(f"method {self.name!r} is budgeted but does not implement configure()")
        return dict(options)

    def planned_count(self, options: dict, stats: DatasetStats) -> ParamCount:
        """The count the configured method will have (known before training)."""
        raise NotImplementedError

    def stages(self, options: dict) -> list[Stage]:
        return [Stage()]

    def build(self, ctx: BuildContext) -> EmbeddingModule:
        raise NotImplementedError

    def label(self, options: dict) -> str:
        """A short display name for tables, e.g. ``ud-64``."""
        return self.name


def plan_count(method: Method, options: dict, stats: DatasetStats) -> ParamCount:
    """The method's planned count with its values priced at its ``store_dtype`` (float32 if it declares none)."""
    count = method.planned_count(options, stats)
    return count.with_value_width(STORE_DTYPES[options.get("store_dtype", "float32")].itemsize)


def size_to_budget(method: Method, options: dict, budget: Budget | None, stats: DatasetStats) -> dict:
    """``method.configure`` under either accounting convention (docs/protocol.md §5.5). A method sizes itself
    in Table-3 parameters only, and states its storage once (:meth:`Method.planned_count`); under
    ``storage`` this finds the largest Table-3 limit whose configuration stores at most the budget's
    bytes. Configurations grow with the limit and every counted parameter costs at least one stored
    byte, so that limit is at most the byte budget and a bisection finds it."""
    if budget is None or not method.budgeted:
        return method.configure(options, None, stats)
    if budget.accounting == TABLE3:
        return method.configure(options, budget.limit, stats)

    def attempt(limit: int) -> dict | None:
        try:
            return method.configure(options, limit, stats)
        except BudgetError:
            return None

    def too_large(limit: int) -> bool:
        configured = attempt(limit)
        return configured is not None and not budget.fits(plan_count(method, configured, stats))

    low, high = 0, budget.limit             # too_large(low) is False; find the last such limit
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (low, middle - 1) if too_large(middle) else (middle, high)
    configured = attempt(low) if low else None
    if configured is None:
        smallest = smallest_configuration(attempt, budget.limit)
        least = "" if smallest is None else \
            f"; its smallest configuration stores {plan_count(method, smallest, stats).storage_bytes:,} bytes"
        raise BudgetError(f"{method.name} cannot fit {budget}{least}")
    return configured


def smallest_configuration(attempt, start: int) -> dict | None:
    """The configuration at the smallest limit for which ``attempt`` succeeds (``None`` if none below 2^62)."""
    high = start
    while attempt(high) is None:
        if high > 2**62:
            return None
        high *= 2
    low = 0
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if attempt(middle) is not None else (middle, high)
    return attempt(high)


class MethodContractError(RuntimeError):
    """A method's two statements of its size disagree (docs/adding-a-method.md): a bug in the method."""


def check_planned_count(method: Method, planned: ParamCount, module: EmbeddingModule) -> None:
    """The one place where a method's plan (``planned_count``, known before training and used to size it to
    the budget) meets its built module's inventory (``inference_state``): they must be the same count.
    Checked when a run builds its module, before anything trains. A pruning method (``prunes``) reaches
    its planned count only when its mask is fixed, so its trained count is checked against the budget
    instead (:func:`check_within_budget`, when the run is recorded), and its unpruned module is not
    counted here (encoding a dense table's layout for nothing)."""
    if method.prunes:
        return
    built = module.param_count()
    if built == planned:
        return
    raise MethodContractError(f"{method.name}: planned_count() gives {planned.to_dict()} but the built module's "
                              f"inference_state() gives {built.to_dict()}; the plan sizes the method to the budget, "
                              "so the two must agree (docs/adding-a-method.md)")


def check_within_budget(method: Method, count: ParamCount, budget: Budget | int | None) -> None:
    """Raise unless a budgeted method's count fits (an int budget is a Table-3 parameter count)."""
    budget = Budget(budget) if isinstance(budget, int) else budget
    if method.budgeted and budget is not None and not budget.fits(count):
        raise BudgetError(f"{method.name}: {count.measure(budget.accounting):,} {budget.unit} exceed the budget "
                          f"of {budget}")
