"""The n-gram / mixture shapes of RULES.md judged by mechanism (C1 causality, C2 normalisation), each next to
its legal neighbour: aligned-slice target keys through table-incrementing helpers, target-only count ratios,
candidate counts divided by a context counter, byte spreads under any variable name, hints gated on the token
being predicted. Every snippet is synthetic."""

from __future__ import annotations

import textwrap

from audit.engine import audit_submission
from audit.findings import Severity
from tests.support import make_submission

NGRAM_RULES = {"PG110", "PG111"}


def _errors(code: str) -> dict[str, list[str]]:
    rep = audit_submission(make_submission({"train_gpt.py": code}, dedent=True), select=NGRAM_RULES)
    out: dict[str, list[str]] = {}
    for f in rep.findings:
        if f.code in NGRAM_RULES and f.severity is Severity.ERROR:
            out.setdefault(f.code, []).append(f.message)
    return out


# --- targets entering a hash as aligned slices, counted by a helper ------------------------------------------
ALIGNED_SLICES = """
import numpy as np
PRIMES = np.array([36313, 27191, 51647, 81929], dtype=np.int64)
class Cache:
    def __init__(self, buckets):
        self.mask = buckets - 1
        self.a = np.zeros(buckets, dtype=np.int32)
        self.b = np.zeros(buckets, dtype=np.int32)
    def _keys(self, tok, lo, hi, n):
        m = hi - lo
        h = np.zeros(m, dtype=np.int64)
        for j in range(n - 1):
            off = lo - (n - 1) + j
            h ^= tok[off:off + m].astype(np.int64) * PRIMES[j]
        return h & self.mask, (h ^ tok[lo:hi].astype(np.int64) * PRIMES[3]) & self.mask
    def _bump(self, table, keys):
        table += np.bincount(keys, minlength=len(table)).astype(table.dtype)
    def fill(self, tok):
        c, f = self._keys(tok, 3, len(tok), 3)
        self._bump(self.a, c)
        self._bump(self.b, f)
    def score(self, tok, lo, hi):
        c, f = self._keys(tok, lo, hi, 3)
        cc = self.a[c]
        fc = self.b[f]
        return np.minimum(fc, cc) / np.maximum(cc, 1)
def run(tok, p_model):
    cache = Cache(1 << 20)
    cache.fill(tok)
    q = cache.score(tok, 3, len(tok))
    return -np.log(0.7 * p_model + 0.3 * q).sum()
print(run(None, None))
"""


def test_aligned_slice_target_in_key_is_c1_and_c2():
    found = _errors(ALIGNED_SLICES)
    assert any("structural" in m and "(C1)" in m for m in found.get("PG110", [])), found
    assert any("(C2)" in m for m in found.get("PG111", [])), found


def test_context_only_aligned_slices_pass():
    # The same cache keyed on the shifted context slices only: a hint table, not a target-keyed count.
    code = ALIGNED_SLICES.replace(
        "return h & self.mask, (h ^ tok[lo:hi].astype(np.int64) * PRIMES[3]) & self.mask",
        "return h & self.mask, (h * PRIMES[3]) & self.mask",
    )
    assert _errors(code) == {}


def test_constant_slice_starts_mark_the_latest_slice_as_the_target():
    code = """
    import numpy as np
    def tables(tok, mask, ctx_t, full_t):
        ctx = (tok[:-2].astype(np.int64) * 36313 ^ tok[1:-1].astype(np.int64) * 27191) & mask
        full = (ctx * 51647 ^ tok[2:].astype(np.int64) * 81929) & mask
        cc = ctx_t[ctx]
        fc = full_t[full]
        np.add.at(ctx_t, ctx, 1)
        np.add.at(full_t, full, 1)
        return fc, cc
    print(tables(None, 0, None, None))
    """
    assert "PG110" in _errors(code)


