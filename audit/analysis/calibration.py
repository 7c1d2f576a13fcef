"""Quantisation calibration analysis: which data feeds the calibration statistics, and when is it read?

Shared by the `val_calibration` and `train_data_at_eval` rules. GPTQ-style calibration registers forward hooks
that accumulate activation statistics (`H += x.T @ x`) while the model runs over calibration tokens. We find
every such *collector*, and for each live call of one we trace where its data comes from:

- `val`: validation tokens/files (never allowed: the statistics are fitted to the scored text);
- `train`: training shards (allowed inside the 600 s training budget only);
- `selfgen`: tokens the model generated itself (allowed at any time: no dataset is read).

A name reaching a calibration call is judged by every definition that can reach it (an `if`/`else` that picks
validation or generated text, a default overwritten under a switch, a helper's guarded `return`s), each branch's
guard folded under the effective config: a dead branch adds nothing, an undecided switch makes its data
conditional (a warning), a live one counts.

For training data we also decide whether the read happens after the wallclock-capped training loop, and
whether the submission reserves part of the training budget for it (`max_wallclock_ms -= gptq_reserve_ms`,
the pattern of the merged GPTQ records). Weight-only clip search ("GPTQ-lite") registers no hooks and reads no
data, so it never becomes a collector.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from ..load.parse import children, walk
from ..logs.patterns import may_contain
from .astutil import FUNCS, LOOPS, NO_GRAD, UNKNOWN, call_name, dotted, ends_with, is_val_name, scope_nodes, walk_scope
from .program import Program, SourceIndex
from .scopes import binding_pairs, bound_names, definitions, param_names, single_bindings
from .source import POSITION, starts_within

# Names that hold training *data* (not settings such as train_seq_len / train_batch_tokens).
_TRAIN_DATA = re.compile(
    r"(^|_)train(ing)?_?(files?|pattern|paths?|tokens?|toks|data|loader|stream|shards?|seqs?|sequences|ds|"
    r"dataset|set|iter|batches|docs?)$",
    re.I,
)
_TRAIN_PATH_LIT = re.compile(r"fineweb_train|_train_\d|train_\*")
# Validation shard paths only: unlike astutil.VAL_PATH_LIT, the word "validation" (log messages, docstrings
# next to a calibration call) is not a path here.
_VAL_SHARD_PATH = re.compile(r"fineweb_val|_val_\d|val_\*")
# Producers of self-generated calibration text (the model samples its own tokens).
_SELFGEN_FUNC = re.compile(r"(generat|self_?gen|synth|sample|rollout|autoregressive)", re.I)
_SAMPLING_CALLS = {"multinomial"}
_CALIB_NAME = re.compile(r"hessian|calib", re.I)
_HOOKS = {"register_forward_hook", "register_forward_pre_hook"}
_OUTER_PRODUCT = {"addmm_", "addmm", "matmul", "mm", "outer", "einsum", "baddbmm_"}
_CLOCK_WORDS = ("wallclock", "time_budget", "train_budget", "time_limit")
_CLOCK = re.compile("|".join(_CLOCK_WORDS), re.I)
_RESERVE = re.compile(r"reserve", re.I)
_BUDGET_TARGET = re.compile(r"wallclock|budget|deadline|time_limit|train_ms|train_seconds", re.I)
_FILE_CALLS = {"glob", "open", "load", "load_data_shard", "fromfile", "memmap", "Path", "iglob"}

TRACE_DEPTH = 6  # assignments and call sites followed back from a calibration call

Evidence = tuple[SourceIndex, ast.AST, str]
_PARAM = object()  # a reaching "definition" that is the function's parameter (what its callers pass)
Switch = ast.expr | bool  # False, or the undecided `if` test a definition sits behind


@dataclass
class DataOrigin:
    """Where a value's data comes from: first evidence per kind, and config switches we could not fold."""

    kinds: dict[str, Evidence] = field(default_factory=dict)
    undecided: list[Evidence] = field(default_factory=list)
    # kinds reached only through an undecided switch
    conditional: set[str] = field(default_factory=set)

    def merge(self, other: DataOrigin) -> None:
        for kind, ev in other.kinds.items():
            self.add(kind, ev, kind in other.conditional)
        self.undecided.extend(other.undecided)

    def add(self, kind: str, ev: Evidence, conditional: bool) -> None:
        if kind not in self.kinds:
            self.kinds[kind] = ev
            if conditional:
                self.conditional.add(kind)
        elif not conditional:
            self.conditional.discard(kind)


@dataclass
class CalibSite:
    """One live call of a calibration collector."""

    idx: SourceIndex
    call: ast.Call
    collector: ast.AST  # the FunctionDef
    collector_idx: SourceIndex
    origin: DataOrigin
    after_clock: Evidence | None = None  # the training loop / trainer call the read comes after
    during_training: bool = False  # the call sits inside the wallclock-capped loop


@dataclass
class Reserve:
    """A statement that takes calibration time out of the training budget."""

    idx: SourceIndex
    node: ast.AST
    value: object  # the folded reserve term (UNKNOWN when not foldable)


def _load_names(node: ast.AST):
    for n in walk(node):
        if isinstance(n, ast.Name):
            yield n.id, n
        elif isinstance(n, ast.Attribute):
            yield n.attr, n


