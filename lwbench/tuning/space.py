"""Search spaces and trials of ``tune`` (docs/protocol.md §10.12): which options a method's tuning searches
and the settings of each trial, drawn deterministically.

A method's space is the shared trainer space (:data:`lwbench.config.TRAINER_SEARCH`: learning rate and L2
factor) plus every option the method declares with ``Option(search=...)``, less the options a cell fixes
(``--set``, a target's settings) and, with ``--space``, restricted to the names given. Options sized to the
budget are never searched (the declaration refuses it).

Trials are drawn by :func:`draw_trials` from a generator keyed by (search seed, dataset, method, budget,
accounting) and the trial's index: the same command draws the same trials, trial ``k`` does not depend on how
many trials are asked for (so ``--trials 16`` keeps the first 8 of ``--trials 8``), and methods that share a
key (UD-128 and UD-64) get the same candidate trainer settings. Trial 0 is the defaults. No two trials of a
bracket are the same; a space with fewer configurations than trials is an error.

This module imports no torch.
"""
from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from lwbench.config import ConfigError, trainer_options
from lwbench.options import Option, declared

TRAINER = "trainer"
MAX_ENUMERATED = 10_000    # a finite space up to this size is enumerated and shuffled instead of sampled
MAX_REDRAWS = 100          # draws of one trial before a space counts as exhausted


def searchable(method) -> dict[str, Option]:
    """``owner.option`` -> declaration, for every option with a search range: the trainer's, then the method's."""
    names = {f"{TRAINER}.{name}": option for name, option in trainer_options().items() if option.search}
    names.update({f"{method.name}.{name}": option for name, option in declared(method.options).items()
                  if option.search})
    return names


def check_space_names(names: list[str], methods: list) -> None:
    """Every ``--space`` name is ``trainer.X`` or ``<method>.X`` of one of ``methods`` and declares a search
    range; otherwise a :class:`ConfigError` listing what can be searched."""
    known: dict[str, Option] = {}
    for method in methods:
        known.update(searchable(method))
    owners = {TRAINER} | {method.name for method in methods}
    for name in names:
        owner, dot, option = name.partition(".")
        if not dot or owner not in owners:
            raise ConfigError(f"--space {name!r}: expected OWNER.OPTION with OWNER 'trainer' or one of the methods "
                              f"({', '.join(sorted(owners - {TRAINER}))}); searchable: {', '.join(sorted(known))}")
        if name not in known:
            raise ConfigError(f"--space {name!r}: this option declares no search range (options sized to the budget "
                              f"are never searched); searchable: {', '.join(sorted(known))}")


def bracket_space(method, fixed: Mapping[str, Mapping], restrict: list[str] | None = None) -> dict[str, Option]:
    """The options searched for ``method`` in a cell whose overrides are ``fixed``: the searchable ones
    (:func:`searchable`) that ``fixed`` does not set, restricted to ``restrict`` when given. A name of
    ``restrict`` that ``fixed`` sets is an error (it cannot be both fixed and searched)."""
    space = searchable(method)
    for name in list(space):
        owner, _, option = name.partition(".")
        if option in fixed.get(owner, {}):
            if restrict is not None and name in restrict:
                raise ConfigError(f"--space {name}: the option is fixed by --set (or the target's settings) to "
                                  f"{fixed[owner][option]!r}; drop one of them")
            del space[name]
    if restrict is not None:
        space = {name: option for name, option in space.items() if name in restrict}
    return dict(sorted(space.items()))


def describe_space(space: Mapping[str, Option]) -> dict[str, str]:
    return {name: option.search.describe() for name, option in space.items()}


def trial_generator(key: str, trial: int, attempt: int = 0) -> np.random.Generator:
    digest = hashlib.sha256(f"lwbench-tune/{key}/{trial}/{attempt}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def space_size(space: Mapping[str, Option]) -> int | None:
    """How many configurations the space holds, or None when it is continuous (or too large to enumerate)."""
    size = 1
    for option in space.values():
        values = option.search.values(option.type)
        if values is None:
            return None
        size *= len(values)
        if size > MAX_ENUMERATED:
            return None
    return size


def draw_trials(space: Mapping[str, Option], n: int, key: str, defaults: Mapping[str, Any],
                what: str = "the method") -> list[dict[str, Any]]:
    """The settings of ``n`` trials as flat ``{"owner.option": value}`` dicts; trial 0 is ``{}`` (the defaults,
    whose values are ``defaults``). ``key`` names the bracket (search seed, dataset, method, budget)."""
    if n < 1:
        raise ConfigError(f"--trials must be at least 1, got {n}")
    trials: list[dict[str, Any]] = [{}]
    if n == 1:
        return trials
    if not space:
        raise ConfigError(f"{what} has nothing to search (every searchable option is fixed, or --space leaves none), "
                          f"so {n} trials would repeat one configuration; use --trials 1 or search more options")
    names = list(space)
    seen = {tuple(defaults.get(name) for name in names)}
    size = space_size(space)
    if size is not None:
        everything = [c for c in itertools.product(*(space[name].search.values(space[name].type) for name in names))
                      if c not in seen]
        if len(everything) < n - 1:
            raise ConfigError(f"{what}'s search space ({', '.join(names)}) holds {len(everything)} configurations "
                              f"besides the defaults, fewer than the {n - 1} trials after trial 0; lower --trials")
        order = trial_generator(key, 0).permutation(len(everything))
        return trials + [dict(zip(names, everything[i])) for i in order[:n - 1]]
    for trial in range(1, n):
        for attempt in range(MAX_REDRAWS):
            rng = trial_generator(key, trial, attempt)
            values = tuple(space[name].search.sample(rng, space[name].type) for name in names)
            if values not in seen:
                break
        else:
            raise ConfigError(f"{what}: could not draw a new configuration for trial {trial} in {MAX_REDRAWS} draws; "
                              "the search space is too small for --trials")
        seen.add(values)
        trials.append(dict(zip(names, values)))
    return trials


def as_overrides(settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"trainer.lr": 1e-3, "qr.combine": "add"}`` -> ``{"trainer": {"lr": 1e-3}, "qr": {"combine": "add"}}``."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in settings.items():
        owner, _, option = name.partition(".")
        out.setdefault(owner, {})[option] = value
    return out


def describe_settings(settings: Mapping[str, Any]) -> str:
    """``trainer.lr=0.00231 qr.combine=add``, or ``defaults``."""
    return " ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                    for name, value in settings.items()) or "defaults"
