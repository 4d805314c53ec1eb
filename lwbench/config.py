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


# The phases of a stage (methods.md 1.7): a two-phase stage runs FIXED then UPDATE, any other stage SINGLE.
FIXED, UPDATE, SINGLE = "fixed", "update", "single"


class ConfigError(ValueError):
    """An option name or value is not valid; the message lists the valid ones."""


@dataclass(frozen=True)
class TrainerConfig:
    """Shared trainer settings (methods.md 1 and 10.4: the C2F coarse-stage settings for baselines)."""

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
    item_bias: bool = True        # the official FM score's item bias (methods.md 1.3)
    ks: tuple = (1, 5, 10, 20, 50)
    eval_chunk_elements: int = 2**26   # scores held at once during full ranking (floats)
    checkpoint_every: int = 1     # epochs between resume checkpoints
    deterministic: bool = True    # deterministic kernels where torch offers them

    def replace(self, **changes) -> "TrainerConfig":
        return dataclasses.replace(self, **coerce_options("trainer", dataclasses.asdict(self), changes))

    def patience(self, phase: str) -> int:
        return self.patience_fixed if phase == FIXED else self.patience_update


def coerce_options(owner: str, defaults: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Validate ``changes`` against ``defaults`` (names and types) and return them converted."""
    out = {}
    for key, value in changes.items():
        if key not in defaults:
            raise ConfigError(f"{owner} has no option {key!r}; its options are: {', '.join(sorted(defaults))}")
        out[key] = _coerce(f"{owner}.{key}", defaults[key], value)
    return out


def _coerce(name: str, default: Any, value: Any) -> Any:
    if isinstance(value, str) and not isinstance(default, str):
        value = parse_value(value)
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} expects true or false, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{name} expects an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{name} expects a number, got {value!r}")
    if isinstance(default, (tuple, list)):
        if isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} expects a list, got {value!r}")
        return tuple(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{name} expects a string, got {value!r}")
    return value


def parse_value(text: str) -> Any:
    """Parse a command-line value: JSON when possible (numbers, true/false, lists), else a string.
    Comma-separated numbers become a list (``ks=5,10,20``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if "," in text:
        return [parse_value(part) for part in text.split(",") if part.strip()]
    return text


def parse_set_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["legcf.num_buckets=300", "trainer.lr=3e-3"]`` -> ``{"legcf": {"num_buckets": "300"}, ...}``.

    Values stay strings here; they are converted against each owner's defaults later."""
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
