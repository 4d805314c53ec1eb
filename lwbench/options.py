"""Option declarations: a method states each option's type, default, allowed values and meaning once.

A method's ``options`` class attribute maps names to :class:`Option` s (a bare default is accepted too,
and means ``Option(default)``: any value of the default's type). The declarations drive

* :func:`resolve`: the defaults overlaid with each layer of overrides (dataset card, command line),
  command-line strings converted to the option's type, and every value checked against its choices or
  range, with an error that names the option (``mgqe.mode must be one of vq, sx, got 'xx'``);
* :func:`describe_options`: one line per option for ``--list --verbose``;
* :class:`Search`: where the ``tune`` command may look for an option's value (``Option(search=...)``),
  declared with the option so that every method's search space lives beside its options
  (:func:`log_uniform`, :func:`uniform`, :func:`integers`, :func:`one_of`; docs/protocol.md §10.12).

What a declaration cannot express (a check across options, such as ``groups`` dividing ``dim``, or one
that needs the dataset) stays in the method's ``configure``. The resolved options are a plain dict of
values, so plans, configuration hashes and records hold values only.

This module imports nothing else of lwbench (records and reports read configurations without torch).
"""
from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The convention of sized options (buckets, centroids, kept values): 0 lets configure() size it to the budget.
TO_BUDGET = {0: "sized to the budget"}

_TYPES = (bool, int, float, str, tuple)


class ConfigError(ValueError):
    """An option name or value is not valid; the message lists the valid ones."""


@dataclass(frozen=True)
class Search:
    """Where the tuner may look for an option's value: a range (``low`` to ``high`` inclusive, uniform or,
    with ``log``, log-uniform; integers for an int option) or a tuple of ``choices``. Declared with the
    option (``Option(..., search=log_uniform(0.5, 10))``); checked against the option's own range when
    declared. Sampled floats keep 3 significant digits, so records and tables show readable values."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "choices", tuple(self.choices))
        if self.choices:
            if self.low is not None or self.high is not None:
                raise ValueError("a search declares either choices or a range, not both")
            return
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a search range needs low < high, got {self.low!r} to {self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-uniform search range needs low > 0, got {self.low!r}")

    def describe(self) -> str:
        """E.g. ``log-uniform 0.0002..0.01``, ``integers 2..6``, ``one of mult, add``."""
        if self.choices:
            return "one of " + ", ".join(str(choice) for choice in self.choices)
        kind = "integers" if isinstance(self.low, int) and isinstance(self.high, int) else "uniform"
        return f"{'log-' if self.log else ''}{kind} {self.low:g}..{self.high:g}"

    def values(self, kind: type) -> tuple | None:
        """Every value the search can give, when there are few (choices, a short integer range); else None."""
        if self.choices:
            return self.choices
        if kind is int and self.high - self.low < 1000:
            return tuple(range(int(self.low), int(self.high) + 1))
        return None

    def sample(self, rng, kind: type) -> Any:
        """One value drawn with ``rng`` (a :class:`numpy.random.Generator`) for an option of type ``kind``."""
        finite = self.values(kind)
        if finite is not None and not (kind is int and self.log):
            return finite[int(rng.integers(len(finite)))]
        low, high = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        value = float(rng.uniform(low, high))
        value = math.exp(value) if self.log else value
        if kind is int:
            return int(min(max(round(value), self.low), self.high))
        return min(max(float(f"{value:.3g}"), self.low), self.high)

    def check(self, name: str, option: Option) -> None:
        """Every value the search can give is one ``option`` accepts, outside its special values."""
        if self.choices:
            for choice in self.choices:
                option.coerce(name, choice)
            return
        if option.type not in (int, float):
            raise ValueError(f"{name}: a search range needs an int or float option; declare choices instead")
        for bound in (self.low, self.high):
            if option.coerce(name, bound) in option.special:
                raise ValueError(f"{name}: the search range reaches the special value {bound!r}")


def log_uniform(low: float, high: float) -> Search:
    """Log-uniform between ``low`` and ``high`` (a learning rate, a regularization weight)."""
    return Search(low, high, log=True)


def uniform(low: float, high: float) -> Search:
    return Search(low, high)


def integers(low: int, high: int, log: bool = False) -> Search:
    """Integers ``low`` to ``high`` inclusive (log-uniform with ``log``)."""
    return Search(int(low), int(high), log=log)


def one_of(*choices) -> Search:
    return Search(choices=choices)


@dataclass(frozen=True)
class Option:
    """One option: its ``default`` (whose type is the option's type: bool, int, float, str, or tuple for a list),
    the values it accepts and what it means.

    ``choices``: the only values allowed. ``min`` / ``max``: inclusive bounds; ``above`` / ``below``:
    exclusive ones. ``special``: values outside those that keep a meaning of their own, e.g.
    ``special=TO_BUDGET`` (0: sized to the budget) next to ``min=1``. ``help``: what the option does,
    shown by ``--list --verbose``. ``search``: where ``tune`` may look for its value (:class:`Search`);
    None (the default) means the tuner never changes it. An option sized to the budget is never searched.
    """

    default: Any
    choices: tuple = ()
    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None
    special: Mapping[Any, str] = field(default_factory=dict)
    help: str = ""
    search: Search | None = None

    def __post_init__(self):
        if not isinstance(self.default, (*_TYPES, list)):
            raise TypeError(f"an option's default sets its type, which must be one of "
                            f"{', '.join(t.__name__ for t in _TYPES)}; got {self.default!r}")
        if isinstance(self.default, list):
            object.__setattr__(self, "default", tuple(self.default))
        object.__setattr__(self, "choices", tuple(self.choices))
        if self.search is not None:
            if dict(self.special) == TO_BUDGET:
                raise ValueError("an option sized to the budget (special=TO_BUDGET) is never searched: every "
                                 "method gets the same budget, and its size follows from it")
            self.search.check("the search of an option", self)

    @property
    def type(self) -> type:
        return next(t for t in _TYPES if isinstance(self.default, t))

    def coerce(self, name: str, value: Any) -> Any:
        """``value`` (a command-line string or a value) as the option's type, checked; ``name`` (e.g.
        ``mgqe.mode``) is what an error calls the option."""
        value = _as_type(name, self.type, value)
        if value in self.special:
            return value
        in_range = all(holds(value, bound) for _, bound, holds in self._bounds())
        if (self.choices and value not in self.choices) or not in_range:
            meanings = "".join(f" (or {v!r}: {meaning})" for v, meaning in self.special.items())
            raise ConfigError(f"{name} must be {self._requirement()}{meanings}, got {value!r}")
        return value

    def _bounds(self) -> list[tuple[str, float, Callable[[Any, Any], bool]]]:
        return [(words, bound, holds) for words, bound, holds in (
            ("at least", self.min, operator.ge), ("at most", self.max, operator.le),
            ("greater than", self.above, operator.gt), ("less than", self.below, operator.lt)) if bound is not None]

    def _requirement(self) -> str:
        """The choices or the range in words ("" when any value of the type will do)."""
        if self.choices:
            return "one of " + ", ".join(str(choice) for choice in self.choices)
        return " and ".join(f"{words} {bound}" for words, bound, _ in self._bounds())

    def allowed(self) -> str:
        """The allowed values in words: the choices or the range, then the special values."""
        parts = [self._requirement()] + [f"{value!r}: {meaning}" for value, meaning in self.special.items()]
        return ", or ".join(part for part in parts if part)


def declared(options: Mapping[str, Any]) -> dict[str, Option]:
    """A method's ``options`` attribute with every bare default as ``Option(default)``."""
    return {name: spec if isinstance(spec, Option) else Option(spec) for name, spec in options.items()}


