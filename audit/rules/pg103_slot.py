from __future__ import annotations

from ..findings import Confidence, Severity
from .base import Invalid, Rule, Valid


class SlotScoredPositions(Rule):
    """
    ## What it does
    Finds tensors created at evaluation time with `requires_grad=True` (a hidden-state delta, a logit bias)
    that an optimiser holding only those tensors fits on validation tokens, and compares the positions the
    fitted loss covers (a mask written as `mask[i, a:b] = 1`, indexing by such a mask, or `logits[:s]`)
    with the span that is then scored (`nll[i, s:wlen]`). It works on structure, not names: SLOT hidden in a
    function called `eval_val_sliding` is found the same way.

    ## Why it breaks the rules
    Fitting a delta against the very targets that are then scored lets the evaluation see the answers before
    it predicts them (issue #1017 C1/C3; SLOT ruling on PR #1240). Context-only SLOT, whose loss stops where
    the scored span starts, is an open question (issue #1336): it is reported as a warning (needs-human).

    ## Example
    ```python
    mask[i, s:wlen] = 1.0
    delta = torch.zeros(bsz, 1, d, requires_grad=True)
    opt = torch.optim.AdamW([delta], lr=lr)
    for _ in range(steps):
        nll = F.cross_entropy(proj(hidden + delta), y, reduction="none")
        (nll * mask).sum().backward(); opt.step()
    loss_sum += nll_final[i, s:wlen].sum()
    ```

    ## Compliant alternative
    Score with the frozen model, or restrict any eval-time fitting to positions that were already scored
    (and expect a human ruling on context-only SLOT).

    Order decides the legal neighbours: a tensor that only reaches scoring done *before* its backward in the
    loop they share (each batch scored, then fitted on — score-first, like TTT) or that nothing reads once fitted
    (a thrown-away fit) is `info`; a fit on values the earlier scoring did not read (the next batch) is not
    cleared.

    ## Known false positives
    A fitted tensor whose loss is masked by a tensor built from comparisons (`(pos < s).float()`) is not read
    statically and is reported as a warning; a SLOT present in code but disabled is `info`.
    """

    CODE = "PG103"
    NAME = "slot-scored-positions"
    CATEGORY = "slot"
    SEVERITY = Severity.ERROR
    RULING = (
        "https://github.com/openai/parameter-golf/pull/1240 (SLOT); "
        "https://github.com/openai/parameter-golf/issues/1336 (context-only SLOT, open)"
    )
    SUMMARY = "eval-time delta/logit bias fitted on the positions that are then scored (SLOT)"
    FIX_HINT = "Score with the frozen model; fit nothing on the targets that are scored."

    VALID = [
        Valid(
            """
            import torch
            import torch.nn.functional as F
            def eval_val_sliding(model, val_tokens, stride, seq_len):
                loss_sum = 0.0
                for ws in range(0, val_tokens.numel() - seq_len, stride):
                    x = val_tokens[ws:ws + seq_len]
                    y = val_tokens[ws + 1:ws + seq_len + 1]
                    with torch.no_grad():
                        nll = F.cross_entropy(model(x), y, reduction="none")
                    s = 0 if ws == 0 else seq_len - stride
                    loss_sum += nll[s:seq_len].sum()
                return loss_sum
            print(eval_val_sliding(None, None, 64, 2048))
            """,
            note="plain sliding-window scoring, nothing fitted",
        ),
        Valid(
            """
            import os, torch
            import torch.nn.functional as F
            SLOT = bool(int(os.environ.get("SLOT_ENABLED", "0")))
            def eval_val_slot(model, val_tokens, stride, seq_len):
                loss_sum = 0.0
                for ws in range(0, val_tokens.numel() - seq_len, stride):
                    x = val_tokens[ws:ws + seq_len]
                    y = val_tokens[ws + 1:ws + seq_len + 1]
                    with torch.no_grad():
                        hidden = model.hidden(x)
                    s = 0 if ws == 0 else seq_len - stride
                    mask = torch.zeros(seq_len)
                    mask[s:seq_len] = 1.0
                    delta = torch.zeros(1, hidden.size(-1), requires_grad=True)
                    opt = torch.optim.AdamW([delta], lr=0.01)
                    for _ in range(8):
                        nll = F.cross_entropy(model.head(hidden + delta), y, reduction="none")
                        (nll * mask).sum().backward()
                        opt.step()
                    with torch.no_grad():
                        nll = F.cross_entropy(model.head(hidden + delta), y, reduction="none")
                    loss_sum += nll[s:seq_len].sum()
                return loss_sum
            def main(model, val_tokens):
                if SLOT:
                    print(eval_val_slot(model, val_tokens, 64, 2048))
            main(None, None)
            """,
            note="standard SLOT present but disabled by default: info only",
        ),
        Valid(
            """
            import torch
            def train(model, opt, loader):
                temp = torch.ones(1, requires_grad=True)
                topt = torch.optim.SGD([temp], lr=0.1)
                for x, y in loader:
                    loss = (model(x) / temp).mean()
                    loss.backward()
                    topt.step()
            train(None, None, None)
            """,
            note="a free tensor fitted on training data is not SLOT",
        ),
        Valid(
            """
            import torch
            import torch.nn.functional as F
            def evaluate(model, val_tokens, seq_len):
                total = 0.0
                bias = torch.zeros(1, model.dim, requires_grad=True)
                opt = torch.optim.AdamW([bias], lr=1e-3)
                for i in range(0, val_tokens.numel() - seq_len, seq_len):
                    x = val_tokens[i:i + seq_len]
                    y = val_tokens[i + 1:i + seq_len + 1]
                    with torch.no_grad():
                        h = model.hidden(x)
                        total += F.cross_entropy(model.head(h + bias), y, reduction="sum").item()
                    opt.zero_grad()
                    F.cross_entropy(model.head(h + bias), y).backward()
                    opt.step()
                return total
            print(evaluate(None, None, 1024))
            """,
            note="score-first: each batch is scored, then the carried bias is fitted on it (info)",
        ),
        Valid(
            """
            import torch
            import torch.nn.functional as F
            def evaluate(model, val_tokens, seq_len):
                total = 0.0
                for i in range(0, val_tokens.numel() - seq_len, seq_len):
                    x = val_tokens[i:i + seq_len]
                    y = val_tokens[i + 1:i + seq_len + 1]
                    with torch.no_grad():
                        h = model.hidden(x)
                    probe = torch.zeros(1, model.dim, requires_grad=True)
                    opt = torch.optim.AdamW([probe], lr=1e-3)
                    for _ in range(2):
                        opt.zero_grad()
                        F.cross_entropy(model.head(h + probe), y).backward()
                        opt.step()
                    with torch.no_grad():
                        total += F.cross_entropy(model.head(h), y, reduction="sum").item()
                return total
            print(evaluate(None, None, 1024))
            """,
            note="a fit thrown away before scoring: nothing scored reads it (info)",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import os, torch, math
            import torch.nn.functional as F
            def eval_val_sliding(args, model, val_tokens, stride, seq_len):
                steps = int(os.environ.get("SLOT_STEPS", "16"))
                loss_sum = torch.zeros(())
                total = val_tokens.numel() - 1
                if steps > 0:
                    for ws in range(0, total, stride):
                        end = min(ws + seq_len, total)
                        wlen = end - ws
                        chunk = val_tokens[ws:end + 1]
                        with torch.no_grad():
                            hidden = model.forward_hidden(chunk[:-1])
                        mask = torch.zeros(seq_len)
                        s = 0 if ws == 0 else max(wlen - stride, 0)
                        mask[s:wlen] = 1.0
                        bias = torch.zeros(1, 1024, requires_grad=True)
                        opt = torch.optim.AdamW([bias], lr=0.008)
                        for _ in range(steps):
                            nll_opt = F.cross_entropy(model.head(hidden) + bias, chunk[1:], reduction="none")
                            slot_loss = (nll_opt * mask).sum() / mask.sum()
                            opt.zero_grad()
                            slot_loss.backward()
                            opt.step()
                        with torch.no_grad():
                            nll = F.cross_entropy(model.head(hidden) + bias, chunk[1:], reduction="none")
                        loss_sum += nll[s:wlen].sum()
                return loss_sum
            print(eval_val_sliding(None, None, None, 64, 2048))
            """,
            note="SLOT hidden in a sliding-window eval under an inline env default",
            line=24,
            message="covers the scored positions `[s:wlen]`",
        ),
        Invalid(
            """
            import torch
            import torch.nn.functional as F
            def eval_windows(model, val_tokens, seq_len, stride, bsz):
                loss_sum = torch.zeros(())
                starts = list(range(0, val_tokens.numel() - seq_len, stride))
                for bi in range(0, len(starts), bsz):
                    ws = starts[bi:bi + bsz]
                    x = torch.stack([val_tokens[w:w + seq_len] for w in ws])
                    y = torch.stack([val_tokens[w + 1:w + seq_len + 1] for w in ws])
                    with torch.no_grad():
                        h = model.forward_hidden(x).detach()
                    shift = torch.zeros(1, 1, h.shape[-1], requires_grad=True)
                    opt = torch.optim.AdamW([shift], lr=1e-3)
                    for _ in range(3):
                        opt.zero_grad()
                        logits = model.compute_logits(h + shift)
                        F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).backward()
                        opt.step()
                    with torch.no_grad():
                        logits = model.compute_logits(h + shift)
                        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
                    nll = nll.view(len(ws), -1)
                    for i, w in enumerate(ws):
                        s = 0 if w == 0 else seq_len - stride
                        loss_sum += nll[i, s:].sum()
                return loss_sum
            print(eval_windows(None, None, 2048, 64, 32))
            """,
            note="one delta shared by a batch of windows, fitted on all their targets, then scored with",
            line=18,
            message="covers the scored span",
        ),
        Invalid(
            """
            import torch
            import torch.nn.functional as F
            def eval_val_etlb(model, val_tokens, stride, seq_len):
                loss_sum = 0.0
                bias = torch.zeros(1024)
                for ws in range(0, val_tokens.numel() - seq_len, stride):
                    chunk = val_tokens[ws:ws + seq_len + 1]
                    y = chunk[1:]
                    with torch.no_grad():
                        logits = model(chunk[:-1])
                    s = 0 if ws == 0 else seq_len - stride
                    if s > 0:
                        b = bias.clone().detach().requires_grad_(True)
                        opt = torch.optim.SGD([b], lr=0.1)
                        ctx_logits = logits[:s]
                        ctx_tgt = y[:s]
                        for _ in range(4):
                            loss = F.cross_entropy(ctx_logits + b, ctx_tgt)
                            loss.backward()
                            opt.step()
                        bias = b.detach()
                    loss_sum += F.cross_entropy(logits[s:] + bias, y[s:], reduction="sum")
                return loss_sum
            print(eval_val_etlb(None, None, 64, 2048))
            """,
            severity=Severity.WARNING,
            note="context-only logit bias: unresolved, needs a human",
            line=20,
            message="the loss slice ends at `s`, where scoring starts",
        ),
    ]

    def check(self):
        sites = self.analyses.slot_sites
        for site in sites:
            legal = site.kind in ("score_first", "discarded")
            severity = Severity.ERROR if site.kind == "scored" else Severity.INFO if legal else Severity.WARNING
            confidence = Confidence.HIGH if site.confidence == "high" else Confidence.MEDIUM
            tensors = ", ".join(f"`{t}`" for t in site.tensors)
            lead = {
                "scored": f"SLOT: {tensors} fitted on validation targets that are then scored",
                "context": f"Context-only SLOT: {tensors} fitted on validation context before the scored span",
                "unresolved": f"SLOT-style fitting of {tensors} on validation tokens",
                "score_first": f"Score-first fitting of {tensors} on validation tokens",
                "discarded": f"{tensors} fitted on validation tokens and thrown away",
            }[site.kind]
            f = self.finding(
                site.idx,
                site.backward,
                f"{lead} — {site.detail}",
                evidence=[self.location(i, n, note) for i, n, note in site.evidence],
                severity=severity,
                confidence=confidence,
                reach_node=site.loss_def,
                category=None if legal else "",
            )
            yield f
