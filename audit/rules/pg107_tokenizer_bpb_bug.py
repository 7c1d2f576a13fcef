from __future__ import annotations

import re

from ..analysis.bytetables import (
    SPACE_MARK,
    ByteTable,
    is_canonical_tokenizer,
    read_sentencepiece_model,
)
from ..challenge import TOKENIZER_FAMILIES
from ..findings import Confidence, Location, Severity
from .base import Invalid, Rule, Valid

RULING = (
    "https://github.com/openai/parameter-golf/issues/897 (standalone ▁ piece); "
    "https://github.com/openai/parameter-golf/pull/1806 (record removed for a byte-count bug); "
    "trainer spec §2 (the baseline byte look-up tables)"
)
# `val_tokens: 62021632`, `val_loader:shards … tokens:62021632`, `Validation tokens: 62,021,632`
_LOGGED_VAL_TOKENS = re.compile(r"(?:val_tokens|val_loader\b.*?\btokens|validation tokens)\s*[:=]\s*([\d,]{4,})", re.I)


class TokenizerBpbBug(Rule):
    """
    ## What it does
    Finds the per-token byte look-up tables by their shape (a loop over token ids that reads
    `sp.id_to_piece(i)` and stores a length or an encoding per id) and compares each with the baseline
    contract: byte-fallback pieces count 1 byte, `▁` is stripped and the space byte is added once in the
    scorer, control/unknown pieces are 0-byte boundaries. Also checks that a non-standard tokenizer is
    guarded by the standalone-`▁` assertion, that shipped `.model` files have a `▁` piece and no
    user-defined symbols counted as text (unless a CaseOps byte sidecar supplies the bytes), and that the
    validation tokens are not cut to a fixed count before scoring. Two shapes with no table at all: bits per
    byte formed as `loss / (ln 2 × c)` with a constant `c` (a literal or a config value, traced through
    local names) that no per-token byte count reaches, and an evaluation loop over `range(<constant>)` whose
    variable moves a validation window and stops before the split ends.

    ## Why it breaks the rules
    `val_bpb` divides by the bytes of the validation text. Counting `<0xAB>` as 6 bytes, counting the
    leading space in the table and again in the scorer, or counting a space as three byte-fallback tokens
    inflates the denominator and lowers the score (PRs #1545/#1576 closed, #1806 removed, issue #897).
    Scoring a subset of the split is not the challenge's metric. A constant bytes-per-token is not the bytes
    of the text scored (RULES: `loss / (ln 2 × constant)` is a byte-denominator bug), and a loop over a fixed
    number of batches scores a subset.

    ## Example
    ```python
    for i in range(sp.vocab_size()):
        piece = sp.id_to_piece(i)
        base_bytes[i] = len(piece.encode("utf-8"))          # <0xAB> counts 6
        if piece.startswith("▁"):
            has_space[i] = True
            base_bytes[i] = len(piece[1:].encode("utf-8")) + 1   # and the scorer adds the space again
    ```

    ## Compliant alternative
    The baseline `build_sentencepiece_luts`: skip control/unknown/unused ids, `is_byte` → 1, strip one
    leading `▁`, and add `has_leading_space[tgt] & ~is_boundary[prev]` in the scorer only. With a custom
    tokenizer, `assert sp.piece_to_id("▁") != sp.unk_id()`; with user-defined symbols, count bytes from a
    sidecar. Divide the summed NLL by the summed bytes of the scored tokens, over every window of the split.

    ## Known false positives
    Byte tables used only for a diagnostic print would be reported like scoring tables. A custom tokenizer
    without the `▁` assertion is reported from the code alone when its `.model` file cannot be inspected;
    the file itself (or the logged implied byte count) settles it. A constant-denominator bpb printed only
    as a training-loss estimate is info when the scorer counts bytes per token, a warning when nothing does.
    """

    CODE = "PG107"
    NAME = "tokenizer-bpb-bug"
    CATEGORY = "tokenizer_bpb_bug"
    SEVERITY = Severity.ERROR
    RULING = RULING
    SUMMARY = (
        "wrong byte denominator: byte look-up table, missing ▁ piece, a constant bytes/token, or a validation subset"
    )
    FIX_HINT = (
        "Use the baseline build_sentencepiece_luts (is_byte -> 1, strip one leading ▁, space added once in the "
        "scorer), assert sp.piece_to_id('▁') != sp.unk_id(), and score the full validation split."
    )

    VALID = [
        Valid(
            """
            import numpy as np
            def build_luts(sp, vocab_size):
                n = int(sp.vocab_size())
                base = np.zeros(max(n, vocab_size), dtype=np.int16)
                space = np.zeros(max(n, vocab_size), dtype=np.bool_)
                boundary = np.ones(max(n, vocab_size), dtype=np.bool_)
                for tid in range(n):
                    if sp.is_control(tid) or sp.is_unknown(tid) or sp.is_unused(tid):
                        continue
                    boundary[tid] = False
                    if sp.is_byte(tid):
                        base[tid] = 1
                        continue
                    piece = sp.id_to_piece(tid)
                    if piece.startswith("\u2581"):
                        space[tid] = True
                        piece = piece[1:]
                    base[tid] = len(piece.encode("utf-8"))
                return base, space, boundary
            def count_bytes(base, space, boundary, prev, tgt):
                nbytes = base[tgt].copy()
                nbytes += space[tgt] & ~boundary[prev]
                return nbytes.sum()
            def main(sp, prev, tgt):
                print(count_bytes(*build_luts(sp, 1024), prev, tgt))
            main(None, None, None)
            """,
            note="the baseline tables under another name",
        ),
        Valid(
            """
            import os
            _T, _U = True, "utf-8"
            TOKENIZER_PATH = os.environ.get("TOKENIZER_PATH", "./data/tokenizers/caseops_v1.model")
            def luts(sp):
                assert sp.piece_to_id("\u2581") != sp.unk_id()
                out = {}
                for i in range(sp.vocab_size()):
                    if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                        continue
                    if sp.is_byte(i):
                        out[i] = 1; continue
                    p = sp.id_to_piece(i)
                    out[i] = len(p.lstrip("\u2581").encode(_U))
                return out
            def load_val_tokens(pattern, max_tokens=int(os.environ.get("VAL_MAX_TOKENS", 500000))):
                toks = read(pattern)
                if max_tokens > 0:
                    toks = toks[:max_tokens + 1]
                return toks
            print(luts(None), load_val_tokens("fineweb_val_*.bin"))
            """,
            readme="""
            ```bash
            VAL_MAX_TOKENS=0 torchrun --standalone --nproc_per_node=8 train_gpt.py
            ```
            """,
            note="custom tokenizer with the ▁ assertion; the val cap is switched off by the run command",
        ),
        Valid(
            """
            import os
            DEBUG_LUT = int(os.environ.get("DEBUG_LUT", "0"))
            def debug_lut(sp):
                lens = {}
                for i in range(sp.vocab_size()):
                    lens[i] = len(sp.id_to_piece(i).encode())
                return lens
            if DEBUG_LUT:
                print(debug_lut(None))
            """,
            note="a naive table that never runs: info only",
        ),
        Valid(
            """
            import math
            import torch
            def eval_val(model, val_tokens, base_bytes, has_space, is_boundary, seq_len=1024, batch_seqs=8):
                total_seqs = (val_tokens.numel() - 1) // seq_len
                loss_sum = torch.zeros((), dtype=torch.float64)
                token_count = torch.zeros((), dtype=torch.float64)
                byte_count = torch.zeros((), dtype=torch.float64)
                for s in range(0, total_seqs, batch_seqs):
                    chunk = val_tokens[s * seq_len : (s + batch_seqs) * seq_len + 1]
                    x, y = chunk[:-1], chunk[1:]
                    loss_sum += model(x, y).double() * y.numel()
                    token_count += y.numel()
                    nbytes = base_bytes[y].double()
                    nbytes += (has_space[y] & ~is_boundary[x]).double()
                    byte_count += nbytes.sum()
                val_loss = loss_sum / token_count
                bits_per_token = val_loss.item() / math.log(2.0)
                tokens_per_byte = token_count.item() / byte_count.item()
                return val_loss.item(), bits_per_token * tokens_per_byte
            def warmup(model, val_tokens):
                for i in range(3):
                    model(val_tokens[i * 1024 : (i + 1) * 1024 + 1])
            warmup(None, load("fineweb_val_*.bin"))
            print(eval_val(None, load("fineweb_val_*.bin"), None, None, None))
            """,
            note="bytes counted per scored token; a warm-up on a few validation windows that accumulates nothing",
        ),
        Valid(
            """
            import math
            def eval_chunks(model, val_tokens, base_bytes, has_space, is_boundary, n_chunks=64):
                size = len(val_tokens) // n_chunks
                nll, nbytes = 0.0, 0.0
                for c in range(n_chunks):
                    chunk = val_tokens[c * size : (c + 1) * size + 1]
                    x, y = chunk[:-1], chunk[1:]
                    nll += model(x, y).sum()
                    tb = base_bytes[y]
                    tb += has_space[y] & ~is_boundary[x]
                    nbytes += tb.sum()
                return nll / math.log(2) / nbytes
            def train_estimate(train_loss):
                return train_loss / math.log(2) / 3.5
            print(eval_chunks(None, load("fineweb_val_*.bin"), None, None, None), train_estimate(2.0))
            """,
            note="a constant number of chunks sized from the data (the whole split); a constant bytes/token only in "
            "a training-loss estimate, with per-token bytes in the scorer: info at most",
        ),
        Valid(
            """
            import math, os
            MAX_VAL_BATCHES = int(os.environ.get("MAX_VAL_BATCHES", "0"))
            def eval_val(model, val_loader, luts):
                nll, nbytes = 0.0, 0.0
                for i, (x, y) in enumerate(val_loader):
                    if MAX_VAL_BATCHES > 0 and i >= MAX_VAL_BATCHES:
                        break
                    nll += model(x, y).sum()
                    nbytes += luts[y].sum()
                return nll / math.log(2) / nbytes
            def warm(model, val_loader):
                for i, (x, y) in enumerate(val_loader):
                    if i >= 3:
                        break
                    model(x, y)
            warm(None, load("fineweb_val_*.bin"))
            print(eval_val(None, load("fineweb_val_*.bin"), None))
            """,
            note="a batch cap switched off by its default; a capped warm-up that accumulates nothing",
        ),
        Valid(
            """
            import torch
            def collect_hessians(model, val_tokens, n_batches=64, seq_len=2048):
                hessian = torch.zeros(512, 512)
                for b in range(n_batches):
                    x = val_tokens[b * seq_len : (b + 1) * seq_len].float()
                    hessian += x[:, None] @ x[None, :]
                return hessian
            print(collect_hessians(None, load("fineweb_val_*.bin")))
            """,
            note="statistics over a constant number of validation windows that no scorer turns into bits",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch
            def build_sentencepiece_luts(sp, vocab_size, device):
                base_bytes = torch.zeros(vocab_size)
                has_space = torch.zeros(vocab_size, dtype=torch.bool)
                is_boundary = torch.zeros(vocab_size, dtype=torch.bool)
                for i in range(vocab_size):
                    piece = sp.id_to_piece(i)
                    base_bytes[i] = len(piece.encode("utf-8"))
                    if piece.startswith("\u2581"):
                        has_space[i] = True
                        base_bytes[i] = len(piece[1:].encode("utf-8")) + 1
                    if sp.is_control(i) or sp.is_unknown(i):
                        is_boundary[i] = True
                return base_bytes, has_space, is_boundary
            def eval_val(model, val_tokens, luts):
                base_bytes, has_space, is_boundary = luts
                prev, tgt = val_tokens[:-1], val_tokens[1:]
                tb = base_bytes[tgt].double()
                tb += (has_space[tgt] & ~is_boundary[prev]).double()
                return model(val_tokens) / tb.sum()
            def main(sp, model, val_tokens):
                print(eval_val(model, val_tokens, build_sentencepiece_luts(sp, 1024, "cpu")))
            main(None, None, None)
            """,
            note="space counted in the table and again in the scorer; <0x..> counted as 6 bytes",
            line=7,
            message="counted in the table and again by the scorer",
        ),
        Invalid(
            """
            import numpy as np
            def ppm_bytes(sp, tgt):
                lens = np.zeros(sp.vocab_size(), dtype=np.int32)
                for i in range(sp.vocab_size()):
                    p = sp.id_to_piece(i)
                    b = (" " + p[1:]).encode() if p.startswith("\u2581") else p.encode()
                    lens[i] = len(b)
                return lens[tgt].sum()
            print(ppm_bytes(None, None))
            """,
            note="a hand-made byte table: no is_byte branch",
            line=5,
            message="there is no `sp.is_byte` branch",
        ),
        Invalid(
            """
            import os
            class Hyperparameters:
                tokenizer_path = os.environ.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model")
            def build_luts(sp, n):
                base = [0] * n
                for i in range(n):
                    if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                        continue
                    if sp.is_byte(i):
                        base[i] = 1
                        continue
                    base[i] = len(sp.id_to_piece(i).replace("\u2581", "").encode())
                return base
            print(build_luts(None, Hyperparameters.tokenizer_path))
            """,
            readme="""
            ```bash
            TOKENIZER_PATH=./data/tokenizers/my_gravity_beta.model torchrun --standalone --nproc_per_node=8 train_gpt.py
            ```
            """,
            note="a custom tokenizer with no check that ▁ is a piece of its own",
            line=4,
            message="nothing checks that `\u2581` is a piece of its own",
        ),
        Invalid(
            """
            def luts(sp, n):
                base, space, boundary = [0] * n, [False] * n, [True] * n
                for i in range(n):
                    if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                        continue
                    boundary[i] = False
                    if sp.is_byte(i):
                        base[i] = 1
                        continue
                    piece = sp.id_to_piece(i)
                    if piece.startswith("\u2581"):
                        space[i] = True
                    base[i] = len(piece.encode("utf-8"))
                return base, space, boundary
            def score_bytes(luts, prev, tgt):
                base, space, boundary = luts
                return sum(base[t] + (1 if space[t] and not boundary[p] else 0) for p, t in zip(prev, tgt))
            print(score_bytes(luts(None, 1024), [], []))
            """,
            note="▁ flagged but not stripped: it counts 3 bytes, then the scorer adds a space byte",
            line=4,
            message="`\u2581` is never stripped",
        ),
        Invalid(
            """
            import os
            VAL_MAX_TOKENS = int(os.environ.get("VAL_MAX_TOKENS", "2000000"))
            def eval_val(model, val_tokens):
                val_tokens = val_tokens[:VAL_MAX_TOKENS + 1]
                return model(val_tokens)
            print(eval_val(None, None))
            """,
            logs={"train.log": "val_tokens: 2000001\nfinal val_loss:2.1 val_bpb:1.2\n"},
            note="validation cut to 2M tokens by a default; the log shows the cut count",
            line=5,
            message="cut to 2,000,001 by default before scoring",
        ),
        Invalid(
            """
            import os
            VAL_MAX_TOKENS = int(os.environ.get("VAL_MAX_TOKENS", "2000000"))
            def eval_val(model, val_tokens):
                return model(val_tokens[:VAL_MAX_TOKENS])
            print(eval_val(None, None))
            """,
            severity=Severity.WARNING,
            note="a subset by default with no log to confirm it: needs a human",
            line=5,
            message="cut to 2,000,000 by default before scoring",
        ),
        Invalid(
            """
            import math
            import numpy as np
            def evaluate(model, path):
                data = np.memmap(path, dtype=np.uint16, mode="r")
                total, count = 0.0, 0
                for start in range(0, len(data) - 1025, 1024):
                    total += float(model(data[start:start + 1025]))
                    count += 1
                mean = total / count
                return mean / (math.log(2) * 3.5)
            print(evaluate(None, "./data/fineweb_val_000000.bin"))
            """,
            note="bits per byte from the mean validation loss and a hardcoded 3.5 bytes per token",
            line=11,
            message="loss / (ln 2 × 3.5)",
        ),
        Invalid(
            """
            import math, os
            BYTES_PER_TOKEN = float(os.environ.get("BYTES_PER_TOKEN", "3.5"))
            def score(model, tokens):
                loss = model(tokens).mean().item()
                bits = loss / math.log(2)
                return bits / BYTES_PER_TOKEN
            print(score(None, load("fineweb_val_*.bin")))
            """,
            note="the constant comes from a config default and is applied in a second statement",
            line=7,
            message="constant 3.5 bytes per token",
        ),
        Invalid(
            """
            import math
            def eval_val(model, val_tokens, bytes_lut):
                nll, nbytes = 0.0, 0.0
                for b in range(20):
                    chunk = val_tokens[b * 8192 : b * 8192 + 8193]
                    nll += model(chunk).sum()
                    nbytes += bytes_lut[chunk[1:]].sum()
                return nll / math.log(2) / nbytes
            print(eval_val(None, load("fineweb_val_*.bin"), None))
            """,
            note="per-token bytes, but the evaluation stops after a constant 20 batches",
            line=5,
            message="constant 20 batches",
        ),
        Invalid(
            """
            import math
            def eval_val(model, val_loader, luts, max_batches=40):
                nll, nbytes = 0.0, 0.0
                for i, (x, y) in enumerate(val_loader):
                    if i >= max_batches:
                        break
                    nll += model(x, y).sum()
                    nbytes += luts[y].sum()
                return nll / math.log(2) / nbytes
            print(eval_val(None, load("fineweb_val_*.bin"), None))
            """,
            severity=Severity.WARNING,
            note="the loader's batches are cut at a default of 40; the batch size is not fixed by the code",
            line=5,
            message="constant 40 batches of the validation loader",
        ),
    ]

    # --- checks -------------------------------------------------------------------------------------
    def check(self):
        facts = self.analyses.byte_accounting
        scorer = facts.scorer
        for table in facts.tables:
            yield from self._check_table(table, scorer)
        yield from self._check_tokenizer(facts)
        yield from self._check_subsets(facts.subsets)
        yield from self._check_constant_denominators(facts)
        yield from self._check_fixed_loops(facts.fixed_eval_loops)

    def _check_table(self, t: ByteTable, scorer):
        major: list[str] = []
        evidence = [self.location(t.idx, t.piece_call, f"byte table over token ids in `{t.name}()`")]
        store = t.count_stores[0]
        if t.byte_check is None and t.from_decode:
            major.append(
                "byte counts come from decoded token text: byte-fallback or partial-UTF-8 tokens decode to"
                " U+FFFD and count 3 bytes instead of 1"
            )
            evidence.append(self.location(t.idx, store, "count taken from the decoded text"))
        elif t.byte_check is None:
            major.append(
                "byte-fallback pieces (`<0xAB>`) are counted by their text length (6 bytes) instead of 1:"
                " there is no `sp.is_byte` branch"
            )
            evidence.append(self.location(t.idx, store, "count taken from the piece text for every id"))
        if t.space_in_count is not None:
            if scorer:
                major.append("the leading space is counted in the table and again by the scorer")
                evidence.append(self.location(t.idx, t.space_in_count, "space byte inside the table's count"))
                evidence.extend(self.location(s.idx, s.node, "scorer adds the space byte again") for s in scorer[:2])
            else:
                evidence.append(
                    self.location(
                        t.idx,
                        t.space_in_count,
                        "space counted even after a boundary token (one extra byte per document)",
                    )
                )
        if t.marker_counted is not None:
            major.append(f"`{SPACE_MARK}` is never stripped, so it counts as its 3 UTF-8 bytes")
            evidence.append(self.location(t.idx, t.marker_counted, "▁ left in the counted text"))
        minor = []
        if not t.boundary_guards_count:
            minor.append("control/unknown pieces are not skipped before counting, so `<s>`/`<unk>` get text bytes")
            evidence.append(self.location(t.idx, store, "count written without a boundary guard"))
        elif "unused" not in t.boundary:
            minor.append("unused pieces are not treated as boundaries")
        if major:
            yield self.finding(
                t.idx,
                t.loop,
                f"Byte look-up table `{t.name}()` miscounts validation bytes: " + "; ".join(major + minor),
                evidence=evidence,
                reach_node=t.loop,
            )
        elif minor and not t.boundary:
            yield self.finding(
                t.idx,
                t.loop,
                f"Byte look-up table `{t.name}()` deviates from the baseline: " + "; ".join(minor),
                evidence=evidence,
                reach_node=t.loop,
                severity=Severity.WARNING,
                confidence=Confidence.MEDIUM,
            )

    def _check_tokenizer(self, facts):
        custom = [(i, e, p) for i, e, p in facts.tokenizers if not is_canonical_tokenizer(p)]
        if not custom:
            return
        idx, expr, path = custom[0]
        models = self._shipped_models(path)
        if models:
            yield from self._check_models(idx, expr, path, models, facts)
            return
        if facts.space_checks or not facts.tables:
            return  # the ▁ assertion guards the table; CaseOps-style sidecars do their own accounting
        t = facts.tables[0]
        evidence = [
            self.location(idx, expr, f"effective tokenizer: {path}"),
            self.location(t.idx, t.piece_call, "byte table with no `piece_to_id('▁') != unk_id()` check"),
        ]
        for lpath, line, text, n in self._logged_val_tokens()[:1]:
            evidence.append(
                Location(
                    path=lpath,
                    start_line=line,
                    end_line=line,
                    snippet=text,
                    note=f"the run scored {n:,} validation tokens with this tokenizer",
                )
            )
        yield self.finding(
            idx,
            expr,
            f"Custom tokenizer `{path}` is scored with a piece-text byte table but nothing checks that `▁` is a "
            "piece of its own; without it every space is three byte-fallback tokens and the byte count grows",
            evidence=evidence,
            reach_node=t.loop,
            confidence=Confidence.MEDIUM,
        )

    def _shipped_models(self, path: str) -> dict[str, bytes]:
        """`.model` files shipped in the folder (when the context carries the folder's files)."""
        files = getattr(self.ctx, "files", None) or {}
        base = path.replace("\\", "/").rsplit("/", 1)[-1]
        return {p: b for p, b in files.items() if p.endswith(".model") and p.rsplit("/", 1)[-1] == base}

    def _check_models(self, idx, expr, path, models, facts):
        for mpath, data in models.items():
            summary = read_sentencepiece_model(data)
            if summary is None:
                continue
            where = self.location(idx, expr, f"effective tokenizer: {path} (shipped as {mpath})")
            if not summary.has_space_piece and not facts.space_checks:
                yield self.finding(
                    idx,
                    expr,
                    f"Tokenizer `{mpath}` has no standalone `▁` piece: a space is encoded as byte-fallback tokens "
                    "and counted as 3 bytes",
                    evidence=[where],
                )
            if summary.user_defined and not facts.sidecar:
                yield self.finding(
                    idx,
                    expr,
                    f"Tokenizer `{mpath}` has {len(summary.user_defined)} user-defined symbols "
                    f"({', '.join(repr(s) for s in summary.user_defined[:3])}…) and no byte sidecar: the byte "
                    "table counts their text as source bytes",
                    evidence=[where],
                )
            if not summary.byte_pieces and not facts.sidecar:
                yield self.finding(
                    idx,
                    expr,
                    f"Tokenizer `{mpath}` has no byte-fallback pieces: `<unk>` tokens count 0 bytes",
                    evidence=[where],
                    severity=Severity.WARNING,
                    confidence=Confidence.MEDIUM,
                )

    def _logged_val_tokens(self) -> list[tuple[str, int, str, int]]:
        out = []
        for path, line, text in self.ctx.log_events:
            m = _LOGGED_VAL_TOKENS.search(text)
            if m and "{" not in text:
                out.append((path, line, text, int(m.group(1).replace(",", ""))))
        return out

    def _check_subsets(self, subsets):
        if not subsets:
            return
        logged = self._logged_val_tokens()
        for s in subsets:
            ev = [self.location(s.idx, s.node, f"validation tokens cut to {s.tokens:,}")]
            cut = [x for x in logged if x[3] <= s.tokens + 1]
            full = [x for x in logged if x[3] > s.tokens + 1]

            if full and not cut:
                continue  # the logs show the full split was loaded: the cap was overridden at launch
            sev, conf = Severity.WARNING, Confidence.MEDIUM
            msg = f"Validation tokens are cut to {s.tokens:,} by default before scoring: the score covers a subset"
            if cut:
                sev, conf = Severity.ERROR, Confidence.HIGH
                path, line, text, n = cut[0]
                ev.append(
                    Location(
                        path=path,
                        start_line=line,
                        end_line=line,
                        snippet=text,
                        note=f"the run loaded {n:,} validation tokens",
                    )
                )
                msg += f"; the log confirms {cut[0][3]:,} tokens"
            yield self.finding(s.idx, s.node, msg, evidence=ev, severity=sev, confidence=conf)

    def _check_constant_denominators(self, facts):
        """`loss / (ln 2 × c)`: the bytes are assumed, not counted. Reported at full strength when the loss is
        computed from validation data; a constant equal to a tokenizer family's full-split average is right only
        if the whole split is scored, so it needs a human."""
        counted = bool(facts.tables or facts.scorer or facts.sidecar)
        for d in facts.constant_denominators:
            family = next(
                (f for f in TOKENIZER_FAMILIES.values() if abs(d.bytes_per_token / f.bytes_per_token - 1) < 1e-3),
                None,
            )
            sev, conf = None, Confidence.HIGH
            note = ""
            if family is not None:
                sev, conf = Severity.WARNING, Confidence.MEDIUM
                note = f" (the {family.name} full-split average: right only if exactly that split is scored)"
            elif not d.from_val:
                sev, conf = (Severity.INFO, Confidence.LOW) if counted else (Severity.WARNING, Confidence.MEDIUM)
                note = " (the loss is not traced to validation data)"
            elif float(d.bytes_per_token).is_integer():
                sev, conf = Severity.WARNING, Confidence.MEDIUM
                note = " (a whole number: it may count passes or ranks rather than bytes)"
            yield self.finding(
                d.idx,
                d.node,
                f"bits per byte computed as loss / (ln 2 × {d.bytes_per_token:g}): a constant "
                f"{d.bytes_per_token:g} bytes per token stands in for the bytes of the scored tokens{note}",
                evidence=[self.location(d.idx, d.loss, "the loss divided by the constant")],
                severity=sev,
                confidence=conf,
            )

    def _check_fixed_loops(self, loops):
        """A constant batch count over validation data. With a window stride the tokens reached are known (an
        error); batches drawn from a loader have a size the code does not fix, so a human checks the coverage."""
        for lp in loops:
            if lp.tokens is not None:
                yield self.finding(
                    lp.idx,
                    lp.loop,
                    f"Evaluation runs a constant {lp.batches:,} batches ({lp.tokens:,} tokens at most) over the "
                    "validation data and stops: the score covers a subset of the split",
                    evidence=[self.location(lp.idx, lp.read, "validation window moved by the loop variable")],
                )
            else:
                yield self.finding(
                    lp.idx,
                    lp.loop,
                    f"Evaluation stops after a constant {lp.batches:,} batches of the validation loader: unless "
                    "those batches hold the whole split, the score covers a subset",
                    evidence=[self.location(lp.idx, lp.read, "validation batches enumerated and cut")],
                    severity=Severity.WARNING,
                    confidence=Confidence.MEDIUM,
                )
