"""Lazy public names for a package ``__init__`` (the huggingface_hub ``__getattr__`` pattern):
``import hf_fairquant`` stays quick and loads torch, transformers or a quantization library only
when a name that needs it is first used."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any, Callable


class _LazyPackage(types.ModuleType):
    """A package whose exported names win over its submodules of the same name: importing
    ``hf_fairquant.audit`` (the module) must not replace ``hf_fairquant.audit`` (the function), as
    an eager ``from .audit import audit`` in ``__init__`` would have ensured."""

    def __setattr__(self, name: str, value: Any) -> None:
        shadowed = self.__dict__.get("_exports_shadowing_submodules", ())
        if name in shadowed and isinstance(value, types.ModuleType):
            return  # the import system binding the submodule; the export stays reachable
        super().__setattr__(name, value)


def lazy_exports(package: str, exports: dict[str, list[str]]) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` whose ``exports`` map a submodule (relative
    name) to the public names it defines."""
    where = {name: module for module, names in exports.items() for name in names}
    module_object = sys.modules[package]
    namespace = module_object.__dict__
    namespace["_exports_shadowing_submodules"] = frozenset(n for n in where if n in exports)
    module_object.__class__ = _LazyPackage

    def __getattr__(name: str) -> Any:
        if name not in where:
            if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
                return importlib.import_module(f"{package}.{name}")  # a subpackage: hf_fairquant.metrics.…
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return sorted(where), __getattr__, __dir__
