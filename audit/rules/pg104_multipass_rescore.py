from __future__ import annotations

import ast
import re

from ..analysis.astutil import FUNCS, LOOPS, VAL_PATH_LIT, call_name, is_val_name, walk_scope
from ..analysis.program import SourceIndex
from ..analysis.rescoring import (
    base,
    exclusive,
    loop_head,
    model_params,
    rebound_between,
    repeats,
    reported,
    scores_inside,
    under_no_grad,
    used_outside,
    val_training_functions,
)
from ..analysis.ttt import TTTAnalysis
from ..findings import Confidence, Severity
from .base import Invalid, Rule, Valid

_SCORING_KINDS = {"score_first", "multi_epoch", "train_then_score"}  # the TTT pass scored the tokens itself
_DIAGNOSTIC = re.compile(r"diag|debug|sanity", re.I)
_SCORE_NAME = re.compile(r"(loss|nll|bpb|bits|score)", re.I)


class MultipassRescore(Rule):
    """
    ## What it does
    Finds validation tokens scored more than once with the better result kept:
    - a test-time-training pass that scores the tokens (score-first TTT) and then another scoring call on the
      same model object over the validation tokens, whose result is logged as the metric (two-pass rescore);
    - keep-best selection (`if avg < best: best = avg`) inside a loop that re-scores the same tokens each
      time: score-every-epoch keeping the best epoch, min over TTT trajectories, temperature sweeps on val.

    ## Why it breaks the rules
    Each target must be scored once, by a model that has not been trained on it (issue #1017, C3/C4 single
    pass). After TTT the model has trained on every validation token; scoring them again, or picking the
    best of several passes, reports a number no single causal pass achieved (PR #568).

    ## Example
    ```python
    ttt_loss, ttt_bpb = eval_val_sliding_ttt(args, model, val_tokens)  # score-first TTT
    model.temp.fill_(0.98)
    loss, bpb = eval_val_sliding(args, model, val_tokens)             # second pass on the trained model
    log0(f"final_exact val_bpb:{bpb:.8f}")
    ```

    ## Compliant alternative
    Report the score-first TTT pass itself; choose temperatures and epochs on training data; one sliding
    window pass with stride < window scores each target once and is fine.

    ## Known false positives
    A second scoring call logged only as a diagnostic is reported as a warning. Checkpoint selection on
    validation loss inside the training loop (which also trains on training data) is not matched.
    """

    CODE = "PG104"
    NAME = "multipass-rescore"
    CATEGORY = "multipass_rescore"
    SEVERITY = Severity.ERROR
    RULING = (
        "https://github.com/openai/parameter-golf/issues/1017 (C3 score-before-update, C4 single pass); "
        "https://github.com/openai/parameter-golf/pull/568 (multi-epoch TTT)"
    )
    SUMMARY = "validation tokens scored more than once, the better pass kept"
    FIX_HINT = "Report the single score-first pass; select epochs/temperatures on training data."

    VALID = [
        Valid(
            """
            import torch
            def eval_val(model, val_tokens):
                total_loss = 0.0
                with torch.no_grad():
                    total_loss += model(val_tokens).sum().item()
                return total_loss
            def eval_val_ttt(model, opt, val_tokens, chunk):
                loss_sum = 0.0
                n = len(val_tokens) // chunk
                for i in range(n):
                    x = val_tokens[i * chunk:(i + 1) * chunk]
                    with torch.no_grad():
                        loss_sum += model(x).sum().item()
                    if i < n - 1:
                        model(x).mean().backward()
                        opt.step()
                return loss_sum
            def main(model, opt, val_tokens):
                print(f"pre_ttt val_bpb:{eval_val(model, val_tokens)}")
                print(f"legal_ttt_exact val_bpb:{eval_val_ttt(model, opt, val_tokens, 64)}")
            main(None, None, None)
            """,
            note="diagnostic eval before the score-first TTT pass, TTT reported",
        ),
        Valid(
            """
            import torch
            def eval_val(model, val_tokens):
                total_loss = 0.0
                with torch.no_grad():
                    total_loss += model(val_tokens).sum().item()
                return total_loss
            def main(model, opt, loader, val_tokens):
                best = float("inf")
                for step in range(1000):
                    x, y = loader.next_batch()
                    model(x, y).backward()
                    opt.step()
                    if step % 100 == 0:
                        val_loss = eval_val(model, val_tokens)
                        if val_loss < best:
                            best = val_loss
                print(f"final val_loss:{eval_val(model, val_tokens)}")
            main(None, None, None, None)
            """,
            note="periodic validation inside the training loop is not a re-scoring pass",
        ),
        Valid(
            """
            import torch
            def eval_val(model, val_tokens, temperature):
                total_loss = 0.0
                with torch.no_grad():
                    total_loss += (model(val_tokens) / temperature).sum().item()
                return total_loss
            def find_temperature(model, val_tokens):
                best, best_t = float("inf"), 1.0
                for t in (0.9, 1.0, 1.1):
                    loss = eval_val(model, val_tokens, t)
                    if loss < best:
                        best, best_t = loss, t
                return best_t
            def main(model, train_loader):
                calib = train_loader.take(65536)
                t = find_temperature(model, calib)
                val_tokens = load_validation_tokens("fineweb_val_*.bin")
                print(f"final val_bpb:{eval_val(model, val_tokens, t)}")
            main(None, None)
            """,
            note="temperature chosen on training tokens (the parameter is misnamed val_tokens)",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch
            def eval_val_sliding(model, val_tokens):
                loss_sum = 0.0
                with torch.no_grad():
                    loss_sum += model(val_tokens).sum().item()
                return loss_sum
            def eval_val_sliding_ttt(model, val_tokens, chunk, lr):
                opt = torch.optim.SGD(model.parameters(), lr=lr)
                loss_sum = 0.0
                n = len(val_tokens) // chunk
                for i in range(n):
                    x = val_tokens[i * chunk:(i + 1) * chunk]
                    with torch.no_grad():
                        loss_sum += model(x).sum().item()
                    model(x).mean().backward()
                    opt.step()
                return loss_sum
            def main(eval_model):
                val_tokens = load_validation_tokens("fineweb_val_*.bin")
                ttt_bpb = eval_val_sliding_ttt(eval_model, val_tokens, 64, 1e-4)
                print(f"final_ttt val_bpb:{ttt_bpb}")
                eval_model.temp.fill_(0.98)
                bpb = eval_val_sliding(eval_model, val_tokens)
                print(f"final_ttt_T0.98_exact val_bpb:{bpb}")
            main(None)
            """,
            note="two-pass rescore of the TTT-trained model",
            line=24,
            message="`eval_val_sliding()` scores the same tokens again",
        ),
        Invalid(
            """
            import torch
            def eval_val_ttt(model, opt, val_tokens, chunk, epochs):
                loss_sum = 0.0
                best = [float("inf")] * 4
                best_loss = [0.0] * 4
                for d in range(4):
                    doc_loss = [0.0] * 4
                    for epoch in range(epochs):
                        doc_loss[d] = 0.0
                        for i in range(0, len(val_tokens), chunk):
                            x = val_tokens[i:i + chunk]
                            with torch.no_grad():
                                doc_loss[d] += model(x).sum().item()
                            model(x).mean().backward()
                            opt.step()
                        if doc_loss[d] < best[d]:
                            best[d] = doc_loss[d]
                            best_loss[d] = doc_loss[d]
                    loss_sum += best_loss[d]
                return loss_sum
            print(f"val_bpb:{eval_val_ttt(None, None, load_validation_tokens('fineweb_val_*.bin'), 64, 3)}")
            """,
            note="score every epoch and keep the best epoch",
            line=17,
            message="`doc_loss[d] < best[d]` keeps the better",
        ),
        Invalid(
            """
            import torch
            def eval_val(model, val_tokens, temperature):
                total_loss = 0.0
                with torch.no_grad():
                    total_loss += (model(val_tokens) / temperature).sum().item()
                return total_loss
            def main(model):
                val_tokens = load_validation_tokens("fineweb_val_*.bin")
                best_bpb = float("inf")
                for t in (0.9, 0.95, 1.0):
                    bpb = eval_val(model, val_tokens, t)
                    if bpb < best_bpb:
                        best_bpb = bpb
                print(f"final_exact val_bpb:{best_bpb}")
            main(None)
            """,
            note="temperature sweep on validation keeping the best",
            line=13,
            message="`bpb < best_bpb` keeps the better",
        ),
    ]

    def check(self):
        p = self.program
        ttt = self.analyses.ttt
        sites = self.analyses.ttt_sites
        trainers = val_training_functions(
            p, [s.fn.name for s in sites if s.kind in _SCORING_KINDS and s.fn is not None]
        )
        val_backwards = {id(s.backward) for s in sites}
        slot = self.analyses.slot
        for idx in p.indexes:
            scopes = [idx.tree] + list(idx.nodes(*FUNCS))
            for scope in scopes:
                if trainers:
                    yield from self._rescore_after_ttt(idx, scope, ttt, trainers)
                yield from self._keep_best(idx, scope, ttt, val_backwards, slot)

    # --- shape 1: score-first TTT pass, then the same model scored again -------------------------
    def _rescore_after_ttt(self, idx: SourceIndex, scope: ast.AST, ttt: TTTAnalysis, trainers: set[str]):
        calls = sorted(
            (n for n in walk_scope(scope) if isinstance(n, ast.Call)), key=lambda c: (c.lineno, c.col_offset)
        )
        ttt_calls = [c for c in calls if call_name(c) in trainers and self._has_val_arg(scope, c)]
        for t in ttt_calls:
            models = self._model_args(t)
            if not models:
                continue
            for s in calls:
                name = call_name(s)
                if s.lineno <= (t.end_lineno or t.lineno) or name in trainers or not ttt.is_scoring_function(name):
                    continue
                shared = models & self._arg_names(s)
                if not shared or not self._has_val_arg(scope, s) or exclusive(idx, t, s):
                    continue
                model = sorted(shared)[0]
                if rebound_between(scope, model, t, s):
                    continue
                report = reported(scope, idx, s)
                if report is None:
                    continue
                log_node, text = report
                diagnostic = bool(_DIAGNOSTIC.search(text))
                yield self.finding(
                    idx,
                    s,
                    f"Two-pass rescore: `{call_name(t)}()` trains `{model}` on the validation tokens while scoring "
                    f"them, then `{name}()` scores the same tokens again with the trained model"
                    + (" (logged as a diagnostic)" if diagnostic else ""),
                    evidence=[
                        self.location(idx, t, "first pass: test-time training scores and trains on val"),
                        self.location(idx, s, f"second pass over val on the same `{model}`, no reload in between"),
                        self.location(idx, log_node, "the second pass is what gets reported"),
                    ],
                    severity=Severity.WARNING if diagnostic else Severity.ERROR,
                    confidence=Confidence.MEDIUM if diagnostic else Confidence.HIGH,
                )
                break  # one finding per TTT pass

    def _has_val_arg(self, scope: ast.AST, call: ast.Call) -> bool:
        args = list(call.args) + [k.value for k in call.keywords]
        return any(self._val_data(scope, a, call.lineno) for a in args)

    def _val_data(self, scope: ast.AST, expr: ast.AST, line: int) -> bool:
        """Validation data, where a parameter only counts when a live call site passes validation data:
        `find_best_temperature(model, val_tokens=calib_tokens_from_train)` sweeps on training data."""
        flow = self.analyses.valflow
        if not flow.is_val(scope, expr, line):
            return False
        if not isinstance(scope, FUNCS):
            return True
        a = scope.args
        params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
        passed = flow.param_val.get(scope, set())
        misnamed = {n for n in params if is_val_name(n) and n not in passed}
        if not misnamed:
            return True
        slot = self.analyses.slot
        chain = slot.chain(self._index_of(scope), scope.body[0])
        for _, n in chain.closure(expr):
            if isinstance(n, ast.Name) and (n.id in passed or (is_val_name(n.id) and n.id not in misnamed)):
                return True
            if isinstance(n, ast.Attribute) and is_val_name(n.attr):
                return True
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and VAL_PATH_LIT.search(n.value):
                return True
        return False

    def _index_of(self, node: ast.AST) -> SourceIndex:
        for idx in self.program.indexes:
            if node in idx.parents or node is idx.tree:
                return idx
        return self.program.indexes[0]

    @staticmethod
    def _arg_names(call: ast.Call) -> set[str]:
        return {a.id for a in list(call.args) + [k.value for k in call.keywords] if isinstance(a, ast.Name)}

    def _model_args(self, call: ast.Call) -> set[str]:
        """Arguments of `call` that the callee uses as a model (calls it, steps its parameters, evals it)."""
        out: set[str] = set()
        for _, fn in self.program.functions.get(call_name(call), []):
            params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
            if params and params[0] in ("self", "cls") and isinstance(call.func, ast.Attribute):
                params = params[1:]
            bound: dict[str, ast.AST] = {}
            for i, a in enumerate(call.args):
                if i < len(params):
                    bound[params[i]] = a
            for k in call.keywords:
                if k.arg:
                    bound[k.arg] = k.value
            used = model_params(fn)
            out |= {a.id for pname, a in bound.items() if pname in used and isinstance(a, ast.Name)}
        return out

    # --- shape 2: keep the best of repeated scorings ---------------------------------------------
    def _keep_best(self, idx: SourceIndex, scope: ast.AST, ttt: TTTAnalysis, val_backwards: set[int], slot):
        ifs = [
            n
            for n in walk_scope(scope)
            if isinstance(n, ast.If)
            and isinstance(n.test, ast.Compare)
            and len(n.test.ops) == 1
            and isinstance(n.test.ops[0], (ast.Lt, ast.LtE, ast.Gt, ast.GtE))
            and any(isinstance(st, ast.Assign) for st in n.body)
            and idx.enclosing(n, *LOOPS) is not None
        ]
        if not ifs:
            return
        sources = self._score_sources(scope, ttt)
        if not sources:
            return
        chain = slot.chain(idx, scope.body[0]) if isinstance(scope, FUNCS) and scope.body else slot.chain(idx, idx.tree)
        for node in ifs:
            left, right = node.test.left, node.test.comparators[0]
            assigned = {base(t) for st in node.body if isinstance(st, ast.Assign) for t in st.targets} - {None}
            for cand, best in ((left, right), (right, left)):
                best_names = {n.id for n in ast.walk(best) if isinstance(n, ast.Name)} & assigned
                if not best_names or not (chain.names(cand) & sources):
                    continue
                loop = self._repeat_loop(idx, node, scope, sources, val_backwards)
                if loop is None:
                    continue
                if not used_outside(scope, node, assigned):
                    continue
                yield self.finding(
                    idx,
                    node,
                    f"Keep-best over repeated scoring: `{ast.unparse(node.test)[:70]}` keeps the better of several "
                    f"passes over the same validation tokens (loop `{loop_head(loop)}`)",
                    evidence=[
                        self.location(idx, loop, "each iteration scores the same tokens again"),
                        self.location(idx, node, "the better pass is kept"),
                    ],
                    confidence=Confidence.HIGH,
                )
                break

    def _score_sources(self, scope: ast.AST, ttt: TTTAnalysis) -> set[str]:
        """Names holding a score: results of scoring calls on val, and no-grad loss accumulators."""
        out: set[str] = set()
        for n in walk_scope(scope):
            if (
                isinstance(n, ast.Assign)
                and isinstance(n.value, ast.Call)
                and ttt.is_scoring_function(call_name(n.value))
            ):
                if self._has_val_arg(scope, n.value):
                    out |= {x.id for t in n.targets for x in ast.walk(t) if isinstance(x, ast.Name)}
            elif isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Add):
                name = base(n.target)
                if (
                    name
                    and _SCORE_NAME.search(name)
                    and under_no_grad(scope, n)
                    and self._val_data(scope, n.value, n.lineno)
                ):
                    out.add(name)
        return out

    def _repeat_loop(self, idx: SourceIndex, node: ast.AST, scope: ast.AST, sources: set[str], val_backwards: set[int]):
        """The loop around `node` that scores the same tokens on every iteration (epochs, trajectories,
        a constant sweep) and trains on nothing but validation tokens."""
        for anc in idx.ancestors(node):
            if anc is scope:
                return None
            if not isinstance(anc, (ast.For, ast.AsyncFor)):
                continue
            if not scores_inside(anc, sources) or not repeats(anc):
                continue
            backs = [c for c in ast.walk(anc) if isinstance(c, ast.Call) and call_name(c) == "backward"]
            if any(id(b) not in val_backwards for b in backs):
                continue  # a training loop (checkpoint selection), not a re-scoring pass
            return anc
        return None


# --- helpers -------------------------------------------------------------------------------------
