"""Method registry: filled by the :func:`register` decorator, discovered once on first use.

Methods come from, in order:

1. the built-in package :mod:`lwbench.methods` (each module or sub-package a method; ``common`` holds
   parts several methods share and registers nothing),
2. every folder listed in ``LWBENCH_PLUGINS`` (``os.pathsep``-separated): each ``*.py`` file, and each
   sub-folder with an ``__init__.py``, is a plugin,
3. the ``lwbench.methods`` entry-point group: a method shipped in another installed package (the entry
   point names a module that registers its methods on import, or a ``Method`` subclass).

Plugins only add to the built-ins; a plugin folder that does not exist is an error naming it.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from importlib.metadata import entry_points
from pathlib import Path

from lwbench.plugin import Method

BUILTIN_PACKAGE = "lwbench.methods"
SHARED_PARTS = {"common"}            # sub-packages of lwbench.methods that are not methods
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


def _load_builtins() -> None:
    package = importlib.import_module(BUILTIN_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name not in SHARED_PARTS:
            importlib.import_module(f"{BUILTIN_PACKAGE}.{info.name}")


def _load_plugin(path: Path) -> None:
    """Import a plugin file, or a plugin folder (a package with ``__init__.py``), under ``lwbench_plugins``."""
    module_name = f"lwbench_plugins.{path.stem}"
    if module_name in sys.modules:
        return
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(module_name, path / "__init__.py",
                                                      submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ImportError(f"cannot load method plugin {path}: {exc}") from exc


def plugin_folders() -> list[Path]:
    return [Path(p) for p in os.environ.get("LWBENCH_PLUGINS", "").split(os.pathsep) if p]


def discover() -> None:
    """Load the built-in methods, every plugin and every entry point once (idempotent)."""
    global _discovered
    if _discovered:
        return
    _load_builtins()
    for folder in plugin_folders():
        if not folder.is_dir():
            raise FileNotFoundError(f"plugin folder {folder} (from LWBENCH_PLUGINS) does not exist; "
                                    "fix or unset LWBENCH_PLUGINS")
        for path in sorted(folder.iterdir()):
            if path.name.startswith(("_", ".")):
                continue
            if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").is_file()):
                _load_plugin(path)
    for entry in entry_points(group="lwbench.methods"):
        loaded = entry.load()
        if isinstance(loaded, type) and issubclass(loaded, Method):
            register(loaded)
    _discovered = True


def method_names() -> list[str]:
    discover()
    return sorted(_REGISTRY)


def builtin_method_names() -> list[str]:
    """The methods that ship with lwbench (not plugins, entry points or methods a test registered)."""
    discover()
    return sorted(name for name, cls in _REGISTRY.items() if cls.__module__.startswith(f"{BUILTIN_PACKAGE}."))


def get_method(name: str) -> Method:
    discover()
    if name not in _REGISTRY:
        raise UnknownMethodError(f"unknown method {name!r}; registered methods: {', '.join(sorted(_REGISTRY))}. "
                                 "Add your own as a plugin (docs/adding-a-method.md).")
    return _REGISTRY[name]()
