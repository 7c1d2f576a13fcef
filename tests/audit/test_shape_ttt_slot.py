"""Shapes of C3 for weights and deltas (RULES.md "The four conditions"): the state used to score position t must
not have absorbed t first. SLOT deltas shared across a batch, score-first deltas carried to the next batch,
thrown-away fits, fits on the next batch; score-first TTT with a last-chunk guard, the same TTT shipped but never
called, and TTT that trains on validation before scoring it. Snippets are written here, not taken from any PR."""

from __future__ import annotations

import pytest

from audit.engine import audit_submission
from audit.findings import Severity
from tests.support import make_submission


def _audit(code: str, select: set[str], readme: str = ""):
    files = {"train_gpt.py": code, **({"README.md": readme} if readme else {})}
    return audit_submission(make_submission(files, dedent=True), select=select)


def _sevs(rep, code: str) -> list[Severity]:
    return [f.severity for f in rep.findings if f.rule.startswith(code)]


# --- SLOT ----------------------------------------------------------------------------------------
SHARED_DELTA = """
    import os, torch
    import torch.nn.functional as F
    SLOT_ON = bool(int(os.environ.get("SLOT_ON", "{default}")))
    def eval_windows(model, val_tokens, seq_len, stride, bsz):
        loss_sum = torch.zeros(())
        starts = list(range(0, val_tokens.numel() - seq_len, stride))
        for bi in range(0, len(starts), bsz):
            ws = starts[bi:bi + bsz]
            x = torch.stack([val_tokens[w:w + seq_len] for w in ws])
            y = torch.stack([val_tokens[w + 1:w + seq_len + 1] for w in ws])
            with torch.no_grad():
                h = model.forward_hidden(x).detach()
            if SLOT_ON:
                shift = torch.zeros(1, 1, h.shape[-1], requires_grad=True)
                opt = torch.optim.AdamW([shift], lr=1e-3)
                for _ in range(3):
                    opt.zero_grad()
                    logits = model.compute_logits(h + shift)
                    fit = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
                    fit.backward()
                    opt.step()
                h = h + shift.detach()
            with torch.no_grad():
                logits = model.compute_logits(h)
                nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
                nll = nll.view(len(ws), -1)
            for i, w in enumerate(ws):
                s = 0 if w == 0 else seq_len - stride
                loss_sum += nll[i, s:].sum()
        return loss_sum
    print(eval_windows(None, None, 2048, 64, 32))
"""


def test_shared_delta_over_the_batch_is_slot():
    """One delta per batch of windows, fitted on every target of the batch, then used to score them."""
    rep = _audit(SHARED_DELTA.format(default="1"), {"PG103"})
    assert _sevs(rep, "PG103") == [Severity.ERROR]
    assert rep.verdict == "flag" and "slot" in rep.categories


def test_shared_delta_switched_on_by_the_run_command():
    readme = "```bash\nSLOT_ON=1 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
    assert _sevs(_audit(SHARED_DELTA.format(default="0"), {"PG103"}, readme), "PG103") == [Severity.ERROR]
    assert _sevs(_audit(SHARED_DELTA.format(default="0"), {"PG103"}), "PG103") == [Severity.INFO]


SCORE_FIRST_DELTA = """
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
            F.cross_entropy(model.head(h + bias), FIT_TARGET).backward()
            opt.step()
        return total
    print(evaluate(None, None, 1024))
"""


def test_score_first_delta_carried_to_the_next_batch_is_legal():
    """Each batch is scored, then the carried delta is fitted on it: C3 holds, as in score-first TTT."""
    rep = _audit(SCORE_FIRST_DELTA.replace("FIT_TARGET", "y"), {"PG103"})
    found = [f for f in rep.findings if f.rule.startswith("PG103")]
    assert [f.severity for f in found] == [Severity.INFO]
    assert "scored before the tensor is fitted" in found[0].message
    assert rep.verdict == "clean"


def test_delta_fitted_on_the_next_batch_is_not_cleared():
    """Fitting on tokens the next iteration scores breaks C3: not the legal shape, so a human looks."""
    code = SCORE_FIRST_DELTA.replace(
        "F.cross_entropy(model.head(h + bias), FIT_TARGET)",
        "F.cross_entropy(model.head(model.hidden(x_next) + bias), y_next)",
    ).replace(
        "            opt.zero_grad()\n",
        "            opt.zero_grad()\n"
        "            x_next = val_tokens[i + seq_len:i + 2 * seq_len]\n"
        "            y_next = val_tokens[i + seq_len + 1:i + 2 * seq_len + 1]\n",
    )
    rep = _audit(code, {"PG103"})
    assert _sevs(rep, "PG103") == [Severity.WARNING]
    assert rep.verdict == "needs-human"


