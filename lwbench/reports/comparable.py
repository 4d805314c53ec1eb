"""Which runs may be averaged as seeds of one configuration (docs/protocol.md §10.11).

Two runs are *comparable* when everything in their resolved configuration that can change a result is
equal: the dataset and its split, the budget and its accounting, the method and its options, the
trainer settings and the stages. They may then differ only in the seed, and only then are they
averaged, tested against each other as paired seeds, or shown as one row. Settings that provably do not
change a result (:data:`RESULT_NEUTRAL`: how often resume files are written, how many scores are held at
once during evaluation; the thread count and the device are not part of the configuration at all) never
split rows. The same configuration and seed found twice (a copied record, a manifest that lists a run
twice) is one run: it is counted once, with a warning that names both files.

Nothing here imports torch: reports are built where the trainer is not installed.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from lwbench.config import config_hash

logger = logging.getLogger(__name__)

# Dotted configuration keys that cannot change a run's metrics (docs/protocol.md §10.11):
# checkpoint cadence only decides when resume files are written (a resumed run is bit-identical:
# tests/test_trainer.py), and evaluation chunking only decides how many users are scored at once (the
# same metrics to the bit at any chunk size: tests/test_metrics.py).
RESULT_NEUTRAL = frozenset({"trainer.checkpoint_seconds", "trainer.eval_chunk_elements"})
SEED = "seed"
MISSING = "–"   # shown where a setting does not apply to a row (e.g. another method's option)


def flatten(config: Mapping, prefix: str = "") -> dict[str, object]:
    """``{"trainer": {"lr": 1e-3}}`` -> ``{"trainer.lr": 1e-3}``; lists (stages, ks) are kept whole,
    with the stages spelled out by name so that a changed stage setting names its stage."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif key == "stages" and not prefix and isinstance(value, list):
            for i, stage in enumerate(value):
                stage_name = stage.get("name", i) if isinstance(stage, Mapping) else i
                flat.update(flatten(stage, f"stages.{stage_name}.") if isinstance(stage, Mapping)
                            else {f"stages.{stage_name}": stage})
        else:
            flat[name] = value
    return flat


def settings(record: Mapping) -> dict[str, object]:
    """The settings of a run that can change its result: its flattened configuration without the seed
    and without :data:`RESULT_NEUTRAL` settings. The dataset's verification and counts stay: a run on
    other data is another run."""
    return {k: v for k, v in flatten(record["config"]).items() if k != SEED and k not in RESULT_NEUTRAL}


def comparable_key(record: Mapping) -> str:
    """A short hash of :func:`settings` (:func:`lwbench.config.config_hash`, the run configuration's own
    canonical hash): equal for two runs exactly when they may be averaged as seeds."""
    return config_hash(settings(record))[:12]


def record_name(record: Mapping) -> str:
    """Where a record came from, for messages: its file when the reader noted it, else its run id."""
    return str(record.get("_path") or f"runs/{record['run_id']}.json")


@dataclass
class Group:
    """Comparable runs (one configuration, several seeds), after duplicates were removed."""

    key: str
    records: list = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted(int(r["seed"]) for r in self.records)

    @property
    def first(self) -> Mapping:
        return self.records[0]


def unique_runs(records: Iterable[Mapping]) -> list[Mapping]:
    """``records`` with each (configuration, seed) kept once; every dropped duplicate is named with the
    record kept in a warning (same settings and seed: the same run, whatever file it sits in)."""
    return [record for _, record in _keyed_unique_runs(records)]


def _keyed_unique_runs(records: Iterable[Mapping]) -> list[tuple[str, Mapping]]:
    """:func:`unique_runs` with each kept record's :func:`comparable_key`, computed once per record."""
    kept: dict[tuple[str, int], Mapping] = {}
    out = []
    for record in records:
        key = comparable_key(record)
        identity = (key, int(record["seed"]))
        if identity in kept:
            first = kept[identity]
            if record_name(first) == record_name(record):
                continue   # the same file listed twice (e.g. by two manifest rows): nothing to warn about
            logger.warning("%s and %s are the same configuration and seed (%s seed %s); counted once",
                           record_name(first), record_name(record), record["label"], record["seed"])
            continue
        kept[identity] = record
        out.append((key, record))
    return out


