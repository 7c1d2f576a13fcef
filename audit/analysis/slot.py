"""SLOT analysis: free tensors (a hidden-state delta, a logit bias) optimised at evaluation time, and which
positions their loss covers compared with the positions that are then scored.

A SLOT site is a backward pass whose loss depends on a tensor created in the evaluation code with
`requires_grad=True` (or `.requires_grad_()`) and stepped by an optimiser that holds only such tensors. We
compare the sequence slice the loss is restricted to (a mask written as `mask[i, a:b] = 1`, indexing by such
a mask, or slicing `logits[:s]` / `y[:s]`) with the slice of the score accumulation that the fitted tensor
flows into (`loss_sum += nll[i, s:wlen].sum()`):

- `scored`: the loss covers the scored span (`mask[i, s:wlen]` then `nll[i, s:wlen]`, or no restriction at all);
- `context`: the loss stops where scoring starts (`[:s]`, `[focal:s]`): context-only SLOT, unresolved (#1336);
- `unresolved`: a mask we cannot read, or no scored span found;
- `score_first`: the only scoring the tensor flows into comes before the backward in the loop they share, so each
  batch is scored before the tensor absorbs it (C3 kept, like score-first TTT);
- `discarded`: nothing reads the tensor once it is fitted (a thrown-away warm-up).

Order is judged by source position (line, column), so minified one-line loops order the same way.

Guards over function-local names (`use_slot = getattr(args, 'slot_enabled', False)`) are decided by the
program's one reachability engine (reachability.py), which folds locals bound once through each other.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from ..load.parse import walk
from ..logs.patterns import may_contain
from .astutil import BACKWARD_NAMES, FUNCS, LOOPS, UNKNOWN, call_name, dotted, is_backward, scope_nodes, walk_scope
from .program import Program, SourceIndex
from .scopes import BINDER_CLASSES, binding_pairs, bound_names
from .source import POSITION
from .valueflow import ValFlow

# a free tensor is made with `requires_grad` (a keyword, `requires_grad_()`, `.requires_grad = True`) or as an
# `nn.Parameter`: the words a source's text must hold (lowercase, for `may_contain`) before any scope is read
_FREE_TENSOR_WORDS = ("requires_grad", "parameter")
_OPTIMISERS = {"SGD", "Adam", "AdamW", "LBFGS", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Rprop"}
_FACTORIES = {
    "zeros",
    "ones",
    "zeros_like",
    "ones_like",
    "empty",
    "empty_like",
    "full",
    "randn",
    "rand",
    "tensor",
    "clone",
    "new_zeros",
    "new_ones",
    "new_empty",
    "new_full",
    "new_tensor",
}
# Methods that keep a tensor's identity for our purposes: `mask.float()`, `nll.reshape(...)`.
_PASS_THROUGH = {
    "float",
    "double",
    "bool",
    "to",
    "reshape",
    "view",
    "unsqueeze",
    "squeeze",
    "contiguous",
    "detach",
    "clone",
    "flatten",
    "type_as",
    "half",
    "bfloat16",
    "cuda",
}
CLOSURE_DEPTH = 8  # names followed back through their definitions


@dataclass
class Span:
    lo: ast.expr | None
    hi: ast.expr | None
    node: ast.AST  # the mask write or the slicing subscript
    how: str  # "mask `m`" | "slice"


@dataclass
class SlotSite:
    kind: str  # scored | context | unresolved | score_first | discarded
    idx: SourceIndex
    backward: ast.AST
    loss_def: ast.AST  # the assignment of the optimised loss (reachability is judged here)
    owner: ast.AST  # the function (or module) that builds the optimiser
    tensors: list[str]
    detail: str
    confidence: str  # high | medium
    evidence: list[tuple[SourceIndex, ast.AST, str]] = field(default_factory=list)


# --- scopes --------------------------------------------------------------------------------------
class _Scope:
    """Name definitions and slice writes of one function (or module), not descending into nested defs."""

    def __init__(self, node: ast.AST):
        self.node = node
        self.defs: dict[str, list[tuple[ast.AST, ast.expr]]] = {}  # name -> [(statement, value)]
        self.slice_writes: dict[str, list[ast.Assign]] = {}
        self.calls: list[ast.Call] = []
        self.free: dict[str, ast.AST] | None = None  # filled lazily by SlotAnalysis
        self.opts: list[tuple[ast.Assign, list[str]]] | None = None
        self._acc: list[ast.AST] | None = None
        for n in scope_nodes(node, ast.Call, *BINDER_CLASSES):
            if isinstance(n, ast.Call):
                self.calls.append(n)
            elif not isinstance(n, ast.AugAssign):  # `x += …` is an accumulation (below), not a definition
                for target, value in binding_pairs(n):
                    self._bind(n, target, value)

    def accumulations(self) -> list[ast.AST]:
        """`x += …` and `xs.append(…)` in source order (the candidates for a score accumulation)."""
        if self._acc is None:
            acc = list(scope_nodes(self.node, ast.AugAssign))
            acc += [c for c in self.calls if call_name(c) in ("append", "extend")]
            self._acc = sorted(acc, key=POSITION)
        return self._acc

    def _bind(self, stmt: ast.AST, target: ast.AST, value: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.defs.setdefault(target.id, []).append((stmt, value))
        elif isinstance(target, (ast.Tuple, ast.List)):
            elts = (
                value.elts if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts) else None
            )
            for i, t in enumerate(target.elts):
                self._bind(stmt, t, elts[i] if elts else value)
        elif isinstance(target, ast.Subscript) and isinstance(stmt, ast.Assign):
            base = _base_name(target.value)
            if base:
                self.slice_writes.setdefault(base, []).append(stmt)


def _base_name(expr: ast.AST) -> str | None:
    """`mask.float()` / `score_masks[i]` / `nll_all` -> the underlying name."""
    while True:
        if isinstance(expr, ast.Name):
            return expr.id
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr in _PASS_THROUGH:
            expr = expr.func.value
        elif isinstance(expr, ast.Subscript):
            expr = expr.value
        else:
            return None


def _last_slice(sub: ast.Subscript) -> ast.Slice | None:
    s = sub.slice
    if isinstance(s, ast.Slice):
        return s
    if isinstance(s, ast.Tuple):
        slices = [e for e in s.elts if isinstance(e, ast.Slice)]
        return slices[-1] if slices else None
    return None


def _truthy_const(node: ast.AST) -> bool:
    return not (isinstance(node, ast.Constant) and not node.value)


class _Chain:
    """A function and the functions enclosing it (closures read their outer function's names)."""

    def __init__(self, idx: SourceIndex, scopes: list[_Scope]):
        self.idx = idx
        self.scopes = scopes

    def defs(self, name: str) -> list[tuple[ast.AST, ast.expr]]:
        for sc in self.scopes:
            if name in sc.defs:
                return sc.defs[name]
        return []

    def slice_writes(self, name: str) -> list[ast.Assign]:
        for sc in self.scopes:
            if name in sc.slice_writes:
                return sc.slice_writes[name]
        return []

    def closure(self, expr: ast.AST, max_depth: int = CLOSURE_DEPTH) -> list[tuple[int, ast.AST]]:
        """Every node `expr` is computed from, following names to all their definitions, with the depth."""
        out: list[tuple[int, ast.AST]] = []
        seen: set[str] = set()
        frontier = [expr]
        for depth in range(max_depth + 1):
            nxt: list[ast.AST] = []
            for root in frontier:
                for n in walk(root):
                    out.append((depth, n))
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in seen:
                        seen.add(n.id)
                        nxt.extend(v for _, v in self.defs(n.id))
            if not nxt:
                break
            frontier = nxt
        return out

    def names(self, expr: ast.AST) -> set[str]:
        return {n.id for _, n in self.closure(expr) if isinstance(n, ast.Name)}

    def forms(self, expr: ast.AST | None) -> set[str]:
        """Spellings of a slice bound: its text, and the text of the definitions of a bare name."""
        if expr is None:
            return set()
        out = {ast.unparse(expr)}
        if isinstance(expr, ast.Name):
            out |= {ast.unparse(v) for _, v in self.defs(expr.id)}
        return out


# --- the analysis --------------------------------------------------------------------------------
class SlotAnalysis:
    def __init__(self, program: Program, flow: ValFlow):
        self.p = program
        self.flow = flow
        self._scopes: dict[ast.AST, _Scope] = {}

    def scope(self, node: ast.AST) -> _Scope:
        if node not in self._scopes:
            self._scopes[node] = _Scope(node)
        return self._scopes[node]

    def chain(self, idx: SourceIndex, node: ast.AST) -> _Chain:
        fns = [a for a in idx.ancestors(node) if isinstance(a, FUNCS)]
        return _Chain(idx, [self.scope(f) for f in fns] + [self.scope(idx.tree)])

    # free tensors and their optimisers (cached per scope: a long main() is shared by many backward calls)
    def _free_tensors(self, chain: _Chain) -> dict[str, ast.AST]:
        out: dict[str, ast.AST] = {}
        for sc in chain.scopes[:-1] or chain.scopes:
            for name, node in self._scope_free(sc).items():
                out.setdefault(name, node)
        return out

    def _scope_free(self, sc: _Scope) -> dict[str, ast.AST]:
        if sc.free is not None:
            return sc.free
        out: dict[str, ast.AST] = {}
        for name, defs in sc.defs.items():
            for stmt, value in defs:
                if isinstance(stmt, ast.Assign) and self._creates_free_tensor(value):
                    out.setdefault(name, stmt)
        for call in sc.calls:  # `delta.requires_grad_(True)` on a tensor built here
            if (
                call_name(call) == "requires_grad_"
                and isinstance(call.func, ast.Attribute)
                and (isinstance(call.func.value, ast.Name) and self._grad_flag(call))
            ):
                name = call.func.value.id
                if any(_is_factory(v) for _, v in sc.defs.get(name, [])):
                    out.setdefault(name, call)
        for n in scope_nodes(sc.node, ast.Assign):  # `delta.requires_grad = True`
            if len(n.targets) == 1:
                tgt = n.targets[0]
                if isinstance(tgt, ast.Attribute) and tgt.attr == "requires_grad" and isinstance(tgt.value, ast.Name):
                    v = self.p.fold(n.value)
                    name = tgt.value.id
                    if (v is UNKNOWN or bool(v)) and any(_is_factory(x) for _, x in sc.defs.get(name, [])):
                        out.setdefault(name, n)
        sc.free = out
        return out

    def _grad_flag(self, call: ast.Call) -> bool:
        if not call.args:
            return True
        v = self.p.fold(call.args[0])
        return v is UNKNOWN or bool(v)

    def _creates_free_tensor(self, value: ast.AST) -> bool:
        for n in walk(value):
            if not isinstance(n, ast.Call):
                continue
            if call_name(n) == "requires_grad_" and self._grad_flag(n):
                return not _mentions_params(value)
            for kw in n.keywords:
                if kw.arg == "requires_grad":
                    v = self.p.fold(kw.value)
                    if v is not UNKNOWN and v:
                        return True
            if call_name(n) == "Parameter" and n.args and _is_factory(n.args[0]):
                return True
        return False

    def _optimisers(self, chain: _Chain, free: dict[str, ast.AST]) -> list[tuple[ast.Assign, list[str]]]:
        """Optimisers holding free tensors only: named in the call, or through a list bound to a name
        (`params = [delta, bias]; AdamW(params)`)."""
        out = []
        for sc in chain.scopes:
            for stmt, held in self._scope_opts(sc):
                names: list[str] = []
                for h in held:
                    lists = [v for _, v in chain.defs(h)] if h not in free else []
                    if lists and all(isinstance(v, (ast.List, ast.Tuple)) for v in lists):
                        names.extend(n for v in lists for n in _optimised_names([v]) or ["?"])
                    else:
                        names.append(h)
                if names and all(n in free for n in names):
                    out.append((stmt, names))
        return out

    def _manual_steps(self, chain: _Chain, free: dict[str, ast.AST], bwd: ast.AST, loss: ast.AST):
        """([tensors], first update) when the free tensors the loss reads are stepped by hand after the backward
        (`delta -= lr * delta.grad`, `delta.data.add_(…)`, `delta = delta - lr * g` from `autograd.grad`) and no
        optimiser steps anything else there (that is TTT, judged by the TTT analysis)."""
        names = chain.names(loss) & free.keys()
        if not names:
            return [], None
        idx = chain.idx
        loops = [a for a in idx.ancestors(bwd) if isinstance(a, LOOPS)]
        region = loops[0] if loops else chain.scopes[0].node
        stmt = next((a for a in idx.ancestors(bwd) if isinstance(a, ast.stmt)), None)
        grads = {n for t in getattr(stmt, "targets", []) for n in bound_names(t)} if stmt is not None else set()
        held, first = [], None
        for n in walk_scope(region) if not isinstance(region, LOOPS) else walk(region):
            if _pos(n) <= _pos(bwd):
                continue
            if isinstance(n, ast.Call) and call_name(n) == "step" and isinstance(n.func, ast.Attribute):
                return [], None  # an optimiser steps here: not a hand-stepped delta
            x = _stepped_name(n, names, grads)
            if x:
                held.append(x)
                first = first or n
        return sorted(set(held)), first

    def _scope_opts(self, sc: _Scope) -> list[tuple[ast.Assign, list[str]]]:
        """Optimisers built in this scope over a plain list of names."""
        if sc.opts is not None:
            return sc.opts
        out = []
        for defs in sc.defs.values():
            for stmt, value in defs:
                if not (isinstance(stmt, ast.Assign) and isinstance(value, ast.Call)):
                    continue
                qn = dotted(value.func) or ""
                if qn.split(".")[-1] not in _OPTIMISERS and ".optim." not in f".{qn}.":
                    continue
                held = _optimised_names(value.args[:1] + [k.value for k in value.keywords if k.arg == "params"])
                if held:
                    out.append((stmt, held))
        sc.opts = out
        return out

    # the main entry
    def sites(self) -> list[SlotSite]:
        out: list[SlotSite] = []
        for idx in self.p.indexes:
            if "requires_grad" not in idx.src.text and "Parameter(" not in idx.src.text:
                continue  # no free tensor can be created in this source
            for call in idx.calls_named(*BACKWARD_NAMES):
                if not is_backward(call):
                    continue
                site = self._site(idx, call)
                if site:
                    out.extend(site)
        return out

    def _site(self, idx: SourceIndex, bwd: ast.Call) -> list[SlotSite]:
        if not may_contain(idx.src.text, _FREE_TENSOR_WORDS):
            return []  # an ASCII source that never writes `requires_grad` or `Parameter` makes no free tensor
        chain = self.chain(idx, bwd)
        free = self._free_tensors(chain)
        if not free:
            return []
        target = _loss_of(bwd)
        opts = self._optimisers(chain, free)
        stepper = "optimiser over these tensors only (model weights untouched)"
        if not opts:
            manual, first = self._manual_steps(chain, free, bwd, target)
            if not manual:
                return []
            opts = [(first, manual)]
            stepper = "gradient step by hand on these tensors only (model weights untouched)"
        held = {h for _, hs in opts for h in hs}
        if not (chain.names(target) & held):
            return []
        if not self._on_val(idx, chain, target):
            return []
        opt_stmt = opts[0][0]
        owner = next((sc.node for sc in chain.scopes if opt_stmt in _stmts(sc)), chain.scopes[0].node)
        scored, scored_first = self._scored_span(chain, held, bwd)
        # One site per definition of the optimised loss: `if causal: loss = ctx loss else: loss = full loss`.
        loss_defs = chain.defs(target.id) if isinstance(target, ast.Name) else []
        variants = [(stmt, value) for stmt, value in loss_defs] or [(bwd, target)]
        sites = []
        for stmt, value in variants:
            # Drop mask writes in dead branches only when the loss itself is live: a wholly disabled SLOT
            # is still described by all its masks.
            if scored is None and scored_first is not None and self._fits_scored(idx, chain, value, scored_first):
                kind, detail, conf, ev = (
                    "score_first",
                    "each batch is scored before the tensor is fitted on it (score before update)",
                    "high",
                    [(scored_first, "scored here, before the backward of the same iteration")],
                )
            elif scored is None and not self._used_after(idx, chain, held, bwd, target, free):
                kind, detail, conf, ev = ("discarded", "nothing reads the tensor once it is fitted", "high", [])
            else:
                kind, detail, conf, ev = self._classify(chain, value, scored, self._live(idx, stmt))
            evidence = [
                (idx, free[h], f"free tensor `{h}` created with requires_grad") for h in sorted(held) if h in free
            ]
            evidence.append((idx, opt_stmt, stepper))
            evidence.extend((idx, n, note) for n, note in ev)
            evidence.append((idx, bwd, "backward on the validation loss"))
            if scored is not None:
                evidence.append((idx, scored[2], "scored span (the fitted tensor flows into this)"))
            sites.append(SlotSite(kind, idx, bwd, stmt, owner, sorted(held), detail, conf, evidence))
        return sites

    def _live(self, idx: SourceIndex, node: ast.AST) -> bool:
        """A mask write in a branch that is off under the effective config does not shape the loss."""
        live, _ = self.p.guard_status(idx, node, self.p.config)  # guards inside the function only
        return live is not False

    def _on_val(self, idx: SourceIndex, chain: _Chain, target: ast.AST) -> bool:
        for depth, n in chain.closure(target):
            if isinstance(n, ast.Name) and depth <= CLOSURE_DEPTH:
                scope = idx.enclosing(n, *FUNCS) or idx.tree
                if self.flow.is_val(scope, n, getattr(n, "lineno", 0)):
                    return True
        return False

    def _scored_span(self, chain: _Chain, held: set[str], bwd: ast.AST):
        """((lo, hi, node, masks) of the first score accumulation after the backward that the fitted tensor
        reaches, or None; an accumulation it reaches before the backward, inside a loop they share)."""
        loops = {id(a) for a in chain.idx.ancestors(bwd) if isinstance(a, LOOPS)}
        before = None
        for sc in chain.scopes:
            for n in sc.accumulations():
                value = None
                if isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Add):
                    value = n.value
                elif isinstance(n, ast.Call) and call_name(n) in ("append", "extend") and n.args:
                    value = n.args[0]
                if value is None:
                    continue
                clo = chain.closure(value)
                if not ({x.id for _, x in clo if isinstance(x, ast.Name)} & held):
                    continue
                if _pos(n) <= _pos(bwd):
                    if before is None and any(id(a) in loops for a in chain.idx.ancestors(n)):
                        before = n  # scored earlier in the iteration that then fits on it
                    continue
                spans = self._spans(chain, clo, shallowest=True)
                if spans:
                    sp = spans[0]
                    return (sp.lo, sp.hi, n, sp), before
        return None, before

    def _fits_scored(self, idx: SourceIndex, chain: _Chain, loss: ast.AST, acc: ast.AST) -> bool:
        """Does the fitted loss read only validation values that the earlier scoring read too (not the next
        batch, which would then be scored by a tensor that has absorbed it)?"""
        scored_names = chain.names(acc)
        for _, n in chain.closure(loss):
            if isinstance(n, ast.Name) and n.id not in scored_names:
                if self.flow.is_val(idx.enclosing(n, *FUNCS) or idx.tree, n, getattr(n, "lineno", 0)):
                    return False
        return True

    def _used_after(self, idx: SourceIndex, chain: _Chain, held: set[str], bwd: ast.AST, loss: ast.AST, free) -> bool:
        """Is a fitted tensor read other than by its own loss once fitting is under way: after the loop around
        the backward, or (loop-carried) anywhere in a loop the tensor outlives? Returned, stored or passed on
        counts as read."""
        loops = [a for a in idx.ancestors(bwd) if isinstance(a, LOOPS)]
        fit = loops[0] if loops else next((a for a in idx.ancestors(bwd) if isinstance(a, ast.stmt)), bwd)
        end = (fit.end_lineno or fit.lineno, fit.end_col_offset or 0)
        fitting = {id(n) for _, n in chain.closure(loss)}
        for sc in chain.scopes[:-1] or chain.scopes:
            for n in scope_nodes(sc.node, ast.Name):
                if not (n.id in held and isinstance(n.ctx, ast.Load)):
                    continue
                if _pos(n) > end:
                    return True
                created = free.get(n.id)
                outlives = [lp for lp in loops if not (created and _within(idx, created, lp))]
                if _within(idx, n, fit):
                    if id(n) not in fitting and fit in outlives:
                        return True  # read beside the fitting, in a loop the tensor outlives
                elif any(_within(idx, n, lp) for lp in outlives):
                    return True  # the next iteration reads what this one fitted
        return False

    def _spans(
        self, chain: _Chain, clo: list[tuple[int, ast.AST]], shallowest: bool = False, drop_dead: bool = True
    ) -> list[Span]:
        found: list[tuple[int, Span]] = []
        for depth, n in clo:
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult):
                for side in (n.left, n.right):
                    found.extend((depth, s) for s in self._mask_spans(chain, side, drop_dead))
            elif isinstance(n, ast.Subscript):
                if _base_name(n.slice) and chain.slice_writes(_base_name(n.slice) or ""):
                    found.extend((depth, s) for s in self._mask_spans(chain, n.slice, drop_dead))
                sl = _last_slice(n)
                if sl is not None:
                    found.append((depth, Span(sl.lower, sl.upper, n, "slice")))
        if shallowest and found:
            best = min(d for d, _ in found)
            return [s for d, s in found if d == best]
        return [s for _, s in found]

    def _mask_spans(self, chain: _Chain, expr: ast.AST, drop_dead: bool = True) -> list[Span]:
        name = _base_name(expr)
        if not name:
            return []
        out = []
        for w in chain.slice_writes(name):
            if not _truthy_const(w.value) or (drop_dead and not self._live(chain.idx, w)):
                continue
            for t in w.targets:
                if isinstance(t, ast.Subscript) and _base_name(t.value) == name:
                    sl = _last_slice(t)
                    if sl is not None:
                        out.append(Span(sl.lower, sl.upper, w, f"mask `{name}`"))
        return out

    def _unreadable_masks(self, chain: _Chain, clo, held: set[str]) -> list[ast.AST]:
        """Mask-like factors built from comparisons (`(pos < s).float()`), whose span we do not read."""
        out = []
        for _, n in clo:
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult):
                for side in (n.left, n.right):
                    name = _base_name(side)
                    if not name or chain.slice_writes(name) or name in held:
                        continue
                    defs = chain.defs(name)
                    if defs and any(isinstance(x, ast.Compare) for _, v in defs for x in walk(v)):
                        if not (chain.names(side) & held):
                            out.append(side)
        return out

    def _classify(self, chain: _Chain, loss: ast.AST, scored, drop_dead: bool):
        clo = chain.closure(loss)
        spans = self._spans(chain, clo, drop_dead=drop_dead)
        if scored is None:
            return (
                "unresolved",
                "a free tensor is fitted on validation tokens, but no scored span was found",
                "medium",
                [],
            )
        sa, sb, _, sspan = scored
        sa_forms, sb_forms = chain.forms(sa), chain.forms(sb)
        same = [
            s
            for s in spans
            if (chain.forms(s.lo) & sa_forms)
            or (s.lo is not None and chain.forms(s.hi) & sb_forms)
            or (s.how == sspan.how and s.how != "slice")
        ]
        ctx = [s for s in spans if sa is not None and chain.forms(s.hi) & sa_forms]
        if same:
            s = same[0]
            return (
                "scored",
                f"the loss {s.how} `{ast.unparse(s.node)[:60]}` covers the scored positions `[{_txt(sa)}:{_txt(sb)}]`",
                "high",
                [(s.node, "fitted on these positions")],
            )
        if ctx:
            s = ctx[0]
            return (
                "context",
                f"context-only: the loss {s.how} ends at `{_txt(s.hi)}`, where scoring starts "
                "(unresolved, issue #1336)",
                "medium",
                [(s.node, "fitted on the context before the scored span")],
            )
        unreadable = self._unreadable_masks(chain, clo, set())
        if unreadable:
            return (
                "unresolved",
                "the loss is masked by a tensor whose span is not read statically",
                "medium",
                [(unreadable[0], "mask")],
            )
        return (
            "scored",
            f"the loss is not restricted to context positions, so it covers the scored span `[{_txt(sa)}:{_txt(sb)}]`",
            "medium",
            [],
        )


