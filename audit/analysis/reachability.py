"""Is a node live under the effective configuration, and what decided it?

A node is dead when an enclosing guard folds false (`if`, `while`, a conditional expression, an `and`
chain, an early `return` before it, an empty `range`), or when no live code calls the function it sits in
(an unreachable mechanism is `info`, never `error`). Guards over configuration we cannot fold are
undecided. Code that is off (or undecided) but whose own log message the logs print ran anyway
(`shown-by-logs`). `Liveness` is a mixin of `Program`; it is the one reachability engine of the auditor.
"""

from __future__ import annotations

import ast
from functools import cached_property
from typing import TYPE_CHECKING

from ..findings import Reachability
from ..load.messages import LogCall, LogText, log_calls
from ..load.parse import walk
from .astutil import ENV_FUNCS, FUNCS, UNKNOWN, blocks, dotted, ends_with, inside, short, short_text
from .config import Config
from .scopes import single_bindings

if TYPE_CHECKING:
    from .source import SourceIndex


class Liveness:
    config: Config
    indexes: list
    refs: dict
    attrs: dict
    consts: dict
    logs: list[tuple[str, int, str]]
    _log_proofs: dict

    @cached_property
    def log_calls(self) -> list[tuple[SourceIndex, LogCall]]:
        """Every log/print call of every source, with the literal pieces it prints."""
        return [(i, c) for i in self.indexes for c in log_calls(i.tree)]

    @cached_property
    def log_text(self) -> LogText:
        return LogText(self.logs)

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
        local = single_bindings(idx.enclosing(node, *FUNCS))
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
            elif (
                isinstance(anc, ast.For)
                and child is not anc.iter
                and isinstance(anc.iter, ast.Call)
                and (dotted(anc.iter.func) == "range" and len(anc.iter.args) == 1)
            ):
                n = self.fold(anc.iter.args[0], cfg)
                if isinstance(n, (int, float)) and not isinstance(n, bool) and n <= 0:
                    return False, f"`{short(anc.iter)}` is empty", None
            elif isinstance(anc, ast.BoolOp) and isinstance(anc.op, ast.And):
                pos = anc.values.index(child) if child in anc.values else 0
                tests.extend((v, True) for v in anc.values[:pos])
            # early exits before us in the same block: `if not X: return`
            for block in blocks(anc):
                if child in block:
                    for stmt in block[: block.index(child)]:
                        if isinstance(stmt, ast.If) and not stmt.orelse and ends_with(stmt.body):
                            tests.append((stmt.test, False))
            for test, want in tests:
                v = self.fold(test, cfg, local=local)
                if v is UNKNOWN and self._config_undecided(test, cfg):
                    if not unknown:
                        unknown, unknown_branch = (
                            ast.unparse(test),
                            (branch if test is getattr(anc, "test", None) else None),
                        )
                elif v is UNKNOWN:
                    continue  # depends on runtime values only (loop counters, rank…): may run
                elif bool(v) != want:
                    return (
                        False,
                        f"`{short(test)}` is {bool(v)}",
                        (branch if test is getattr(anc, "test", None) else None),
                    )
            child = anc
        if unknown:
            return None, f"`{short_text(unknown)}` not decidable statically", unknown_branch
        return True, "", None

    def _config_undecided(self, test: ast.AST, cfg: Config) -> bool:
        """Does the guard read configuration (env vars, hyperparameters, module constants) we cannot fold?"""
        for n in walk(test):
            cfg_node = (
                (isinstance(n, ast.Attribute) and (n.attr in self.attrs or n.attr.lower() in cfg.logged))
                or (isinstance(n, ast.Name) and n.id in self.consts)
                or (isinstance(n, ast.Call) and (dotted(n.func) or "") in ENV_FUNCS)
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
                return (
                    Reachability.SHOWN_BY_LOGS,
                    f"{state} ({why}), but {path}:{line} prints its message `{short_text(text)}`",
                )
        if live is False:
            return Reachability.DISABLED_BY_DEFAULT, why
        if self.config.env or self.config.logged:
            live_default, why_default = self._live(idx, node, Config(), set())
            if live_default is False:
                return (
                    Reachability.ENABLED_BY_RUN_COMMAND,
                    f"off by default ({why_default}); enabled by {self._override_note()}",
                )
        if live is None:
            return Reachability.UNKNOWN, why
        return Reachability.REACHABLE, why

    # --- log evidence --------------------------------------------------------------------------
    def log_proof(self, idx: SourceIndex, node: ast.AST) -> tuple[str, int, str] | None:
        """A log line printed only by the code that guards `node` off: that code ran in the logged run."""
        if not self.logs:
            return None
        key = (id(idx), id(node))
        if key not in self._log_proofs:
            self._log_proofs[key] = self._find_log_proof(idx, node)
        return self._log_proofs[key]

    def _find_log_proof(self, idx: SourceIndex, node: ast.AST) -> tuple[str, int, str] | None:
        regions = self._blocked_regions(idx, node, 0, frozenset())
        if not regions:
            return None
        calls, logs = self.log_calls, self.log_text

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
            if not inside(i, r, fn):
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
        sites = [(i, r) for i, r in self.refs.get(fn.name, []) if not inside(i, r, fn)]
        if not sites:
            return False, f"`{fn.name}()` is never called"
        results = [self._live(i, r, cfg, seen) for i, r in sites]
        if any(r[0] is True for r in results):
            return ok, why
        if any(r[0] is None for r in results):
            return None, next(r[1] for r in results if r[0] is None)
        return False, f"every call of `{fn.name}()` is dead ({results[0][1]})"
