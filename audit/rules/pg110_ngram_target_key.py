from __future__ import annotations

from ..analysis.ngram import NGRAM_LOG, refine_reachability
from ..findings import Confidence, Severity
from .base import Invalid, Rule, Valid

RULING = (
    "https://github.com/openai/parameter-golf/issues/1017 (C1 causality, C2 normalisation); "
    "maintainer rulings on PR #779 and #982 (hashed n-gram caches keyed on the target)"
)


class NgramTargetKey(Rule):
    """
    ## What it does
    Finds reads of a hashed n-gram count table (a table the code increments: `np.add.at(T, k, 1)`,
    `T[k] += 1`, `d[k] = d.get(k, 0) + 1`) at a key that contains the token being predicted, e.g.
    `full_key = ctx_hash ^ (tokens[pos] * prime)` read as `full_table[full_key]` and blended into that
    position's probability. The target is recognised by name (`tgt`, `target`, `y_batch[i, t]`) or by shape
    (`tokens[P]` hashed together with `tokens[P - k]` while a sibling read uses the context alone), through
    helper functions and tuple returns.

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
    table at `(context, target)` *after* the position is scored is the legal score-first update.

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
                f"predicted ({site.how}); the looked-up count scores that same token",
                evidence=[self.location(r.idx, r.node, "count read at the target-bearing key")]
                + [self.location(i, n, note) for i, n, note in site.evidence],
                confidence=Confidence.HIGH,
            )
            yield refine_reachability(
                f, self.program, analysis, r.idx, r.node, NGRAM_LOG, self.ctx.log_events, self.ctx.readme
            )