class CalibrationAnalysis:
    def __init__(self, program: Program):
        self.p = program
        self._classes: dict[str, list[tuple[SourceIndex, ast.ClassDef]]] = {}
        self._owner: dict[ast.AST, SourceIndex] = {}
        # From the prebuilt node index: which names each function calls (nested bodies included), and which
        # outermost loops read a wallclock budget.
        self._fn_calls: dict[ast.AST, set[str]] = {}
        self._clock_candidates: list[tuple[SourceIndex, ast.AST]] = []
        self._matmul_fns: set[ast.AST] = set()
        self._calls_by_name: dict[str, list[tuple[SourceIndex, ast.Call]]] = {}
        self._reach_memo: dict[tuple[int, str, tuple[int, int]], list[tuple[object, bool]]] = {}
        self._bound_args: dict[int, dict[str, tuple[SourceIndex, ast.AST, ast.AST]]] = {}  # helper -> param -> arg
        for idx in program.indexes:
            for c in idx.nodes(ast.ClassDef):
                self._classes.setdefault(c.name, []).append((idx, c))
            for fn in idx.nodes(*FUNCS):
                self._owner[fn] = idx
            self._index_calls(idx)
        self.collectors = self._find_collectors()
        self.clock_loops = self._find_clock_loops()
        self._trainers = self._find_trainers()

    def _index_calls(self, idx: SourceIndex) -> None:
        calls = idx.nodes(ast.Call)  # in position order: the calls inside a node's span are one slice of them
        for call, name in zip(calls, idx.call_names()):
            self._calls_by_name.setdefault(name, []).append((idx, call))
        for fn in idx.nodes(*FUNCS):
            called = set(self._names_in_span(idx, fn))
            for deco in fn.decorator_list:  # decorators sit above `def`, outside the span, yet belong to it
                called.update(call_name(n) for n in walk(deco) if n.__class__ is ast.Call)
            self._fn_calls[fn] = called
        for op in idx.nodes(ast.BinOp):
            if isinstance(op.op, ast.MatMult):
                self._matmul_fns.update(a for a in idx.ancestors(op) if isinstance(a, FUNCS))
        if not may_contain(idx.src.text, _CLOCK_WORDS):
            return  # an ASCII source names no wallclock budget unless its text holds one of the words
        seen: set[ast.AST] = set()
        words = idx.identifiers(ast.Name) | idx.identifiers(ast.Attribute)
        clocky = {w for w in words if _CLOCK.search(w)}  # a script repeats its names: each is searched once
        if not clocky:
            return
        named = [
            sorted((n for w in clocky for n in idx.named(cls, w)), key=POSITION) for cls in (ast.Name, ast.Attribute)
        ]
        for n in named[0] + named[1]:  # each class in position order, as `nodes_with` gives them
            loops = [a for a in idx.ancestors(n) if isinstance(a, LOOPS)]
            if loops and loops[-1] not in seen:
                seen.add(loops[-1])
                self._clock_candidates.append((idx, loops[-1]))

    def _names_in_span(self, idx: SourceIndex, node: ast.AST) -> list[str]:
        """The called names of the calls that start inside `node`'s source span: every call under a function
        (nested bodies included) but its decorators', every call under a loop."""
        return idx.call_names()[idx.span(ast.Call, node)]

    def _loop_calls(self, idx: SourceIndex, loop: ast.AST) -> set[str]:
        return set(self._names_in_span(idx, loop))

    # --- collectors ------------------------------------------------------------------------------
    def _find_collectors(self) -> dict[str, list[tuple[SourceIndex, ast.AST]]]:
        """Functions that hook module inputs and accumulate outer products of them (Hessian / activation stats)."""
        out: dict[str, list[tuple[SourceIndex, ast.AST]]] = {}
        for idx in self.p.indexes:
            for fn in idx.nodes(*FUNCS):
                calls = self._fn_calls.get(fn, set())
                if idx.enclosing(fn, *FUNCS) is not None:
                    continue  # a hook closure: its outer function is the collector
                if calls & _HOOKS:
                    stats = bool(calls & _OUTER_PRODUCT) or fn in self._matmul_fns
                    if stats or _CALIB_NAME.search(fn.name):
                        out.setdefault(fn.name, []).append((idx, fn))
                elif (
                    _CALIB_NAME.search(fn.name)
                    and calls & NO_GRAD
                    and "backward" not in calls
                    and not self._is_selfgen(fn)
                    and any(isinstance(n, LOOPS) for n in walk(fn))
                ):
                    # hookless collector: a no-grad loop of forwards whose layers save their inputs
                    out.setdefault(fn.name, []).append((idx, fn))
        return out

    def sites(self) -> list[CalibSite]:
        out: list[CalibSite] = []
        for name in self.collectors:
            for idx, call in self._calls_by_name.get(name, []):
                for cidx, fn in self.collectors[name]:
                    if idx.enclosing(call, *FUNCS) is fn:
                        continue  # recursion / self-reference
                    origin = self._call_origin(idx, call, fn)
                    site = CalibSite(idx=idx, call=call, collector=fn, collector_idx=cidx, origin=origin)
                    site.after_clock, site.during_training = self._timing(idx, call)
                    out.append(site)
                    break
        return out

    def adaptation_sites(self) -> list[CalibSite]:
        """Calls, made after the training clock stopped, of functions that take optimiser steps (a backward
        pass) on training data: extra training outside the budget, e.g. TTT on a training slice at eval time."""
        out: list[CalibSite] = []
        for name, defs in self.p.functions.items():
            if name in self._trainers or name in self.collectors:
                continue
            for fidx, fn in defs:
                if "backward" not in self._fn_calls.get(fn, set()):
                    continue
                for idx, call in self._calls_by_name.get(name, []):
                    if idx.enclosing(call, *FUNCS) is fn:
                        continue
                    after, during = self._timing(idx, call)
                    if after is None or during:
                        continue
                    origin = self._call_origin(idx, call, fn)
                    if "train" in origin.kinds and "train" not in origin.conditional:
                        out.append(CalibSite(idx, call, fn, fidx, origin, after, during))
        return out

    def _call_origin(self, idx: SourceIndex, call: ast.Call, fn: ast.AST) -> DataOrigin:
        """Data passed to the collector at this call, plus data the collector reads by itself."""
        origin = DataOrigin()
        scope = idx.enclosing(call, *FUNCS) or idx.tree
        params = param_names(fn)
        offset = 1 if params and params[0] in ("self", "cls") and isinstance(call.func, ast.Attribute) else 0
        data = _data_params(fn)
        for i, arg in enumerate(call.args):
            if i + offset < len(params) and params[i + offset] in data:
                self._trace(idx, scope, arg, call.lineno, origin, 0, False)
        for kw in call.keywords:
            if kw.arg in data:
                self._trace(idx, scope, kw.value, call.lineno, origin, 0, False)
        # data the collector reads by itself (attributes such as `args.val_files`, shard globs)
        self._scan_body(self._owner.get(fn, idx), fn, origin, skip=set(param_names(fn)))
        return origin

    # --- data origins ----------------------------------------------------------------------------
    def _scope_defs(self, scope: ast.AST) -> dict[str, list[tuple[int, ast.AST]]]:
        return definitions(scope)

    def _trace(self, idx, scope, expr, line, origin: DataOrigin, depth: int, cond: bool) -> None:
        if depth > TRACE_DEPTH or expr is None:
            return
        t = lambda e, c=cond: self._trace(idx, scope, e, line, origin, depth + 1, c)  # noqa: E731
        if isinstance(expr, ast.IfExp):
            v = self.p.fold(expr.test)
            if v is UNKNOWN:
                origin.undecided.append((idx, expr.test, "calibration source switch not decidable statically"))
                t(expr.body, True)
                t(expr.orelse, True)
            else:
                t(expr.body if v else expr.orelse)
            return
        if isinstance(expr, ast.Name):
            if is_val_name(expr.id):
                origin.add("val", (idx, expr, f"`{expr.id}` holds validation data"), cond)
                return
            if _TRAIN_DATA.search(expr.id):
                origin.add("train", (idx, expr, f"`{expr.id}` holds training data"), cond)
                return
            self._trace_name(idx, scope, expr, line, origin, depth, cond)
            return
        if isinstance(expr, ast.Attribute):
            if is_val_name(expr.attr):
                origin.add("val", (idx, expr, f"`{ast.unparse(expr)}` is validation data"), cond)
            elif _TRAIN_DATA.search(expr.attr):
                origin.add("train", (idx, expr, f"`{ast.unparse(expr)}` is training data"), cond)
            return  # other attributes are settings or model parts, not data
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            if _VAL_SHARD_PATH.search(expr.value):
                origin.add("val", (idx, expr, "validation shard path"), cond)
            elif _TRAIN_PATH_LIT.search(expr.value):
                origin.add("train", (idx, expr, "training shard path"), cond)
            return
        if isinstance(expr, ast.Subscript):
            t(expr.value)
            return
        if isinstance(expr, ast.Call):
            self._trace_call(idx, scope, expr, line, origin, depth, cond)
            return
        if isinstance(expr, (ast.Lambda, ast.JoinedStr)):
            return
        for child in children(expr):
            if isinstance(child, ast.expr):
                t(child)

    def _trace_name(self, idx, scope, name: ast.Name, line, origin, depth, cond) -> None:
        """Follow every definition of `name` that can reach its use (not just the last one above it)."""
        reaching = self._reaching(idx, scope, name)
        if reaching is None:  # the use is not in `scope`'s body (a nested hook closure): last definition above
            defs = [d for d in self._scope_defs(scope).get(name.id, []) if d[0] < line]
            reaching = [(defs[-1][1], False)] if defs else []
            if not defs and isinstance(scope, FUNCS) and name.id in param_names(scope):
                reaching = [(_PARAM, False)]
        for value, switch in reaching:
            c = cond or bool(switch)
            if isinstance(switch, ast.AST):  # the `if` whose undecided test this definition sits behind
                origin.undecided.append((idx, switch, "calibration source switch not decidable statically"))
            if value is _PARAM:
                bound = self._bound_args.get(id(scope), {}).get(name.id)
                if bound is not None:  # a helper's return traced for one call: that call's argument
                    bidx, bscope, arg = bound
                    self._trace(bidx, bscope, arg, getattr(arg, "lineno", line), origin, depth + 1, c)
                else:
                    self._trace_param(scope, name.id, origin, depth, c)
            else:
                self._trace(idx, scope, value, getattr(value, "lineno", line), origin, depth + 1, c)
        if not reaching and name.id in self.p.consts:
            cidx, value = self.p.consts[name.id]
            if value is not name:
                self._trace(cidx, cidx.tree, value, getattr(value, "lineno", 0) + 1, origin, depth + 1, cond)

    # --- reaching definitions ------------------------------------------------------------------
    def _reaching(self, idx: SourceIndex, scope: ast.AST, name: ast.Name) -> list[tuple[object, bool]] | None:
        """[(value, conditional)] of the bindings of `name` that can reach `name` in `scope`, branches folded
        under the effective config (`conditional`: only through a switch that cannot be decided). The
        parameter itself is `_PARAM`. None when the use does not sit in `scope`'s own statements."""
        pos = (getattr(name, "lineno", 0), getattr(name, "col_offset", 0))
        key = (id(scope), name.id, pos)
        if key not in self._reach_memo:
            start = [(_PARAM, False)] if isinstance(scope, FUNCS) and name.id in param_names(scope) else []
            flow = _Flow(self, idx, scope, name.id, pos)
            state, found = flow.run(getattr(scope, "body", []), start)
            self._reach_memo[key] = state if found else None
        return self._reach_memo[key]

    def _branch(self, idx: SourceIndex, stmts: list[ast.stmt]) -> bool | None:
        """Can this block run under the effective config? False: dead; None: behind an undecided switch."""
        if not stmts:
            return True
        live, _ = self.p.guard_status(idx, stmts[0], self.p.config)
        return live

    def _returns(self, idx: SourceIndex, fn: ast.AST) -> list[tuple[ast.Return, bool]]:
        """The live `return`s of `fn` with a value, each with whether it sits behind an undecided switch."""
        out = []
        for n in scope_nodes(fn, ast.Return):
            if n.value is not None:
                live, _ = self.p.guard_status(idx, n, self.p.config)
                if live is not False:
                    out.append((n, live is None))
        return out

    def _trace_param(self, fn: ast.AST, pname: str, origin, depth, cond) -> None:
        """A parameter carries what its live call sites pass in that position."""
        params = param_names(fn)
        pos = params.index(pname)
        for idx, call in self._calls_by_name.get(fn.name, []):
            if idx.enclosing(call, *FUNCS) is fn:
                continue
            offset = 1 if params and params[0] in ("self", "cls") and isinstance(call.func, ast.Attribute) else 0
            arg = None
            if 0 <= pos - offset < len(call.args):
                arg = call.args[pos - offset]
            for kw in call.keywords:
                if kw.arg == pname:
                    arg = kw.value
            if arg is not None:
                caller = idx.enclosing(call, *FUNCS) or idx.tree
                self._trace(idx, caller, arg, call.lineno, origin, depth + 1, cond)

    def _trace_call(self, idx, scope, call: ast.Call, line, origin, depth, cond) -> None:
        name = call_name(call)
        user = self._user_callables(name)
        if user and any(self._samples(fn) for _, fn in user):
            origin.add("selfgen", (idx, call, f"`{name}()` generates tokens from the model itself"), cond)
            return
        helpers = [(uidx, fn) for uidx, fn in user if isinstance(fn, FUNCS) and self._returns(uidx, fn)]
        if helpers:
            # a helper that returns the data: what its live returns carry, its parameters bound to this call
            sub = DataOrigin()
            for uidx, fn in helpers:
                self._trace_returns(idx, scope, call, uidx, fn, sub, depth, cond)
                self._scan_body(uidx, fn, sub, skip=set(param_names(fn)), cond=cond)
            if not sub.kinds and any(self._is_selfgen(fn) for _, fn in helpers):
                sub.add("selfgen", (idx, call, f"`{name}()` generates tokens from the model itself"), cond)
            origin.merge(sub)
            if sub.kinds:
                return
            # the returns say nothing we can read: fall back to the data handed in (fail closed)
        if user and any(self._is_selfgen(fn) for _, fn in user):
            origin.add("selfgen", (idx, call, f"`{name}()` generates tokens from the model itself"), cond)
            return
        if isinstance(call.func, ast.Attribute):  # `stream.take(n)`: the receiver holds the data
            self._trace(idx, scope, call.func.value, line, origin, depth + 1, cond)
        for arg in list(call.args) + [kw.value for kw in call.keywords]:
            self._trace(idx, scope, arg, line, origin, depth + 1, cond)
        for uidx, fn in user:  # loaders that open the shards themselves (`ShuffledSequenceLoader(h, device)`)
            self._scan_body(uidx, fn, origin, skip=set(param_names(fn)) if isinstance(fn, FUNCS) else set(), cond=cond)

    def _trace_returns(self, idx, scope, call: ast.Call, fidx, fn, origin, depth, cond) -> None:
        if id(fn) in self._bound_args:
            return  # recursion
        params = param_names(fn)
        offset = 1 if params and params[0] in ("self", "cls") and isinstance(call.func, ast.Attribute) else 0
        bound = {p: (idx, scope, a) for p, a in zip(params[offset:], call.args)}
        bound.update({kw.arg: (idx, scope, kw.value) for kw in call.keywords if kw.arg in params})
        self._bound_args[id(fn)] = bound
        try:
            for ret, switched in self._returns(fidx, fn):
                if switched:
                    origin.undecided.append(
                        (fidx, ret, "returned only when a switch that cannot be decided selects it")
                    )
                self._trace(fidx, fn, ret.value, ret.lineno, origin, depth + 1, cond or switched)
        finally:
            del self._bound_args[id(fn)]

    def _user_callables(self, name: str) -> list[tuple[SourceIndex, ast.AST]]:
        out = list(self.p.functions.get(name, []))
        out.extend(self._classes.get(name, []))
        return out

    def _is_selfgen(self, fn: ast.AST) -> bool:
        if not isinstance(fn, FUNCS):
            return False
        if _SELFGEN_FUNC.search(fn.name) and re.search(r"calib|tokens|seq|data", fn.name, re.I):
            return True
        return self._samples(fn)

    def _samples(self, fn: ast.AST) -> bool:
        """Does `fn` sample from the model's own distribution inside a loop (generation, whatever its name)?"""
        if not isinstance(fn, FUNCS):
            return False
        return any(
            isinstance(n, ast.Call)
            and call_name(n) in _SAMPLING_CALLS
            and any(isinstance(a, LOOPS) for a in _ancestors_in(fn, n))
            for n in walk(fn)
        )

    def _scan_body(self, idx: SourceIndex, fn: ast.AST, origin: DataOrigin, skip: set[str], cond: bool = False) -> None:
        """Data a function/class reads by itself: data-named attribute/global loads and shard paths opened."""
        body = fn.body if isinstance(fn, ast.ClassDef) else [fn]
        for root in body:
            if isinstance(fn, ast.ClassDef) and not isinstance(root, FUNCS):
                continue  # class-level settings (Hyperparameters) are not reads
            called = {id(c.func) for c in walk(root) if isinstance(c, ast.Call)}
            # `if args.calib_val:` reads a switch, not data
            called |= {id(x) for s in walk(root) if isinstance(s, (ast.If, ast.IfExp, ast.While)) for x in walk(s.test)}
            for n in walk(root):
                if id(n) in called:
                    continue  # `model.eval()` is a method, not data
                if isinstance(n, (ast.Attribute, ast.Name, ast.Call)) and self._reads(n):
                    live, _ = self.p.guard_status(idx, n, self.p.config)
                    if live is False:
                        continue  # a read in a branch that is off under the effective config
                    cond_n = cond or live is None
                else:
                    cond_n = cond
                if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load):
                    if is_val_name(n.attr):
                        origin.add("val", (idx, n, f"`{ast.unparse(n)}` read inside `{fn.name}`"), cond_n)
                    elif _TRAIN_DATA.search(n.attr):
                        origin.add("train", (idx, n, f"`{ast.unparse(n)}` read inside `{fn.name}`"), cond_n)
                elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in skip:
                    if is_val_name(n.id) and not self._local_to(idx, n, n.id):
                        origin.add("val", (idx, n, f"`{n.id}` read inside `{fn.name}`"), cond_n)
                elif isinstance(n, ast.Call) and call_name(n) in _FILE_CALLS:
                    for a in n.args:
                        if isinstance(a, ast.Constant) and isinstance(a.value, str):
                            if _VAL_SHARD_PATH.search(a.value):
                                origin.add("val", (idx, a, f"validation shards opened in `{fn.name}`"), cond_n)
                            elif _TRAIN_PATH_LIT.search(a.value):
                                origin.add("train", (idx, a, f"training shards opened in `{fn.name}`"), cond_n)

    @staticmethod
    def _reads(n: ast.AST) -> bool:
        """Could this node be a data read `_scan_body` reports (checked before the costlier guard fold)?"""
        if isinstance(n, ast.Attribute):
            return is_val_name(n.attr) or bool(_TRAIN_DATA.search(n.attr))
        if isinstance(n, ast.Name):
            return is_val_name(n.id)
        return call_name(n) in _FILE_CALLS

    def _local_to(self, idx: SourceIndex, node: ast.AST, name: str) -> bool:
        """Is `name` a parameter or local of a function enclosing `node` (not a global)?"""
        for anc in idx.ancestors(node):
            if isinstance(anc, FUNCS) and (name in param_names(anc) or name in self._scope_defs(anc)):
                return True
        return False

    # --- timing against the training clock --------------------------------------------------------
    def _find_clock_loops(self) -> list[tuple[SourceIndex, ast.AST]]:
        """Outermost loops that train (a backward pass, maybe inside a step helper) and stop on a wallclock budget."""
        steppers = self._closure({"backward"})
        return [(idx, loop) for idx, loop in self._clock_candidates if self._loop_calls(idx, loop) & steppers]

    def _closure(self, names: set[str]) -> set[str]:
        """`names` plus the user functions that call one of them, directly or through a callee."""
        found = set(names)
        for _ in range(4):
            grew = False
            for name, defs in self.p.functions.items():
                if name not in found and any(self._fn_calls.get(fn, set()) & found for _, fn in defs):
                    found.add(name)
                    grew = True
            if not grew:
                break
        return found

    def _find_trainers(self) -> set[str]:
        """Functions that run the wallclock-capped training loop, directly or through a callee."""
        direct = {fn.name for idx, loop in self.clock_loops if (fn := idx.enclosing(loop, *FUNCS)) is not None}
        return self._closure(direct) if direct else set()

    def _timing(self, idx: SourceIndex, node: ast.AST, depth: int = 0) -> tuple[Evidence | None, bool]:
        """(the training loop or trainer call that precedes `node`, whether `node` runs inside that loop)."""
        if depth > 4:
            return None, False
        scope = idx.enclosing(node, *FUNCS) or idx.tree
        for lidx, loop in self.clock_loops:
            if lidx is not idx or (idx.enclosing(loop, *FUNCS) or idx.tree) is not scope:
                continue
            if any(a is loop for a in idx.ancestors(node)):
                return None, True
            if _pos(node) > (loop.end_lineno or loop.lineno, loop.end_col_offset or 0):
                return (idx, loop, "wallclock-capped training loop ends here"), False
        for name in self._trainers:
            for cidx, n in self._calls_by_name.get(name, []):
                if (
                    cidx is idx
                    and (idx.enclosing(n, *FUNCS) or idx.tree) is scope
                    and _pos(n) < _pos(node)
                    and not any(a is n for a in walk(node))
                ):
                    return (idx, n, f"training (`{name}()`) has finished here"), False
        if not isinstance(scope, FUNCS):
            return None, False
        for cidx, call in self._calls_by_name.get(scope.name, []):
            if cidx.enclosing(call, *FUNCS) is not scope:
                found, inside = self._timing(cidx, call, depth + 1)
                if found or inside:
                    return found, inside
        return None, False

    # --- reserved budget -------------------------------------------------------------------------
    def reserves(self) -> list[Reserve]:
        """Statements that subtract a calibration reserve from the training budget."""
        out = []
        for idx in self.p.indexes:
            if not may_contain(idx.src.text, ("reserve",)):
                continue  # every reserve is named (`_reserve_term`): an ASCII source without the word has none
            # a reserve term is a name or attribute called so inside the statement: where such names start
            # bounds the statements worth reading (each one's nodes lie in its span)
            named = sorted(
                (n.lineno, n.col_offset)
                for cls in (ast.Name, ast.Attribute)
                for word in idx.identifiers(cls)
                if _RESERVE.search(word)
                for n in idx.named(cls, word)
            )
            for n in idx.nodes(ast.AugAssign, ast.Assign) if named else ():
                if not starts_within(named, n.value):
                    continue
                targets = [n.target] if isinstance(n, ast.AugAssign) else n.targets
                tnames = [dotted(t) or "" for t in targets]
                if not any(_BUDGET_TARGET.search(t) for t in tnames):
                    continue
                if isinstance(n, ast.AugAssign) and not isinstance(n.op, ast.Sub):
                    continue
                term = _reserve_term(n.value)
                if term is None:
                    continue
                out.append(Reserve(idx=idx, node=n, value=self.p.fold(term)))
            # `if elapsed_ms >= max_wallclock_ms - reserve_ms: break` inside the loop
            for n in idx.nodes(ast.Compare) if named else ():
                if not starts_within(named, n):
                    continue
                names = [nm for nm, _ in _load_names(n)]
                if any(_CLOCK.search(nm) for nm in names):
                    term = _reserve_term(n)
                    if term is not None:
                        out.append(Reserve(idx=idx, node=n, value=self.p.fold(term)))
        return out

    def wallclock_cap_seconds(self):
        """The training cap under the effective config (README/log overrides), or UNKNOWN."""
        for name in ("max_wallclock_seconds", "MAX_WALLCLOCK_SECONDS"):
            if name.lower() in self.p.config.logged:
                try:
                    return float(self.p.config.logged[name.lower()])
                except ValueError:
                    return UNKNOWN
            if name in self.p.attrs:
                return self.p.fold(self.p.attrs[name][1])
            if name in self.p.consts:
                return self.p.fold(self.p.consts[name][1])
        return UNKNOWN


