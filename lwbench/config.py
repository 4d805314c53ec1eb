"""Layered configuration: defaults -> dataset card -> method -> command line, resolved once per run.

The resolved configuration of a run is a plain JSON-able dict; its hash identifies the run, so a
second invocation with the same arguments finds the existing record and skips the run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

# ConfigError and parse_value stay importable from here: the command line and the grid use them.
from lwbench.options import ConfigError, Option, coerce_options, log_uniform, parse_value  # noqa: F401

# The phases of a stage (docs/protocol.md §3.4): a two-phase stage runs FIXED then UPDATE, any other stage SINGLE.
FIXED, UPDATE, SINGLE = "fixed", "update", "single"


@dataclass(frozen=True)
class TrainerConfig:
    """Shared trainer settings (docs/protocol.md §3 and §3.6: the C2F coarse-stage settings for baselines)."""

    lr: float = 1e-3
    batch_size: int = 8192
    max_epochs: int = 1000
    eval_every: int = 5           # evaluate validation every k epochs (epoch 0 = before training)
    patience_fixed: int = 5       # evaluations without improvement before FIXED -> UPDATE
    patience_update: int = 5      # evaluations without improvement before stopping
    early_stop_metric: str = "ndcg@5"
    l2_factor: float = 5.0        # L2 weight = l2_factor * 1e-4 on layer-0 rows of the batch
    n_negatives: int = 5
    grad_clip_value: float = 3.0  # element-wise gradient clamp
    layers: int = 3
    item_bias: bool = True        # the official FM score's item bias (docs/protocol.md §2.3)
    ks: tuple = (1, 5, 10, 20, 50)
    eval_chunk_elements: int = 2**26   # scores held at once during full ranking (floats)
    checkpoint_seconds: float = 60.0   # at least this long between resume files (also at phase/stage ends)
    deterministic: bool = True    # deterministic kernels where torch offers them
    allow_handoff_fallback: bool = False  # a stage short of its last phase may hand an earlier one on

    def __post_init__(self):
        """Every setting within its range (:data:`TRAINER_RANGES`), checked whenever a configuration is
        made, so that an impossible setting is an error naming it before anything trains."""
        options = trainer_options()
        for f in fields(self):
            options[f.name].coerce(f"trainer.{f.name}", getattr(self, f.name))
        if not self.ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.ks):
            raise ConfigError(f"trainer.ks must be a non-empty list of positive integers, e.g. 5,10,20; "
                              f"got {list(self.ks)}")
        if self.early_stop_metric not in metric_columns(self.ks):
            raise ConfigError(f"trainer.early_stop_metric must be one of {', '.join(metric_columns(self.ks))} "
                              f"(the metrics at trainer.ks), got {self.early_stop_metric!r}")

    def replace(self, **changes) -> TrainerConfig:
        return dataclasses.replace(self, **coerce_options("trainer", trainer_options(), changes))

    def patience(self, phase: str) -> int:
        return self.patience_fixed if phase == FIXED else self.patience_update


# The range of each trainer setting (docs/protocol.md §3.6); a setting not named here takes any value of its type.
TRAINER_RANGES = {
    "lr": dict(above=0, max=1), "batch_size": dict(min=1), "max_epochs": dict(min=1), "eval_every": dict(min=1),
    "patience_fixed": dict(min=1), "patience_update": dict(min=1), "l2_factor": dict(min=0),
    "n_negatives": dict(min=1), "grad_clip_value": dict(above=0), "layers": dict(min=0, max=16),
    "eval_chunk_elements": dict(min=1), "checkpoint_seconds": dict(min=0),
}


# The trainer settings every method's tuning searches (the shared space of ``tune``, docs/protocol.md §10.12):
# the Adam learning rate log-uniform around the shared 1e-3 (the C2F fine stage's 3e-3 inside), and the L2
# factor log-uniform around the shared 5 (LightGCN's own 0.5 at the bottom). Everything else stays the
# protocol's, so that tuned methods still share one trainer.
TRAINER_SEARCH = {"lr": log_uniform(2e-4, 1e-2), "l2_factor": log_uniform(0.5, 20.0)}


def trainer_options() -> dict[str, Option]:
    """The trainer's settings as :class:`~lwbench.options.Option` s: the dataclass defaults with their ranges
    and, for the settings ``tune`` searches, their search ranges (:data:`TRAINER_SEARCH`)."""
    return {f.name: Option(f.default, **TRAINER_RANGES.get(f.name, {}), search=TRAINER_SEARCH.get(f.name))
            for f in fields(TrainerConfig)}


def metric_columns(ks) -> list[str]:
    """The metrics evaluation computes at cut-offs ``ks`` (docs/protocol.md §4.2)."""
    return [f"ndcg@{k}" for k in ks] + [f"recall@{k}" for k in ks]


def parse_set_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["legcf.num_buckets=300", "trainer.lr=3e-3"]`` -> ``{"legcf": {"num_buckets": "300"}, ...}``.

    Values stay strings here; they are converted against each owner's declarations later
    (:func:`lwbench.options.coerce_options`)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        owner, dot, option = key.strip().partition(".")
        if not sep or not dot or not owner or not option:
            raise ConfigError(f"--set {item!r}: expected OWNER.OPTION=VALUE, e.g. trainer.lr=3e-3 or ud.dim=64")
        out.setdefault(owner, {})[option] = value.strip()
    return out


def config_hash(config: dict) -> str:
    """Stable hash of a resolved run configuration (canonical JSON)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# What each trainer setting means, for ``--list --verbose`` (:func:`described_trainer_options`).
TRAINER_HELP = {
    "lr": "Adam learning rate",
    "batch_size": "BPR triplets per training step",
    "max_epochs": "most epochs of every stage (--epochs sets it; early stopping usually ends a stage sooner)",
    "eval_every": "validate every k epochs (epoch 0: before training)",
    "patience_fixed": "validations without gain before a two-phase stage leaves FIXED for UPDATE",
    "patience_update": "validations without gain before a stage stops",
    "early_stop_metric": "the validation metric of early stopping (one of the metrics at ks)",
    "l2_factor": "L2 weight = l2_factor * 1e-4, on the layer-0 rows of each batch",
    "n_negatives": "negatives drawn per sampled training pair (one triplet each)",
    "grad_clip_value": "element-wise gradient clamp",
    "layers": "LightGCN propagation layers (a dataset card may set its own)",
    "item_bias": "the official FM score's item bias (docs/protocol.md §2.3)",
    "ks": "the cut-offs of the metrics (ndcg@k, recall@k)",
    "eval_chunk_elements": "scores held at once during full ranking (lower it to save GPU memory)",
    "checkpoint_seconds": "least seconds between resume files, written at the next epoch end (also at phase and stage ends)",
    "deterministic": "deterministic kernels where torch offers them",
    "allow_handoff_fallback": "a stage short of its last phase may hand an earlier phase's checkpoint on",
}


def described_trainer_options() -> dict[str, Option]:
    """:func:`trainer_options` with what each setting means (:data:`TRAINER_HELP`), for ``--list --verbose``;
    descriptive only: no configuration or hash depends on it."""
    return {name: dataclasses.replace(option, help=TRAINER_HELP.get(name, option.help))
            for name, option in trainer_options().items()}
