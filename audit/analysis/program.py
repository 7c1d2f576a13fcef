"""Shared analyses over a submission's resolved sources, computed once and queried by every rule.

- `Program`: every source parsed once; one traversal indexes functions, references, calls, parents.
- `Config`: code defaults (env-var reads, `Hyperparameters` attributes) overridden by the README run command
  and the hyperparameter dump in the logs; `fold()` constant-folds an expression under it.
- `reachability()`: a node is dead when an enclosing guard folds false, or when no live code references the
  function it sits in (the PR #1458 lesson: an unreachable mechanism is `info`, never `error`).
- `is_val_name()`: names that hold validation data (the flow-sensitive check is `dataflow.ValFlow`).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from ..findings import Reachability
from ..load import parse as pyparse
from ..load.folder import ResolvedSource
from ..load.scripts import LogText, log_calls


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:  # pragma: no cover - guard against accidental truth tests
        raise TypeError("UNKNOWN has no truth value")


UNKNOWN = _Unknown()

_ENV_FUNCS = {"os.environ.get", "os.getenv", "environ.get", "getenv", "os.environ.setdefault"}


def dotted(node: ast.AST) -> str | None:
    """`os.environ.get` for the matching Attribute chain, None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def call_name(node: ast.Call) -> str:
    """Last component of the called name: `opt.step()` -> "step", `torch.no_grad()` -> "no_grad"."""
    f = node.func
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Name):
        return f.id
    return ""


@dataclass
class SourceIndex:
    """One parsed source and its single-traversal index."""

    src: ResolvedSource
    tree: ast.Module
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)
    by_type: dict[type, list[ast.AST]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.src.path

    def nodes(self, *types: type) -> list[ast.AST]:
        out: list[ast.AST] = []
        for t in types:
            out.extend(self.by_type.get(t, ()))
        return out

    def snippet(self, node: ast.AST, max_lines: int = 3) -> str:
        start = getattr(node, "lineno", 0)
        end = min(getattr(node, "end_lineno", start) or start, start + max_lines - 1)
        return "\n".join(self.lines[start - 1 : end]) if start else ""

    def enclosing(self, node: ast.AST, *types: type) -> ast.AST | None:
        cur = self.parents.get(node)
        while cur is not None and not isinstance(cur, types):
            cur = self.parents.get(cur)
        return cur

    def ancestors(self, node: ast.AST):
        cur = self.parents.get(node)
        while cur is not None:
            yield cur
            cur = self.parents.get(cur)


def index_source(src: ResolvedSource) -> SourceIndex | None:
    if src.parse_error:
        return None
    tree, _ = pyparse.parse(src.text)
    if tree is None:
        return None
    idx = SourceIndex(src=src, tree=tree, lines=src.text.splitlines())
    stack = [tree]
    while stack:  # one traversal: parents and a by-type index
        node = stack.pop()
        idx.by_type.setdefault(type(node), []).append(node)
        for child in ast.iter_child_nodes(node):
            idx.parents[child] = node
            stack.append(child)
    for nodes in idx.by_type.values():
        nodes.sort(key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))
    return idx


# --- configuration -------------------------------------------------------------------------------
def _literal_from_text(v: str):
    s = v.strip().strip("'\"")
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


@dataclass
class Config:
    """What decides which code runs: env overrides (README run command) and the logged hyperparameters."""

    env: dict[str, str] = field(default_factory=dict)  # README run command, strings as the shell gives them
    logged: dict[str, str] = field(default_factory=dict)  # attribute name (lowercase) -> value from log dump
    source: dict[str, str] = field(default_factory=dict)  # key -> where the override came from