class _Flow:
    """Reaching definitions of one name at one use, over a function body's statements in order: an assignment
    replaces what reaches, an `if` merges its live branches (a branch behind an undecided switch marks its new
    definitions conditional, a dead one adds nothing), a loop or `try` body may or may not have run."""

    def __init__(self, analysis: CalibrationAnalysis, idx: SourceIndex, scope: ast.AST, name: str, pos):
        self.a = analysis
        self.idx = idx
        self.name = name
        self.pos = pos
        self.local = single_bindings(scope) if isinstance(scope, FUNCS) else {}
        self._starts = idx.named_starts(name)

    def run(self, stmts: list[ast.stmt], state: list, cond: Switch = False) -> tuple[list, bool]:
        """(definitions reaching the end of `stmts`, or the use if it lies inside them; whether it did)."""
        for st in stmts:
            start = (st.lineno, st.col_offset)
            end = (st.end_lineno or st.lineno, st.end_col_offset or 0)
            if self.pos < start:
                return state, True
            if start <= self.pos <= end:
                return self._into(st, state, cond)
            state = self._through(st, state, cond)
        return state, False

    def _contains(self, stmts: list[ast.stmt]) -> bool:
        return bool(stmts) and (stmts[0].lineno, stmts[0].col_offset) <= self.pos <= (
            stmts[-1].end_lineno or stmts[-1].lineno,
            stmts[-1].end_col_offset or 0,
        )

    def _into(self, st: ast.stmt, state: list, cond: Switch) -> tuple[list, bool]:
        """The use lies inside `st`: the definitions reaching it there."""
        if isinstance(st, ast.If):
            for branch in (st.body, st.orelse):
                if self._contains(branch):
                    return self.run(branch, state, cond or self._switch(st, branch)[1] or False)
        elif isinstance(st, (ast.For, ast.AsyncFor, ast.While)):
            if self._contains(st.body):  # later iterations see the body's own definitions too
                state = self._merge(state, self._loop_target(st, state, cond))
                return self.run(st.body, self._merge(state, self._body(st.body, state, cond)), cond)
            if self._contains(st.orelse):
                return self.run(st.orelse, self._merge(state, self._body(st.body, state, cond)), cond)
        elif isinstance(st, (ast.With, ast.AsyncWith)):
            if self._contains(st.body):
                return self.run(st.body, self._with_items(st, state, cond), cond)
        elif isinstance(st, ast.Try) or type(st).__name__ == "TryStar":
            for block in (st.body, *[h.body for h in st.handlers], st.orelse, st.finalbody):
                if self._contains(block):
                    before = state if block is st.body else self._merge(state, self._body(st.body, state, cond))
                    return self.run(block, before, cond)
        return state, True  # in the statement's own expression (or a nested def): what reached the statement

    def _through(self, st: ast.stmt, state: list, cond: Switch) -> list:
        """The definitions reaching the end of `st`."""
        if not self._mentions(st):
            # every way a statement changes what reaches (a binding, a mutator call, `xs[i] = …`, a loop or
            # `with` target) names the variable: a statement that never names it passes the state on as it is
            return state
        if isinstance(st, ast.If):
            v = self.a.p.fold(st.test, local=self.local)
            outs = []
            for branch, want in ((st.body, True), (st.orelse, False)):
                dead, switch = self._switch(st, branch)
                if dead or (v is not UNKNOWN and bool(v) != want):
                    continue  # off under the effective config
                out = self._body(branch, state, cond or switch or False)
                if not ends_with(branch):
                    outs.append(out)
            return self._merge(*outs) if outs else state
        if isinstance(st, (ast.For, ast.AsyncFor, ast.While)):
            body = self._body(st.body, self._loop_target(st, state, cond), cond)
            return self._merge(state, body, self._body(st.orelse, state, cond))
        if isinstance(st, (ast.With, ast.AsyncWith)):
            return self._body(st.body, self._with_items(st, state, cond), cond)
        if isinstance(st, ast.Try) or type(st).__name__ == "TryStar":
            body = self._body(st.body, state, cond)
            handled = [self._body(h.body, self._merge(state, body), cond) for h in st.handlers]
            return self._body(st.finalbody, self._merge(self._body(st.orelse, body, cond), *handled), cond)
        if isinstance(st, ast.Match):
            return self._merge(state, *[self._body(c.body, state, cond) for c in st.cases])
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return state
        for n in walk_scope(st) if not isinstance(st, (ast.Assign, ast.AnnAssign, ast.AugAssign)) else [st]:
            if (  # `xs.append(batch)`: the container now holds that data too
                isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and n.func.attr in _MUTATORS
                and _root_name(n.func.value) == self.name
            ):
                state = self._merge(state, [(a, cond) for a in n.args])
            for target, value in binding_pairs(n):
                if isinstance(target, (ast.Subscript, ast.Attribute)):
                    if _root_name(target) == self.name:  # `xs[i] = batch`
                        state = self._merge(state, [(value, cond)])
                elif self.name in bound_names(target):
                    new = [(value, cond)]
                    # `x += …` and a walrus inside an expression add to what reaches; an assignment replaces it
                    state = self._merge(state, new) if isinstance(n, (ast.AugAssign, ast.NamedExpr)) else new
        return state

    def _mentions(self, st: ast.stmt) -> bool:
        """Whether `st` names the variable anywhere inside it: a `Name` of it starts in the statement's span (a
        statement's nodes lie in its span; a nested def's decorators do not, and a def passes the state on
        anyway). A statement of another source is walked."""
        if st not in self.idx.parents:
            return any(n.__class__ is ast.Name and n.id == self.name for n in walk(st))
        return starts_within(self._starts, st)

    def _switch(self, st: ast.If, branch: list[ast.stmt]) -> tuple[bool, ast.expr | None]:
        """(is `branch` off under the effective config, the `if` test when an undecided switch — configuration,
        or the command line — selects it)."""
        live = self.a._branch(self.idx, branch) if branch else True
        if live is True and self.a.p.fold(st.test, local=self.local) is UNKNOWN:
            # a command-line switch is a switch too, though the reachability engine lets runtime tests run
            live = None if any(dotted(n) == "sys.argv" for n in walk(st.test)) else True
        return live is False, (st.test if live is None else None)

    def _body(self, stmts: list[ast.stmt], state: list, cond: Switch) -> list:
        for st in stmts:
            state = self._through(st, state, cond)
        return state

    def _loop_target(self, st: ast.stmt, state: list, cond: Switch) -> list:
        if isinstance(st, (ast.For, ast.AsyncFor)) and self.name in bound_names(st.target):
            return [(st.iter, cond)]
        return state

    def _with_items(self, st: ast.stmt, state: list, cond: Switch) -> list:
        for item in st.items:
            if self.name in bound_names(item.optional_vars):
                state = [(item.context_expr, cond)]
        return state

    @staticmethod
    def _merge(*states: list) -> list:
        out, seen = [], {}
        for s in states:
            for value, c in s:
                if id(value) in seen:
                    i = seen[id(value)]
                    out[i] = (value, out[i][1] and c)  # reached unconditionally on one path: unconditional
                else:
                    seen[id(value)] = len(out)
                    out.append((value, c))
        return out


