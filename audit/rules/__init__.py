"""The rules. Every module `pgNNN_*.py` in this package defines one rule class; `RULES` is the sorted list of
those classes (codes are stable and never reused — a removed rule keeps its module with STATUS = "removed").
Importing this package completes the code registry: `CODES` is every finding code, rules and checks alike."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from ..codes import REGISTRY, Code
from .base import Rule


def _discover() -> list[type[Rule]]:
    found: list[type[Rule]] = []
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("pg")):
        module = importlib.import_module(f"{__name__}.{mod}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Rule) and obj is not Rule and obj.__module__ == module.__name__:
                found.append(obj)
    return sorted((r for r in found if r.STATUS != "removed"), key=lambda r: r.CODE)


RULES: list[type[Rule]] = _discover()
CODES: list[Code] = REGISTRY.all()


def by_code(code: str) -> type[Rule] | None:
    for r in RULES:
        if code in (r.CODE, f"{r.CODE}/{r.NAME}", r.NAME):
            return r
    return None