@dataclass
class Program:
    """All resolved sources of a submission, indexed once, with the facts rules need."""

    indexes: list[SourceIndex]
    config: Config = field(default_factory=Config)
    functions: dict[str, list[tuple[SourceIndex, ast.AST]]] = field(default_factory=dict)
    refs: dict[str, list[tuple[SourceIndex, ast.AST]]] = field(default_factory=dict)
    attrs: dict[str, tuple[SourceIndex, ast.expr]] = field(default_factory=dict)  # hyperparameter-like attributes
    consts: dict[str, tuple[SourceIndex, ast.expr]] = field(default_factory=dict)  # module-level NAME = expr
    env_helpers: set[str] = field(default_factory=set)  # user functions wrapping os.environ.get(name, default)
    logs: list[tuple[str, int, str]] = field(default_factory=list)  # (log path, line number, text)
    _shared: dict[str, object] = field(default_factory=dict)

    def shared(self, key: str, compute):
        """Analyses several rules need (TTT sites …) are computed once per submission."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    @classmethod
    def build(
        cls, sources: list[ResolvedSource], config: Config | None = None, logs: list[tuple[str, int, str]] | None = None
    ) -> "Program":
        idxs = [i for i in (index_source(s) for s in sources) if i is not None]
        prog = cls(indexes=idxs, config=config or Config(), logs=list(logs or ()))
        for idx in idxs:
            prog._index(idx)
        return prog

    def _index(self, idx: SourceIndex) -> None:
        for fn in idx.nodes(ast.FunctionDef, ast.AsyncFunctionDef):
            self.functions.setdefault(fn.name, []).append((idx, fn))
            if _wraps_env_get(fn):
                self.env_helpers.add(fn.name)
        for n in idx.nodes(ast.Name):
            if isinstance(n.ctx, ast.Load):
                self.refs.setdefault(n.id, []).append((idx, n))
        for n in idx.nodes(ast.Attribute):
            if isinstance(n.ctx, ast.Load):
                self.refs.setdefault(n.attr, []).append((idx, n))
        for stmt in idx.tree.body:
            for target, value in _assign_pairs(stmt):
                if isinstance(target, ast.Name):
                    # first binding wins: later rebinds are usually runtime updates
                    self.consts.setdefault(target.id, (idx, value))
        for cls_node in idx.nodes(ast.ClassDef):
            for stmt in cls_node.body:
                for target, value in _assign_pairs(stmt):
                    if isinstance(target, ast.Name):
                        self.attrs.setdefault(target.id, (idx, value))
        # `self.x = os.environ.get(...)` in __init__ and `args.x = ...` at module level
        for n in idx.nodes(ast.Assign):
            for t in n.targets:
                if isinstance(t, ast.Attribute) and _mentions_env(n.value):
                    self.attrs.setdefault(t.attr, (idx, n.value))
        # argparse: add_argument("--ttt-epochs", default=3)
        for call in idx.nodes(ast.Call):
            if call_name(call) == "add_argument" and call.args and isinstance(call.args[0], ast.Constant):
                name = str(call.args[0].value).lstrip("-").replace("-", "_")
                for kw in call.keywords:
                    if kw.arg == "default":
                        self.attrs.setdefault(name, (idx, kw.value))

    # --- folding ---------------------------------------------------------------------------------
    def fold(self, node: ast.AST, cfg: Config | None = None, _depth: int = 0, local: dict | None = None):
        """Constant-fold `node` under `cfg`; `local` maps function-local names bound once to their value."""
        cfg = self.config if cfg is None else cfg
        if _depth > 30:
            return UNKNOWN
        f = lambda n: self.fold(n, cfg, _depth + 1, local)  # noqa: E731
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            vals = [f(e) for e in node.elts]
            return UNKNOWN if any(v is UNKNOWN for v in vals) else tuple(vals)
        if isinstance(node, ast.Name):
            if node.id == "__name__":
                return "__main__"  # the entry script runs as a program
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            if local and node.id in local and local[node.id] is not node:
                return self.fold(local[node.id], cfg, _depth + 1, None)
            key = node.id.lower()
            if key in cfg.logged:
                return _literal_from_text(cfg.logged[key])
            if node.id in self.consts:
                _, expr = self.consts[node.id]
                if expr is not node:
                    return f(expr)
            return UNKNOWN
        if isinstance(node, ast.Attribute):
            name = dotted(node)
            if name in ("os.environ",):
                return UNKNOWN
            key = node.attr.lower()
            if key in cfg.logged:
                return _literal_from_text(cfg.logged[key])
            if node.attr in self.attrs:
                _, expr = self.attrs[node.attr]
                return f(expr)
            return UNKNOWN
        if isinstance(node, ast.Subscript):
            if dotted(node.value) in ("os.environ", "environ"):
                key = f(node.slice)
                return cfg.env.get(key, UNKNOWN) if isinstance(key, str) else UNKNOWN
            return UNKNOWN
        if isinstance(node, ast.Call):
            return self._fold_call(node, cfg, f)
        if isinstance(node, ast.UnaryOp):
            v = f(node.operand)
            if v is UNKNOWN:
                return UNKNOWN
            try:
                return {ast.Not: lambda x: not x, ast.USub: lambda x: -x, ast.UAdd: lambda x: +x}[type(node.op)](v)
            except (KeyError, TypeError):
                return UNKNOWN
        if isinstance(node, ast.BoolOp):
            is_and = isinstance(node.op, ast.And)
            result = True if is_and else False
            unknown = False
            for v in map(f, node.values):
                if v is UNKNOWN:
                    unknown = True
                    continue
                if is_and and not v:
                    return v
                if not is_and and v:
                    return v
                result = v
            return UNKNOWN if unknown else result
        if isinstance(node, ast.Compare):
            left = f(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = f(right_node)
                if left is UNKNOWN or right is UNKNOWN:
                    return UNKNOWN
                try:
                    ok = _COMPARE[type(op)](left, right)
                except (TypeError, KeyError):
                    return UNKNOWN
                if not ok:
                    return False
                left = right
            return True
        if isinstance(node, ast.BinOp):
            a, b = f(node.left), f(node.right)
            if a is UNKNOWN or b is UNKNOWN:
                return UNKNOWN
            try:
                return _BINOP[type(node.op)](a, b)
            except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError):
                return UNKNOWN
        if isinstance(node, ast.IfExp):
            t = f(node.test)
            if t is UNKNOWN:
                return UNKNOWN
            return f(node.body) if t else f(node.orelse)
        return UNKNOWN

    def _fold_call(self, node: ast.Call, cfg: Config, f):
        name = dotted(node.func) or ""
        args = node.args
        if name in _ENV_FUNCS or name.endswith(".environ.get"):
            key = f(args[0]) if args else UNKNOWN
            if not isinstance(key, str):
                return UNKNOWN
            if key in cfg.env:
                return cfg.env[key]
            if len(args) > 1:
                return f(args[1])
            for kw in node.keywords:
                if kw.arg == "default":
                    return f(kw.value)
            return None
        if isinstance(node.func, ast.Name) and node.func.id in self.env_helpers and args:
            key = f(args[0])
            default = f(args[1]) if len(args) > 1 else None
            for kw in node.keywords:
                if kw.arg in ("default", "d"):
                    default = f(kw.value)
            if isinstance(key, str) and key in cfg.env:
                raw = cfg.env[key]
                if isinstance(default, bool):
                    return raw.strip().lower() in ("1", "true", "yes", "on")
                return _convert(type(default), raw) if default is not None and default is not UNKNOWN else raw
            return default
        if name == "getattr" and len(args) >= 2 and isinstance(args[1], ast.Constant) and isinstance(args[1].value, str):
            attr = args[1].value  # getattr(args, "slot_enabled", False) reads like args.slot_enabled
            if attr.lower() in cfg.logged:
                return _literal_from_text(cfg.logged[attr.lower()])
            if attr in self.attrs:
                return f(self.attrs[attr][1])
            return f(args[2]) if len(args) > 2 else UNKNOWN
        if name in ("int", "float", "bool", "str") and len(args) == 1:
            v = f(args[0])
            if v is UNKNOWN:
                return UNKNOWN
            return _convert({"int": int, "float": float, "bool": bool, "str": str}[name], v)
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("lower", "upper", "strip") and not args:
            v = f(node.func.value)
            return getattr(v, node.func.attr)() if isinstance(v, str) else UNKNOWN
        if name in ("max", "min") and args:
            vals = [f(a) for a in args]
            if any(v is UNKNOWN for v in vals):
                return UNKNOWN
            try:
                return (max if name == "max" else min)(vals)
            except TypeError:
                return UNKNOWN
        return UNKNOWN

    # --- reachability ----------------------------------------------------------------------------
    def guard_status(self, idx: SourceIndex, node: ast.AST, cfg: Config) -> tuple[bool | None, str]:
        """(False, why) when an enclosing guard is false under `cfg`; (None, why) when one is unknown."""
        ok, why, _ = self._guard_scan(idx, node, cfg)
        return ok, why

    def _guard_scan(self, idx: SourceIndex, node: ast.AST, cfg: Config) -> tuple[bool | None, str, tuple | None]:
        """`guard_status` plus the `if` branch that blocks `node` — (idx, first line, last line) — when the
        deciding guard (false, else the first undecided one) is an `if` around it."""
        unknown = ""
        unknown_branch = None
        child = node
        local = self._single_bindings(idx.enclosing(node, ast.FunctionDef, ast.AsyncFunctionDef))
        for anc in idx.ancestors(node):
            if isinstance(anc, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                break
            tests: list[tuple[ast.expr, bool]] = []
            branch = None
            if isinstance(anc, ast.If) and child is not anc.test:
                stmts = anc.body if child in anc.body else anc.orelse
                branch = (idx, stmts[0].lineno, stmts[-1].end_lineno or stmts[-1].lineno)
            if isinstance(anc, (ast.If, ast.While)) and child is not anc.test:
                tests.append((anc.test, child in anc.body))
            elif isinstance(anc, ast.IfExp) and child is not anc.test:
                tests.append((anc.test, child is anc.body))
            elif isinstance(anc, ast.For) and child is not anc.iter and isinstance(anc.iter, ast.Call) and (
                dotted(anc.iter.func) == "range" and len(anc.iter.args) == 1
            ):
                n = self.fold(anc.iter.args[0], cfg)
                if isinstance(n, (int, float)) and not isinstance(n, bool) and n <= 0:
                    return False, f"`{_short(anc.iter)}` is empty", None
            elif isinstance(anc, ast.BoolOp) and isinstance(anc.op, ast.And):
                pos = anc.values.index(child) if child in anc.values else 0
                tests.extend((v, True) for v in anc.values[:pos])
            # early exits before us in the same block: `if not X: return`
            for block in _blocks(anc):
                if child in block:
                    for stmt in block[: block.index(child)]:
                        if isinstance(stmt, ast.If) and not stmt.orelse and _exits(stmt.body):
                            tests.append((stmt.test, False))
            for test, want in tests:
                v = self.fold(test, cfg, local=local)
                if v is UNKNOWN and self._config_undecided(test, cfg):
                    if not unknown:
                        unknown, unknown_branch = ast.unparse(test), (branch if test is getattr(anc, "test", None) else None)
                elif v is UNKNOWN:
                    continue  # depends on runtime values only (loop counters, rank…): may run
                elif bool(v) != want:
                    return False, f"`{_short(test)}` is {bool(v)}", (branch if test is getattr(anc, "test", None) else None)
            child = anc
        if unknown:
            return None, f"`{_short_text(unknown)}` not decidable statically", unknown_branch
        return True, "", None

    def _single_bindings(self, fn: ast.AST | None) -> dict[str, ast.expr]:
        """Names assigned exactly once in `fn` (not loop targets or parameters): `ttt = os.environ.get(...)`."""
        if fn is None:
            return {}
        cache = self._shared.setdefault("_single_bindings", {})
        if fn in cache:
            return cache[fn]
        counts: dict[str, int] = {}
        values: dict[str, ast.expr] = {}
        for n in walk_scope(fn):
            targets: list[ast.AST] = []
            if isinstance(n, ast.Assign):
                targets = n.targets
            elif isinstance(n, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor, ast.withitem, ast.NamedExpr)):
                targets = [getattr(n, "target", None) or getattr(n, "optional_vars", None)]
            for t in targets:
                for name in (x.id for x in ast.walk(t) if isinstance(x, ast.Name)) if t is not None else ():
                    counts[name] = counts.get(name, 0) + 1
                    if isinstance(n, ast.Assign) and isinstance(t, ast.Name):
                        values[name] = n.value
        params = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
        out = {k: v for k, v in values.items() if counts.get(k) == 1 and k not in params}
        cache[fn] = out
        return out

    def _config_undecided(self, test: ast.AST, cfg: Config) -> bool:
        """Does the guard read configuration (env vars, hyperparameters, module constants) we cannot fold?"""
        for n in ast.walk(test):
            cfg_node = (
                (isinstance(n, ast.Attribute) and (n.attr in self.attrs or n.attr.lower() in cfg.logged))
                or (isinstance(n, ast.Name) and n.id in self.consts)
                or (isinstance(n, ast.Call) and (dotted(n.func) or "") in _ENV_FUNCS)
            )
            if cfg_node and self.fold(n, cfg) is UNKNOWN:
                return True
        return False

    def reachability(self, idx: SourceIndex, node: ast.AST) -> tuple[Reachability, str]:
        """Reachability of `node` under the effective config, compared with code defaults."""
        live, why = self._live(idx, node, self.config, set())
        if live is not True:
            proof = self.log_proof(idx, node)
            if proof is not None:
                path, line, text = proof
                state = "off under the effective config" if live is False else "not decidable statically"
                return Reachability.SHOWN_BY_LOGS, f"{state} ({why}), but {path}:{line} prints its message `{_short_text(text)}`"
        if live is False:
            return Reachability.DISABLED_BY_DEFAULT, why
        if self.config.env or self.config.logged:
            live_default, why_default = self._live(idx, node, Config(), set())
            if live_default is False:
                return Reachability.ENABLED_BY_RUN_COMMAND, f"off by default ({why_default}); enabled by {self._override_note()}"
        if live is None:
            return Reachability.UNKNOWN, why
        return Reachability.REACHABLE, why

    # --- log evidence --------------------------------------------------------------------------
    def log_proof(self, idx: SourceIndex, node: ast.AST) -> tuple[str, int, str] | None:
        """A log line printed only by the code that guards `node` off: that code ran in the logged run."""
        if not self.logs:
            return None
        cache = self._shared.setdefault("_log_proof", {})
        key = (id(idx), id(node))
        if key not in cache:
            cache[key] = self._find_log_proof(idx, node)
        return cache[key]

    def _find_log_proof(self, idx: SourceIndex, node: ast.AST) -> tuple[str, int, str] | None:
        regions = self._blocked_regions(idx, node, 0, frozenset())
        if not regions:
            return None
        calls = self.shared("_log_calls", lambda: [(i, c) for i in self.indexes for c in log_calls(i.tree)])
        logs = self.shared("_log_text", lambda: LogText(self.logs))

        def inside(i: SourceIndex, c) -> bool:
            return any(i is ri and s <= c.start and c.end <= e for ri, s, e in regions)

        # a piece of text also printed outside the blocked code proves nothing
        outside = "\0".join(ch for i, c in calls if not inside(i, c) for ch in c.chunks)
        for i, c in calls:
            if inside(i, c):
                for ch in c.chunks:
                    if ch not in outside:
                        hit = logs.find(ch)
                        if hit is not None:
                            return hit
        return None

    def _blocked_regions(self, idx: SourceIndex, node: ast.AST, depth: int, seen: frozenset) -> list[tuple]:
        """Line ranges that run only if `node` runs: the branch of the `if` that blocks it, or its whole
        function plus the regions blocking that function's call sites."""
        ok, _, branch = self._guard_scan(idx, node, self.config)
        if branch is not None:
            return [branch]
        fn = idx.enclosing(node, ast.FunctionDef, ast.AsyncFunctionDef)
        if fn is None or fn in seen or depth > 2 or ok is not True:
            return []  # blocked inside the function by something other than an `if` (early exit, empty loop)
        out = [(idx, fn.lineno, fn.end_lineno or fn.lineno)]
        for i, r in self.refs.get(fn.name, []):
            if not _inside(i, r, fn):
                out.extend(self._blocked_regions(i, r, depth + 1, seen | {fn}))
        return out

    def _override_note(self) -> str:
        parts = []
        if self.config.env:
            parts.append("the README run command")
        if self.config.logged:
            parts.append("the logged hyperparameters")
        return " and ".join(parts) or "overrides"

    def _live(self, idx: SourceIndex, node: ast.AST, cfg: Config, seen: set) -> tuple[bool | None, str]:
        ok, why = self.guard_status(idx, node, cfg)
        if ok is False:
            return False, why
        fn = idx.enclosing(node, ast.FunctionDef, ast.AsyncFunctionDef)
        if fn is None:
            return ok, why
        if fn in seen:
            return None, "recursive"
        seen = seen | {fn}
        if fn.name.startswith("__") or fn.name == "forward" or fn.decorator_list:
            return ok, why
        sites = [(i, r) for i, r in self.refs.get(fn.name, []) if not _inside(i, r, fn)]
        if not sites:
            return False, f"`{fn.name}()` is never called"
        results = [self._live(i, r, cfg, seen) for i, r in sites]
        if any(r[0] is True for r in results):
            return ok, why
        if any(r[0] is None for r in results):
            return None, next(r[1] for r in results if r[0] is None)
        return False, f"every call of `{fn.name}()` is dead ({results[0][1]})"