def defaults(method) -> dict[str, Any]:
    """The default value of each of ``method``'s options."""
    return {name: option.default for name, option in declared(method.options).items()}


def coerce_options(owner: str, options: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``changes`` converted and checked against ``options`` (declarations or bare defaults of
    ``owner``, e.g. a method's or the trainer's); an unknown name is an error that lists the known ones."""
    known = declared(options)
    out = {}
    for key, value in changes.items():
        if key not in known:
            raise ConfigError(f"{owner} has no option {key!r}; its options are: {', '.join(sorted(known))}")
        out[key] = known[key].coerce(f"{owner}.{key}", value)
    return out


def resolve(method, *layers: Mapping[str, Any]) -> dict[str, Any]:
    """``method``'s defaults overlaid with each layer in turn (later layers win), each value converted
    and checked: the options a run hands to ``configure``."""
    options = defaults(method)
    for layer in layers:
        options.update(coerce_options(method.name, method.options, layer))
    return options


def describe_options(method) -> str:
    """One line per option of ``method``: name, type, default, allowed values, the range ``tune`` searches (if
    any) and help, e.g. ``mode (str, default 'vq', one of vq, sx) [tune searches one of vq, sx]: ...``. Empty
    for a method without options."""
    lines = []
    for name, option in declared(method.options).items():
        facts = [option.type.__name__, f"default {option.default!r}"]
        if option.allowed():
            facts.append(option.allowed())
        searched = f" [tune searches {option.search.describe()}]" if option.search is not None else ""
        lines.append(f"{name} ({', '.join(facts)}){searched}" + (f": {option.help}" if option.help else ""))
    return "\n".join(lines)


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


def _as_type(name: str, kind: type, value: Any) -> Any:
    if isinstance(value, str) and kind is not str:
        value = parse_value(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} expects true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{name} expects an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{name} expects a number, got {value!r}")
    if kind is tuple:
        if isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} expects a list, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} expects a string, got {value!r}")
    return value