def test_thrown_away_fit_is_legal():
    code = """
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
    """
    rep = _audit(code, {"PG103"})
    found = [f for f in rep.findings if f.rule.startswith("PG103")]
    assert [f.severity for f in found] == [Severity.INFO]
    assert "thrown away" in found[0].message
    assert rep.verdict == "clean"


def test_thrown_away_fit_that_is_returned_is_not_cleared():
    """A fitted tensor handed back to the caller may be used for scoring there: fail closed."""
    code = """
    import torch
    import torch.nn.functional as F
    def fit_bias(model, val_tokens, seq_len):
        x = val_tokens[:seq_len]
        y = val_tokens[1:seq_len + 1]
        b = torch.zeros(model.vocab, requires_grad=True)
        opt = torch.optim.SGD([b], lr=0.1)
        for _ in range(4):
            opt.zero_grad()
            F.cross_entropy(model(x) + b, y).backward()
            opt.step()
        return b
    print(fit_bias(None, None, 1024))
    """
    assert _sevs(_audit(code, {"PG103"}), "PG103") == [Severity.WARNING]


# --- TTT -----------------------------------------------------------------------------------------
TTT = """
    import os, torch
    import torch.nn.functional as F
    TTT_ON = bool(int(os.environ.get("TTT_ON", "0")))
    def eval_chunks_ttt(model, opt, val_tokens, chunk, epochs):
        loss_sum, count = 0.0, 0
        n = (val_tokens.numel() - 1) // chunk
        for ci in range(n):
            x = val_tokens[ci * chunk:(ci + 1) * chunk]
            y = val_tokens[ci * chunk + 1:(ci + 1) * chunk + 1]
            with torch.no_grad():
                loss_sum += F.cross_entropy(model(x), y, reduction="sum").item()
                count += y.numel()
            last = ci == n - 1
            if not last and epochs > 0:
                for _ in range(epochs):
                    opt.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    opt.step()
        return loss_sum / count
    def main(model, opt, val_tokens):
        print("plain", model(val_tokens).mean())
        CALL
    main(None, None, None)
"""


def test_score_first_ttt_with_a_last_chunk_guard_is_legal_ttt():
    code = TTT.replace("CALL", "if TTT_ON:\n            print(eval_chunks_ttt(model, opt, val_tokens, 32768, 3))")
    readme = "```bash\nTTT_ON=1 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
    rep = _audit(code, {"PG101", "PG102"}, readme)
    assert _sevs(rep, "PG101") == []
    assert _sevs(rep, "PG102") == [Severity.INFO]
    assert rep.verdict == "legal_ttt"


def test_score_first_ttt_shipped_but_never_called_is_clean():
    """The TTT function exists but nothing calls it: the record did not run TTT (clean, not legal_ttt)."""
    rep = _audit(TTT.replace("CALL", "pass"), {"PG101", "PG102"})
    found = [f for f in rep.findings if f.rule.startswith("PG102")]
    assert [f.severity for f in found] == [Severity.INFO]
    assert "never called" in found[0].reachability_reason
    assert rep.verdict == "clean"


def test_ttt_that_trains_on_validation_before_scoring_is_flagged():
    code = """
    import torch
    import torch.nn.functional as F
    def adapt(model, opt, val_tokens, epochs, chunk):
        for _ in range(epochs):
            for i in range(0, val_tokens.numel() - chunk, chunk):
                x = val_tokens[i:i + chunk]
                y = val_tokens[i + 1:i + chunk + 1]
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
    def eval_val(model, val_tokens, chunk):
        loss_sum = 0.0
        with torch.no_grad():
            for i in range(0, val_tokens.numel() - chunk, chunk):
                loss_sum += F.cross_entropy(model(val_tokens[i:i + chunk]), val_tokens[i + 1:i + chunk + 1]).item()
        return loss_sum
    def main(model, opt, val_tokens):
        adapt(model, opt, val_tokens, 3, 2048)
        print("val_bpb", eval_val(model, val_tokens, 2048))
    main(None, None, None)
    """
    rep = _audit(code, {"PG101", "PG102"})
    assert Severity.ERROR in _sevs(rep, "PG101")
    assert rep.verdict == "flag" and "prequant_ttt" in rep.categories