_MUTATORS = {"append", "extend", "insert", "add", "update", "copy_", "put"}


def _root_name(expr: ast.AST) -> str | None:
    """`xs` for `xs`, `xs[i]`, `xs.data`: the name whose value a write or mutation changes."""
    while isinstance(expr, (ast.Subscript, ast.Attribute)):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _pos(node: ast.AST) -> tuple[int, int]:
    """Source position; minified records put several statements on one line."""
    return getattr(node, "lineno", 0), getattr(node, "col_offset", 0)


def _reserve_term(expr: ast.AST) -> ast.AST | None:
    """The sub-expression naming the reserve (`args.gptq_reserve_ms`, `h.gptq_reserve_seconds * 1000`)."""
    for n in walk(expr):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Sub):
            for side in (n.right,):
                if any(_RESERVE.search(nm) for nm, _ in _load_names(side)):
                    return side
        if isinstance(n, (ast.Name, ast.Attribute)):
            nm = n.id if isinstance(n, ast.Name) else n.attr
            if _RESERVE.search(nm) and not isinstance(expr, ast.Compare):
                return expr
    return None


_MODEL_METHODS = re.compile(
    r"^(named_modules|modules|named_parameters|parameters|eval|train|state_dict|"
    r"load_state_dict|forward\w*|register_\w+|to|cuda|half|float|bfloat16|children|apply)$"
)


