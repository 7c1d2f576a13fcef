"""The evaluation model: what produces the reported score, built once per submission.

Issue #1017's conditions are properties of the evaluation as a whole (C3: no state used for scoring has
absorbed position t before t is scored; C4: each position is scored once, and that score is reported), so the
facts they need are gathered here once, in plain data, for every rule to read:

- **Scoring sites** (`ScoringSite`): where a per-position loss or probability of the targets is formed, and how
  (`full_vocab`: a softmax / log-softmax / cross-entropy over the vocabulary axis; `at_target`: a logarithm of
  a probability evaluated only at the realised token — a mixture, ratio or tilt).
- **Scoring passes** (`ScoringPass`): in each function, a call to a function that scores (directly or through
  its helpers) fed validation data, or a loop of that function scoring inline. For each pass: the states it
  reads (count tables and caches, named by the root variable in that function), the states it updates while
  scoring, the names its result is bound to, whether it returns per-token arrays, and where its result is
  reported (returned, or logged as a metric).
- **State updates** (`StateUpdate`): every change of a state in program order — in-place increments
  (`t[k] += 1`, `d[k] = d.get(k, 0) + 1`), `np.add.at`, `index_add_` / `scatter_add_` / `index_put_`, tables
  built from counts (`np.bincount`, `histc`), optimiser steps on a model's parameters — including those made
  inside helpers that update a table passed to them as an argument (or as `self`), followed through calls.
- **Resets** (`StateReset`): a state rebound to a fresh object or cleared; updates before a reset are gone.

Names never decide anything here: a function scores because of what it computes, a table is a table because
something increments it. Reachability under the effective config is the shared engine's (`reachability(pass)`,
and `Rule.finding` applies it to every finding).

Queries rules use: `passes_in(scope)`, `earlier_passes(pass)`, `stale_updates(pass)` (updates of a state the
pass reads, complete before it starts: C3), `reporting_functions`, `where_reported(idx, scope, node)`,
`reachability(pass)`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field, replace

from ..load.parse import walk
from .astutil import FUNCS, LOOPS, SCOPE_CLASSES, call_name, dotted, scope_nodes
from .program import Program, SourceIndex
from .rescoring import exclusive
from .scopes import BINDER_CLASSES, binding_pairs, definitions, param_names
from .source import POSITION
from .valueflow import ValFlow

CALL_DEPTH = 4  # helper calls followed when summarising what a function scores, reads and updates
GLOBAL = "global:"  # key prefix, in a function summary, of a module-level table the function touches

# How a per-position score is formed.
FULL_VOCAB = "full_vocab"  # softmax / log_softmax / cross_entropy over the vocabulary axis
AT_TARGET = "at_target"  # log of a probability evaluated only at the realised token

# Kinds of state update.
INCREMENT = "increment"  # t[k] += v, d[k] = d.get(k, 0) + v
ADD_AT = "add_at"  # np.add.at(t, k, v)
INDEX_ADD = "index_add"  # t.index_add_ / scatter_add_ / index_put_(…, accumulate=True) / put_
COUNT_BUILD = "count_build"  # a table built from counts: np.bincount, torch.histc, np.histogram
OPTIMIZER_STEP = "optimizer_step"  # opt.step() on an optimiser built from model.parameters()
TABLE_KINDS = frozenset({INCREMENT, ADD_AT, INDEX_ADD, COUNT_BUILD})

_FULL_VOCAB_CALLS = {"cross_entropy", "nll_loss", "log_softmax", "softmax"}
_LOG_CALLS = {"log", "log2", "log10"}
_COUNT_CALLS = {"bincount", "histc", "histogram"}
_ACCUMULATE_CALLS = {"index_add_", "scatter_add_", "index_put_", "put_"}
_CLEAR_CALLS = {"zero_", "fill_", "fill", "clear"}
_FRESH_CALLS = {"zeros", "zeros_like", "empty", "empty_like", "full", "dict", "defaultdict", "Counter", "list"}
_ARRAY_CALLS = {"concatenate", "cat", "stack", "hstack", "vstack", "array", "asarray", "from_numpy", "tensor"}
_METRIC_TEXT = re.compile(r"val_bpb|val_loss|bpb|_exact|nll", re.I)
_LOG_FUNCS = {"log0", "print", "log", "info", "log_fn", "print0", "logger"}


# --- the model -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoringSite:
    """A node forming per-position losses/probabilities of the targets, and how (`FULL_VOCAB` / `AT_TARGET`)."""

    idx: SourceIndex
    node: ast.Call
    form: str


@dataclass(frozen=True)
class StateUpdate:
    """One change of a state, seen from `scope` (the function it happens in, or whose call makes it).

    `state` is the root variable in `scope` (`cache` for `cache.update(…)`, `t` for `t[k] += 1`); `node` the
    statement or call in `scope` making it; `primitive` the increment itself (maybe inside a helper); `via` the
    helper called (None when `node` is the primitive); `from_val` whether validation data feeds the update
    (for an optimiser step written in `scope` itself always False: `analyses.ttt_sites` judges its data);
    `by_pass` the scoring pass that makes it while scoring (pass 1 filling a cache), if any; `val_args` the
    validation-data arguments of the helper call (which positions it adds)."""

    idx: SourceIndex
    scope: ast.AST
    node: ast.AST
    state: str
    kind: str
    primitive: tuple[SourceIndex, ast.AST]
    via: str | None = None
    from_val: bool = False
    by_pass: "ScoringPass | None" = None
    val_args: frozenset[str] = frozenset()  # source text of the validation data fed to a helper's update


@dataclass(frozen=True)
class StateReset:
    """`state` rebound to a new object (`cache = Cache()`) or cleared (`t.zero_()`) at `node` in `scope`."""

    idx: SourceIndex
    scope: ast.AST
    node: ast.AST
    state: str


@dataclass(eq=False)
class ScoringPass:
    """One pass over validation targets turning per-position scores into a number.

    `node` is the call (`kind == "call"`, `callee` its name) or the loop scoring inline (`kind == "loop"`) in
    `scope`. `reads` / `updates`: root variables of `scope` holding the tables or caches the pass reads /
    updates while scoring. `results`: names the pass's result is bound to (accumulators for a loop).
    `per_token`: the pass hands back per-token arrays (stored probabilities) rather than a sum. `reported`:
    (node, text) where a value derived from the result is returned (`"return"`) or logged as a metric, or None.
    `val_args`: source text of the validation-data arguments (what positions the pass scores). `sites`: the
    scoring sites it reaches."""

    idx: SourceIndex
    scope: ast.AST
    node: ast.AST
    kind: str
    callee: str | None
    reads: frozenset[str]
    updates: frozenset[str]
    results: frozenset[str]
    per_token: bool
    val_args: frozenset[str]
    sites: tuple[ScoringSite, ...] = ()
    reported: tuple[ast.AST, str] | None = None
    derived: frozenset[str] = frozenset()  # names computed from the result later in `scope`

    @property
    def label(self) -> str:
        return f"`{self.callee}()`" if self.callee else f"the loop at line {self.node.lineno}"


@dataclass
class _FnFacts:
    """What one function does to its parameters (names), and whether it scores, following its helpers."""

    mutates: dict[str, tuple[str, tuple[SourceIndex, ast.AST]]] = field(default_factory=dict)
    reads: set[str] = field(default_factory=set)
    resets: set[str] = field(default_factory=set)
    sites: list[ScoringSite] = field(default_factory=list)
    per_token: bool = False


@dataclass
class _Summary:
    """A function's scoring sites (`sites`, made at once) and the helper calls its facts merge (`merged`, in
    order): (the callee, how many merges its summary had made then — None when it was complete —, the callee's
    parameters bound to the caller's arguments). `facts`: the merged facts, once asked for. A merge names the
    callee's function, not its summary: recursive helpers would make summaries a cycle, which holds the trees
    until the cycle collector runs."""

    fn: ast.AST
    sites: list[ScoringSite] = field(default_factory=list)
    merged: list[tuple[ast.AST, int | None, dict[str, ast.AST]]] = field(default_factory=list)
    done: bool = False
    facts: _FnFacts | None = None


class Evaluation:
    """The scoring passes, state updates and resets of every function, in program order (see module doc)."""

    def __init__(self, program: Program, flow: ValFlow):
        self.p = program
        self.flow = flow
        self._summaries: dict[int, _Summary] = {}
        self._own_memo: dict[int, tuple[ast.AST, _FnFacts]] = {}
        self.passes: list[ScoringPass] = []
        # a scope's updates and resets are made when first asked for (`stale_updates` asks only about scopes with a
        # pass; most functions have none): what the scan found for them waits in `_pending`
        self._scopes: list[ast.AST] = []  # in scan order
        self._pending: dict[int, tuple] = {}
        self._state: dict[int, tuple[list[StateUpdate], list[StateReset]]] = {}
        self._counting = _count_carriers(program)
        # constructors: `cache = Cache(val_tokens)` runs `Cache.__init__` with `self` bound to `cache`
        self._inits: dict[str, list[ast.AST]] = {}
        for idx in program.indexes:
            for cls in idx.nodes(ast.ClassDef):
                for st in cls.body:
                    if isinstance(st, FUNCS) and st.name == "__init__":
                        self._inits.setdefault(cls.name, []).append(st)
        self._prim_memo: dict = {}
        self._site_memo: dict[int, list] = {}
        self._user_names = set(self.p.functions) | set(self._inits)  # what `_callees` can resolve
        self._callee_memo: dict[int, tuple[ast.Call, list[tuple[ast.AST, dict[str, ast.AST]]]]] = {}
        for idx in program.indexes:
            calls = self._user_calls(idx)
            for scope in [idx.tree, *idx.nodes(*FUNCS)]:
                self._scan_scope(idx, scope, calls.get(id(scope), []))

    # --- queries ---------------------------------------------------------------------------------
    @property
    def updates(self) -> list[StateUpdate]:
        """Every state update, function by function in scan order, each function's in program order."""
        return [u for scope in self._scopes for u in self._scope_state(scope)[0]]

    @property
    def resets(self) -> list[StateReset]:
        return [r for scope in self._scopes for r in self._scope_state(scope)[1]]

    def passes_in(self, scope: ast.AST) -> list[ScoringPass]:
        return [p for p in self.passes if p.scope is scope]

    @property
    def reporting_functions(self) -> list[ast.AST]:
        """Functions (or modules) in which a scoring pass's result is reported."""
        seen: list[ast.AST] = []
        for p in self.passes:
            if p.reported is not None and not any(s is p.scope for s in seen):
                seen.append(p.scope)
        return seen

    def reachability(self, ps: ScoringPass):
        """(Reachability, why) of a pass under the effective config — the shared engine, asked on demand."""
        return self.p.reachability(ps.idx, ps.node)

    def stale_updates(self, ps: ScoringPass, kinds: frozenset[str] = TABLE_KINDS) -> list[StateUpdate]:
        """Updates from validation data of a state `ps` reads that are complete before `ps` starts: made
        earlier in the same function, outside any loop that also runs `ps`, on a branch that can run together
        with it, and not undone by a reset in between. These are the positions the table has absorbed before
        the pass scores them (C3)."""
        out = []
        start = ps.node.lineno
        updates, resets = self._scope_state(ps.scope)
        for u in updates:
            if u.scope is not ps.scope or u.state not in ps.reads or u.kind not in kinds or not u.from_val:
                continue
            end = getattr(u.node, "end_lineno", u.node.lineno) or u.node.lineno
            if end >= start or u.node is ps.node or _shared_loop(ps.idx, u.node, ps.node, ps.scope):
                continue
            if exclusive(ps.idx, u.node, ps.node):
                continue
            if any(r.scope is ps.scope and r.state == u.state and end < r.node.lineno < start for r in resets):
                continue
            out.append(u)
        return out

    def where_reported(self, idx: SourceIndex, scope: ast.AST, node: ast.AST) -> tuple[ast.AST, str] | None:
        """(node, text) where the value computed by `node` (an expression in `scope`) is returned (`"return"`)
        or logged as a metric, following the names it is assigned to; None when it is not reported."""
        stmt = idx.parents.get(node)
        names: set[str] = set()
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = {x.id for t in targets for x in walk(t) if isinstance(x, ast.Name)}
        return _reported(scope, frozenset(_forward(scope, names, _end(node))), _end(node), node)

    def earlier_passes(self, ps: ScoringPass) -> list[ScoringPass]:
        """Scoring passes of the same function that run before `ps` (not in a loop with it, not exclusive)."""
        return [
            q
            for q in self.passes_in(ps.scope)
            if q is not ps
            and (getattr(q.node, "end_lineno", q.node.lineno) or q.node.lineno) < ps.node.lineno
            and not _shared_loop(ps.idx, q.node, ps.node, ps.scope)
            and not exclusive(ps.idx, q.node, ps.node)
        ]

    # --- function summaries ----------------------------------------------------------------------
    def facts(self, fn: ast.AST, depth: int = 0) -> _FnFacts:
        """What `fn` does to its parameters and to module-level tables, following its helpers, and the scoring
        sites it reaches. Made from its summary (`_summary`) on first ask."""
        return self._facts_after(self._summary(fn, depth), None)

    def _summary(self, fn: ast.AST, depth: int = 0) -> _Summary:
        """`fn`'s scoring sites and the helper calls its facts merge, in order. Every call of a user function
        asks for the sites, so these are made at once, the helpers followed to CALL_DEPTH; the rest of the facts
        (what `fn` updates, reads, resets) is asked only of the functions a scoring pass involves."""
        key = id(fn)
        hit = self._summaries.get(key)
        if hit is not None:
            return hit
        out = self._summaries[key] = _Summary(fn)  # cycle guard: a recursive call sees the partial summary
        idx = self._index_of(fn)
        out.sites.extend(ScoringSite(idx, n, form) for n, form in self._sites(fn))
        if depth < CALL_DEPTH:
            user = self._user_names
            for call in scope_nodes(fn, ast.Call):
                if call_name(call) not in user:
                    continue  # no function of the program by that name: `_callees` finds none
                for callee, binding in self._callees(call):
                    sub = self._summary(callee, depth + 1)
                    out.merged.append((callee, None if sub.done else len(sub.merged), binding))
                    if len(out.sites) < 8:
                        out.sites.extend(sub.sites[:4])
        out.done = True
        return out

    def _facts_after(self, summary: _Summary, upto: int | None) -> _FnFacts:
        """The facts of `summary`'s function after its first `upto` merges (None: all of them). A merge reads
        the callee as it stood then: whole, or, for a callee still in progress up the call chain, after the
        merges it had made (what a recursive call saw). Each such state is an earlier moment of the summary
        walk, so this recursion ends."""
        if upto is None and summary.facts is not None:
            return summary.facts
        fn = summary.fn
        own = self._own(fn)
        out = _FnFacts(dict(own.mutates), set(own.reads), set(own.resets), summary.sites, own.per_token)
        params = set(param_names(fn))
        defs = definitions(fn)
        for callee, callee_upto, binding in summary.merged if upto is None else summary.merged[:upto]:
            sub = self._facts_after(self._summaries[id(callee)], callee_upto)
            for g, how in sub.mutates.items():
                if g.startswith(GLOBAL):
                    out.mutates.setdefault(g, how)
            out.reads |= {g for g in sub.reads if g.startswith(GLOBAL)}
            out.resets |= {g for g in sub.resets if g.startswith(GLOBAL)}
            for pname, arg in binding.items():
                name = _param_root(_root(arg), params, defs)
                if not name:
                    continue
                if pname in sub.mutates and name not in out.mutates:
                    out.mutates[name] = sub.mutates[pname]
                if pname in sub.reads:
                    out.reads.add(name)
                if pname in sub.resets:
                    out.resets.add(name)
        if upto is None:
            summary.facts = out
        return out

    def _own(self, fn: ast.AST) -> _FnFacts:
        """What `fn`'s own body does to its parameters and to module-level tables (no helpers; no sites)."""
        hit = self._own_memo.get(id(fn))
        if hit is not None and hit[0] is fn:
            return hit[1]
        out = _FnFacts()
        idx = self._index_of(fn)
        params = set(param_names(fn))
        defs = definitions(fn)

        own: list[set[str]] = []

        def key(root: str | None) -> str | None:  # the parameter, or the module-level table, a root stands for
            name = _param_root(root, params, defs)
            if name is None and root and root in self.p.consts:
                if not own:
                    own.append(_local_names(fn))
                if root not in own[0]:
                    return GLOBAL + root
            return name

        for node, root, kind in self._primitives(fn):
            name = key(root)
            if name and name not in out.mutates:
                out.mutates[name] = (kind, (idx, node))
        for node, root in self._steps(fn):
            name = key(root)
            if name and name not in out.mutates:
                out.mutates[name] = (OPTIMIZER_STEP, (idx, node))
        out.reads |= {n for n in (key(r) for r in _table_reads(fn)) if n}
        out.resets |= {n for n in (key(r) for r in _clears(fn)) if n}
        out.per_token = _returns_arrays(fn, defs)
        self._own_memo[id(fn)] = (fn, out)
        return out

    def _primitives(self, scope: ast.AST) -> list:
        hit = self._prim_memo.get(id(scope))
        if hit is None:
            hit = self._prim_memo[id(scope)] = list(_primitives(scope, self._counting))
        return hit

    def _steps(self, scope: ast.AST) -> list[tuple[ast.AST, str]]:
        key = ("steps", id(scope))
        hit = self._prim_memo.get(key)
        if hit is None:
            hit = self._prim_memo[key] = _step_targets(scope, definitions(scope))
        return hit

    def _sites(self, scope: ast.AST) -> list[tuple[ast.Call, str]]:
        hit = self._site_memo.get(id(scope))
        if hit is None:
            hit = self._site_memo[id(scope)] = _sites(scope)
        return hit

    def _callees(self, call: ast.Call) -> list[tuple[ast.AST, dict[str, ast.AST]]]:
        """User functions `call` may run, each with its parameters bound to the call's arguments (`self` to
        the receiver of a method call). Kept per call: the scan of a function and the summaries of the functions
        it calls ask about the same calls."""
        hit = self._callee_memo.get(id(call))
        if hit is not None and hit[0] is call:
            return hit[1]
        out = self._bind_callees(call)
        self._callee_memo[id(call)] = (call, out)
        return out

    def _bind_callees(self, call: ast.Call) -> list[tuple[ast.AST, dict[str, ast.AST]]]:
        out = []
        name = call_name(call)
        targets = [
            (fn, call.func.value if isinstance(call.func, ast.Attribute) else None, False)
            for _, fn in self.p.functions.get(name, [])
        ]
        if name in self._inits:
            stmt = self._index_of(call).parents.get(call)
            new = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
            targets += [(fn, new if isinstance(new, ast.Name) else None, True) for fn in self._inits[name]]
        for fn, receiver, ctor in targets:
            params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
            binding: dict[str, ast.AST] = {}
            if params and params[0] in ("self", "cls"):
                if receiver is None and not ctor:
                    continue
                if receiver is not None:
                    binding[params[0]] = receiver
                params = params[1:]
            for i, a in enumerate(call.args):
                if i < len(params) and not isinstance(a, ast.Starred):
                    binding[params[i]] = a
            for k in call.keywords:
                if k.arg:
                    binding[k.arg] = k.value
            out.append((fn, binding))
        return out

    def _index_of(self, node: ast.AST) -> SourceIndex:
        for idx in self.p.indexes:
            if node in idx.parents or node is idx.tree:
                return idx
        return self.p.indexes[0]

    # --- one function: passes, updates, resets in program order ----------------------------------
    def _user_calls(self, idx: SourceIndex) -> dict[int, list[ast.Call]]:
        """The calls of a user function (or class) in `idx` — only they have callees to scan — by the scope they
        are written in (its id; as `walk_scope` assigns them), each scope's in program order."""
        user = self._user_names
        out: dict[int, list[ast.Call]] = {}
        for call, name in zip(idx.nodes(ast.Call), idx.call_names()):
            if name in user:
                scope = idx.enclosing(call, *SCOPE_CLASSES) or idx.tree
                out.setdefault(id(scope), []).append(call)
        return out

    def _scan_scope(self, idx: SourceIndex, scope: ast.AST, calls: list[ast.Call]) -> None:
        """The scoring passes of `scope` from its `calls` of user functions and its loops; what its updates and
        resets need is kept for `_scope_state`."""
        passes: list[ScoringPass] = []
        helper_calls: list[tuple[ast.Call, list, ScoringPass | None]] = []  # calls whose helpers may update state
        taken: set[int] = set()
        for call in calls:
            if id(call) in taken:
                continue
            callees = self._callees(call)
            if not callees:
                continue
            sites = [s for fn, _ in callees for s in self._summary(fn).sites]
            made = None
            if sites and (val_args := self._val_args(scope, call)):  # which data it scores matters only if it scores
                made = self._call_pass(idx, scope, call, callees, sites, val_args)
                passes.append(made)
                taken |= {id(x) for x in walk(call)}
            helper_calls.append((call, callees, made))
        loops = self._loop_passes(idx, scope, taken)
        passes.extend(loops)
        self._scopes.append(scope)
        self._pending[id(scope)] = (idx, scope, calls, helper_calls, loops)
        for ps in passes:
            ps.derived = frozenset(_forward(scope, ps.results, _end(ps.node)))
            ps.reported = _reported(scope, ps.derived, _end(ps.node), ps.node)
        self.passes.extend(sorted(passes, key=lambda p: (p.node.lineno, p.node.col_offset)))

    def _scope_state(self, scope: ast.AST) -> tuple[list[StateUpdate], list[StateReset]]:
        """(updates, resets) of `scope`, each in program order, made on first ask."""
        hit = self._state.get(id(scope))
        if hit is not None:
            return hit
        pending = self._pending.pop(id(scope), None)
        if pending is None:
            return [], []
        idx, scope, calls, helper_calls, loops = pending
        updates: list[StateUpdate] = []
        resets: list[StateReset] = []
        for call, callees, made in helper_calls:
            self._call_updates(idx, scope, call, callees, made, updates, resets)
        for node, root, kind in self._primitives(scope):
            data = _primitive_data(node)
            updates.append(
                StateUpdate(idx, scope, node, root, kind, (idx, node), None, self._any_val(scope, data, node.lineno))
            )
        if loops:  # an update inside a loop that scores inline is that pass filling the table as it scores
            for i, u in enumerate(updates):
                if u.by_pass is None:
                    ancestors = {id(a) for a in idx.ancestors(u.node)}
                    lp = next((lp for lp in loops if id(lp.node) in ancestors), None)
                    if lp is not None:
                        updates[i] = replace(u, by_pass=lp, from_val=True)
        for node, root in self._steps(scope):
            # what the step trains on is the TTT analysis's question (`analyses.ttt_sites`), not decided here
            updates.append(StateUpdate(idx, scope, node, root, OPTIMIZER_STEP, (idx, node), None, False))
        for node, root in _rebinds(scope):
            resets.append(StateReset(idx, scope, node, root))
        for node in calls:
            if call_name(node) in _CLEAR_CALLS and isinstance(node.func, ast.Attribute):
                root = _root(node.func.value)
                if root:
                    resets.append(StateReset(idx, scope, node, root))
        order = lambda x: (x.node.lineno, x.node.col_offset)  # noqa: E731 - program order within the function
        self._state[id(scope)] = out = (sorted(updates, key=order), sorted(resets, key=order))
        return out

    def _call_pass(self, idx, scope, call, callees, sites, val_args) -> ScoringPass:
        reads: set[str] = set()
        updates: set[str] = set()
        per_token = False
        for fn, binding in callees:
            per_token |= self.facts(fn).per_token
            r, u = self._effects(fn, binding)
            reads |= r
            updates |= u
        stmt = idx.parents.get(call)
        results = set()
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            results = {x.id for t in targets for x in walk(t) if isinstance(x, ast.Name)}
        return ScoringPass(
            idx,
            scope,
            call,
            "call",
            call_name(call),
            frozenset(reads),
            frozenset(updates),
            frozenset(results),
            per_token,
            frozenset(val_args),
            tuple(sites[:4]),
        )

    def _effects(self, fn: ast.AST, binding: dict[str, ast.AST]) -> tuple[set[str], set[str]]:
        """(tables read, tables updated) by a call of `fn`, as root variables of the caller: the arguments
        bound to parameters it reads/updates, and the module-level tables it touches."""
        f = self.facts(fn)
        reads = {g[len(GLOBAL) :] for g in f.reads if g.startswith(GLOBAL)}
        updates = {g[len(GLOBAL) :] for g, how in f.mutates.items() if g.startswith(GLOBAL) and how[0] in TABLE_KINDS}
        for pname, arg in binding.items():
            root = _root(arg)
            if not root:
                continue
            if pname in f.reads:
                reads.add(root)
            if pname in f.mutates and f.mutates[pname][0] in TABLE_KINDS:
                updates.add(root)
        return reads, updates

    def _call_updates(
        self, idx, scope, call, callees, by_pass: ScoringPass | None, updates: list, resets: list
    ) -> None:
        """States of `scope` that a helper call updates (`cache.update(chunk)`, `add_counts(table, keys)`)."""
        seen: set[str] = set()
        for fn, binding in callees:
            f = self.facts(fn)
            bound = [(pname, _root(arg)) for pname, arg in binding.items()]
            bound += [(g, g[len(GLOBAL) :]) for g in (*f.mutates, *f.resets) if g.startswith(GLOBAL)]
            for pname, root in bound:
                if not root or root in seen:
                    continue
                if pname in f.mutates:
                    seen.add(root)
                    kind, prim = f.mutates[pname]
                    val_args = frozenset(self._val_args(scope, call))
                    updates.append(
                        StateUpdate(
                            idx, scope, call, root, kind, prim, call_name(call), bool(val_args), by_pass, val_args
                        )
                    )
                elif pname in f.resets:
                    seen.add(root)
                    resets.append(StateReset(idx, scope, call, root))

    def _loop_passes(self, idx: SourceIndex, scope: ast.AST, taken: set[int]) -> list[ScoringPass]:
        """Outermost loops of `scope` that form scores themselves and read validation data."""
        out = []
        direct = [n for n, _ in self._sites(scope) if id(n) not in taken]
        loops: list[ast.AST] = []
        held: dict[int, list[ast.Call]] = {}  # outermost loop -> the sites under it, in `direct` order
        for site in direct:
            outer = None
            for anc in idx.ancestors(site):
                if anc is scope:
                    break
                if isinstance(anc, LOOPS):
                    outer = anc
            if outer is not None:
                if id(outer) not in held:
                    loops.append(outer)
                held.setdefault(id(outer), []).append(site)
        for loop in loops:
            iter_val = isinstance(loop, (ast.For, ast.AsyncFor)) and self.flow.is_val(scope, loop.iter, loop.lineno)
            sites = held[id(loop)]  # a site under this loop has it as its outermost loop too
            site_val = any(self._any_val(scope, s.args, s.lineno) for s in sites)
            if not (iter_val or site_val):
                continue
            region = list(walk(loop))
            region_ids = {id(n) for n in region}
            reads = {
                r
                for r in (_root(n) for n in region if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Load))
                if r
            }
            updates = set()
            for call in (n for n in region if isinstance(n, ast.Call)):
                for fn, binding in self._callees(call):
                    r, u = self._effects(fn, binding)
                    reads |= r
                    updates |= u
            updates |= {root for node, root, _ in self._primitives(scope) if id(node) in region_ids}
            results = {n.target.id for n in region if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name)}
            text = {ast.unparse(loop.iter)} if iter_val else set()
            form = dict(self._sites(scope))
            out.append(
                ScoringPass(
                    idx,
                    scope,
                    loop,
                    "loop",
                    None,
                    frozenset(reads),
                    frozenset(updates),
                    frozenset(results),
                    False,
                    frozenset(text),
                    tuple(ScoringSite(idx, s, form.get(s, AT_TARGET)) for s in sites[:4]),
                )
            )
        return out

    def _val_args(self, scope: ast.AST, call: ast.Call) -> set[str]:
        """Source text of the arguments handing validation data itself to `call` (not a span list or a count
        computed from its length)."""
        args = [a for a in call.args if not isinstance(a, ast.Starred)] + [k.value for k in call.keywords]
        return {
            ast.unparse(a)
            for a in args
            if isinstance(a, (ast.Name, ast.Subscript, ast.Attribute, ast.Call))
            and self.flow.is_val(scope, a, call.lineno)
        }

    def _any_val(self, scope: ast.AST, exprs, line: int) -> bool:
        return any(self.flow.is_val(scope, e, line) for e in exprs)


