"""Does a value come from validation data? A flow-sensitive, reaching-definition check.

Name-level taint is too coarse for training scripts: `main()` reuses `loss`, `x`, `y` for the training step and
for the validation pass, so "`loss` is validation-derived somewhere in main" would mark the training step too.
Here a name at line L is judged by its last definition before L in the same scope, recursively; a parameter
is validation data when some live call site passes validation data in that position.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from ..load.parse import walk
from .astutil import FUNCS, VAL_PATH_LIT, is_val_name
from .program import Program
from .scopes import definitions, param_names

DEF_USE_DEPTH = 10  # definitions followed back from a use
_VAL_LITERAL = object()  # in an expression's evidence: an attribute or a string that names validation data


@dataclass
class _ScopeDefs:
    defs: dict[str, list[tuple[int, ast.AST | None]]] = field(default_factory=dict)
    params: list[str] = field(default_factory=list)


class ValFlow:
    def __init__(self, program: Program):
        self.p = program
        self._defs: dict[ast.AST, _ScopeDefs] = {}
        self.param_val: dict[ast.AST, set[str]] = {}
        self._memo: dict[tuple[int, int, int], bool] = {}
        self._evidence_memo: dict[int, tuple[ast.AST, list]] = {}
        self._solve_params()

    def _scope_defs(self, scope: ast.AST) -> _ScopeDefs:
        if scope in self._defs:
            return self._defs[scope]
        sd = _ScopeDefs(definitions(scope), param_names(scope) if isinstance(scope, FUNCS) else [])
        self._defs[scope] = sd
        return sd

    def is_val(self, scope: ast.AST, expr: ast.AST, line: int, depth: int = 0) -> bool:
        if depth > DEF_USE_DEPTH:
            return False
        key = (id(scope), id(expr), line)
        if key not in self._memo:
            self._memo[key] = False  # cycle guard
            self._memo[key] = self._is_val(scope, expr, line, depth)
        return self._memo[key]

    def _is_val(self, scope: ast.AST, expr: ast.AST, line: int, depth: int) -> bool:
        sd = self._scope_defs(scope)
        for n in self._evidence(expr):
            if n is _VAL_LITERAL:
                return True
            if is_val_name(n.id):
                return True
            last = _last_def(sd.defs.get(n.id), line, expr)
            if last is not None:
                def_line, value = last
                if value is not None and def_line < line and self.is_val(scope, value, def_line, depth + 1):
                    return True
                if (
                    value is not None
                    and def_line == line
                    and value is not expr
                    and self.is_val(scope, value, def_line - 1, depth + 1)
                ):
                    return True
            elif n.id in sd.params and n.id in self.param_val.get(scope, set()):
                return True
        return False

    def _evidence(self, expr: ast.AST) -> list:
        """What `_is_val` reads of `expr`, in walk order: its names, and `_VAL_LITERAL` where an attribute or a
        string names validation data (decided once: the rounds of `_solve_params` ask about the same
        arguments again)."""
        hit = self._evidence_memo.get(id(expr))
        if hit is not None and hit[0] is expr:
            return hit[1]
        out: list = []
        for n in walk(expr):
            kind = n.__class__
            if kind is ast.Name:
                out.append(n)
            elif (kind is ast.Attribute and is_val_name(n.attr)) or (
                kind is ast.Constant and isinstance(n.value, str) and VAL_PATH_LIT.search(n.value)
            ):
                out.append(_VAL_LITERAL)
                break  # `_is_val` is True here at the latest: nothing after it is read
        self._evidence_memo[id(expr)] = (expr, out)
        return out

    def _calls(self) -> list[tuple[ast.Call, ast.AST, list[tuple[ast.AST, list[str]]]]]:
        """Every call of a user function: (call, the scope it is made in, [(callee, its positional params)])."""
        out = []
        for idx in self.p.indexes:
            for call, name in zip(idx.nodes(ast.Call), idx.call_names()):
                if not name or name not in self.p.functions:
                    continue
                caller = idx.enclosing(call, ast.FunctionDef, ast.AsyncFunctionDef) or idx.tree
                callees = []
                for _, fn in self.p.functions[name]:
                    params = [a.arg for a in fn.args.args]
                    if params and params[0] in ("self", "cls") and isinstance(call.func, ast.Attribute):
                        params = params[1:]
                    callees.append((fn, params))
                out.append((call, caller, callees))
        return out

    def _solve_params(self) -> None:
        calls = self._calls()
        for _ in range(4):
            changed = False
            for call, caller, callees in calls:
                for fn, params in callees:
                    got = self.param_val.setdefault(fn, set())
                    for i, arg in enumerate(call.args):
                        if i < len(params) and params[i] not in got and self.is_val(caller, arg, call.lineno):
                            got.add(params[i])
                            changed = True
                    for kw in call.keywords:
                        if kw.arg and kw.arg not in got and self.is_val(caller, kw.value, call.lineno):
                            got.add(kw.arg)
                            changed = True
            if changed:
                self._memo.clear()  # parameter facts grew: earlier "not val" answers may change
            if not changed:
                break


def _last_def(defs: list[tuple[int, ast.AST | None]] | None, line: int, expr: ast.AST) -> tuple | None:
    """The last definition at or before `line` that is not `expr` itself (defs are sorted by line)."""
    for d in reversed(defs or ()):
        if d[0] <= line and d[1] is not expr:
            return d
    return None
