"""The program model: every resolved source parsed once and indexed in one traversal.

- `SourceIndex`: one parsed source — parents, nodes by type, lines.
- `Program`: all sources of a submission — functions, references, hyperparameter-like attributes, module
  constants, env-reading helpers — plus folding (`folding.Folding`) and reachability
  (`reachability.Liveness`) under the effective `Config` (config.py).
Helpers shared by every analysis live in astutil.py; the flow of validation data in valueflow.py.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from ..load.resolve import ResolvedSource
from .astutil import ENV_FUNCS, dotted
from .config import Config
from .folding import Folding
from .reachability import Liveness
from .source import SourceIndex, index_source, starts_within


@dataclass
class Program(Folding, Liveness):
    """All resolved sources of a submission, indexed once, with the facts rules need: `fold()` (folding.py)
    and `reachability()` (reachability.py) are mixed in."""

    indexes: list[SourceIndex]
    config: Config = field(default_factory=Config)
    functions: dict[str, list[tuple[SourceIndex, ast.AST]]] = field(default_factory=dict)
    # where each of the program's function names is read (a call, a callback): every query names a function
    refs: "FunctionRefs" = field(default_factory=lambda: FunctionRefs([], {}))
    attrs: dict[str, tuple[SourceIndex, ast.expr]] = field(default_factory=dict)  # hyperparameter-like attributes
    consts: dict[str, tuple[SourceIndex, ast.expr]] = field(default_factory=dict)  # module-level NAME = expr
    env_helpers: set[str] = field(default_factory=set)  # user functions wrapping os.environ.get(name, default)
    logs: list[tuple[str, int, str]] = field(default_factory=list)  # (log path, line number, text)
    _log_proofs: dict[tuple[int, int], tuple[str, int, str] | None] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls, sources: list[ResolvedSource], config: Config | None = None, logs: list[tuple[str, int, str]] | None = None
    ) -> "Program":
        idxs = [i for i in (index_source(s) for s in sources) if i is not None]
        prog = cls(indexes=idxs, config=config or Config(), logs=list(logs or ()))
        for idx in idxs:
            for fn in idx.nodes(ast.FunctionDef, ast.AsyncFunctionDef):
                prog.functions.setdefault(fn.name, []).append((idx, fn))
        prog.refs = FunctionRefs(idxs, prog.functions)
        for idx in idxs:
            prog._index(idx)
        return prog

    def _index(self, idx: SourceIndex) -> None:
        self.env_helpers.update(env_get_wrappers(idx))
        for stmt in idx.tree.body:
            for target, value in assign_pairs(stmt):
                if isinstance(target, ast.Name):
                    # first binding wins: later rebinds are usually runtime updates
                    self.consts.setdefault(target.id, (idx, value))
        for cls_node in idx.nodes(ast.ClassDef):
            for stmt in cls_node.body:
                for target, value in assign_pairs(stmt):
                    if isinstance(target, ast.Name):
                        self.attrs.setdefault(target.id, (idx, value))
        # `self.x = os.environ.get(...)` in __init__ and `args.x = ...` at module level
        # (an environment read inside the value starts in the value's span: a bisect, not a walk of every value)
        env_reads = sorted((a.lineno, a.col_offset) for w in _ENV_ATTRS for a in idx.named(ast.Attribute, w))
        for n in idx.nodes(ast.Assign) if env_reads else ():
            for t in n.targets:
                if isinstance(t, ast.Attribute) and starts_within(env_reads, n.value):
                    self.attrs.setdefault(t.attr, (idx, n.value))
        # argparse: add_argument("--ttt-epochs", default=3)
        for call in idx.calls_named("add_argument"):
            if call.args and isinstance(call.args[0], ast.Constant):
                name = str(call.args[0].value).lstrip("-").replace("-", "_")
                for kw in call.keywords:
                    if kw.arg == "default":
                        self.attrs.setdefault(name, (idx, kw.value))


class FunctionRefs:
    """Where each function name of the program is read (a `Name` or an attribute, loaded): `get(name, default)`
    as a dict of name -> [(source, node)] would answer, each source's names before its attributes, each in
    position order. Made on first ask per name: most function names are never asked about."""

    def __init__(self, indexes: list[SourceIndex], functions: dict) -> None:
        self._indexes = indexes
        self._functions = functions
        self._memo: dict[str, list[tuple[SourceIndex, ast.AST]]] = {}

    def get(self, name: str, default=None):
        hit = self._memo.get(name)
        if hit is None:
            hit = self._memo[name] = self._find(name) if name in self._functions else []
        return hit or default

    def _find(self, name: str) -> list[tuple[SourceIndex, ast.AST]]:
        return [
            (idx, n)
            for idx in self._indexes
            for cls in (ast.Name, ast.Attribute)
            for n in idx.named(cls, name)
            if isinstance(n.ctx, ast.Load)
        ]


def assign_pairs(stmt: ast.stmt):
    if isinstance(stmt, ast.Assign):
        for t in stmt.targets:
            yield t, stmt.value
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        yield stmt.target, stmt.value


_ENV_ATTRS = frozenset({"environ", "getenv"})
_ENV_CALLED = tuple(sorted({f.rsplit(".", 1)[-1] for f in ENV_FUNCS}))  # the called name of each of ENV_FUNCS


def env_get_wrappers(idx: SourceIndex) -> set[str]:
    """Names of `def env_int(name, default): return int(os.environ.get(name, default))`-style helpers: a function
    whose own body (not a nested def, class or lambda) reads the environment at its first parameter. Found from
    the source's environment calls up to their scope, rather than by walking every function."""
    out: set[str] = set()
    for call in idx.calls_named(*_ENV_CALLED):
        if dotted(call.func) not in ENV_FUNCS or not (call.args and isinstance(call.args[0], ast.Name)):
            continue
        fn = idx.enclosing(call, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.args.args:
            if fn.args.args[0].arg == call.args[0].id:
                out.add(fn.name)
    return out