# --- primitives ----------------------------------------------------------------------------------
def _root(expr: ast.AST | None) -> str | None:
    """The variable a subscript/attribute chain hangs off: `self.tables[o]` -> `self`."""
    while isinstance(expr, (ast.Subscript, ast.Attribute, ast.Starred)):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _end(node: ast.AST) -> int:
    return getattr(node, "end_lineno", None) or node.lineno


def _count_carriers(program: Program) -> set[int]:
    """Ids of every node that is or contains a count call (`np.bincount(…)`): one pass over the parents of
    each count call, so asking "does this expression hold counts?" costs a set lookup."""
    out: set[int] = set()
    for idx in program.indexes:
        for call in idx.calls_named(*_COUNT_CALLS):  # the set is the same in any order
            out.add(id(call))
            for anc in idx.ancestors(call):
                if id(anc) in out:
                    break
                out.add(id(anc))
    return out


def _primitives(scope: ast.AST, counting: set[int]):
    """(node, root, kind) for every table update written in `scope` itself; `counting` holds the ids of nodes
    containing a count call (`_count_carriers`)."""

    def _has_count_call(expr: ast.AST) -> bool:
        return id(expr) in counting

    counted = _count_names(scope, counting) if counting else set()
    # what can be a table update, then in program order (the sort is stable: the same order as sorting first)
    candidates = [n for n in scope_nodes(scope, ast.AugAssign) if isinstance(n.op, ast.Add)]
    candidates += [  # an assignment updates a table through a subscript target, or binds counts
        n
        for n in scope_nodes(scope, ast.Assign)
        if id(n.value) in counting or any(t.__class__ is ast.Subscript for t in n.targets)
    ]
    candidates += [
        n
        for n in scope_nodes(scope, ast.Call)
        if n.func.__class__ is ast.Attribute and (n.func.attr in _ACCUMULATE_CALLS or n.func.attr in ("at", "copy_"))
    ]
    for n in sorted(candidates, key=POSITION):
        if isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Add):
            root = _root(n.target)
            if root is None:
                continue
            if _has_count_call(n.value) or (
                counted and counted & {x.id for x in walk(n.value) if isinstance(x, ast.Name)}
            ):
                yield n, root, COUNT_BUILD  # `t += np.bincount(keys)`, `t += counts` with counts from bincount
            elif isinstance(n.target, ast.Subscript):
                yield n, root, INCREMENT
        elif isinstance(n, ast.Assign):
            for t in n.targets:
                root = _root(t)
                if root is None:
                    continue
                if _has_count_call(n.value):
                    yield n, root, COUNT_BUILD
                elif isinstance(t, ast.Subscript) and _self_increment(t, n.value, root):
                    yield n, root, INCREMENT
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            attr = n.func.attr
            if attr == "at" and n.args and (dotted(n.func) or "").endswith("add.at"):
                root = _root(n.args[0])
                if root:
                    yield n, root, ADD_AT
            elif attr in _ACCUMULATE_CALLS:
                root = _root(n.func.value)
                if root:
                    yield n, root, INDEX_ADD
            elif attr == "copy_" and n.args and _has_count_call(n.args[0]):
                root = _root(n.func.value)
                if root:
                    yield n, root, COUNT_BUILD


