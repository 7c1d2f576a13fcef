from __future__ import annotations

from ..findings import Confidence, Severity
from .base import Invalid, Rule, Valid


class ScoreFirstTTT(Rule):
    """
    ## What it does
    Recognises legal score-first test-time training: each validation chunk is scored (under `torch.no_grad()`,
    or from the same forward before the step) and only then trained on. Reports it as `info` so the verdict
    becomes `legal_ttt` instead of `clean`.

    ## Why it matters
    Score-first TTT is compliant (issue #1017, C3) and merged records use it; reviewers still want to know that
    a submission adapts at evaluation time, and the eval-time budget must cover it.

    ## Example
    ```python
    for i, chunk in enumerate(chunks):
        with torch.no_grad():
            loss_sum += model(chunk).sum()
        if i < len(chunks) - 1:
            model(chunk).mean().backward(); opt.step()
    ```

    ## Compliant alternative
    This is the compliant form.

    ## Known false positives
    A loop that logs its training loss while fine-tuning could look like scoring; the accumulator must flow
    into what the function returns or logs, and the multi-epoch check in PG101 still applies.
    """

    CODE = "PG102"
    NAME = "score-first-ttt"
    CATEGORY = None
    SEVERITY = Severity.INFO
    RULING = "https://github.com/openai/parameter-golf/issues/1017 (C3 score-before-update)"
    SUMMARY = "legal score-first test-time training on validation chunks"

    VALID = [
        Valid(
            """
            def eval_val(model, val_tokens):
                return model(val_tokens).mean()
            print(eval_val(None, None))
            """,
            note="no TTT at all",
        ),
    ]
    INVALID = [
        Invalid(
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
                        model(x).mean().backward()
                        opt.step()
                return loss_sum / n
            print(ttt_eval(None, None, None, 64))
            """,
            severity=Severity.INFO,
            line=11,
            message="each chunk is scored before the model is updated",
        ),
    ]

    def check(self):
        sites = self.analyses.ttt_sites
        log_ev, have_logs = self.analyses.ttt_log
        for site in sites:
            if site.kind != "score_first":
                continue
            yield self.finding(
                site.idx,
                site.backward,
                f"Score-first TTT on validation chunks: {site.detail}",
                evidence=[self.location(i, n, note) for i, n, note in site.evidence] + log_ev,
                confidence=Confidence.HIGH if log_ev or not have_logs else Confidence.MEDIUM,
                legal_mechanism="score_first_ttt",
            )