def _data_params(fn: ast.AST) -> set[str]:
    """Parameters that carry calibration data: not the model (called, `.named_modules()`), not a settings
    object read only through attributes (`args.num_batches`), not scalars."""
    params = set(param_names(fn)) - {"self", "cls"}
    model, used_as_data = set(), set()
    parents: dict[ast.AST, ast.AST] = {}
    for p in walk(fn):
        for c in children(p):
            parents[c] = p
    for n in walk(fn):
        if not (isinstance(n, ast.Name) and n.id in params and isinstance(n.ctx, ast.Load)):
            continue
        par = parents.get(n)
        if isinstance(par, ast.Call) and par.func is n:
            model.add(n.id)  # `model(x)`
        elif isinstance(par, ast.Attribute):
            grand = parents.get(par)
            if isinstance(grand, ast.Call) and grand.func is par:
                if _MODEL_METHODS.match(par.attr):
                    model.add(n.id)
                else:
                    used_as_data.add(n.id)  # `loader.next_batch()`, `stream.take(n)`
        elif isinstance(par, ast.keyword) and par.arg == "device":
            continue
        elif isinstance(par, (ast.BinOp, ast.Compare, ast.UnaryOp, ast.AugAssign)) or (
            isinstance(par, ast.Call) and call_name(par) in ("range", "min", "max", "int", "float", "device")
        ):
            continue  # counts and sizes
        else:
            used_as_data.add(n.id)  # iterated, subscripted, passed on to a loader
    return used_as_data - model