def _count_names(scope: ast.AST, counting: set[int]) -> set[str]:
    """Locals bound to counts: `counts = np.bincount(keys, minlength=n)`."""
    return {name for name, binds in definitions(scope).items() if any(id(v) in counting for _, v in binds)}


def _self_increment(target: ast.Subscript, value: ast.AST, root: str) -> bool:
    """`d[k] = d.get(k, 0) + v` / `t[k] = t[k] + v`."""
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)):
        return False
    for n in walk(value):
        if isinstance(n, ast.Call) and call_name(n) == "get" and isinstance(n.func, ast.Attribute):
            if _root(n.func.value) == root:
                return True
        if isinstance(n, ast.Subscript) and _root(n) == root:
            return True
    return False


def _primitive_data(node: ast.AST) -> list[ast.AST]:
    """The expressions carrying positions into an update (keys and increments)."""
    if isinstance(node, ast.AugAssign):
        return [node.value] + ([node.target.slice] if isinstance(node.target, ast.Subscript) else [])
    if isinstance(node, ast.Assign):
        return [node.value] + [t.slice for t in node.targets if isinstance(t, ast.Subscript)]
    if isinstance(node, ast.Call):
        return list(node.args[1:] if (dotted(node.func) or "").endswith("add.at") else node.args)
    return []