# --- however the delta is stepped, it is SLOT (not TTT of the model) -------------------------------------
STEPPED = """
    import torch
    import torch.nn.functional as F
    def evaluate(model, val_tokens, seq_len):
        total = 0.0
        for i in range(0, val_tokens.numel() - seq_len, seq_len):
            x = val_tokens[i:i + seq_len]
            y = val_tokens[i + 1:i + seq_len + 1]
            with torch.no_grad():
                h = model.hidden(x)
    FIT
            with torch.no_grad():
                total += F.cross_entropy(model.head(h) + bias, y, reduction="sum").item()
        return total
    print(evaluate(None, None, 1024))
"""
FITS = {
    "optimiser over a list bound to a name": """
            bias = torch.zeros(model.vocab, requires_grad=True)
            group = [bias]
            opt = torch.optim.SGD(group, lr=0.1)
            for _ in range(4):
                opt.zero_grad()
                F.cross_entropy(model.head(h) + bias, y).backward()
                opt.step()
    """,
    "in-place step on .grad": """
            bias = torch.zeros(model.vocab, requires_grad=True)
            for _ in range(4):
                F.cross_entropy(model.head(h) + bias, y).backward()
                with torch.no_grad():
                    bias -= 0.1 * bias.grad
                    bias.grad.zero_()
    """,
    "autograd.grad and a rebinding": """
            bias = torch.zeros(model.vocab, requires_grad=True)
            for _ in range(4):
                (g,) = torch.autograd.grad(F.cross_entropy(model.head(h) + bias, y), [bias])
                bias = (bias - 0.1 * g).detach().requires_grad_(True)
    """,
    "requires_grad set as an attribute": """
            bias = torch.zeros(model.vocab)
            bias.requires_grad = True
            opt = torch.optim.SGD([bias], lr=0.1)
            for _ in range(4):
                opt.zero_grad()
                F.cross_entropy(model.head(h) + bias, y).backward()
                opt.step()
    """,
    "new_zeros then requires_grad_": """
            bias = h.new_zeros(model.vocab)
            bias.requires_grad_(True)
            opt = torch.optim.SGD([bias], lr=0.1)
            for _ in range(4):
                opt.zero_grad()
                F.cross_entropy(model.head(h) + bias, y).backward()
                opt.step()
    """,
    "Parameter stepped through .data": """
            bias = torch.nn.Parameter(torch.zeros(model.vocab))
            for _ in range(4):
                F.cross_entropy(model.head(h) + bias, y).backward()
                bias.data.add_(bias.grad, alpha=-0.1)
                bias.grad = None
    """,
}


@pytest.mark.parametrize("how", sorted(FITS))
def test_bias_fitted_then_scored_is_slot_however_it_is_stepped(how):
    fit = "\n".join(line[4:] if line.strip() else "" for line in FITS[how].strip("\n").splitlines())
    code = STEPPED.replace("    FIT\n", fit + "\n")
    rep = _audit(code, {"PG101", "PG102", "PG103"})
    assert _sevs(rep, "PG103") == [Severity.ERROR]
    assert list(rep.categories) == ["slot"], rep.categories  # not mistaken for TTT of the model


def test_model_weights_stepped_by_hand_stay_ttt():
    """A hand-written SGD step on the model's own parameters is TTT, not SLOT."""
    code = """
    import torch
    import torch.nn.functional as F
    def evaluate(model, val_tokens, seq_len):
        total = 0.0
        for i in range(0, val_tokens.numel() - seq_len, seq_len):
            x = val_tokens[i:i + seq_len]
            y = val_tokens[i + 1:i + seq_len + 1]
            F.cross_entropy(model(x), y).backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.01 * p.grad
                total += F.cross_entropy(model(x), y, reduction="sum").item()
        return total
    print(evaluate(None, None, 1024))
    """
    rep = _audit(code, {"PG101", "PG102", "PG103"})
    assert _sevs(rep, "PG103") == []
    assert "prequant_ttt" in rep.categories


# --- order by position: minified records put the score and the step on one line ------------------------
ONE_LINE = """
    import torch
    import torch.nn.functional as F
    def ttt_eval(model, opt, val_tokens, chunk):
        loss_sum = 0.0
        for i in range(len(val_tokens) // chunk):
            x = val_tokens[i * chunk:(i + 1) * chunk]; y = val_tokens[i * chunk + 1:(i + 1) * chunk + 1]
            BODY
        return loss_sum
    print(ttt_eval(None, None, None, 64))
"""
SCORE = 'loss_sum += F.cross_entropy(model(x), y, reduction="sum").item()'
STEP = "opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()"


def test_score_first_ttt_on_one_line_is_legal():
    rep = _audit(ONE_LINE.replace("BODY", f"{SCORE}; {STEP}"), {"PG101", "PG102"})
    assert _sevs(rep, "PG101") == [] and rep.verdict == "legal_ttt"


def test_train_then_score_on_one_line_is_flagged():
    rep = _audit(ONE_LINE.replace("BODY", f"{STEP}; {SCORE}"), {"PG101", "PG102"})
    assert Severity.ERROR in _sevs(rep, "PG101") and "prequant_ttt" in rep.categories
