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
from lwbench.options import ConfigError, coerce_options, parse_value  # noqa: F401


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
    checkpoint_every: int = 1     # epochs between resume checkpoints
    deterministic: bool = True    # deterministic kernels where torch offers them

    def replace(self, **changes) -> "TrainerConfig":
        return dataclasses.replace(self, **coerce_options("trainer", dataclasses.asdict(self), changes))

    def patience(self, phase: str) -> int:
        return self.patience_fixed if phase == FIXED else self.patience_update


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


def trainer_fields() -> list[str]:
    return [f.name for f in fields(TrainerConfig)]


def config_hash(config: dict) -> str:
    """Stable hash of a resolved run configuration (canonical JSON)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