_IN_PLACE = {"add_", "sub_", "copy_", "mul_", "addcmul_", "addcdiv_", "lerp_"}


def _stepped_name(n: ast.AST, names: set[str], grads: set[str]) -> str | None:
    """The free tensor this node steps by hand: `x -= …`, `x.data -= …`, `x.data.add_(…)`, or `x = f(x, grad)`."""

    def base(e: ast.AST) -> str | None:
        e = e.value if isinstance(e, ast.Attribute) and e.attr == "data" else e
        return e.id if isinstance(e, ast.Name) and e.id in names else None

    if isinstance(n, ast.AugAssign):
        return base(n.target)
    if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in _IN_PLACE:
        return base(n.func.value)
    if isinstance(n, ast.Assign) and len(n.targets) == 1 and base(n.targets[0]):
        x = base(n.targets[0])
        reads = {m.id for m in walk(n.value) if isinstance(m, ast.Name)}
        grad = grads & reads or any(isinstance(m, ast.Attribute) and m.attr == "grad" for m in walk(n.value))
        return x if x in reads and grad else None
    return None


def _within(idx: SourceIndex, node: ast.AST, outer: ast.AST) -> bool:
    return any(a is outer for a in idx.ancestors(node))


def _pos(node: ast.AST) -> tuple[int, int]:
    return getattr(node, "lineno", 0), getattr(node, "col_offset", 0)