def group_runs(records: Iterable[Mapping]) -> list[Group]:
    """Comparable groups in order of first appearance, each run once (:func:`unique_runs`)."""
    groups: dict[str, Group] = {}
    for key, record in _keyed_unique_runs(records):
        groups.setdefault(key, Group(key)).records.append(record)
    return list(groups.values())


def varying_settings(groups: list[Group], within: Iterable[Iterable[int]] | None = None) -> list[str]:
    """The settings whose value differs between groups that would otherwise share a row (``within``:
    lists of group indices, e.g. the groups of one dataset, method and budget; default: all groups).
    These are shown as columns so that two rows never look alike."""
    blocks = [list(b) for b in within] if within is not None else [list(range(len(groups)))]
    names: list[str] = []
    for block in blocks:
        if len(block) < 2:
            continue
        flat = [settings(groups[i].first) for i in block]
        keys = sorted({k for f in flat for k in f})
        for key in keys:
            if len({json.dumps(f.get(key, MISSING), sort_keys=True, default=str) for f in flat}) > 1 \
                    and key not in names:
                names.append(key)
    return names


def setting_text(record: Mapping, key: str) -> str:
    """A setting's value as a table shows it (``–`` where the run has no such setting)."""
    value = settings(record).get(key, MISSING)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def settings_label(record: Mapping, keys: Iterable[str]) -> str:
    """``dim=64 trainer.lr=0.003``: the values of ``keys`` in ``record`` as ``name=value`` words, the way a row
    name tells rows of one label apart (empty for no keys)."""
    return " ".join(f"{short_setting_name(k)}={setting_text(record, k)}" for k in keys)


def configuration_rows(rows: Mapping[tuple, list], named_among: Callable[[tuple], tuple] | None = None
                       ) -> tuple[list[tuple[tuple, Group, str]], list[str]]:
    """A table's rows split by configuration: for each key (a row before configurations, e.g. dataset, label
    and budget) with its records, one ``(key, group, name)`` per comparable group (:func:`group_runs`), where
    ``name`` is the :func:`settings_label` that tells it from the key's other groups, in the settings that vary
    among those groups only (empty when it is the only one: a UD row is not named by C2F's options that vary
    in another key; ``named_among(key)``: the wider key whose groups a name tells apart, e.g. without the
    device, so that a configuration has one name on every device); and the settings that vary within some
    key, which a table shows as columns. A key's groups
    come in the natural order of those settings (an option's 2, 3, 10, whatever order the runs were made
    in). A setting that is another's copy, the same option name under another prefix with the same value
    on every group (a shared stage keyed by the option that varies), is left out: its column would say
    nothing new."""
    grouped = [(key, group) for key, records in rows.items() for group in group_runs(records)]
    same_key: dict[tuple, list[int]] = {}
    for i, (key, _) in enumerate(grouped):
        same_key.setdefault(key, []).append(i)
    varying = varying_settings([group for _, group in grouped], same_key.values())
    flat = [settings(group.first) for _, group in grouped]
    values = {name: [json.dumps(f.get(name, MISSING), sort_keys=True, default=str) for f in flat] for name in varying}
    varying = [name for i, name in enumerate(varying)
               if not any(values[name] == values[other] and name.rsplit(".", 1)[-1] == other.rsplit(".", 1)[-1]
                          for other in varying[:i])]
    order = {key: sorted(indices, key=lambda i: [_natural(flat[i].get(name, MISSING)) for name in varying])
             for key, indices in same_key.items()}
    named_among = named_among or (lambda key: key)
    among: dict[tuple, list[int]] = {}
    for i, (key, _) in enumerate(grouped):
        among.setdefault(named_among(key), []).append(i)
    own = {wider: [name for name in varying if len({values[name][i] for i in indices}) > 1]
           for wider, indices in among.items()}
    return [(key, grouped[i][1], settings_label(grouped[i][1].first, own[named_among(key)]))
            for key in same_key for i in order[key]], varying


def _natural(value) -> tuple:
    """A setting's sort key: numbers by value, then text, a setting the run lacks last."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (2, 0, "") if value == MISSING else (1, 0, json.dumps(value, sort_keys=True, default=str))


def short_setting_name(key: str) -> str:
    """``method.options.dim`` -> ``dim``; ``trainer.lr`` stays; a stage setting keeps its stage name."""
    for prefix in ("method.options.",):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key
