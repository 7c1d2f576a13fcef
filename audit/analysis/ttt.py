"""Test-time training analysis: where are optimiser steps taken on validation data, and are those tokens
scored before or after the update?

Shared by the `prequant_ttt` and `score-first TTT` rules. For every backward pass whose loss is computed from
validation data we look at the loops around it (and, when the training step lives in a helper, around its call
sites) for a scoring operation — a loss accumulated into the number the function returns or logs — and decide:

- `score_first`: in the same iteration the chunk is scored before the update (legal, C3 of issue #1017);
- `multi_epoch`: score-first inside an epoch loop that runs more than once, so later epochs re-score tokens
  the model has already trained on;
- `train_then_score`: the iteration trains on the chunk/document and scores it afterwards;
- `pre_score`: a loop trains on validation tokens and scores nothing; the tokens are scored later;
- `warmup_restored`: like `pre_score` but the weights are restored afterwards (thrown-away warm-up: info).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Iterable

from ..load.parse import children, walk
from .astutil import (
    BACKWARD_NAMES,
    FUNCS,
    LOOPS,
    NO_GRAD,
    UNKNOWN,
    call_name,
    dotted,
    is_backward,
    scope_nodes,
    walk_scope,
)
from .program import Program, SourceIndex
from .valueflow import ValFlow

_SCORE_NAME = re.compile(r"(loss|nll|bpb|bits|score|bytes|tokens?_count|count|sum|total)", re.I)
_METRIC_TEXT = re.compile(r"val_bpb|val_loss|bpb|_exact|nll")
_SCORE_FUNC = re.compile(r"(eval|score|evaluate|measure|bpb)", re.I)
_TRAIN_FUNC = re.compile(r"(train|adapt|ttt|finetune|fine_tune|update|step)", re.I)


@dataclass
class TTTSite:
    kind: str  # score_first | multi_epoch | train_then_score | pre_score | warmup_restored
    idx: SourceIndex
    backward: ast.AST  # the backward call on validation-derived loss
    fn: ast.AST | None
    evidence: list[tuple[SourceIndex, ast.AST, str]] = field(default_factory=list)
    detail: str = ""


def _backward_target(call: ast.Call) -> ast.AST:
    if isinstance(call.func, ast.Attribute) and call_name(call) == "backward":
        return call.func.value
    return call.args[0] if call.args else call


def _is_no_grad_with(node: ast.AST) -> bool:
    if not isinstance(node, (ast.With, ast.AsyncWith)):
        return False
    for item in node.items:
        e = item.context_expr
        if isinstance(e, ast.Call) and call_name(e) in NO_GRAD:
            return True
        if isinstance(e, ast.Attribute) and e.attr in NO_GRAD:
            return True
    return False


def _decorated_no_grad(fn: ast.AST) -> bool:
    for d in getattr(fn, "decorator_list", []):
        target = d.func if isinstance(d, ast.Call) else d
        if (dotted(target) or "").split(".")[-1] in NO_GRAD:
            return True
    return False


def _has_backward(fn: ast.AST) -> bool:
    return any(is_backward(n) for n in scope_nodes(fn, ast.Call))


class TTTAnalysis:
    def __init__(self, program: Program, flow: ValFlow, delta_fits: Iterable[ast.AST] = ()):
        self.p = program
        self.flow = flow
        # backward passes the SLOT analysis found fitting only free tensors (however they are stepped)
        self._delta_fits = {id(b) for b in delta_fits}
        self._scoring_fn_cache: dict[str, bool] = {}
        self._results_cache: dict[ast.AST, set[str]] = {}

    # --- what counts as scoring ------------------------------------------------------------------
    def _result_names(self, fn: ast.AST) -> set[str]:
        """Names that flow into what `fn` returns, or into a logged metric line (`val_loss` / `val_bpb`)."""
        if fn in self._results_cache:
            return self._results_cache[fn]
        names: set[str] = set()
        for n in scope_nodes(fn, ast.Return, ast.Call):
            if isinstance(n, ast.Return) and n.value is not None:
                names |= {x.id for x in walk(n.value) if isinstance(x, ast.Name)}
            if isinstance(n, ast.Call) and call_name(n) in ("log0", "print", "log", "info", "log_fn"):
                text = " ".join(
                    c.value for a in n.args for c in walk(a) if isinstance(c, ast.Constant) and isinstance(c.value, str)
                )
                if _METRIC_TEXT.search(text):
                    for a in n.args:
                        names |= {x.id for x in walk(a) if isinstance(x, ast.Name)}
        for _ in range(4):
            before = len(names)
            for n in scope_nodes(fn, ast.Assign, ast.AugAssign):
                targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                if any(isinstance(t, ast.Name) and t.id in names for t in targets):
                    names |= {x.id for x in walk(n.value) if isinstance(x, ast.Name)}
            if len(names) == before:
                break
        self._results_cache[fn] = names
        return names

    def is_scoring_function(self, name: str) -> bool:
        if name in self._scoring_fn_cache:
            return self._scoring_fn_cache[name]
        self._scoring_fn_cache[name] = False
        result = False
        for _, fn in self.p.functions.get(name, []):
            if _has_backward(fn):
                continue
            if _decorated_no_grad(fn) or any(
                _is_no_grad_with(n) for cls in (ast.With, ast.AsyncWith) for n in scope_nodes(fn, cls)
            ):
                if self._accumulates(fn, fn):
                    result = True
            elif _SCORE_FUNC.search(name) and not _TRAIN_FUNC.search(name):
                result = True
        self._scoring_fn_cache[name] = result
        return result

    def _accumulates(self, region: ast.AST, fn: ast.AST) -> bool:
        results = self._result_names(fn)
        for n in walk(region):
            if isinstance(n, ast.AugAssign) and isinstance(n.target, (ast.Name, ast.Subscript)):
                tname = n.target.id if isinstance(n.target, ast.Name) else dotted(n.target.value) or ""
                if _SCORE_NAME.search(tname) and (tname in results or isinstance(n.target, ast.Subscript)):
                    return True
            if isinstance(n, ast.Call) and call_name(n) in ("append", "extend", "add_"):
                base = n.func.value if isinstance(n.func, ast.Attribute) else None
                bname = dotted(base) if base is not None else ""
                if bname and _SCORE_NAME.search(bname) and bname.split(".")[-1] in results | {bname}:
                    return True
        return False

    def scoring_ops(self, scope: ast.AST, fn: ast.AST) -> list[ast.AST]:
        """Scoring operations directly inside `scope` (not in nested functions)."""
        ops: list[ast.AST] = []
        results = self._result_names(fn)
        for n in walk_scope(scope):
            if _is_no_grad_with(n) and self._accumulates(n, fn):
                ops.append(n)
            elif isinstance(n, ast.Call) and not is_backward(n):
                name = call_name(n)
                if name and self.is_scoring_function(name):
                    ops.append(n)
            elif isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name):
                if n.target.id in results and _SCORE_NAME.search(n.target.id) and _detached(n.value):
                    ops.append(n)
        return ops

    # --- classification --------------------------------------------------------------------------
    def sites(self) -> list[TTTSite]:
        out: list[TTTSite] = []
        for idx in self.p.indexes:
            for call in idx.calls_named(*BACKWARD_NAMES):
                if not is_backward(call):
                    continue
                fn = idx.enclosing(call, *FUNCS)
                scope = fn or idx.tree
                if not self.flow.is_val(scope, _backward_target(call), call.lineno):
                    continue
                if id(call) in self._delta_fits or self._steps_only_delta(scope, call):
                    kind, detail, ev = "delta", "optimises a free tensor (SLOT-style), not the model", []
                else:
                    kind, detail, ev = self._classify(idx, fn, call, depth=0)
                out.append(TTTSite(kind=kind, idx=idx, backward=call, fn=fn, evidence=ev, detail=detail))
        return out

    def _classify(self, idx: SourceIndex, fn, pos: ast.AST, depth: int):
        scope_fn = fn or idx.tree
        loops = [a for a in _ancestors_until(idx, pos, scope_fn) if isinstance(a, LOOPS)]
        pos_line = pos.lineno
        for i, loop in enumerate(loops):
            ops = self.scoring_ops(loop, scope_fn)
            # by position, not line: minified records put the score and the step on one line
            before = [o for o in ops if _end(o) <= _start(pos)]
            after = [o for o in ops if _start(o) >= _end(pos)]
            if before:
                ev = [(idx, before[0], "scored here (before the update)"), (idx, pos, "then trained")]
                if (
                    self._epoch_loop(loop)
                    and self._may_repeat(loop)
                    and not self._first_epoch_only(idx, before[0], loop)
                ):
                    return (
                        "multi_epoch",
                        "scores inside an epoch loop, so later epochs re-score trained tokens",
                        ev + [(idx, loop, "epoch loop")],
                    )
                for outer in loops[i + 1 :]:
                    if self._epoch_loop(outer) and self._may_repeat(outer):
                        return (
                            "multi_epoch",
                            f"score-first chunks inside an outer epoch loop (`{ast.unparse(outer.iter) if isinstance(outer, ast.For) else 'while'}`): tokens are re-scored after training on them",
                            ev + [(idx, outer, "outer epoch loop")],
                        )
                return "score_first", "each chunk is scored before the model is updated on it", ev
            if after and not self._epoch_loop(loop):
                return (
                    "train_then_score",
                    "the loop trains on each chunk/document before scoring it",
                    [
                        (idx, pos, "trained here"),
                        (idx, after[0], "scored afterwards, same iteration"),
                    ],
                )
        # Trained in a loop, then scored later in the same function (`return eval_val(model, val_tokens)`).
        outer = loops[-1] if loops else pos
        later = [
            c
            for c in scope_nodes(scope_fn, ast.Call)
            if c.lineno > getattr(outer, "end_lineno", pos_line)
            and self.is_scoring_function(call_name(c))
            and self.flow.is_val(scope_fn, c, c.lineno)
        ]
        if later and not self._restored_after(idx, pos):
            return (
                "pre_score",
                "trains on validation tokens, then scores them in the same function",
                [
                    (idx, pos, "optimiser step on validation tokens"),
                    (idx, later[0], "the adapted model is scored afterwards"),
                ],
            )
        if self._throwaway_module(scope_fn, pos):
            return (
                "warmup_restored",
                "the optimiser only updates a temporary module that is discarded (compile warm-up)",
                [(idx, pos, "backward through a throw-away module")],
            )
        # Nothing scores around the update in this function: look at who calls it.
        if fn is not None and depth < 3:
            results = []
            for cidx, ref in self.p.refs.get(fn.name, []):
                if any(a is fn for a in cidx.ancestors(ref)):
                    continue
                caller = cidx.enclosing(ref, *FUNCS)
                results.append(self._classify(cidx, caller, ref, depth + 1) + ((cidx, ref),))
            legal = [r for r in results if r[0] == "score_first"]
            bad = [r for r in results if r[0] in ("multi_epoch", "train_then_score")]
            if bad:
                k, d, ev, site = bad[0]
                return k, d, ev
            if legal and len(legal) == len(results):
                k, d, ev, site = legal[0]
                return k, d, ev
            restored = [r for r in results if r[0] == "warmup_restored"]
            if restored and len(restored) == len(results):
                return restored[0][:3]
            if results and all(r[0] == "pre_score" for r in results):
                site = results[0][3]
                if self._restored_after(site[0], site[1]):
                    return (
                        "warmup_restored",
                        "weights are restored after the val warm-up",
                        [(site[0], site[1], "warm-up call; weights restored afterwards")],
                    )
        if self._restored_after(idx, pos):
            return (
                "warmup_restored",
                "weights are restored after training on validation tokens",
                [(idx, pos, "trained on validation tokens; weights restored afterwards")],
            )
        return (
            "pre_score",
            "trains on validation tokens with no scoring before the update",
            [(idx, pos, "optimiser step on validation tokens, nothing scored first")],
        )

    def _epoch_loop(self, loop: ast.AST) -> bool:
        """`for epoch in range(E)` whose variable does not select the data (used only in comparisons/logs)."""
        if not isinstance(loop, ast.For) or not isinstance(loop.iter, ast.Call) or call_name(loop.iter) != "range":
            return False
        var = loop.target.id if isinstance(loop.target, ast.Name) else None
        if var is None:
            return False
        if var == "_" or re.fullmatch(r"_?(ep|epoch|epochs|ttt_epoch|ep_i|e|pass_?i?|rep|repeat|round|r)", var, re.I):
            return True
        for n in walk_scope(loop):
            if isinstance(n, ast.Name) and n.id == var and isinstance(n.ctx, ast.Load):
                parent = self._parent_of(loop, n)
                if not isinstance(parent, (ast.Compare, ast.FormattedValue)) and not (
                    isinstance(parent, ast.Call) and call_name(parent) in ("print", "log0", "log", "info")
                ):
                    return False
        return True

    @staticmethod
    def _parent_of(root: ast.AST, target: ast.AST) -> ast.AST | None:
        for n in walk(root):
            for c in children(n):
                if c is target:
                    return n
        return None

    def _assigned_value(self, scope: ast.AST, name: str, before: int) -> ast.AST | None:
        best = None
        for n in scope_nodes(scope, ast.Assign):
            if n.lineno <= before:
                if any(isinstance(t, ast.Name) and t.id == name for t in n.targets):
                    if best is None or n.lineno > best.lineno:
                        best = n
        return best.value if best is not None else None

    def _expand(self, scope: ast.AST, expr: ast.AST, before: int, depth: int = 0) -> str:
        """Source text of `expr` with local names replaced by what they were assigned (two levels)."""
        text = ast.unparse(expr)
        if depth >= 2:
            return text
        for n in walk(expr):
            if isinstance(n, ast.Name):
                v = self._assigned_value(scope, n.id, before)
                if v is not None:
                    text += " " + self._expand(scope, v, before, depth + 1)
        return text

    def _stepped_optimizer(self, scope: ast.AST, backward: ast.AST) -> ast.Call | None:
        steps = [
            n
            for n in scope_nodes(scope, ast.Call)
            if call_name(n) == "step" and isinstance(n.func, ast.Attribute) and n.lineno >= backward.lineno
        ]
        if not steps:
            return None
        step = min(steps, key=lambda n: n.lineno)
        opt_name = dotted(step.func.value)
        ctor = self._assigned_value(scope, opt_name, step.lineno) if opt_name and "." not in opt_name else None
        return ctor if isinstance(ctor, ast.Call) else None

    def _throwaway_module(self, scope: ast.AST, backward: ast.AST) -> bool:
        """`wl = LoRA(...); wo = AdamW(wl.parameters()); …backward(); wo.step(); del wl, wo`: the updated weights
        are a temporary module deleted afterwards — a compile warm-up, not adaptation."""
        ctor = self._stepped_optimizer(scope, backward)
        if ctor is None or not ctor.args:
            return False
        mods = {
            x.value.id
            for x in walk(ctor.args[0])
            if isinstance(x, ast.Attribute) and x.attr == "parameters" and isinstance(x.value, ast.Name)
        }
        if not mods:
            return False
        for n in scope_nodes(scope, ast.Delete):
            if n.lineno > backward.lineno:
                if mods & {t.id for t in n.targets if isinstance(t, ast.Name)}:
                    return True
        return False

    def _steps_only_delta(self, scope: ast.AST, backward: ast.AST) -> bool:
        """The optimiser stepped after this backward pass holds freshly created tensors (a SLOT delta / logit
        bias), not model parameters."""
        ctor = self._stepped_optimizer(scope, backward)
        if ctor is None:
            return False
        args = ctor.args[:1] + [k.value for k in ctor.keywords if k.arg == "params"]
        if not args:
            return False
        text = " ".join(self._expand(scope, a, ctor.lineno) for a in args)
        if re.search(r"parameters\(|named_parameters|state_dict|param_groups|\bmodel\b|lora|adapter", text, re.I):
            return False
        return bool(re.search(r"requires_grad|zeros\(|zeros_like|empty\(|randn\(|Parameter\(", text))

    def _may_repeat(self, loop: ast.For) -> bool:
        args = loop.iter.args
        if not args:
            return False
        stop = self.p.fold(args[-1] if len(args) == 1 else args[1])
        start = self.p.fold(args[0]) if len(args) > 1 else 0
        if stop is UNKNOWN or start is UNKNOWN:
            return True
        try:
            return stop - start > 1
        except TypeError:
            return True

    def _first_epoch_only(self, idx: SourceIndex, op: ast.AST, loop: ast.For) -> bool:
        var = loop.target.id if isinstance(loop.target, ast.Name) else ""
        for anc in idx.ancestors(op):
            if anc is loop:
                break
            if isinstance(anc, ast.If):
                src = ast.unparse(anc.test)
                if re.fullmatch(rf"{re.escape(var)}\s*==\s*0|not\s+{re.escape(var)}", src):
                    return True
        return False

    def _restored_after(self, idx: SourceIndex, pos: ast.AST) -> bool:
        """Thrown-away warm-up: a copy of the weights saved before `pos`, loaded back after it, and nothing
        scored in between."""
        fn = idx.enclosing(pos, *FUNCS) or idx.tree
        start, end = pos.lineno, getattr(pos, "end_lineno", pos.lineno)
        saved: set[str] = set()
        for n in scope_nodes(fn, ast.Assign):
            if n.lineno < start and _is_weight_copy(n.value):
                saved |= {t.id for t in n.targets if isinstance(t, ast.Name)}
        for n in scope_nodes(fn, ast.Call):
            if not n.lineno > end:
                continue
            restores = call_name(n) == "load_state_dict" and any(
                isinstance(x, ast.Name) and x.id in saved for a in n.args for x in walk(a)
            )
            restores |= (
                call_name(n) == "copy_"
                and _in_loop_over_params(idx, n)
                and any(isinstance(x, ast.Name) and x.id in saved for a in n.args for x in walk(a))
            )
            if restores:
                between = [
                    c
                    for c in scope_nodes(fn, ast.Call)
                    if end < c.lineno < n.lineno and self.is_scoring_function(call_name(c))
                ]
                return not between
        return False


def _start(node: ast.AST) -> tuple[int, int]:
    return node.lineno, node.col_offset


def _end(node: ast.AST) -> tuple[int, int]:
    return node.end_lineno or node.lineno, node.end_col_offset or 0


def _is_weight_copy(value: ast.AST) -> bool:
    text = ast.unparse(value)
    return bool(re.search(r"deepcopy|state_dict\(\)|\.clone\(\)|\.detach\(\)\.cpu\(\)", text))


def _detached(value: ast.AST) -> bool:
    """`loss.item()` / `loss.detach()` / `float(loss)`: a number taken for the score, not the graph."""
    for n in walk(value):
        if isinstance(n, ast.Call) and call_name(n) in ("item", "detach", "float", "double", "sum"):
            return True
    return False


def _ancestors_until(idx: SourceIndex, node: ast.AST, stop: ast.AST):
    for a in idx.ancestors(node):
        if a is stop:
            return
        yield a


def _in_loop_over_params(idx: SourceIndex, node: ast.AST) -> bool:
    loop = idx.enclosing(node, *LOOPS)
    return loop is not None and "param" in ast.unparse(getattr(loop, "iter", loop)).lower()


TTT_LOG = re.compile(r"\b(legal_)?ttt\w*|test[-_ ]time[-_ ]train|prequant_ttt|ttp:|tttg:|ttpp:|ttpr:", re.I)


def ttt_log_evidence(log_events) -> tuple[list, bool]:
    """Log lines showing a TTT stage ran, as evidence locations, and whether logs exist at all.

    Cited next to a TTT finding so a reviewer sees what actually ran; a reachable TTT site with logs that never
    mention TTT gets a lower confidence."""
    from ..findings import Location

    hits = []
    for e in log_events:  # stop at the first two: logs can hold ~100k lines
        low = e[2].lower()
        if (
            ("tt" in low or "test" in low)
            and TTT_LOG.search(e[2])
            and not re.search(r"ttt_\w+\s*[:=]\s*(False|0)\b", e[2])
        ):
            hits.append(e)
            if len(hits) == 2:
                break
    locs = [
        Location(path=p, start_line=n, end_line=n, snippet=t.strip()[:200], note="log shows a TTT stage ran")
        for p, n, t in hits
    ]
    return locs, bool(log_events)
