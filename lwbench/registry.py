"""Method registry: filled by the :func:`register` decorator, discovered from plugin files.

Plugins are found in, in order:

1. ``methods/*.py`` of this repository (the built-in methods),
2. every folder listed in ``LWBENCH_PLUGINS`` (``os.pathsep``-separated) - a method can live anywhere,
3. the ``lwbench.methods`` entry-point group - a method can ship in another installed package
   (the entry point names a module that registers its methods on import, or a ``Method`` subclass).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .plugin import Method

METHODS_DIR = Path(__file__).resolve().parent.parent / "methods"
_REGISTRY: dict[str, type[Method]] = {}
_discovered = False


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a :class:`Method` subclass available under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"@register expects a subclass of lwbench.plugin.Method, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"{cls.__qualname__}: `name` must be a non-empty identifier-like string")
    previous = _REGISTRY.get(name)
    if previous is not None and previous.__qualname__ != cls.__qualname__:
        raise ValueError(f"method name {name!r} is registered twice ({previous.__module__} and {cls.__module__})")
    _REGISTRY[name] = cls
    return cls


def _load_file(path: Path) -> None:
    module_name = f"lwbench_plugins.{path.stem}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ImportError(f"cannot load method plugin {path}: {exc}") from exc


def discover() -> None:
    """Load every plugin file and entry point once (idempotent)."""
    global _discovered
    if _discovered:
        return
    folders = [METHODS_DIR] + [Path(p) for p in os.environ.get("LWBENCH_PLUGINS", "").split(os.pathsep) if p]
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"plugin folder {folder} does not exist (check LWBENCH_PLUGINS)")
        for path in sorted(folder.glob("*.py")):
            if not path.name.startswith("_"):
                _load_file(path)
    for entry in entry_points(group="lwbench.methods"):
        loaded = entry.load()
        if isinstance(loaded, type) and issubclass(loaded, Method):
            register(loaded)
    _discovered = True


def method_names() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    discover()
    if name not in _REGISTRY:
        raise UnknownMethodError(f"unknown method {name!r}; registered methods: {', '.join(sorted(_REGISTRY))}. "
                                 "Add one as a plugin file in methods/ (see README, 'Adding a method').")
    return _REGISTRY[name]()