def _ancestors_in(fn: ast.AST, target: ast.AST):
    """Ancestors of `target` inside `fn` (parents computed on demand: collectors are few)."""
    parents: dict[ast.AST, ast.AST] = {}
    for p in walk(fn):
        for c in children(p):
            parents[c] = p
    cur = parents.get(target)
    while cur is not None and cur is not fn:
        yield cur
        cur = parents.get(cur)


# --- log evidence --------------------------------------------------------------------------------
STOP_RE = re.compile(r"stopping_early\b.*?train_time:\s*(\d+(?:\.\d+)?)\s*ms")
RESERVE_LOG_RE = re.compile(r"(?i)\b(?:gptq|calib\w*|hessian\w*)\b\W*reserv\w*\s+(\d+(?:\.\d+)?)\s*(ms|s)\b")
CALIB_LOG_RE = re.compile(r"(?i)^\W*(?:gptq|calib\w*|hessian\w*|quant\w*)\b.*\b(calibrat\w*|hessians?|collect\w*)\b")
TRAIN_DATA_LOG_RE = re.compile(r"(?i)\btrain(?:ing)?[ _](?:data|shards?|files|tokens|loader)\b|source\s*[=:]\s*train\b")
SELFGEN_LOG_RE = re.compile(r"(?i)autoregressive|self[- _]?gen|generat")
VAL_CALIB_LOG_RE = re.compile(
    r"(?i)\b(?:gptq|calib\w*|hessian\w*)\b.*(?:\bsource\s*[=:]\s*val(?:id(?:ation)?)?\b|"
    r"\b(?:on|with|from|using)\s+(?:the\s+)?val(?:idation)?(?:\s+(?:data|set|tokens|shards?))?\b)"
)
NEGATION_RE = re.compile(r"(?i)\b(?:no|not|never|without)\b")