def _step_targets(scope: ast.AST, defs) -> list[tuple[ast.AST, str]]:
    """`opt.step()` where `opt` was built in `scope` from `m.parameters()`: (the call, `m`)."""
    out = []
    for n in scope_nodes(scope, ast.Call):
        if not (isinstance(n, ast.Call) and call_name(n) == "step" and isinstance(n.func, ast.Attribute)):
            continue
        opt = n.func.value
        if not isinstance(opt, ast.Name):
            continue
        for line, value in reversed(defs.get(opt.id, [])):
            if line > n.lineno or not isinstance(value, ast.Call):
                continue
            for x in walk(value):
                if (
                    isinstance(x, ast.Call)
                    and call_name(x) in ("parameters", "named_parameters")
                    and isinstance(x.func, ast.Attribute)
                ):
                    root = _root(x.func.value)
                    if root:
                        out.append((n, root))
                        break
            break
    return out


def _local_names(fn: ast.AST) -> set[str]:
    """Names `fn` binds itself (`x = …`, `a, b = …`, loop targets) — not those it only subscripts
    (`T[k] += 1` updates a table, it does not bind `T`) — unless declared `global`."""
    out: set[str] = set()
    declared: set[str] = set()
    for n in scope_nodes(fn, ast.Global, *BINDER_CLASSES):
        if isinstance(n, ast.Global):
            declared.update(n.names)
        for target, _ in binding_pairs(n):
            stack = [target]
            while stack:
                t = stack.pop()
                if isinstance(t, ast.Name):
                    out.add(t.id)
                elif isinstance(t, (ast.Tuple, ast.List, ast.Starred)):
                    stack.extend(t.elts if not isinstance(t, ast.Starred) else [t.value])
    return out - declared