# --- helpers -------------------------------------------------------------------------------------
_COMPARE = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: lambda a, b: a is b,
    ast.IsNot: lambda a, b: a is not b,
}
_BINOP = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}


def _convert(typ, v):
    try:
        if typ is bool and isinstance(v, str):
            return v.strip().lower() not in ("", "0", "false", "no", "off")
        if typ is int and isinstance(v, str):
            return int(float(v)) if re.fullmatch(r"\s*-?\d+(\.0*)?\s*", v) else int(v)
        return typ(v)
    except (TypeError, ValueError, OverflowError):
        return UNKNOWN


def _assign_pairs(stmt: ast.stmt):
    if isinstance(stmt, ast.Assign):
        for t in stmt.targets:
            yield t, stmt.value
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        yield stmt.target, stmt.value


def _mentions_env(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Attribute) and n.attr in ("environ", "getenv") for n in ast.walk(node)
    )


def _wraps_env_get(fn: ast.FunctionDef) -> bool:
    """`def env_int(name, default): return int(os.environ.get(name, default))`-style helpers."""
    if not fn.args.args:
        return False
    first = fn.args.args[0].arg
    for n in _walk_scope(fn):
        if isinstance(n, ast.Call) and (dotted(n.func) or "") in _ENV_FUNCS | {"os.environ.get"}:
            if n.args and isinstance(n.args[0], ast.Name) and n.args[0].id == first:
                return True
    return False