@dataclass
class LogCalibration:
    """What one log says about calibration: the lines that make the case."""

    path: str
    stop: tuple[int, str, float] | None = None  # (line, text, train ms)
    reserve: tuple[int, str, float] | None = None  # (line, text, reserved ms)
    calib_after_stop: list[tuple[int, str]] = field(default_factory=list)  # non-self-generated calibration lines
    val_calib: list[tuple[int, str]] = field(default_factory=list)

    @property
    def train_calib(self) -> list[tuple[int, str]]:
        """Calibration lines after the clock stopped that say they read training data."""
        return [(n, t) for n, t in self.calib_after_stop if TRAIN_DATA_LOG_RE.search(t)]


# Every pattern above needs one of these words (STOP_RE the literal `stopping_early`; the others, any case).
_LOG_WORDS = ("gptq", "calib", "hessian", "quant", "stopping_early")


def log_calibration(events: list[tuple[str, int, str]]) -> list[LogCalibration]:
    per: dict[str, LogCalibration] = {}
    for path, line, text in events:
        lc = per.get(path)
        if lc is None:
            lc = per[path] = LogCalibration(path=path)
        if not may_contain(text, _LOG_WORDS):
            continue
        m = RESERVE_LOG_RE.search(text)
        if m:
            ms = float(m.group(1)) * (1000.0 if m.group(2).lower() == "s" else 1.0)
            lc.reserve = (line, text, ms)
            continue
        m = STOP_RE.search(text)
        if m:
            lc.stop = (line, text, float(m.group(1)))
            continue
        if VAL_CALIB_LOG_RE.search(text) and not NEGATION_RE.search(text):
            lc.val_calib.append((line, text))
            continue
        if lc.stop is not None and CALIB_LOG_RE.search(text) and not SELFGEN_LOG_RE.search(text):
            lc.calib_after_stop.append((line, text))
    return list(per.values())