def _txt(e: ast.AST | None) -> str:
    return "" if e is None else ast.unparse(e)


def _stmts(sc: _Scope):
    for defs in sc.defs.values():
        for stmt, _ in defs:
            yield stmt


def _loss_of(bwd: ast.Call) -> ast.AST:
    """`loss.backward()` -> loss; `torch.autograd.grad(loss, params)` -> loss."""
    if call_name(bwd) == "backward" and isinstance(bwd.func, ast.Attribute):
        return bwd.func.value
    return bwd.args[0] if bwd.args else bwd


def _is_factory(value: ast.AST) -> bool:
    return isinstance(value, ast.Call) and call_name(value) in _FACTORIES and not _mentions_params(value)


def _mentions_params(value: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Attribute) and n.attr in ("parameters", "named_parameters", "weight", "state_dict")
        for n in walk(value)
    )


def _optimised_names(params: list[ast.AST]) -> list[str]:
    """Names in an optimiser's params: `[delta, bias]`, `[{"params": [delta]}]`; [] when not a plain list."""
    out: list[str] = []
    for p in params:
        if isinstance(p, (ast.List, ast.Tuple)):
            for e in p.elts:
                if isinstance(e, ast.Name):
                    out.append(e.id)
                elif isinstance(e, ast.Dict):
                    for k, v in zip(e.keys, e.values):
                        if isinstance(k, ast.Constant) and k.value == "params":
                            sub = _optimised_names([v])
                            if not sub:
                                return []
                            out.extend(sub)
                else:
                    return []
        elif isinstance(p, ast.Name):
            out.append(p.id)
        else:
            return []
    return out
