"""Which names a scope binds, and to what: the one place that reads assignment targets.

- `binding_pairs(node)`: the (target, value) pairs one statement or clause binds.
- `definitions(scope)`: every name a function (or module) body binds, with the line and value, in order.
- `single_bindings(fn)`: the locals bound exactly once by a plain assignment (what guards fold through).
- `param_names(fn)`, `bound_names(target)`.
Results are cached per scope (analyses ask about the same long `main()` many times).
"""

from __future__ import annotations

import ast
from operator import itemgetter

from ..load.parse import walk
from .astutil import FUNCS, per_audit_cache, scope_nodes

_DEFS_CACHE: dict[int, tuple[ast.AST, dict[str, list[tuple[int, ast.AST]]]]] = {}
CACHE_LIMIT = 20_000


def param_names(fn: ast.AST) -> list[str]:
    a = fn.args
    return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]


BINDER_CLASSES = (  # the node classes that bind a name
    ast.Assign,
    ast.AnnAssign,
    ast.AugAssign,
    ast.For,
    ast.AsyncFor,
    ast.comprehension,
    ast.withitem,
    ast.NamedExpr,
)
_BINDERS = frozenset(BINDER_CLASSES)


def binding_pairs(n: ast.AST) -> list[tuple[ast.AST, ast.AST]]:
    """(target, value) for every binding `n` makes: assignments, loop and comprehension targets, `with … as`,
    the walrus. A loop target's value is the iterable; a `with` target's is the context expression."""
    if n.__class__ not in _BINDERS:
        return []
    if isinstance(n, ast.Assign):
        return [(t, n.value) for t in n.targets]
    if isinstance(n, (ast.AnnAssign, ast.AugAssign)) and n.value is not None:
        return [(n.target, n.value)]
    if isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)):
        return [(n.target, n.iter)]
    if isinstance(n, ast.withitem) and n.optional_vars is not None:
        return [(n.optional_vars, n.context_expr)]
    if isinstance(n, ast.NamedExpr):
        return [(n.target, n.value)]
    return []


_LINE_OF = itemgetter(0)


def definitions(scope: ast.AST) -> dict[str, list[tuple[int, ast.AST]]]:
    """name -> [(line, value)] of every binding in the scope's own body, sorted by line."""
    hit = _DEFS_CACHE.get(id(scope))
    if hit is not None and hit[0] is scope:
        return hit[1]
    defs: dict[str, list[tuple[int, ast.AST]]] = {}
    for n in scope_nodes(scope, *BINDER_CLASSES):  # in walk order, read from the scope's nodes by class
        line = getattr(n, "lineno", 0)
        for target, value in binding_pairs(n):
            for name in bound_names(target):
                defs.setdefault(name, []).append((line, value))
    for lst in defs.values():
        if len(lst) > 1:
            lst.sort(key=_LINE_OF)
    if len(_DEFS_CACHE) > CACHE_LIMIT:
        _DEFS_CACHE.clear()
    _DEFS_CACHE[id(scope)] = (scope, defs)
    return defs


_BINDINGS_CACHE: dict[int, tuple[ast.AST, dict[str, ast.expr]]] = {}
per_audit_cache(_DEFS_CACHE.clear)
per_audit_cache(_BINDINGS_CACHE.clear)


def bound_names(target: ast.AST | None) -> list[str]:
    """Every name an assignment target binds: `a`, `a, (b, c)`, `*rest`."""
    if target is None:
        return []
    if target.__class__ is ast.Name:
        return [target.id]
    return [x.id for x in walk(target) if isinstance(x, ast.Name)]


def single_bindings(fn: ast.AST | None) -> dict[str, ast.expr]:
    """Names assigned exactly once in `fn` by a plain `name = value` (not loop, `with`, comprehension targets
    or parameters), with that value: `use_slot = getattr(args, "slot_enabled", False)`. Cached per function."""
    if fn is None or not isinstance(fn, (*FUNCS, ast.Lambda)):
        return {}
    hit = _BINDINGS_CACHE.get(id(fn))
    if hit is not None and hit[0] is fn:
        return hit[1]
    counts: dict[str, int] = {}
    values: dict[str, ast.expr] = {}
    for n in scope_nodes(fn, *BINDER_CLASSES):
        targets: list[ast.AST | None] = []
        if isinstance(n, ast.Assign):
            targets = list(n.targets)
        elif isinstance(n, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor, ast.NamedExpr, ast.comprehension)):
            targets = [n.target]
        elif isinstance(n, ast.withitem):
            targets = [n.optional_vars]
        for t in targets:
            for name in bound_names(t):
                counts[name] = counts.get(name, 0) + 1
                if isinstance(n, ast.Assign) and isinstance(t, ast.Name):
                    values[name] = n.value
    params = set(param_names(fn))
    out = {k: v for k, v in values.items() if counts.get(k) == 1 and k not in params}
    if len(_BINDINGS_CACHE) > CACHE_LIMIT:
        _BINDINGS_CACHE.clear()
    _BINDINGS_CACHE[id(fn)] = (fn, out)
    return out