def _param_root(root: str | None, params: set[str], defs) -> str | None:
    """The parameter a root variable stands for, through one local alias (`t = self.tables[o]`)."""
    if root is None:
        return None
    if root in params:
        return root
    binds = defs.get(root, [])
    if len(binds) == 1:
        alias = _root(binds[0][1])
        if alias in params:
            return alias
    return None


def _table_reads(scope: ast.AST) -> set[str]:
    """Roots read as tables in `scope`: `t[k]` loads (not the update's own target) and `d.get(k)`."""
    out: set[str] = set()
    for n in scope_nodes(scope, ast.Subscript, ast.Call):
        if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Load):
            r = _root(n)
            if r:
                out.add(r)
        elif isinstance(n, ast.Call) and call_name(n) == "get" and isinstance(n.func, ast.Attribute) and n.args:
            r = _root(n.func.value)
            if r:
                out.add(r)
    return out


def _clears(scope: ast.AST) -> set[str]:
    """Roots `scope` empties: `t.zero_()`, `d.clear()`, `self.t = np.zeros(…)` (a fresh table)."""
    out: set[str] = set()
    for n in scope_nodes(scope, ast.Call, ast.Assign):
        if isinstance(n, ast.Call) and call_name(n) in _CLEAR_CALLS and isinstance(n.func, ast.Attribute):
            r = _root(n.func.value)
            if r:
                out.add(r)
        elif isinstance(n, ast.Assign) and _fresh(n.value):
            for t in n.targets:
                if isinstance(t, (ast.Attribute, ast.Subscript)):
                    r = _root(t)
                    if r:
                        out.add(r)
    return out


