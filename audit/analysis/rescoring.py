"""Facts about re-scoring the same validation tokens: which functions train on validation data, which
parameters hold a model, whether two statements are exclusive branches, whether a loop repeats a scoring
pass, whether a score is reported. Used by the multi-pass rescoring rule (PG104)."""

from __future__ import annotations

import ast
import functools
import re

from ..load.parse import walk
from .astutil import FUNCS, NO_GRAD, call_name, per_audit_cache, scope_nodes
from .program import Program, SourceIndex

_METRIC = re.compile(r"val_bpb|val_loss|bpb|_exact")
# How a function uses a parameter that holds a model (vs. tokens, a device or a rank).
_MODEL_USE = {
    "eval",
    "train",
    "parameters",
    "named_parameters",
    "state_dict",
    "load_state_dict",
    "forward",
    "forward_logits",
    "forward_hidden",
    "compute_logits",
    "zero_grad",
    "requires_grad_",
    "modules",
}


def val_training_functions(program: Program, names: list[str]) -> set[str]:
    """Functions that run a scoring TTT pass, and (up to two levels) the helpers that call them."""
    out = set(names)
    frontier = set(names)
    for _ in range(2):
        nxt = set()
        for name in frontier:
            for ridx, ref in program.refs.get(name, []):
                fn = ridx.enclosing(ref, *FUNCS)
                if fn is not None and fn.name not in out:
                    nxt.add(fn.name)
        out |= nxt
        frontier = nxt
    return out


@functools.lru_cache(maxsize=4096)
def model_params(fn: ast.AST) -> set[str]:
    used: set[str] = set()
    # a parameter only called for its side effect (`log0(f"…")`) is a logger, not a model
    statements = {id(n.value) for n in walk(fn) if isinstance(n, ast.Expr)}
    for n in walk(fn):
        if isinstance(n, ast.Call):
            if isinstance(n.func, ast.Name) and id(n) not in statements:
                used.add(n.func.id)
            elif isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name) and n.func.attr in _MODEL_USE:
                used.add(n.func.value.id)
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.attr in _MODEL_USE:
            used.add(n.value.id)
    return used


per_audit_cache(model_params.cache_clear)


def exclusive(idx: SourceIndex, a: ast.AST, b: ast.AST) -> bool:
    """`a` and `b` sit in different branches of the same `if`."""
    a_anc = {id(x): x for x in idx.ancestors(a)}
    child = b
    for anc in idx.ancestors(b):
        if id(anc) in a_anc and isinstance(anc, ast.If):
            in_body_b = child in anc.body
            a_child = a
            for x in idx.ancestors(a):
                if x is anc:
                    break
                a_child = x
            return in_body_b != (a_child in anc.body)
        child = anc
    return False


def rebound_between(scope: ast.AST, name: str, a: ast.AST, b: ast.AST) -> bool:
    lo, hi = a.end_lineno or a.lineno, b.lineno
    for n in scope_nodes(scope, ast.Assign, ast.Call):
        line = getattr(n, "lineno", 0)
        if not lo < line < hi:
            continue
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets):
            return True
        if (
            isinstance(n, ast.Call)
            and call_name(n) == "load_state_dict"
            and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name)
            and n.func.value.id == name
        ):
            return True
    return False


def reported(scope: ast.AST, idx: SourceIndex, call: ast.Call):
    """(log call, text) when the result of `call` is logged as a metric or returned."""
    stmt = idx.parents.get(call)
    names: set[str] = set()
    if isinstance(stmt, ast.Assign):
        names = {x.id for t in stmt.targets for x in walk(t) if isinstance(x, ast.Name)}
    for n in scope_nodes(scope, ast.Return, ast.Call):
        if n.lineno < call.lineno:
            continue
        if isinstance(n, ast.Return) and n.value is not None:
            if n.value is call or names & {x.id for x in walk(n.value) if isinstance(x, ast.Name)}:
                return n, "return"
        if isinstance(n, ast.Call) and call_name(n) in ("log0", "print", "log", "info", "log_fn", "print0"):
            used = {x.id for a in n.args for x in walk(a) if isinstance(x, ast.Name)}
            text = " ".join(
                c.value for a in n.args for c in walk(a) if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
            inline = any(x is call for a in n.args for x in walk(a))
            if (names & used or inline) and _METRIC.search(text):
                return n, text
    return None


def base(t: ast.AST) -> str | None:
    while isinstance(t, (ast.Subscript, ast.Attribute)):
        t = t.value
    return t.id if isinstance(t, ast.Name) else None


def under_no_grad(scope: ast.AST, node: ast.AST) -> bool:
    for w in scope_nodes(scope, ast.With, ast.AsyncWith):
        if any(isinstance(i.context_expr, ast.Call) and call_name(i.context_expr) in NO_GRAD for i in w.items):
            if any(x is node for x in walk(w)):
                return True
    if isinstance(scope, FUNCS):
        for d in scope.decorator_list:
            target = d.func if isinstance(d, ast.Call) else d
            if isinstance(target, ast.Attribute) and target.attr in NO_GRAD:
                return True
    return False


def scores_inside(loop: ast.AST, sources: set[str]) -> bool:
    for n in walk(loop):
        if isinstance(n, ast.AugAssign) and base(n.target) in sources:
            return True
        if (
            isinstance(n, ast.Assign)
            and any(isinstance(x, ast.Name) and x.id in sources for t in n.targets for x in walk(t))
            and isinstance(n.value, ast.Call)
        ):
            return True
    return False


def repeats(loop: ast.For) -> bool:
    """The loop variable never selects data: `for epoch in range(E)`, `for t in (0.9, 1.0)`."""
    it = loop.iter
    if not ((isinstance(it, ast.Call) and call_name(it) == "range") or isinstance(it, (ast.Tuple, ast.List))):
        return False
    if isinstance(it, (ast.Tuple, ast.List)) and not all(isinstance(e, ast.Constant) for e in it.elts):
        return False
    var = loop.target.id if isinstance(loop.target, ast.Name) else None
    if var is None:
        return False
    derived = {var}
    for n in walk(loop):
        if isinstance(n, ast.Assign) and derived & {x.id for x in walk(n.value) if isinstance(x, ast.Name)}:
            derived |= {x.id for t in n.targets for x in walk(t) if isinstance(x, ast.Name)}
    for n in walk(loop):
        if isinstance(n, ast.Subscript) and derived & {x.id for x in walk(n.slice) if isinstance(x, ast.Name)}:
            return False
    return True


def used_outside(scope: ast.AST, if_node: ast.If, names: set[str]) -> bool:
    inside = {id(x) for x in walk(if_node)}
    return any(
        isinstance(n.ctx, ast.Load) and n.id in names and id(n) not in inside for n in scope_nodes(scope, ast.Name)
    )


def loop_head(loop: ast.For) -> str:
    return f"for {ast.unparse(loop.target)} in {ast.unparse(loop.iter)}"[:60]