# --- target-only mixtures (C2) -------------------------------------------------------------------------------
CANDIDATES = """
import torch
def eval_mix(ctx_hash, targets, p_model, ctx_t, pair_t, vocab, mask):
    every = torch.arange(vocab)
    keys = (ctx_hash[:, None] * 1000003 + every[None, :]) & mask
    counts = pair_t[keys].float()
    ctx_c = ctx_t[ctx_hash & mask].float()
    picked = counts.gather(1, targets[:, None]).squeeze(1)
    p = (picked + 2.0 * p_model) / (ctx_c + 2.0)
    ctx_t.scatter_add_(0, ctx_hash & mask, torch.ones_like(ctx_hash))
    pair_t.scatter_add_(0, (ctx_hash * 1000003 + targets) & mask, torch.ones_like(ctx_hash))
    return -torch.log(p).sum()
print(eval_mix(None, None, None, None, None, 0, 0))
"""


def test_candidate_counts_over_a_context_counter_are_c2():
    # Every candidate's hashed count is read, but the picked one is divided by the context counter, not by
    # the candidates' sum: with collisions the implied distribution does not sum to one.
    found = _errors(CANDIDATES)
    assert list(found) == ["PG111"], found
    assert "not by the sum of the candidates' counts" in found["PG111"][0]


def test_candidate_counts_renormalised_over_the_vocabulary_pass():
    code = CANDIDATES.replace(
        "    picked = counts.gather(1, targets[:, None]).squeeze(1)\n"
        "    p = (picked + 2.0 * p_model) / (ctx_c + 2.0)\n",
        "    q = counts / counts.sum(-1, keepdim=True).clamp(min=1.0)\n"
        "    p = (0.3 * q + 0.7 * p_model).gather(1, targets[:, None]).squeeze(1)\n",
    )
    assert _errors(code) == {}


def test_hint_picked_by_argmax_is_not_the_scored_token():
    # The most frequent candidate's share is a confidence for a hint (renormalised tilt elsewhere), not q(y).
    code = CANDIDATES.replace("counts.gather(1, targets[:, None])", "counts.gather(1, counts.argmax(1)[:, None])")
    assert _errors(code) == {}


def test_target_keyed_ratio_mixture_is_c2_as_well_as_c1():
    code = """
    import numpy as np
    def eval_cache(tok, pos, p_model, mask, ctx_t, full_t):
        h = tok[pos - 1].astype(np.int64) * 36313
        ck = h & mask
        fk = (h ^ tok[pos].astype(np.int64) * 27191) & mask
        cc = ctx_t[ck].astype(np.float64)
        fc = full_t[fk].astype(np.float64)
        q = np.minimum(fc, cc) / np.maximum(cc, 1.0)
        np.add.at(ctx_t, ck, 1)
        np.add.at(full_t, fk, 1)
        return -np.log(0.8 * p_model + 0.2 * q).sum()
    print(eval_cache(None, None, None, 0, None, None))
    """
    found = _errors(code)
    assert set(found) == {"PG110", "PG111"}, found
    assert "np.maximum(cc, 1.0)" in found["PG111"][0]


def test_exact_counts_ratio_is_a_distribution():
    code = """
    def exact(tokens, ctx_counts, pair_counts, p_model):
        total = 0.0
        for i in range(2, len(tokens)):
            ctx = tuple(tokens[i - 2:i])
            y = tokens[i]
            q = pair_counts.get((ctx, y), 0) / max(ctx_counts.get(ctx, 0), 1)
            total += 0.5 * p_model[i] + 0.5 * q
            pair_counts[(ctx, y)] = pair_counts.get((ctx, y), 0) + 1
            ctx_counts[ctx] = ctx_counts.get(ctx, 0) + 1
        return total
    print(exact([], {}, {}, None))
    """
    assert _errors(code) == {}


# --- byte-level mixtures under any name (C2) -----------------------------------------------------------------
BYTE_SPREAD = """
import math
import torch
def mix(model, tokens, piece_of, byte_model):
    logits = model(tokens[:-1])
    lp = torch.log_softmax(logits, -1)
    got = lp.gather(-1, tokens[1:, None]).squeeze(-1)
    total = 0.0
    for i, t in enumerate(tokens[1:].tolist()):
        bs = piece_of[t]
        share = math.exp(float(got[i]) / len(bs))
        for b in bs:
            total -= math.log(0.5 * share + 0.5 * byte_model(b))
    return total
print(mix(None, None, None, None))
"""


