from __future__ import annotations

from ..analysis.ngram import NGRAM_LOG, refine_reachability
from ..findings import Confidence, Severity
from .base import Invalid, Rule, Valid

RULING = (
    "https://github.com/openai/parameter-golf/issues/1017 (C1 causality, C2 normalisation); "
    "maintainer rulings on PR #779 and #982 (hashed n-gram caches keyed on the target)"
)


_GATE_WHAT = {"realised_gate": "Hint", "target_lookup_gate": "Tilt/mixture", "presence_gate": "Mixture"}


class NgramTargetKey(Rule):
    """
    ## What it does
    Finds reads of a hashed n-gram count table (a table the code increments: `np.add.at(T, k, 1)`,
    `T[k] += 1`, `d[k] = d.get(k, 0) + 1`) at a key that contains the token being predicted, e.g.
    `full_key = ctx_hash ^ (tokens[pos] * prime)` read as `full_table[full_key]` and blended into that
    position's probability. The target is recognised by name (`tgt`, `target`, `y_batch[i, t]`) or by shape
    (`tokens[P]` hashed together with `tokens[P - k]` while a sibling read uses the context alone), through
    helper functions and tuple returns; aligned slices count like positions (`tok[a:b]` next to
    `tok[a-k:b-k]`), and tables filled by a helper that increments its argument (`table += np.bincount(k)`)
    are count tables too.

    It also finds **gates on the token being predicted** (C1, no hash needed): a sequential hint builder that
    writes its output for position `i` only when the token *at* `i` passes a test (`starts_new_word[tok]`) and
    adds that token to its state only afterwards, so whether the forecast exists depends on what it forecasts;
    a tilt or mixture applied `where(LUT[y], tilted, nll)` with `y` the scored targets (found by use: the
    gather index of the softmax, the target of `cross_entropy`); a mixture applied only where the realised
    token's own count passes a test (`if count(ctx, y) > 0: p = mix(…)`); and a mixing weight chosen from, or
    computed from, the realised symbol's own probability (`if nn_nll < thr: lam = 1.0`,
    `alpha = a * min(2, nll / t)`).

    ## Why it breaks the rules
    Looking up `count(context, target)` for the realised target only, through hashed buckets, scores the answer
    with a number that is not a probability distribution over the vocabulary: collisions make the implied
    distribution sum to more than one, and the lookup uses the token being scored (issue #1017 C1/C2; ruled out
    on PRs #779 and #982).

    ## Example
    ```python
    ctx_key = (ctx_hash & mask)
    full_key = ((ctx_hash ^ (tgt * prime)) & mask)
    p_ng = min(full_table[full_key], ctx_table[ctx_key]) / ctx_table[ctx_key]
    p = (1 - alpha) * p_model + alpha * p_ng
    ```

    ## Compliant alternative
    Key the cache on already-scored context only and produce a full distribution (or a hint whose tilt is
    renormalised with the model's own probability of the hint, `Z = 1 + p_hint (e^β − 1)`). Updating the
    table at `(context, target)` *after* the position is scored is the legal score-first update. Decide
    whether a hint applies from the context (the previous token ended a word), never from the token scored.

    ## Known false positives
    BigramHash-style model embeddings hash previous input tokens into an `nn.Embedding`; they have no count
    table and are not reported. A mechanism whose hashing lives in C++ (ctypes) is invisible to this rule.
    A cache that is off under the effective configuration (code default, README run command, logged
    hyperparameters, `world_size = 8`) is reported as `info`.
    """

    CODE = "PG110"
    NAME = "ngram-target-key"
    CATEGORY = "ngram_target_key"
    SEVERITY = Severity.ERROR
    RULING = RULING
    SUMMARY = "hashed n-gram cache read at a key that contains the token being predicted"
    FIX_HINT = (
        "Hash only already-scored context tokens into the lookup key; update (context, target) counts after scoring."
    )

    VALID = [
        Valid(
            """
            import numpy as np
            def eval_cache(val_np, positions, mask):
                ctx_table = np.zeros(1 << 20, dtype=np.uint32)
                full_table = np.zeros(1 << 20, dtype=np.uint32)
                total = 0.0
                for pos in positions:
                    ctx_key = (int(val_np[pos - 1]) * 36313) & mask
                    hint_count = ctx_table[ctx_key]
                    total += float(hint_count)
                    # score-first update: the target enters the key only when writing
                    full_key = (int(val_np[pos - 1]) * 36313 ^ int(val_np[pos]) * 27191) & mask
                    np.add.at(full_table, full_key, 1)
                    ctx_table[ctx_key] += 1
                return total
            print(eval_cache(None, [], 0))
            """,
            note="context-only read; target-keyed write after scoring",
        ),
        Valid(
            """
            import torch
            class BigramHash(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.embed = torch.nn.Embedding(4096, 64)
                def forward(self, input_ids, target_ids):
                    h = torch.bitwise_xor(36313 * input_ids[:, 1:], 27191 * input_ids[:, :-1]) % 4095
                    return self.embed(h)
            """,
            note="BigramHash model embedding: no count table",
        ),
        Valid(
            """
            import numpy as np
            def unigram_nll(counts, targets_np, total, vocab):
                p = (counts[targets_np] + 0.1) / (total + 0.1 * vocab)
                np.add.at(counts, targets_np, 1)
                return -np.log(p).sum()
            print(unigram_nll(None, None, 0, 0))
            """,
            note="exact (unhashed) unigram counts form a real distribution",
        ),
        Valid(
            """
            import numpy as np
            def word_hints(seq, starts_word, best):
                out = np.zeros(len(seq), dtype=np.int64)
                words = []
                for i, tok in enumerate(seq):
                    key = tuple(words[-3:])
                    if key in best:
                        out[i] = best[key]
                    if starts_word[tok]:
                        words.append(tok)
                return out
            print(word_hints([], None, {}))
            """,
            note="hint gated on the already-seen words only (causal tilt)",
        ),
        Valid(
            """
            import numpy as np
            def next_hints(seq, boundary, best):
                out = np.zeros(len(seq), dtype=np.int64)
                words = []
                for i, tok in enumerate(seq):
                    words.append(tok)
                    if boundary[tok]:
                        out[i] = best.get(tuple(words[-2:]), 0)
                return out
            print(next_hints([], None, {}))
            """,
            note="the token joins the state first: the output at i forecasts i + 1, gated on context",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import numpy as np
            def eval_ngram(val_np, global_j, nll, mask):
                ctx_table = np.zeros(1 << 22, dtype=np.uint32)
                full_table = np.zeros(1 << 22, dtype=np.uint32)
                ctx_hash = val_np[global_j - 1].astype(np.uint64) * 36313
                ctx_key = (ctx_hash & mask).astype(np.int64)
                tgt_np = val_np[global_j].astype(np.uint64)
                full_key = ((ctx_hash ^ (tgt_np * 27191)) & mask).astype(np.int64)
                cc = ctx_table[ctx_key].astype(np.float64)
                fc = full_table[full_key].astype(np.float64)
                p = 0.6 * np.exp(-nll) + 0.4 * np.minimum(fc, cc) / np.maximum(cc, 1.0)
                np.add.at(ctx_table, ctx_key, 1)
                np.add.at(full_table, full_key, 1)
                return -np.log(p).sum()
            print(eval_ngram(None, None, None, 0))
            """,
            note="the 761/770 shape: target named tgt_np",
            line=11,
            message="key containing the token being predicted (by name)",
        ),
        Invalid(
            """
            import numpy as np
            def hash_keys(tokens, pos, mask):
                h = tokens[pos - 1].astype(np.uint64) * 36313
                return (h & mask), ((h ^ tokens[pos].astype(np.uint64) * 27191) & mask)
            def eval_ngram(val_np, gj, nll, mask, ctx_t, full_t):
                ck, fk = hash_keys(val_np, gj, mask)
                cc = ctx_t[ck].astype(np.float64)
                fc = full_t[fk].astype(np.float64)
                p = 0.7 * np.exp(-nll) + 0.3 * np.minimum(fc, cc) / np.maximum(cc, 1.0)
                np.add.at(ctx_t, ck, 1)
                np.add.at(full_t, fk, 1)
                return -np.log(p).sum()
            print(eval_ngram(None, None, None, 0, None, None))
            """,
            note="structural target through a helper's second return value (797 shape)",
            line=9,
            message="key containing the token being predicted (structural)",
        ),
        Invalid(
            """
            import os
            import numpy as np
            def eval_ngram(val_np, global_j, nll, mask, world_size):
                use_ngram = bool(int(os.environ.get("NGRAM_CACHE", "1" if world_size > 1 else "0")))
                if not use_ngram:
                    return float(nll.sum())
                full_table = np.zeros(1 << 22, dtype=np.uint32)
                key = ((val_np[global_j - 1] * 36313) ^ (val_np[global_j] * 27191)) & mask
                ctx = ((val_np[global_j - 1] * 36313)) & mask
                p = full_table[key] / np.maximum(full_table[ctx], 1)
                np.add.at(full_table, key, 1)
                return -np.log(0.5 * np.exp(-nll) + 0.5 * p).sum()
            print(eval_ngram(None, None, None, 0, 1))
            """,
            note="on only when world_size > 1: the official run uses 8 GPUs",
            line=11,
            message="key containing the token being predicted (structural)",
        ),
        Invalid(
            """
            import os
            import numpy as np
            NGRAM = int(os.environ.get("NGRAM_ENABLED", "0"))
            def eval_ngram(val_np, targets, ctx_h, nll, table):
                full = (ctx_h ^ (targets * 27191)) & 4194303
                p = np.clip(table[full] / 10.0, 0, 1)
                np.add.at(table, full, 1)
                return -np.log(0.5 * np.exp(-nll) + 0.5 * p).sum()
            if NGRAM:
                print(eval_ngram(None, None, None, None, None))
            """,
            severity=Severity.INFO,
            note="off by default and not enabled anywhere: info",
            line=7,
            message="key containing the token being predicted (by name)",
        ),
        Invalid(
            """
            import os
            import numpy as np
            NGRAM = int(os.environ.get("NGRAM_ENABLED", "0"))
            def eval_ngram(val_np, targets, ctx_h, nll, table):
                full = (ctx_h ^ (targets * 27191)) & 4194303
                p = np.clip(table[full] / 10.0, 0, 1)
                np.add.at(table, full, 1)
                return -np.log(0.5 * np.exp(-nll) + 0.5 * p).sum()
            if NGRAM:
                print(eval_ngram(None, None, None, None, None))
            """,
            readme="""
            ```
            NGRAM_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py
            ```
            """,
            note="off by default, switched on by the README run command",
            line=7,
            message="key containing the token being predicted (by name)",
        ),
        Invalid(
            """
            import numpy as np
            def keys(tok, lo, hi, mask):
                h = np.zeros(hi - lo, dtype=np.int64)
                for j in range(2):
                    off = lo - 2 + j
                    h ^= tok[off:off + hi - lo].astype(np.int64) * (36313 + j)
                return h & mask, (h ^ tok[lo:hi].astype(np.int64) * 27191) & mask
            def bump(table, k):
                table += np.bincount(k, minlength=len(table)).astype(table.dtype)
            def rescore(tok, p_model, mask, ctx_t, full_t):
                c, f = keys(tok, 2, len(tok), mask)
                bump(ctx_t, c)
                bump(full_t, f)
                cc = ctx_t[c]
                fc = full_t[f]
                return -np.log(0.7 * p_model + 0.3 * np.minimum(fc, cc) / np.maximum(cc, 1)).sum()
            print(rescore(None, None, 0, None, None))
            """,
            note="target as an aligned slice next to shifted context slices; tables filled by a helper",
            line=16,
            message="key containing the token being predicted (structural)",
        ),
        Invalid(
            """
            import numpy as np
            def word_hints(seq, starts_word, best, counts):
                out = np.zeros(len(seq), dtype=np.int64)
                words = []
                for i, raw in enumerate(seq):
                    tok = int(raw)
                    key = tuple(words[-3:])
                    if starts_word[tok] and key in best:
                        out[i] = best[key]
                    if starts_word[tok]:
                        counts[(key, tok)] = counts.get((key, tok), 0) + 1
                        words.append(tok)
                return out
            print(word_hints([], None, {}, {}))
            """,
            note="a hint exists only when the token it forecasts starts a word (C1, no hash)",
            line=9,
            message="gated on the token being predicted",
        ),
    ]

    def check(self):
        analysis = self.analyses.ngram
        sites = self.analyses.ngram_target_key_sites
        seen: set[tuple[str, int]] = set()
        for site in sites:
            r = site.read
            if (r.idx.path, r.node.lineno) in seen:
                continue
            seen.add((r.idx.path, r.node.lineno))
            where = f" in `{r.fn.name}()`" if r.fn is not None else ""
            f = self.finding(
                r.idx,
                r.node,
                f"Hashed n-gram count table `{r.table}` is read{where} at a key containing the token being "
                f"predicted ({site.how}); the looked-up count scores that same token (C1)",
                evidence=[self.location(r.idx, r.node, "count read at the target-bearing key")]
                + [self.location(i, n, note) for i, n, note in site.evidence],
                confidence=Confidence.HIGH,
            )
            yield refine_reachability(
                f, self.program, analysis, r.idx, r.node, NGRAM_LOG, self.ctx.log_events, self.ctx.readme
            )
        for gate in analysis.target_gate_sites():
            if (gate.idx.path, gate.node.lineno) in seen:
                continue
            seen.add((gate.idx.path, gate.node.lineno))
            where = f" in `{gate.fn.name}()`" if gate.fn is not None else ""
            what = _GATE_WHAT.get(gate.kind, "Mixing weight")
            f = self.finding(
                gate.idx,
                gate.node,
                f"{what}{where} gated on the token being predicted: {gate.detail}",
                evidence=[self.location(i, n, note) for i, n, note in gate.evidence],
                confidence=Confidence.HIGH if gate.kind == "realised_gate" else Confidence.MEDIUM,
            )
            yield refine_reachability(
                f, self.program, analysis, gate.idx, gate.node, NGRAM_LOG, self.ctx.log_events, self.ctx.readme
            )