def _fresh(value: ast.AST) -> bool:
    if (
        isinstance(value, (ast.Dict, ast.List))
        and not getattr(value, "keys", None)
        and not getattr(value, "elts", None)
    ):
        return True
    if isinstance(value, ast.ListComp):
        return _fresh(value.elt)
    return isinstance(value, ast.Call) and call_name(value) in _FRESH_CALLS


def _rebinds(scope: ast.AST):
    """(node, name) for every plain rebinding of a name: the old object (and its updates) is gone."""
    for n in scope_nodes(scope, ast.Assign):
        if isinstance(n, ast.Assign):
            for t in n.targets:
                if isinstance(t, ast.Name):
                    yield n, t.id


_SITE_CALLS = frozenset(_FULL_VOCAB_CALLS) | frozenset(_LOG_CALLS)


def _sites(scope: ast.AST) -> list[tuple[ast.Call, str]]:
    """Scoring sites written in `scope`: full-vocabulary scorers, and logs of a non-constant probability."""
    out = []
    named = [n for n in scope_nodes(scope, ast.Call) if call_name(n) in _SITE_CALLS]
    for n in sorted(named, key=POSITION):  # the same order as sorting every call: the sort is stable
        name = call_name(n)
        if name in _FULL_VOCAB_CALLS:
            out.append((n, FULL_VOCAB))
        elif name in _LOG_CALLS and not n.keywords:
            args = [n.func.value] if isinstance(n.func, ast.Attribute) and not n.args else n.args  # `p.log()`
            if any(isinstance(a, (ast.Constant, ast.JoinedStr, ast.Dict)) for a in args):
                continue  # `math.log(2.0)`, a logger's `log("…")`
            if any(isinstance(x, (ast.Name, ast.Subscript, ast.Attribute)) for a in args for x in walk(a)):
                out.append((n, AT_TARGET))
    return out