def test_byte_spread_is_found_by_flow_not_names():
    found = _errors(BYTE_SPREAD)
    assert list(found) == ["PG111"] and "float(got[i]) / len(bs)" in found["PG111"][0], found


def test_byte_spread_through_a_helper_parameter():
    code = """
    import math
    import torch
    def share_of(v, k):
        return math.exp(v / k)
    def mix(model, tokens, piece_of, byte_model):
        lp = torch.log_softmax(model(tokens[:-1]), -1)
        got = lp.gather(-1, tokens[1:, None]).squeeze(-1)
        total = 0.0
        for i, t in enumerate(tokens[1:].tolist()):
            bs = piece_of[t]
            s = share_of(float(got[i]), len(bs))
            for b in bs:
                total -= math.log(0.5 * s + 0.5 * byte_model(b))
        return total
    print(mix(None, None, None, None))
    """
    assert "PG111" in _errors(code)


def test_byte_model_normalised_over_the_token_alphabet_passes():
    # The byte model scores every candidate token's byte string; the token-level mixture is renormalised over
    # the vocabulary before the target is read.
    code = """
    import math
    import torch
    def mix(model, tokens, pieces, byte_logp):
        probs = torch.softmax(model(tokens[:-1]), -1)
        total = 0.0
        for i in range(probs.shape[0]):
            q = torch.tensor([math.exp(sum(byte_logp(b) for b in pieces[v])) for v in range(len(pieces))])
            q = q / q.sum()
            mixed = 0.5 * probs[i] + 0.5 * q
            total -= math.log(float(mixed[tokens[i + 1]]))
        return total
    print(mix(None, None, [], None))
    """
    assert _errors(code) == {}


def test_split_wide_bits_per_byte_is_not_a_spread():
    code = """
    import math
    import torch.nn.functional as F
    def bpb(logits, y, byte_lut):
        nll = F.cross_entropy(logits, y, reduction="none")
        return float(nll.sum()) / float(byte_lut[y].sum()) / math.log(2.0)
    print(bpb(None, None, None))
    """
    assert _errors(code) == {}


# --- target-conditioned gates (C1) ---------------------------------------------------------------------------
GATED_HINTS = """
import numpy as np
class WordHints:
    def __init__(self):
        self.words = []
        self.best = {}
        self.pairs = {}
    def run(self, seq, starts_word):
        out_tok = np.zeros(len(seq), dtype=np.int64)
        out_p = np.zeros(len(seq), dtype=np.float32)
        for i, raw in enumerate(seq):
            tok = int(raw)
            begins = bool(starts_word[tok])
            key = tuple(self.words[-3:])
            if begins and key in self.best:
                out_tok[i] = self.best[key][0]
                out_p[i] = self.best[key][1]
            if begins:
                self.pairs[(key, tok)] = self.pairs.get((key, tok), 0) + 1
                self.words.append(tok)
        return out_tok, out_p
print(WordHints().run([], None))
"""


def test_hint_written_only_when_the_forecast_token_starts_a_word_is_c1():
    found = _errors(GATED_HINTS)
    assert list(found) == ["PG110"], found
    assert "(C1)" in found["PG110"][0] and "out_tok[i]" in found["PG110"][0]


def test_hint_gated_on_context_state_passes():
    # Same builder, but whether a hint exists depends on the already-seen words only.
    code = GATED_HINTS.replace("if begins and key in self.best:", "if key in self.best:")
    assert _errors(code) == {}


def test_hint_for_the_next_token_after_absorbing_this_one_passes():
    # The token is added to the state first; the output at i is then the forecast for i + 1, and gating it on
    # the token at i (already context) is causal.
    code = """
    import numpy as np
    def hints(seq, boundary, best):
        out = np.zeros(len(seq), dtype=np.int64)
        words = []
        for i, tok in enumerate(seq):
            words.append(tok)
            if boundary[tok]:
                out[i] = best.get(tuple(words[-2:]), 0)
        return out
    print(hints([], None, {}))
    """
    assert _errors(code) == {}


