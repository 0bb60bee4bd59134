"""Fine-tuning methods behind one interface (see :mod:`nudgekit.methods._base`).

Every public module of this package is imported here so its methods register
themselves: adding a method is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil

from nudgekit.methods._base import REGISTRY, Fitted, Method, Task, Texts, raw_queries, register

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def get_method(name: str, **params: object) -> Method:
    """An instance of the method registered as ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**params)


__all__ = ["REGISTRY", "Fitted", "Method", "Task", "Texts", "get_method", "raw_queries", "register"]
