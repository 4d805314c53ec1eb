"""Memory budgets and parameter counts.

One budget language is used everywhere (command line, plans, records, tables). A budget is resolved to
an integer in the unit of its accounting convention (docs/protocol.md §5.1, §5.2): ``table3`` (the
default, the paper's): parameters, the float values needed at inference to form the layer-0
embeddings, integer indices excluded; ``storage``: the bytes those embeddings take as stored (values
and indices priced by their dtype, packed codes).

Accepted forms (case-insensitive):

* ``500buckets``  - the LEGCF configuration with m=500 meta-embeddings, t=2, d=dim: ``m*d + 2*N``
* ``205678``      - a plain parameter count
* ``0.21m`` / ``250k`` - a parameter count with a million / thousand suffix
* ``2.3%``        - a fraction of the full ``N x dim`` table
* ``800KB``, ``1.5MiB`` - float32 storage: bytes / 4 (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)
* ``none``        - no budget (only for methods that ignore budgets, such as UD)

Under ``storage`` the same forms resolve to bytes: byte forms are taken as they are, ``<m>buckets`` is
what that LEGCF configuration stores, and parameter forms (counts, ``%``) are float32 parameters, 4
bytes each.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace

ACCEPTED_FORMS = (
    "'<m>buckets' (e.g. 500buckets = m*d + 2*N)",
    "'<int>' (e.g. 205678)",
    "'<x>m' or '<x>k' (e.g. 0.21m, 250k)",
    "'<x>%' of the full N x d table (e.g. 2.3%)",
    "'<x>KB|MB|GB|KiB|MiB|GiB' of storage (e.g. 800KB; float32 values under table3 accounting)",
    "'none' (no budget)",
)

_BYTE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
               "kib": 2**10, "mib": 2**20, "gib": 2**30}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"


TABLE3, STORAGE = "table3", "storage"
ACCOUNTINGS = (TABLE3, STORAGE)
FLOAT32_BYTES = 4
BUCKETS_PER_ENTITY = 2      # the t of the '<m>buckets' LEGCF configuration


class BudgetError(ValueError):
    """A budget string cannot be parsed, or a method cannot fit a budget."""


def index_width(span: int) -> int:
    """Bytes per index of the narrowest unsigned integer type that holds ``0 .. span - 1`` (1, 2, 4 or 8):
    how a deployment stores an index whose range it knows (docs/protocol.md §5.2)."""
    for width in (1, 2, 4, 8):
        if span <= 2 ** (8 * width):
            return width
    raise BudgetError(f"an index range of {span} does not fit 64 bits")


def check_accounting(accounting: str) -> str:
    if accounting not in ACCOUNTINGS:
        raise BudgetError(f"unknown accounting {accounting!r}; use one of {', '.join(ACCOUNTINGS)}")
    return accounting


def parse_budget(text: str, n_users: int, n_items: int, dim: int = 128, accounting: str = TABLE3) -> int | None:
    """Resolve a budget string to a parameter count (``table3``) or to bytes (``storage``).

    Returns ``None`` for ``none``. Fractional results are rounded down, so that a method
    sized to the returned count never exceeds what the user asked for.
    """
    if n_users <= 0 or n_items <= 0 or dim <= 0:
        raise BudgetError(f"n_users, n_items and dim must be positive (got {n_users}, {n_items}, {dim})")
    bytes_per_param = FLOAT32_BYTES if check_accounting(accounting) == STORAGE else 1
    n_entities = n_users + n_items
    raw = str(text).strip().lower().replace("_", "").replace(",", "")
    if raw in ("none", "unbudgeted", "full"):
        return None
    if m := re.fullmatch(r"(\d+)buckets?", raw):
        count = legcf_count(int(m.group(1)), dim, n_entities)
        return count.table3 if accounting == TABLE3 else count.storage_bytes
    if m := re.fullmatch(r"\d+", raw):
        return _positive(int(raw) * bytes_per_param, text)
    if m := re.fullmatch(_NUMBER + r"([mk])", raw):
        scale = 10**6 if m.group(2) == "m" else 10**3
        return _positive(math.floor(float(m.group(1)) * scale + 1e-9) * bytes_per_param, text)
    if m := re.fullmatch(_NUMBER + r"%", raw):
        return _positive(math.floor(float(m.group(1)) / 100.0 * n_entities * dim * bytes_per_param + 1e-9), text)
    if m := re.fullmatch(_NUMBER + r"(b|kb|mb|gb|kib|mib|gib)", raw):
        size = float(m.group(1)) * _BYTE_UNITS[m.group(2)]
        return _positive(math.floor(size / (1 if accounting == STORAGE else FLOAT32_BYTES) + 1e-9), text)
    raise BudgetError(f"cannot parse budget {text!r}; accepted forms: " + "; ".join(ACCEPTED_FORMS))


def legcf_count(n_meta: int, dim: int, n_entities: int) -> ParamCount:
    """The '<m>buckets' configuration: LEGCF with ``m`` meta-embeddings and t = 2 (docs/protocol.md §5.4)."""
    return meta_embedding_count(n_meta, dim, BUCKETS_PER_ENTITY, n_entities)


def meta_embedding_count(n_meta: int, dim: int, per_row: int, n_rows: int) -> ParamCount:
    """``n_meta`` meta-embeddings composed by an assignment with ``per_row`` (column, value) pairs per row.
    Table 3: ``m*d + t*N`` (values of S, not its indices); storage adds ``t*N`` column indices over ``m``
    columns (docs/protocol.md §5.1, §5.2)."""
    values = n_meta * dim + per_row * n_rows
    return ParamCount(table3=values, float_values=values, int_indices=per_row * n_rows,
                      index_bytes=per_row * n_rows * index_width(n_meta))


def _positive(value: int, text: str) -> int:
    if value <= 0:
        raise BudgetError(f"budget {text!r} resolves to {value} parameters; it must be positive")
    return value


@dataclass(frozen=True)
class ParamCount:
    """What a method keeps for inference, in the two conventions of docs/protocol.md §5.1 and §5.2.

    ``table3``: float values needed to form layer-0 embeddings (the paper's #Param).
    ``float_values`` / ``int_indices`` / ``code_bits``: the storage inventory. ``value_bytes`` and
    ``index_bytes`` price it by dtype (``None``: float32 values, int32 indices); ``index_bytes`` also holds
    any packed bitmap of kept positions (a pruned table's, docs/protocol.md §5.2: position information, no
    integer index); ``storage_bytes`` adds the packed codes. ``aux_params``: trained parameters outside
    both conventions (the item bias, docs/protocol.md §2.3), the same for every method and so counted for
    none.
    """

    table3: int
    float_values: int
    int_indices: int = 0
    code_bits: int = 0
    aux_params: int = 0
    value_bytes: int | None = None
    index_bytes: int | None = None

    def __post_init__(self):
        if self.value_bytes is None:
            object.__setattr__(self, "value_bytes", FLOAT32_BYTES * self.float_values)
        if self.index_bytes is None:
            object.__setattr__(self, "index_bytes", 4 * self.int_indices)

    @property
    def code_bytes(self) -> int:
        return math.ceil(self.code_bits / 8)

    @property
    def storage_bytes(self) -> int:
        return self.value_bytes + self.index_bytes + self.code_bytes

    def measure(self, accounting: str) -> int:
        """The count in ``accounting``'s unit: parameters (``table3``) or bytes (``storage``)."""
        return self.table3 if check_accounting(accounting) == TABLE3 else self.storage_bytes

    def with_value_width(self, width: int) -> ParamCount:
        """The same inventory with its values stored ``width`` bytes each (e.g. 2 for float16)."""
        return replace(self, value_bytes=width * self.float_values)

    def to_dict(self) -> dict:
        return {**asdict(self), "code_bytes": self.code_bytes, "storage_bytes": self.storage_bytes}


@dataclass(frozen=True)
class Budget:
    """A resolved budget: ``limit`` in the unit of ``accounting`` (parameters or bytes)."""

    limit: int
    accounting: str = TABLE3

    def __post_init__(self):
        check_accounting(self.accounting)

    @property
    def unit(self) -> str:
        return "parameters" if self.accounting == TABLE3 else "bytes"

    def fits(self, count: ParamCount) -> bool:
        return count.measure(self.accounting) <= self.limit

    def __str__(self) -> str:
        return f"{self.limit:,} {self.unit} ({self.accounting})"
