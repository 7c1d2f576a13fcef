from __future__ import annotations

from ..findings import Confidence, Reachability, Severity
from .base import Invalid, Rule, Valid

RULING = (
    "https://github.com/openai/parameter-golf/issues/1017 (C3 score-before-update); "
    "https://github.com/openai/parameter-golf/pull/568 (multi-epoch TTT)"
)

_WHAT = {
    "pre_score": "Optimiser steps on validation tokens before those tokens are scored",
    "multi_epoch": "Multi-epoch TTT: validation tokens are re-scored after the model trained on them",
    "train_then_score": "Each validation chunk/document is trained on before it is scored",
}


class PrequantTTT(Rule):
    """
    ## What it does
    Finds optimiser steps (a backward pass) whose loss is computed from validation tokens and decides, from the
    loops around the step and around its callers, whether those tokens were scored before the update.

    ## Why it breaks the rules
    The score must come from a model that has not seen the scored tokens (issue #1017, C3 score-before-update).
    Fine-tuning on `val_tokens` before quantisation or evaluation, multi-epoch TTT that reports a later epoch,
    and per-document TTT scored after its epochs all train on the answers. Ruled out on PR #568.

    ## Example
    ```python
    for epoch in range(ttt_epochs):
        for chunk in val_chunks:
            loss = model(chunk).mean(); loss.backward(); opt.step()
    val_loss, val_bpb = eval_val(model, val_tokens)
    ```

    ## Compliant alternative
    Score-first chunked TTT: score each chunk under `torch.no_grad()` first, add it to the reported total, then
    train on it; never train on the last chunk.

    ## Known false positives
    A compile warm-up that runs backward on validation tokens and restores the weights afterwards is accepted
    by the maintainers and reported as `info` only.
    """

    CODE = "PG101"
    NAME = "prequant-ttt"
    CATEGORY = "prequant_ttt"
    SEVERITY = Severity.ERROR
    RULING = RULING
    SUMMARY = "optimiser steps on validation tokens before they are scored"
    FIX_HINT = "Score each chunk under torch.no_grad() before training on it (score-first TTT)."

    VALID = [
        Valid(
            """
            import torch
            def ttt_eval(model, opt, val_tokens, chunk):
                loss_sum = 0.0
                n = len(val_tokens) // chunk
                for i in range(n):
                    x = val_tokens[i * chunk:(i + 1) * chunk]
                    with torch.no_grad():
                        loss_sum += model(x).sum().item()
                    if i < n - 1:
                        loss = model(x).mean()
                        loss.backward()
                        opt.step()
                return loss_sum / n
            def main(model, opt, val_tokens):
                print(ttt_eval(model, opt, val_tokens, 64))
            main(None, None, None)
            """,
            note="score-first chunked TTT is legal",
        ),
        Valid(
            """
            import os, torch
            TTT = int(os.environ.get("TTT_ENABLED", "0"))
            def adapt(model, opt, val_tokens):
                for epoch in range(3):
                    loss = model(val_tokens).mean()
                    loss.backward()
                    opt.step()
            def main(model, opt, val_tokens):
                if TTT:
                    adapt(model, opt, val_tokens)
            main(None, None, None)
            """,
            note="pre-score TTT present but disabled by default: info only",
        ),
        Valid(
            """
            import os
            def adapt(model, opt, val_tokens, log0):
                for epoch in range(3):
                    loss = model(val_tokens).mean()
                    loss.backward()
                    opt.step()
                log0(f"final val_bpb:{eval_val(model, val_tokens):.8f}")
            def main(model, opt, val_tokens, log0):
                if int(os.environ.get("ADAPT_ON_VAL", "0")):
                    adapt(model, opt, val_tokens, log0)
                log0(f"final val_bpb:{eval_val(model, val_tokens):.8f}")
            main(None, None, None, print)
            """,
            logs={"train_seed1.log": "final val_bpb:1.04210000\n"},
            note="disabled by default; the log's only line is also printed on the live path, so it proves nothing",
        ),
        Valid(
            """
            import copy
            def main(model, opt, val_tokens, train_loader):
                initial = copy.deepcopy(model.state_dict())
                for step in range(20):
                    loss = model(val_tokens[:1024]).mean()
                    loss.backward()
                    opt.step()
                model.load_state_dict(initial)
                for step in range(1000):
                    x = train_loader.next_batch()
                    model(x).mean().backward()
                    opt.step()
            main(None, None, None, None)
            """,
            note="thrown-away compile warm-up on validation tokens",
        ),
    ]
    INVALID = [
        Invalid(
            """
            def finetune_on_val(model, opt, val_tokens):
                for epoch in range(3):
                    for i in range(0, len(val_tokens), 1024):
                        loss = model(val_tokens[i:i + 1024]).mean()
                        loss.backward()
                        opt.step()
            def main(model, opt, val_tokens):
                finetune_on_val(model, opt, val_tokens)
                print(eval_val(model, val_tokens))
            main(None, None, None)
            """,
            line=6,
            message="no scoring before the update",
        ),
        Invalid(
            """
            import torch
            def ttt(model, opt, val_tokens):
                for epoch in range(4):
                    total_loss = 0.0
                    for i in range(0, len(val_tokens), 512):
                        x = val_tokens[i:i + 512]
                        with torch.no_grad():
                            total_loss += model(x).sum().item()
                        loss = model(x).mean()
                        loss.backward()
                        opt.step()
                return total_loss
            print(ttt(None, None, None))
            """,
            note="multi-epoch TTT reporting the last epoch",
            line=11,
            message="inside an outer epoch loop (`range(4)`)",
        ),
        Invalid(
            """
            import os
            TTT = int(os.environ.get("TTT_ENABLED", "0"))
            def adapt(model, opt, val_tokens):
                for epoch in range(3):
                    loss = model(val_tokens).mean()
                    loss.backward()
                    opt.step()
            def main(model, opt, val_tokens):
                if TTT:
                    adapt(model, opt, val_tokens)
            main(None, None, None)
            """,
            readme="""
            ```bash
            TTT_ENABLED=1 torchrun --standalone --nproc_per_node=8 train_gpt.py
            ```
            """,
            note="off in code, switched on by the README run command",
            line=7,
            message="no scoring before the update",
        ),
        Invalid(
            """
            import os
            def adapt(model, opt, val_tokens, log0):
                for epoch in range(3):
                    loss = model(val_tokens).mean()
                    loss.backward()
                    opt.step()
                    log0(f"prequant_adapt epoch:{epoch} loss:{loss.item():.4f}")
            def main(model, opt, val_tokens, log0):
                if int(os.environ.get("ADAPT_ON_VAL", "0")):
                    adapt(model, opt, val_tokens, log0)
                log0(f"final val_bpb:{eval_val(model, val_tokens):.8f}")
            main(None, None, None, print)
            """,
            logs={
                "train_seed1.log": """
                prequant_adapt epoch:0 loss:2.9134
                prequant_adapt epoch:1 loss:2.7012
                prequant_adapt epoch:2 loss:2.6420
                final val_bpb:1.04210000
                """
            },
            note="off in code, but the log prints the messages of the guarded block: it ran",
            line=6,
            message="no scoring before the update",
        ),
    ]

    def check(self):
        sites = self.analyses.ttt_sites
        log_ev, have_logs = self.analyses.ttt_log
        for site in sites:
            if site.kind not in _WHAT and site.kind != "warmup_restored":
                continue  # legal score-first TTT (PG102) or a SLOT-style delta (the slot rule)
            evidence = [self.location(i, n, note) for i, n, note in site.evidence]
            if site.kind == "warmup_restored":
                yield self.finding(
                    site.idx,
                    site.backward,
                    f"Backward pass on validation tokens whose weights are then restored ({site.detail}); "
                    "a thrown-away warm-up was accepted by the maintainers",
                    evidence=evidence,
                    severity=Severity.INFO,
                    confidence=Confidence.MEDIUM,
                )
                continue
            reach, _ = self.program.reachability(site.idx, site.backward)
            live = reach is not Reachability.DISABLED_BY_DEFAULT
            yield self.finding(
                site.idx,
                site.backward,
                f"{_WHAT[site.kind]}: {site.detail}",
                evidence=evidence + (log_ev if live else []),
                # logs that exist but never mention a TTT stage make a live-looking site less certain
                confidence=Confidence.MEDIUM if live and have_logs and not log_ev else Confidence.HIGH,
            )