def test_mixing_weight_from_the_realised_probability_is_c1():
    code = """
    import math
    def mix(nll_tok, ppm_p):
        total = 0.0
        for i in range(len(nll_tok)):
            nn_nll = float(nll_tok[i])
            lam = 0.9
            if nn_nll < 0.5:
                lam = 1.0
            total -= math.log(lam * math.exp(-nn_nll) + (1 - lam) * ppm_p[i])
        return total
    print(mix([], []))
    """
    found = _errors(code)
    assert list(found) == ["PG110"] and "(C1)" in found["PG110"][0], found


TILT_AT_SCORE = """
import torch
import torch.nn.functional as F
def score(logits, y, prev, hint, starts_word, beta):
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
    lp = torch.log_softmax(logits, -1).reshape(-1, logits.size(-1))
    q = lp.gather(-1, hint.reshape(-1, 1)).squeeze(-1).exp()
    hit = (y.reshape(-1) == hint.reshape(-1)).float()
    tilted = nll - beta * hit + torch.log1p(q * (torch.expm1(torch.tensor(beta))))
    nll = torch.where(starts_word[y.reshape(-1)], tilted, nll)
    return nll.sum()
print(score(None, None, None, None, None, 1.0))
"""


def test_tilt_applied_where_the_scored_target_starts_a_word_is_c1():
    found = _errors(TILT_AT_SCORE)
    assert list(found) == ["PG110"] and "(C1)" in found["PG110"][0], found


def test_tilt_gated_on_the_previous_token_passes():
    # Same renormalised tilt, applied where the *context* token ended a word: causal.
    code = TILT_AT_SCORE.replace("starts_word[y.reshape(-1)]", "starts_word[prev.reshape(-1)]")
    assert _errors(code) == {}


def test_masking_and_clamping_the_target_score_pass():
    code = """
    import torch
    import torch.nn.functional as F
    def score(logits, y, byte_lut, space_lut, prev_boundary):
        nll = F.cross_entropy(logits, y, reduction="none")
        nll = torch.where(y == -100, torch.zeros_like(nll), nll)
        p = torch.log_softmax(logits, -1).gather(-1, y[:, None]).squeeze(-1).exp()
        p = torch.where(p < 1e-9, torch.full_like(p, 1e-9), p)
        nbytes = byte_lut[y] + torch.where(space_lut[y] & ~prev_boundary, 1, 0)
        return nll.sum() / nbytes.sum(), p
    print(score(None, None, None, None, None))
    """
    assert _errors(code) == {}


def test_mixing_weight_from_a_gathered_probability_under_any_name_is_c1():
    code = """
    import math
    import torch
    def mix(logits, y, ppm_p):
        got = torch.softmax(logits, -1).gather(-1, y[:, None]).squeeze(-1)
        total = 0.0
        for i in range(got.shape[0]):
            v = float(got[i])
            a = 0.2
            if v > 0.6:
                a = 0.0
            total -= math.log((1 - a) * v + a * ppm_p[i])
        return total
    print(mix(None, None, None))
    """
    found = _errors(code)
    assert list(found) == ["PG110"], found


def test_mixing_weight_from_context_confidence_passes():
    code = """
    import math
    import torch
    def mix(logits, y, ppm_p, ppm_conf):
        got = torch.softmax(logits, -1).gather(-1, y[:, None]).squeeze(-1)
        total = 0.0
        for i in range(got.shape[0]):
            lam = 0.05 if ppm_conf[i] >= 0.9 else 0.2
            total -= math.log((1 - lam) * float(got[i]) + lam * ppm_p[i])
        return total
    print(mix(None, None, None, None))
    """
    assert _errors(code) == {}


