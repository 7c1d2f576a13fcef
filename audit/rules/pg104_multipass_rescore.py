from __future__ import annotations

import ast
import re

from ..analysis.astutil import FUNCS, LOOPS, VAL_PATH_LIT, call_name, is_val_name, scope_nodes
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
from ..analysis.source import POSITION
from ..analysis.ttt import TTTAnalysis
from ..findings import Confidence, Severity
from ..load.parse import walk
from .base import Invalid, Rule, Valid

_SCORING_KINDS = {"score_first", "multi_epoch", "train_then_score"}  # the TTT pass scored the tokens itself
_DIAGNOSTIC = re.compile(r"diag|debug|sanity", re.I)
_SCORE_NAME = re.compile(r"(loss|nll|bpb|bits|score)", re.I)


class MultipassRescore(Rule):
    """
    ## What it does
    Finds validation tokens scored more than once with the better result kept, judged on the evaluation model
    (`analysis/evaluation.py`: scoring passes, the tables they read, every table update in program order):
    - two-pass / full-table cache rescoring: a reported scoring pass reads a count table or cache that
      validation positions were added to before it started — filled by an earlier pass while it scored, or
      built in one shot (`np.bincount`, `np.add.at`, `index_add_`, a helper incrementing a table passed to it)
      after an earlier pass stored its per-token probabilities — and its scores replace the first pass's or
      are reported (C3 score-before-update, C4 single pass). A table seeded before a score-first pass, where
      the code does not show whether the seed precedes the scored positions, is a warning;
    - a test-time-training pass that scores the tokens (score-first TTT) and then another scoring call on the
      same model object over the validation tokens, whose result is logged as the metric (two-pass rescore);
    - keep-best selection (`if avg < best: best = avg`) inside a loop that re-scores the same tokens each
      time: score-every-epoch keeping the best epoch, min over TTT trajectories, temperature sweeps on val.

    ## Why it breaks the rules
    Each target must be scored once, by a model that has not been trained on it (issue #1017, C3/C4 single
    pass). After TTT the model has trained on every validation token; scoring them again, or picking the
    best of several passes, reports a number no single causal pass achieved (PR #568). Likewise a count
    table that already holds position t when t is scored breaks C3, and a second pass over positions already
    scored breaks C4 (the two-pass n-gram rulings on #779 / #982).

    ## Example
    ```python
    ttt_loss, ttt_bpb = eval_val_sliding_ttt(args, model, val_tokens)  # score-first TTT
    model.temp.fill_(0.98)
    loss, bpb = eval_val_sliding(args, model, val_tokens)             # second pass on the trained model
    log0(f"final_exact val_bpb:{bpb:.8f}")
    ```
    ```python
    first = score_chunks(model, val_tokens, cache, chunks, update=True)    # pass 1 fills the cache
    again = score_chunks(model, val_tokens, cache, chunks[:K], update=False)  # pass 2: cold chunks again
    for i in range(K):
        total = total - first[i] + again[i]                                 # pass 2 replaces pass 1
    ```

    ## Compliant alternative
    Report the score-first TTT pass itself; choose temperatures and epochs on training data; one sliding
    window pass with stride < window scores each target once and is fine; a cache is scored chunk by chunk and
    only then updated with that chunk, in one pass, and never re-read to rescore earlier chunks.

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
        "https://github.com/openai/parameter-golf/pull/568 (multi-epoch TTT); "
        "https://github.com/openai/parameter-golf/pull/779, https://github.com/openai/parameter-golf/pull/982 "
        "(n-gram caches)"
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
        Valid(
            """
            import numpy as np
            import torch
            class Counts:
                def __init__(self, n):
                    self.ctx = np.zeros(n)
                    self.full = np.zeros(n)
                def add(self, toks, a, b):
                    keys = (toks[a - 1:b - 1] * 31) % len(self.ctx)
                    self.ctx += np.bincount(keys, minlength=len(self.ctx))
                    self.full += np.bincount((keys * 7 + toks[a:b]) % len(self.ctx), minlength=len(self.ctx))
                def prob(self, toks, a, b):
                    keys = (toks[a - 1:b - 1] * 31) % len(self.ctx)
                    return self.full[(keys * 7 + toks[a:b]) % len(self.ctx)] / np.maximum(self.ctx[keys], 1)
            def score_chunks(model, toks, cache, chunks):
                total = 0.0
                with torch.no_grad():
                    for a, b in chunks:
                        p = 0.5 * model(toks, a, b) + 0.5 * cache.prob(toks, a, b)
                        total += float(-np.log(p).sum())
                        cache.add(toks, a, b)
                return total
            def main(model):
                val_tokens = load_validation_tokens("fineweb_val_*.bin")
                chunks = [(i, i + 64) for i in range(1, len(val_tokens) - 64, 64)]
                cache = Counts(1 << 16)
                print(f"final_ngram_exact val_bpb:{score_chunks(model, val_tokens, cache, chunks)}")
            main(None)
            """,
            note="single-pass score-first cache: each chunk is scored, then added",
        ),
        Valid(
            """
            import numpy as np
            import torch
            def add_counts(table, toks, a, b):
                np.add.at(table, (toks[a - 1:b - 1] * 31 + toks[a:b]) % len(table), 1)
            def score(model, toks, table, chunks):
                total = 0.0
                with torch.no_grad():
                    for a, b in chunks:
                        p = 0.9 * model(toks, a, b) + 0.1 * table[(toks[a - 1:b - 1] * 31) % len(table)]
                        total += float(-np.log(p).sum())
                return total
            def main(model):
                val_tokens = load_validation_tokens("fineweb_val_*.bin")
                chunks = [(i, i + 64) for i in range(1, len(val_tokens) - 64, 64)]
                table = np.zeros(1 << 16)
                add_counts(table, val_tokens, 1, 4096)
                warm = score(model, val_tokens, table, chunks[:4])
                table = np.zeros(1 << 16)
                print(f"final_exact val_bpb:{score(model, val_tokens, table, chunks)}")
            main(None)
            """,
            note="a warm-up table thrown away (rebound to a fresh one) before the reported pass",
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
        Invalid(
            """
            import numpy as np
            import torch
            class Counts:
                def __init__(self, n):
                    self.ctx = np.zeros(n)
                    self.full = np.zeros(n)
                def add(self, toks, a, b):
                    keys = (toks[a - 1:b - 1] * 31) % len(self.ctx)
                    self.ctx += np.bincount(keys, minlength=len(self.ctx))
                    self.full += np.bincount((keys * 7 + toks[a:b]) % len(self.ctx), minlength=len(self.ctx))
                def prob(self, toks, a, b):
                    keys = (toks[a - 1:b - 1] * 31) % len(self.ctx)
                    return self.full[(keys * 7 + toks[a:b]) % len(self.ctx)] / np.maximum(self.ctx[keys], 1)
            def score_chunks(model, toks, cache, chunks, update):
                out = []
                with torch.no_grad():
                    for a, b in chunks:
                        p = 0.5 * model(toks, a, b) + 0.5 * cache.prob(toks, a, b)
                        out.append(float(-np.log(p).sum()))
                        if update:
                            cache.add(toks, a, b)
                return out
            def main(model):
                val_tokens = load_validation_tokens("fineweb_val_*.bin")
                chunks = [(i, i + 64) for i in range(1, len(val_tokens) - 64, 64)]
                cache = Counts(1 << 16)
                first = score_chunks(model, val_tokens, cache, chunks, True)
                total = sum(first)
                again = score_chunks(model, val_tokens, cache, chunks[:8], False)
                for i in range(8):
                    total = total - first[i] + again[i]
                print(f"final_ngram_exact val_bpb:{total}")
            main(None)
            """,
            note="two-pass: pass 1 fills the cache while scoring, pass 2 rescores the cold chunks and replaces them",
            line=30,
            message="fills `cache` while scoring",
        ),
        Invalid(
            """
            import numpy as np
            import torch
            def store_probs(model, toks):
                probs = []
                with torch.no_grad():
                    for a in range(1, len(toks) - 64, 64):
                        probs.append(torch.softmax(model(toks[a - 1:a + 63]), -1).numpy())
                return np.concatenate(probs)
            def count_into(table, toks):
                np.add.at(table, (toks[:-1] * 31 + toks[1:]) % len(table), 1)
            def rescore(toks, table, model_p):
                q = table[(toks[:-1] * 31 + toks[1:]) % len(table)] / max(table.sum(), 1)
                return float(-np.log(0.8 * model_p + 0.2 * q).mean())
            def main(model):
                val_tokens = load_validation_tokens("fineweb_val_*.bin")
                model_p = store_probs(model, val_tokens)
                table = np.zeros(1 << 20)
                count_into(table, val_tokens)
                bpb = rescore(val_tokens, table, model_p)
                print(f"final_exact val_bpb:{bpb}")
            main(None)
            """,
            note="pass 1 stores per-token probabilities, the table is built from all of val, pass 2 rescores",
            line=20,
            message="adds every validation position to `table`",
        ),
    ]

    def check(self):
        flagged = set()
        for f in [*self._table_rescore(), *self._best_of_passes()]:
            flagged.add((f.location.path, f.location.start_line))
            yield f
        for f in self._ttt_and_keep_best():
            if (f.location.path, f.location.start_line) not in flagged:  # one finding per rescoring call
                yield f

    def _ttt_and_keep_best(self):
        """The shapes on model weights and repeated scoring: rescoring after TTT (shape 1), keep-best (shape 2)."""
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

    # --- shape 0: a pass scored against a table that already holds its positions ----------------
    def _table_rescore(self):
        """On the evaluation model: a reported scoring pass reads a count table or cache that validation
        positions were added to before the pass started — filled by an earlier pass while it scored (two-pass
        rescoring), or built in one shot after an earlier pass stored its per-token probabilities."""
        ev = self.analyses.evaluation
        for ps in ev.passes:
            if ps.reported is None:
                continue
            earlier = [q for q in ev.earlier_passes(ps) if not _sliced(q.val_args, ps.val_args)]
            # updates from other slices of the data (`cache.add(val[:h])`, then score `val[h:]`) hold earlier
            # positions only: the single-pass order, kept
            stale = [
                u
                for u in ev.stale_updates(ps)
                if (u.by_pass is None or u.by_pass in earlier) and not _sliced(u.val_args, ps.val_args)
            ]
            if not stale:
                continue
            fills = [u for u in stale if u.by_pass is not None and u.by_pass in earlier]
            builds = [u for u in stale if u.by_pass is None]
            if fills:
                first, update = fills[0].by_pass, fills[0]
                if update.state in ps.updates and not first.val_args & ps.val_args:
                    # both passes add as they score and nothing shows they cover the same positions: a
                    # single pass split in two (`for t in range(0, h)`, then `range(h, n)`) reads the same way
                    yield self._preseeded(ps, update)
                    continue
                how = f"{first.label} fills `{update.state}` while scoring the validation tokens"
            elif earlier and builds:
                first, update = earlier[0], builds[-1]
                stored = "stores per-token probabilities" if first.per_token else "scores the validation tokens"
                how = (
                    f"{first.label} {stored}, then `{_update_text(update)}` adds every validation position to "
                    f"`{update.state}` in one shot"
                )
            else:
                first, update = None, (builds or stale)[-1]
                if update.state in ps.updates:
                    yield self._preseeded(ps, update)
                    continue
                how = f"`{_update_text(update)}` adds the validation positions to `{update.state}` first"
            # pass 2 is handed pass 1's per-token output (stored probabilities) as an argument
            consumes = first is not None and ps.kind == "call" and bool(first.derived & _names(ps.node))
            replaces = first is not None and bool(first.derived & ps.derived)
            conditions = "C3 score-before-update" + (", C4 single pass" if first is not None else "")
            if consumes:
                outcome = ", mixing in the first pass's stored probabilities, and that is the number reported"
            elif replaces:
                outcome = ", and its scores replace the first pass's"
            else:
                outcome = ", and that is the number reported"
            log_node, text = ps.reported
            diagnostic = bool(_DIAGNOSTIC.search(text))
            evidence = []
            if first is not None:
                evidence.append(self.location(first.idx, first.node, "first pass over the validation tokens"))
            pidx, prim = update.primitive
            evidence.append(self.location(update.idx, update.node, f"`{update.state}` absorbs validation positions"))
            if prim is not update.node:
                evidence.append(self.location(pidx, prim, f"the table update ({update.kind.replace('_', ' ')})"))
            evidence.append(self.location(ps.idx, ps.node, f"scored again against the finished `{update.state}`"))
            evidence.append(self.location(ps.idx, log_node, "what gets reported"))
            yield self.finding(
                ps.idx,
                ps.node,
                f"{'Two-pass' if first is not None else 'Full-table'} rescoring ({conditions}): {how}; "
                f"{ps.label} then scores those positions against `{update.state}`, which already holds them"
                f"{outcome}" + (" (logged as a diagnostic)" if diagnostic else ""),
                evidence=evidence,
                severity=Severity.WARNING if diagnostic else None,
                confidence=Confidence.MEDIUM if diagnostic else Confidence.HIGH,
            )

    # --- the better of separate passes over the same positions ---------------------------------
    def _best_of_passes(self):
        """On the evaluation model: the reported number is `min`/`max` over the results of two or more passes
        scoring the same validation positions (C4: each position scored once, and that score reported)."""
        ev = self.analyses.evaluation
        for scope in ev.reporting_functions:
            passes = ev.passes_in(scope)
            if len(passes) < 2:
                continue
            idx = passes[0].idx
            for call in scope_nodes(scope, ast.Call):
                if not (
                    isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in ("min", "max")
                ):
                    continue
                args = list(call.args)
                if len(args) == 1 and isinstance(args[0], (ast.List, ast.Tuple, ast.Set)):
                    args = list(args[0].elts)
                picked: list = []
                for a in args:
                    names = _names(a)
                    q = next(
                        (
                            p
                            for p in passes
                            if p.node.lineno <= call.lineno
                            and p not in picked
                            and (names & p.results or any(x is p.node for x in walk(a)))
                        ),
                        None,
                    )
                    if q is not None:
                        picked.append(q)
                if len(picked) < 2 or any(
                    _sliced(a.val_args, b.val_args) or exclusive(idx, a.node, b.node)
                    for i, a in enumerate(picked)
                    for b in picked[i + 1 :]
                ):
                    continue
                report = ev.where_reported(idx, scope, call)
                if report is None:
                    continue
                log_node, text = report
                diagnostic = bool(_DIAGNOSTIC.search(text))
                labels = ", ".join(p.label for p in picked)
                yield self.finding(
                    idx,
                    call,
                    f"Best of several passes (C4 single pass): `{call.func.id}()` keeps the better of {labels}, "
                    "which score the same validation tokens" + (" (logged as a diagnostic)" if diagnostic else ""),
                    evidence=[
                        *(self.location(p.idx, p.node, "a pass over the validation tokens") for p in picked),
                        self.location(idx, call, "the better pass is kept"),
                        self.location(idx, log_node, "what gets reported"),
                    ],
                    severity=Severity.WARNING if diagnostic else None,
                    confidence=Confidence.MEDIUM if diagnostic else Confidence.HIGH,
                )

    def _preseeded(self, ps, update):
        """A score-first pass (it adds each chunk after scoring it) over a table seeded beforehand: legal when
        the seed holds only positions before the first one the pass scores (another rank's share, a previous
        segment), a C3 break when it holds any it scores. Which positions the seed covers is not decided here."""
        return self.finding(
            ps.idx,
            ps.node,
            f"Pre-filled cache (C3 undecided): `{_update_text(update)}` adds validation positions to "
            f"`{update.state}` before {ps.label}, which then scores and adds its own chunks; if the pre-filled "
            "positions include any the pass scores, those are scored against a table that already holds them",
            evidence=[
                self.location(update.idx, update.node, f"`{update.state}` seeded with validation positions"),
                self.location(ps.idx, ps.node, f"score-first pass over `{update.state}`"),
            ],
            severity=Severity.WARNING,
            confidence=Confidence.LOW,
        )

    # --- shape 1: score-first TTT pass, then the same model scored again -------------------------
    def _rescore_after_ttt(self, idx: SourceIndex, scope: ast.AST, ttt: TTTAnalysis, trainers: set[str]):
        scoped = scope_nodes(scope, ast.Call)
        named = sorted((c for c in scoped if call_name(c) in trainers), key=POSITION)  # as sorting them all
        ttt_calls = [c for c in named if self._has_val_arg(scope, c)]
        calls = sorted(scoped, key=POSITION) if ttt_calls else []
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
            for n in scope_nodes(scope, ast.If)
            if isinstance(n.test, ast.Compare)
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
                best_names = {n.id for n in walk(best) if isinstance(n, ast.Name)} & assigned
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
        for n in scope_nodes(scope, ast.Assign, ast.AugAssign):
            if (
                isinstance(n, ast.Assign)
                and isinstance(n.value, ast.Call)
                and ttt.is_scoring_function(call_name(n.value))
            ):
                if self._has_val_arg(scope, n.value):
                    out |= {x.id for t in n.targets for x in walk(t) if isinstance(x, ast.Name)}
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
            backs = [c for c in walk(anc) if isinstance(c, ast.Call) and call_name(c) == "backward"]
            if any(id(b) not in val_backwards for b in backs):
                continue  # a training loop (checkpoint selection), not a re-scoring pass
            return anc
        return None


# --- helpers -------------------------------------------------------------------------------------


def _sliced(a: frozenset[str], b: frozenset[str]) -> bool:
    """Two uses take different slices of the validation data (`val[:h]`, then `val[h:]`): each covers its own
    positions, so a table filled by the first holds only positions the second does not score."""
    return bool(a and b) and any("[" in t for t in a | b) and not (a & b)


def _names(node: ast.AST) -> set[str]:
    return {x.id for x in walk(node) if isinstance(x, ast.Name)}


def _update_text(u) -> str:
    return ast.unparse(u.node).split("\n")[0][:60]
