from __future__ import annotations

from ..analysis.ngram import NGRAM_LOG, PPM_LOG, refine_reachability
from ..findings import Confidence, Severity
from .base import Invalid, Rule, Valid

RULING = (
    "https://github.com/openai/parameter-golf/issues/1017 (C2 normalisation: the scored distribution must sum "
    "to one over the vocabulary)"
)


class NgramUnnormalized(Rule):
    """
    ## What it does
    Finds byte-level mixtures whose neural side is not a distribution: a token's log-probability divided by
    that token's byte length (`token_logp / n_bytes`, `np.repeat(lp) / np.repeat(len)`) or its probability
    raised to `1 / L`, handed to every byte of the realised token and mixed with a byte model (PPM); the
    token's log-probability is recognised by data flow (a `gather` of the log-softmax at the target,
    `cross_entropy(…, reduction="none")`, through helpers' parameters), whatever it is called.

    Also finds **target-only mixtures**: a count ratio evaluated for the realised token only — a hashed count
    read at the target's own key (`count(ctx, y) / count(ctx)`, RULES lesson 11: reported with
    `ngram_target_key`), or every candidate's hashed count read but the picked one divided by a separate
    context counter instead of the candidates' sum. Nothing sums such a `q` over the vocabulary.

    ## Why it breaks the rules
    Spreading `log p(token)` evenly over its bytes gives only the realised bytes a probability; the other 255
    byte values get nothing, so the mixture is not normalised and its bits-per-byte is not a code length
    (issue #1017, C2). A weight picked from how well the model predicted the answer uses the outcome to choose
    the distribution.

    ## Example
    ```python
    per_byte_logp = token_logp / n_bytes
    for b in token_bytes:
        mix = lam * math.exp(per_byte_logp) + (1 - lam) * ppm_prob(b)
    ```

    ## Compliant alternative
    Derive a real 256-way byte distribution from the full softmax (marginalise the vocabulary over each
    byte position, chain rule for later bytes), choose the weight from context only, and mix two normalised
    distributions; or mix at the token level over the full vocabulary (`q = counts / counts.sum(-1)` over
    every candidate, then the mixture read at the target).

    ## Known false positives
    The split-wide bits-per-byte (`loss_sum / byte_count`) is not a per-token spread and is not reported.
    Exact (unhashed) counts are not reported: `count(ctx, v) / count(ctx)` sums to one. A mixture code path
    that is off under the effective configuration is `info`. A mixing weight chosen from the realised symbol's
    own probability is a C1 gate and is reported by `ngram_target_key` (as evidence here when it sits in a
    byte spread).
    """

    CODE = "PG111"
    NAME = "ngram-unnormalized"
    CATEGORY = "ngram_unnormalized"
    SEVERITY = Severity.ERROR
    RULING = RULING
    SUMMARY = "blended distribution not normalised over the vocabulary (token NLL spread over its bytes)"
    FIX_HINT = (
        "Mix normalised distributions: marginalise the full softmax to bytes instead of spreading one token's NLL."
    )

    VALID = [
        Valid(
            """
            import math
            def eval_bpb(nll, n_tokens, byte_count):
                loss_sum = float(nll.sum())
                return loss_sum / byte_count / math.log(2.0)
            print(eval_bpb(None, 0, 1))
            """,
            note="split-wide bits per byte",
        ),
        Valid(
            """
            import torch
            def byte_mix(probs, first_byte_mask, ppm_probs, byte_ids, lam):
                nn_byte = probs @ first_byte_mask  # [N, 256], a real marginal of the softmax
                mix = lam * nn_byte + (1 - lam) * ppm_probs
                return -torch.log(mix.gather(-1, byte_ids[:, None])).sum()
            print(byte_mix(None, None, None, None, 0.5))
            """,
            note="normalised 256-way byte distribution from the full softmax",
        ),
        Valid(
            """
            import torch
            def eval_mix(ctx_hash, targets, p_model, pair_t, vocab, mask):
                every = torch.arange(vocab)
                counts = pair_t[(ctx_hash[:, None] * 1000003 + every[None, :]) & mask].float()
                q = counts / counts.sum(-1, keepdim=True).clamp(min=1.0)
                p = (0.3 * q + 0.7 * p_model).gather(1, targets[:, None]).squeeze(1)
                pair_t.scatter_add_(0, (ctx_hash * 1000003 + targets) & mask, torch.ones_like(ctx_hash))
                return -torch.log(p).sum()
            print(eval_mix(None, None, None, None, 0, 0))
            """,
            note="candidate counts renormalised over the vocabulary, then mixed with the full softmax",
        ),
        Valid(
            """
            import math
            import torch
            def mix(model, tokens, pieces, byte_logp):
                probs = torch.softmax(model(tokens[:-1]), -1)
                total = 0.0
                for i in range(probs.shape[0]):
                    q = torch.tensor([math.exp(sum(byte_logp(b) for b in pieces[v])) for v in range(len(pieces))])
                    mixed = 0.5 * probs[i] + 0.5 * q / q.sum()
                    total -= math.log(float(mixed[tokens[i + 1]]))
                return total
            print(mix(None, None, [], None))
            """,
            note="a byte model turned into a distribution over the token alphabet",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import math
            def ppm_mixture_bpb(target_ids, nll_nats, token_bytes, ppm):
                byte_stream, byte_nn_logp = [], []
                for i in range(len(target_ids)):
                    tb = token_bytes[int(target_ids[i])]
                    n_bytes = len(tb)
                    token_logp = -float(nll_nats[i])
                    per_byte_logp = token_logp / n_bytes
                    for b in tb:
                        byte_stream.append(b)
                        byte_nn_logp.append(per_byte_logp)
                mix_nll = 0.0
                for t, b in enumerate(byte_stream):
                    nn_log_p = byte_nn_logp[t]
                    lam = 0.9
                    if -nn_log_p < 0.277:
                        lam = 1.0
                    mix_nll -= math.log(lam * math.exp(nn_log_p) + (1 - lam) * ppm(b))
                return mix_nll / len(byte_stream) / math.log(2)
            print(ppm_mixture_bpb([], [], [], None))
            """,
            line=9,
            message="`token_logp / n_bytes` spreads one token's log-probability",
        ),
        Invalid(
            """
            import os
            def nn_byte_true_prob(p_token_target, token_byte_len):
                L = int(token_byte_len)
                return p_token_target ** (1.0 / L)
            def eval_ppm(tokens, probs, lens):
                return sum(nn_byte_true_prob(p, n) for p, n in zip(probs, lens))
            if int(os.environ.get("PPM_ENABLED", "0")):
                print(eval_ppm([], [], []))
            """,
            logs={
                "train.log": """
                step:1/1 train_loss:1.0
                ppm_mix_bpb:0.829467 tokens:8000000
                """
            },
            note="off by default; the logged run printed the PPM result",
            line=5,
            message="`p_token_target ** (1.0 / L)` gives every byte",
        ),
        Invalid(
            """
            import os
            import numpy as np
            def ppm_mix(lp_np, per_tok_len, plp, lam):
                rep_lp = np.repeat(lp_np, per_tok_len)
                rep_len = np.repeat(per_tok_len.astype(np.float64), per_tok_len)
                nlp = np.where(rep_len > 0, rep_lp / rep_len, 0.0)
                pm = lam * np.exp(nlp) + (1 - lam) * np.exp(plp)
                return float(-np.log2(pm).sum() / 256)
            if int(os.environ.get("PPM_MIX_ENABLED", "0")):
                print(ppm_mix(None, None, None, 0.5))
            """,
            severity=Severity.INFO,
            note="off by default and nothing switches it on",
            line=7,
            message="`rep_lp / rep_len` spreads one token's log-probability",
        ),
        Invalid(
            """
            import math
            import torch
            def mix(model, tokens, piece_of, byte_model):
                lp = torch.log_softmax(model(tokens[:-1]), -1)
                got = lp.gather(-1, tokens[1:, None]).squeeze(-1)
                total = 0.0
                for i, t in enumerate(tokens[1:].tolist()):
                    bs = piece_of[t]
                    share = math.exp(float(got[i]) / len(bs))
                    for b in bs:
                        total -= math.log(0.5 * share + 0.5 * byte_model(b))
                return total
            print(mix(None, None, None, None))
            """,
            note="the spread found by data flow (gather of the log-softmax at the target), whatever the names",
            line=10,
            message="`float(got[i]) / len(bs)` spreads one token's log-probability",
        ),
        Invalid(
            """
            import numpy as np
            def eval_cache(tok, pos, p_model, mask, ctx_t, full_t):
                h = tok[pos - 1].astype(np.int64) * 36313
                cc = ctx_t[h & mask].astype(np.float64)
                fc = full_t[(h ^ tok[pos].astype(np.int64) * 27191) & mask].astype(np.float64)
                q = np.minimum(fc, cc) / np.maximum(cc, 1.0)
                np.add.at(ctx_t, h & mask, 1)
                np.add.at(full_t, (h ^ tok[pos].astype(np.int64) * 27191) & mask, 1)
                return -np.log(0.8 * p_model + 0.2 * q).sum()
            print(eval_cache(None, None, None, 0, None, None))
            """,
            note="RULES lesson 11: the target-keyed count ratio is a target-only mixture (C2) as well as C1",
            line=7,
            message="scores the realised token with a hashed count looked up at its own key",
        ),
        Invalid(
            """
            import torch
            def eval_mix(ctx_hash, targets, p_model, ctx_t, pair_t, vocab, mask):
                every = torch.arange(vocab)
                counts = pair_t[(ctx_hash[:, None] * 1000003 + every[None, :]) & mask].float()
                ctx_c = ctx_t[ctx_hash & mask].float()
                picked = counts.gather(1, targets[:, None]).squeeze(1)
                p = (picked + 2.0 * p_model) / (ctx_c + 2.0)
                ctx_t.scatter_add_(0, ctx_hash & mask, torch.ones_like(ctx_hash))
                pair_t.scatter_add_(0, (ctx_hash * 1000003 + targets) & mask, torch.ones_like(ctx_hash))
                return -torch.log(p).sum()
            print(eval_mix(None, None, None, None, None, 0, 0))
            """,
            note="every candidate's hashed count read, but the picked one divided by a separate context counter",
            line=8,
            message="not by the sum of the candidates' counts",
        ),
    ]

    def check(self):
        analysis = self.analyses.ngram
        for site in self.analyses.ngram_unnormalized_sites:
            where = f" in `{site.fn.name}()`" if site.fn is not None else ""
            what = "Byte-level mixture" if site.kind == "byte_spread" else "Target-only mixture"
            f = self.finding(
                site.idx,
                site.node,
                f"{what}{where} is not normalised: {site.detail}",
                evidence=[self.location(i, n, note) for i, n, note in site.evidence],
                confidence=Confidence.HIGH,
            )
            family = PPM_LOG if site.kind == "byte_spread" else NGRAM_LOG
            yield refine_reachability(
                f, self.program, analysis, site.idx, site.node, family, self.ctx.log_events, self.ctx.readme
            )