def test_exact_token_column_of_a_hashed_context_row_is_a_distribution():
    # `T[hash(ctx), y] / T[hash(ctx)].sum()`: contexts may share a row, but each row is a distribution over
    # the tokens; the token is not hashed into the key.
    code = """
    import numpy as np
    def eval_rows(tok, pos, p_model, mask, table):
        row = (tok[pos - 1].astype(np.int64) * 36313 ^ tok[pos - 2].astype(np.int64) * 27191) & mask
        y = tok[pos]
        q = table[row, y] / np.maximum(table[row].sum(-1), 1)
        np.add.at(table, (row, y), 1)
        return -np.log(0.8 * p_model + 0.2 * q).sum()
    print(eval_rows(None, None, None, 0, None))
    """
    assert _errors(code) == {}


def test_score_first_loop_skipping_padding_passes():
    # Skipping ignored positions compares the token with a fixed id; the cache is read before it absorbs it.
    code = """
    import math
    def score(seq, p_model, counts, pad_id):
        nll = [0.0] * len(seq)
        for i, y in enumerate(seq):
            if y == pad_id:
                continue
            ctx = tuple(seq[max(0, i - 2):i])
            row = counts.get(ctx, {})
            q = row.get(y, 0) / max(sum(row.values()), 1)
            nll[i] = -math.log(0.9 * p_model[i] + 0.1 * q)
            counts.setdefault(ctx, {})[y] = row.get(y, 0) + 1
        return sum(nll)
    print(score([], None, {}, 0))
    """
    assert _errors(code) == {}


def test_best_so_far_loss_is_not_a_mixing_gate():
    code = """
    def schedule(val_nll, best_nll):
        lr_scale = 1.0
        if val_nll < best_nll:
            lr_scale = 0.5
        return lr_scale
    print(schedule(1.0, 2.0))
    """
    assert _errors(code) == {}


EXACT_BACKOFF = """
import math
def backoff(model_nll, tokens, caches, alpha0):
    loss = 0.0
    hits = 0
    for pos in range(len(model_nll)):
        nll = model_nll[pos]
        target = int(tokens[pos + 1])
        ctx = tuple(tokens[pos - 2:pos + 1])
        q = 0.0
        if ctx in caches:
            counts = caches[ctx]
            q = counts.get(target, 0) / counts[-1]
        if q > 0.0:
            hits += 1
            alpha = alpha0
            loss -= math.log((1.0 - alpha) * math.exp(-nll) + alpha * q)
        else:
            loss += nll
        row = caches.setdefault(ctx, {-1: 0})
        row[target] = row.get(target, 0) + 1
        row[-1] += 1
    return loss, hits
print(backoff([], [], {}, 0.5))
"""


def test_mixture_applied_only_where_the_target_was_seen_is_c1():
    found = _errors(EXACT_BACKOFF)
    assert list(found) == ["PG110"] and "`q > 0.0`" in found["PG110"][0], found


def test_mixture_gated_on_the_context_being_known_passes():
    # Exact counts, mixed wherever the context has been seen, whatever the target: a distribution.
    code = EXACT_BACKOFF.replace("if q > 0.0:", "if ctx in caches:")
    assert _errors(code) == {}


def test_weight_from_the_realised_nll_is_c1():
    code = EXACT_BACKOFF.replace("alpha = alpha0", "alpha = alpha0 * min(2.0, max(0.1, nll / 2.5))").replace(
        "if q > 0.0:", "if ctx in caches:"
    )
    found = _errors(code)
    assert list(found) == ["PG110"] and "computes the mixing weight" in found["PG110"][0], found


def test_weight_from_the_model_entropy_passes():
    code = """
    import numpy as np
    def blend(p_model, q, entropy, a_min, a_max):
        alpha = a_min + (a_max - a_min) / (1.0 + np.exp(-2.0 * (entropy - 3.0)))
        return -np.log((1.0 - alpha) * p_model + alpha * q).sum()
    print(blend(None, None, None, 0.05, 0.6))
    """
    assert _errors(code) == {}