def _blocks(node: ast.AST) -> list[list[ast.stmt]]:
    return [getattr(node, a) for a in ("body", "orelse", "finalbody") if isinstance(getattr(node, a, None), list)]


def _exits(body: list[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break))


def _inside(idx: SourceIndex, node: ast.AST, fn: ast.AST) -> bool:
    return any(a is fn for a in idx.ancestors(node))


def _short(node: ast.AST) -> str:
    return _short_text(ast.unparse(node))


def _short_text(s: str) -> str:
    s = " ".join(s.split())
    return s if len(s) <= 80 else s[:77] + "..."


# Names that hold validation *data* (not metrics or settings such as val_loss / val_batch_size).
_VAL_DATA = re.compile(r"(^|_)(val|valid|validation|eval)(_?(tokens?|data|ids|seq|stream|set|docs?|files|pattern|path|toks|shard|shards|loader|chunks?|batch|x|y|inputs?|targets?)|$)", re.I)
_VAL_NOT_DATA = re.compile(r"(loss|bpb|every|interval|steps?|batch_size|batch_tokens|freq|time|ms|bytes?_|metric|score|best|log|acc|nll|ppl|_lut)", re.I)
_VAL_PATH_LIT = re.compile(r"fineweb_val|_val_\d|val_\*|validation")


def is_val_name(name: str) -> bool:
    return bool(_VAL_DATA.search(name)) and not _VAL_NOT_DATA.search(name)


_SCOPE_CACHE: dict[int, tuple[ast.AST, list[ast.AST]]] = {}


def _walk_scope(scope: ast.AST) -> list[ast.AST]:
    """The nodes of a function/module body, not descending into nested function or class definitions.
    Cached per scope: rules and analyses walk the same functions many times."""
    hit = _SCOPE_CACHE.get(id(scope))
    if hit is not None and hit[0] is scope:
        return hit[1]
    out: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        n = stack.pop()
        out.append(n)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        stack.extend(ast.iter_child_nodes(n))
    if len(_SCOPE_CACHE) > 20_000:
        _SCOPE_CACHE.clear()
    _SCOPE_CACHE[id(scope)] = (scope, out)
    return out


def walk_scope(scope: ast.AST):
    return _walk_scope(scope)
