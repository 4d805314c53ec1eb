"""Memory budgets and parameter counts.

One budget language is used everywhere (command line, plans, records, tables). A budget is always
resolved to an integer number of parameters in the paper's Table-3 convention (docs/protocol.md §5.1):
float values needed at inference to form the layer-0 embeddings, integer indices excluded.

Accepted forms (case-insensitive):

* ``500buckets``  - the LEGCF configuration with m=500 meta-embeddings, t=2, d=dim: ``m*d + 2*N``
* ``205678``      - a plain parameter count
* ``0.21m`` / ``250k`` - a parameter count with a million / thousand suffix
* ``2.3%``        - a fraction of the full ``N x dim`` table
* ``800KB``, ``1.5MiB`` - float32 storage: bytes / 4 (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)
* ``none``        - no budget (only for methods that ignore budgets, such as UD)
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

ACCEPTED_FORMS = (
    "'<m>buckets' (e.g. 500buckets = m*d + 2*N)",
    "'<int>' (e.g. 205678)",
    "'<x>m' or '<x>k' (e.g. 0.21m, 250k)",
    "'<x>%' of the full N x d table (e.g. 2.3%)",
    "'<x>KB|MB|GB|KiB|MiB|GiB' of float32 storage (e.g. 800KB)",
    "'none' (no budget)",
)

_BYTE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
               "kib": 2**10, "mib": 2**20, "gib": 2**30}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"


class BudgetError(ValueError):
    """A budget string cannot be parsed, or a method cannot fit a budget."""


def parse_budget(text: str, n_users: int, n_items: int, dim: int = 128) -> int | None:
    """Resolve a budget string to a parameter count (Table-3 convention).

    Returns ``None`` for ``none``. Fractional results are rounded down, so that a method
    sized to the returned count never exceeds what the user asked for.
    """
    if n_users <= 0 or n_items <= 0 or dim <= 0:
        raise BudgetError(f"n_users, n_items and dim must be positive (got {n_users}, {n_items}, {dim})")
    n_entities = n_users + n_items
    raw = str(text).strip().lower().replace("_", "").replace(",", "")
    if raw in ("none", "unbudgeted", "full"):
        return None
    if m := re.fullmatch(r"(\d+)buckets?", raw):
        return int(m.group(1)) * dim + 2 * n_entities
    if m := re.fullmatch(r"\d+", raw):
        return _positive(int(raw), text)
    if m := re.fullmatch(_NUMBER + r"([mk])", raw):
        scale = 10**6 if m.group(2) == "m" else 10**3
        return _positive(math.floor(float(m.group(1)) * scale + 1e-9), text)
    if m := re.fullmatch(_NUMBER + r"%", raw):
        return _positive(math.floor(float(m.group(1)) / 100.0 * n_entities * dim + 1e-9), text)
    if m := re.fullmatch(_NUMBER + r"(b|kb|mb|gb|kib|mib|gib)", raw):
        return _positive(math.floor(float(m.group(1)) * _BYTE_UNITS[m.group(2)] / 4 + 1e-9), text)
    raise BudgetError(f"cannot parse budget {text!r}; accepted forms: " + "; ".join(ACCEPTED_FORMS))


def _positive(value: int, text: str) -> int:
    if value <= 0:
        raise BudgetError(f"budget {text!r} resolves to {value} parameters; it must be positive")
    return value


@dataclass(frozen=True)
class ParamCount:
    """What a method keeps for inference, in the two conventions of docs/protocol.md §5.1.

    ``table3``: float values needed to form layer-0 embeddings (the paper's #Param).
    ``float_values`` / ``int_indices`` / ``code_bits``: the storage inventory; ``storage_bytes``
    prices it as float32 values, int32 indices and packed codes.
    ``aux_params``: trained parameters outside the Table-3 count (the item bias, docs/protocol.md §2.3).
    """

    table3: int
    float_values: int
    int_indices: int = 0
    code_bits: int = 0
    aux_params: int = 0

    @property
    def storage_bytes(self) -> int:
        return 4 * self.float_values + 4 * self.int_indices + math.ceil(self.code_bits / 8)

    def to_dict(self) -> dict:
        return {**asdict(self), "storage_bytes": self.storage_bytes}