def test_ppm_escape_backoff_over_exact_rows_passes():
    # PPM: the first order whose row holds the symbol scores it, lower orders are reached through escapes;
    # the rows are exact, so the byte model is a distribution.
    code = """
    import math
    def ppm_bytes(stream, order):
        rows = {}
        total = 0.0
        hist = b""
        for true_byte in stream:
            esc = 0.0
            lp = None
            for k in range(min(order, len(hist)), -1, -1):
                row = rows.get(hist[len(hist) - k:])
                if row is None:
                    continue
                d = sum(row.values()) + len(row)
                c = row.get(true_byte, 0)
                if c > 0:
                    lp = esc + math.log(c / d)
                    break
                esc += math.log(len(row) / d)
            total -= lp if lp is not None else esc + math.log(1 / 256)
            for k in range(min(order, len(hist)) + 1):
                r = rows.setdefault(hist[len(hist) - k:], {})
                r[true_byte] = r.get(true_byte, 0) + 1
            hist = (hist + bytes([true_byte]))[-order:]
        return total
    print(ppm_bytes(b"", 3))
    """
    assert _errors(code) == {}


def test_loop_counter_named_like_a_log_prob_is_not_a_gate():
    code = """
    import torch
    def run_blocks(x, blocks, scales):
        for lp in range(len(blocks)):
            out = blocks[lp](x)
            if lp > 0:
                alpha = scales[lp]
                x = x + alpha * (out - x)
            else:
                x = out
        return x
    print(run_blocks(None, [], None))
    """
    assert _errors(code) == {}


def test_candidate_counts_over_their_named_total_pass():
    # The picked count divided by the sum of every candidate's count (bound to a name first): normalised.
    code = CANDIDATES.replace(
        "    picked = counts.gather(1, targets[:, None]).squeeze(1)\n",
        "    row_total = counts.sum(dim=1)\n    picked = counts.gather(1, targets[:, None]).squeeze(1)\n",
    ).replace("/ (ctx_c + 2.0)", "/ (row_total + 2.0)")
    assert _errors(code) == {}


def test_table_incrementing_helpers_are_found_in_their_own_scope():
    """A helper that adds into a parameter in place (`np.add.at`, `index_add_`, `scatter_add_`, `+=` at a
    subscript) makes the argument in that position a count table; an add in a function nested inside another
    belongs to the nested one (a lambda's too)."""
    from audit.analysis.config import Config
    from audit.analysis.ngram import NgramAnalysis
    from audit.analysis.program import Program
    from audit.load.resolve import ResolvedSource

    code = textwrap.dedent(
        """
        import numpy as np
        def bump_at(table, keys):
            np.add.at(table, keys, 1)
        class Acc:
            def add(self, counts, keys):
                counts.index_add_(0, keys, ones)
        def scatter(t, k):
            t.scatter_add_(0, k, ones)
        def step(tab, k):
            tab[k] += 1
        def outer(a, k):
            def inner(b, k2):
                np.add.at(b, k2, 1)
            return inner
        def not_a_counter(x, k):
            np.multiply.at(x, k, 2)
        def via_lambda(c, k):
            return lambda: np.add.at(c, k, 1)  # the lambda's own scope, as the function's walk leaves it
        """
    )
    prog = Program.build([ResolvedSource(path="train_gpt.py", text=code)], Config())
    helpers = NgramAnalysis(prog)._incrementing_helpers()
    assert {k: sorted(v) for k, v in helpers.items()} == {
        "bump_at": [(0, "table")],
        "add": [(0, "counts")],
        "scatter": [(0, "t")],
        "step": [(0, "tab")],
        "inner": [(0, "b")],
    }


def test_a_tables_base_is_the_last_part_of_its_dotted_name():
    """`_base` (what a subscript indexes: `self.full_tables[oi][k]` -> "full_tables") without building the
    dotted name: the same answer as its definition on every node of this repository's sources."""
    import ast
    from pathlib import Path

    from audit.analysis.astutil import dotted
    from audit.analysis.ngram import _base

    def by_definition(node):
        while isinstance(node, ast.Subscript):
            node = node.value
        name = dotted(node)
        return name.split(".")[-1] if name else node.attr if isinstance(node, ast.Attribute) else ""

    root = Path(__file__).resolve().parents[2]
    for path in sorted(root.glob("audit/analysis/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            assert _base(node) == by_definition(node)