def _returns_arrays(fn: ast.AST, defs) -> bool:
    """`fn` hands back per-token arrays: a return value built by concatenating/stacking or from a list of
    appended chunks."""
    for n in scope_nodes(fn, ast.Return):
        if not (isinstance(n, ast.Return) and n.value is not None):
            continue
        for x in walk(n.value):
            if isinstance(x, ast.Call) and call_name(x) in _ARRAY_CALLS:
                return True
            if isinstance(x, ast.Name):
                for _, value in defs.get(x.id, []):
                    if isinstance(value, ast.AST) and any(
                        isinstance(c, ast.Call) and call_name(c) in ("concatenate", "cat", "stack") for c in walk(value)
                    ):
                        return True
    return False


def _forward(scope: ast.AST, names: frozenset[str] | set[str], after: int) -> set[str]:
    """Names computed from `names` after line `after` in `scope` (assignments, augmented assignments, loop
    targets), to a fixed point."""
    out = set(names)
    if not out:
        return out
    stmts = [  # class after class: the fixed point below reads them in this order
        n
        for cls in (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)
        for n in scope_nodes(scope, cls)
        if getattr(n, "lineno", 0) > after
    ]
    for _ in range(6):
        before = len(out)
        for n in stmts:
            value = n.iter if isinstance(n, (ast.For, ast.AsyncFor)) else n.value
            if value is None or not out & {x.id for x in walk(value) if isinstance(x, ast.Name)}:
                continue
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            out |= {x.id for t in targets for x in walk(t) if isinstance(x, ast.Name)}
        if len(out) == before:
            break
    return out


