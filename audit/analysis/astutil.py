"""Small AST helpers and constants every analysis shares (one copy each).

- `UNKNOWN`: the value of an expression that cannot be folded statically.
- `dotted`, `call_name`: names of attribute chains and called functions.
- `walk_scope`: the nodes of one function body (not nested definitions), cached.
- `is_val_name`, `VAL_PATH_LIT`: names and path literals that hold validation data.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING

from ..load.parse import CHILD_SPECS, MANY, ONE, children, nodes_in

if TYPE_CHECKING:
    from .source import SourceIndex

FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
LOOPS = (ast.For, ast.AsyncFor, ast.While)
NO_GRAD = frozenset({"no_grad", "inference_mode"})
EXITS = (ast.Return, ast.Raise, ast.Continue, ast.Break)


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:  # pragma: no cover - guard against accidental truth tests
        raise TypeError("UNKNOWN has no truth value")


UNKNOWN = _Unknown()

ENV_FUNCS = {"os.environ.get", "os.getenv", "environ.get", "getenv", "os.environ.setdefault"}
# what runs a shell command: these calls (their last name) of these modules
SHELL_CALLS = frozenset(
    {"run", "call", "check_call", "check_output", "Popen", "system", "popen", "getoutput", "getstatusoutput"}
)
SHELL_MODULES = ("subprocess.", "os.")


def dotted(node: ast.AST) -> str | None:
    """`os.environ.get` for the matching Attribute chain, None for anything else."""
    parts: list[str] = []
    while node.__class__ is ast.Attribute:  # class tests: these two run for every call of every analysis
        parts.append(node.attr)
        node = node.value
    if node.__class__ is not ast.Name:
        return None
    if not parts:
        return node.id
    parts.append(node.id)
    return ".".join(reversed(parts))


def call_name(node: ast.Call) -> str:
    """Last component of the called name: `opt.step()` -> "step", `torch.no_grad()` -> "no_grad"."""
    f = node.func
    if f.__class__ is ast.Attribute:
        return f.attr
    if f.__class__ is ast.Name:
        return f.id
    return ""


BACKWARD_NAMES = ("backward", "grad")  # the called name of every call `is_backward` accepts


def is_backward(call: ast.Call) -> bool:
    """A gradient computation: `loss.backward()`, `torch.autograd.grad(…)`."""
    if call_name(call) == "backward" and isinstance(call.func, ast.Attribute):
        return True
    return (dotted(call.func) or "").endswith("autograd.grad")


def blocks(node: ast.AST) -> list[list[ast.stmt]]:
    return [getattr(node, a) for a in ("body", "orelse", "finalbody") if isinstance(getattr(node, a, None), list)]


def ends_with(body: list[ast.stmt], kinds: tuple[type, ...] = EXITS) -> bool:
    """Does the block end by leaving it (`return`, `raise`, `continue`, `break` — or the `kinds` given)?"""
    return bool(body) and isinstance(body[-1], kinds)


def inside(idx: SourceIndex, node: ast.AST, fn: ast.AST) -> bool:
    """Is `node` (of source `idx`) nested in `fn`?"""
    return any(a is fn for a in idx.ancestors(node))


def short(node: ast.AST) -> str:
    return short_text(ast.unparse(node))


def short_text(s: str) -> str:
    s = " ".join(s.split())
    return s if len(s) <= 80 else s[:77] + "..."


# Names that hold validation *data* (not metrics or settings such as val_loss / val_batch_size).
_VAL_DATA = re.compile(
    r"(^|_)(val|valid|validation|eval)(_?(tokens?|data|ids|seq|stream|set|docs?|files|pattern|path|toks|shard|shards|loader|chunks?|batch|x|y|inputs?|targets?)|$)",
    re.I,
)
_VAL_NOT_DATA = re.compile(
    r"(loss|bpb|every|interval|steps?|batch_size|batch_tokens|freq|time|ms|bytes?_|metric|score|best|log|acc|nll|ppl|_lut)",
    re.I,
)
VAL_PATH_LIT = re.compile(r"fineweb_val|_val_\d|val_\*|validation")


@functools.lru_cache(maxsize=8192)  # a pure function of the name; scripts ask about the same names again and again
def is_val_name(name: str) -> bool:
    return bool(_VAL_DATA.search(name)) and not _VAL_NOT_DATA.search(name)


_SCOPE_CACHE: dict[int, tuple[ast.AST, list[ast.AST]]] = {}


_PER_AUDIT: list[Callable[[], None]] = []


def per_audit_cache(clear: Callable[[], None]) -> Callable[[], None]:
    """Register the `clear` of a cache keyed by AST nodes: it is emptied before every audit, so a batch worker
    never keeps the trees of the folders it audited before (they were most of its memory)."""
    _PER_AUDIT.append(clear)
    return clear


def clear_caches() -> None:
    """Forget the trees of the previous audit."""
    _SCOPE_CACHE.clear()
    for clear in _PER_AUDIT:
        clear()


SCOPE_CLASSES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)  # what opens a scope of its own
_NEW_SCOPES = frozenset(SCOPE_CLASSES)


def walk_scope(scope: ast.AST) -> list[ast.AST]:
    """The nodes of a function/module body, not descending into nested function or class definitions.
    Cached per scope (a module, class, function or lambda): rules and analyses walk the same functions many
    times. Any other node (a statement) is walked the same way, uncached."""
    cached = scope.__class__ in _NEW_SCOPES or scope.__class__ is ast.Module
    if cached:
        hit = _SCOPE_CACHE.get(id(scope))
        if hit is not None and hit[0] is scope:
            return hit[1]
    out: list[ast.AST] = []
    stack = children(scope)
    specs = CHILD_SPECS
    while stack:
        n = stack.pop()
        out.append(n)
        cls = n.__class__
        if cls in _NEW_SCOPES:
            continue
        for name, kind in specs[cls]:  # children(n), inlined: this loop runs millions of times
            v = getattr(n, name, None)
            if kind is ONE:
                if v is not None:
                    stack.append(v)
            elif kind is MANY:
                stack.extend(v)
            else:
                stack.extend(nodes_in(v, kind))
    if cached:
        _SCOPE_CACHE[id(scope)] = (scope, out)
    return out


_SCOPE_KINDS: dict[tuple[int, tuple[type, ...]], tuple[ast.AST, list[ast.AST]]] = {}
_SCOPE_BUCKETS: dict[int, tuple[ast.AST, dict[type, tuple[list[int], list[ast.AST]]]]] = {}
per_audit_cache(_SCOPE_KINDS.clear)
per_audit_cache(_SCOPE_BUCKETS.clear)


_RANK = itemgetter(0)


def scope_nodes(scope: ast.AST, *classes: type) -> list[ast.AST]:
    """The nodes of `walk_scope(scope)` of exactly these classes, in its order: an analysis that looks at a
    few node kinds of every function reads them without testing every node. The scope's walk is bucketed by
    class once; several classes are merged by their rank in the walk. Callers do not modify the list."""
    key = (id(scope), classes)
    hit = _SCOPE_KINDS.get(key)
    if hit is not None and hit[0] is scope:
        return hit[1]
    buckets = _scope_buckets(scope)
    present = [buckets[c] for c in dict.fromkeys(classes) if c in buckets]
    if not present:
        out: list[ast.AST] = []
    elif len(present) == 1:
        out = present[0][1]
    else:  # the buckets are runs of ranks, which are distinct: one sort (in C) merges them, nodes never compared
        out = [n for _, n in sorted(chain.from_iterable(zip(ranks, nodes) for ranks, nodes in present), key=_RANK)]
    _SCOPE_KINDS[key] = (scope, out)
    return out


def _scope_buckets(scope: ast.AST) -> dict[type, tuple[list[int], list[ast.AST]]]:
    """`walk_scope(scope)` by node class: (ranks in the walk, nodes), kept for the audit."""
    hit = _SCOPE_BUCKETS.get(id(scope))
    if hit is not None and hit[0] is scope:
        return hit[1]
    buckets: dict[type, tuple[list[int], list[ast.AST]]] = {}
    for rank, n in enumerate(walk_scope(scope)):
        b = buckets.get(n.__class__)
        if b is None:
            buckets[n.__class__] = ([rank], [n])
        else:
            b[0].append(rank)
            b[1].append(n)
    _SCOPE_BUCKETS[id(scope)] = (scope, buckets)
    return buckets