def _reported(scope: ast.AST, names: frozenset[str], after: int, node: ast.AST) -> tuple[ast.AST, str] | None:
    """Where a value derived from a pass is returned, or logged with a metric tag, after line `after`."""
    kept = [  # what the loop below can return, in program order (a stable sort: as sorting them all)
        n
        for n in scope_nodes(scope, ast.Return, ast.Call)
        if n.lineno >= after and (n.__class__ is ast.Return or call_name(n) in _LOG_FUNCS)
    ]
    for n in sorted(kept, key=POSITION):
        if isinstance(n, ast.Return) and n.value is not None:
            if any(x is node for x in walk(n.value)) or names & {
                x.id for x in walk(n.value) if isinstance(x, ast.Name)
            }:
                return n, "return"
        if isinstance(n, ast.Call) and call_name(n) in _LOG_FUNCS:
            used = {x.id for a in n.args for x in walk(a) if isinstance(x, ast.Name)}
            text = " ".join(
                c.value for a in n.args for c in walk(a) if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
            inline = any(x is node for a in n.args for x in walk(a))
            if (names & used or inline) and _METRIC_TEXT.search(text):
                return n, text
    return None


def _shared_loop(idx: SourceIndex, a: ast.AST, b: ast.AST, scope: ast.AST) -> bool:
    """`a` and `b` run in the same loop of `scope`: per-chunk order, not pass order, relates them."""
    loops_a = {id(x) for x in _loops_until(idx, a, scope)}
    return any(id(x) in loops_a for x in _loops_until(idx, b, scope))


def _loops_until(idx: SourceIndex, node: ast.AST, scope: ast.AST):
    for anc in idx.ancestors(node):
        if anc is scope:
            return
        if isinstance(anc, LOOPS):
            yield anc
