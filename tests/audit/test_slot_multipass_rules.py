"""SLOT / multipass-rescore rules: analysis details the rule cases do not pin, and the labelled corpus rows."""

from __future__ import annotations

import pytest

from audit.api import audit_git
from audit.engine import audit_submission
from audit.findings import Reachability, Severity
from tests.support import make_submission

SLOT_TEMPLATE = """
import os, torch
import torch.nn.functional as F
CAUSAL = bool(int(os.environ.get("SLOT_CAUSAL", "{causal}")))
def eval_val_slot(model, val_tokens, stride, seq_len):
    loss_sum = torch.zeros(())
    total = val_tokens.numel() - 1
    use_slot = getattr(ARGS, "slot_enabled", False)
    for ws in range(0, total, stride):
        end = min(ws + seq_len, total)
        wlen = end - ws
        chunk = val_tokens[ws:end + 1]
        with torch.no_grad():
            hidden = model.forward_hidden(chunk[:-1])
        s = 0 if ws == 0 else max(wlen - stride, 0)
        ctx_start = 0 if ws == 0 else max(wlen - stride, 0)
        mask = torch.zeros(seq_len)
        if CAUSAL:
            mask[:ctx_start] = 1.0
        else:
            mask[s:wlen] = 1.0
        delta = torch.zeros(1, hidden.size(-1), requires_grad=True)
        opt = torch.optim.AdamW([delta], lr=0.01)
        for _ in range(8):
            nll = F.cross_entropy(model.head(hidden + delta), chunk[1:], reduction="none")
            loss = (nll * mask).sum()
            loss.backward()
            opt.step()
        with torch.no_grad():
            nll = F.cross_entropy(model.head(hidden + delta), chunk[1:], reduction="none")
        loss_sum += nll[s:wlen].sum()
    return loss_sum
print(eval_val_slot(None, load_validation_tokens("fineweb_val_*.bin"), 64, 2048))
"""


def _findings(code: str, code_prefix: str):
    sub = make_submission({"train_gpt.py": code}, dedent=True)
    rep = audit_submission(sub, select={code_prefix})
    return [f for f in rep.findings if f.rule.startswith(code_prefix)]


def test_context_mask_bounded_by_an_equal_expression_is_context_only():
    found = _findings(SLOT_TEMPLATE.format(causal="1"), "PG103")
    assert [f.severity for f in found] == [Severity.WARNING]
    assert "context-only" in found[0].message
    assert any("mask" in e.note or "context" in e.note for e in found[0].evidence)


def test_scored_mask_is_an_error_with_evidence():
    found = _findings(SLOT_TEMPLATE.format(causal="0"), "PG103")
    assert [f.severity for f in found] == [Severity.ERROR]
    notes = " ".join(e.note for e in found[0].evidence)
    assert "free tensor `delta`" in notes and "scored span" in notes


def test_getattr_guard_on_a_local_disables_the_site():
    # the fitted loss sits under `if use_slot:`, a local bound to `getattr(ARGS, "slot_enabled", False)`
    code = SLOT_TEMPLATE.format(causal="0").replace(
        '        for _ in range(8):\n            nll = F.cross_entropy(model.head(hidden + delta), chunk[1:], reduction="none")\n'
        "            loss = (nll * mask).sum()\n",
        '        for _ in range(8):\n            nll = F.cross_entropy(model.head(hidden + delta), chunk[1:], reduction="none")\n'
        "            if use_slot:\n                loss = (nll * mask).sum()\n",
    )
    found = _findings("class ARGS:\n    slot_enabled = False\n" + code, "PG103")
    assert found and all(f.severity is Severity.INFO for f in found)
    assert found[0].reachability is Reachability.DISABLED_BY_DEFAULT


def test_each_definition_of_the_loss_is_judged_on_its_own_branch():
    code = """
    import os, torch
    import torch.nn.functional as F
    CAUSAL = bool(int(os.environ.get("SLOT_CAUSAL", "1")))
    def ev(model, val_tokens, stride, seq_len):
        loss_sum = 0.0
        for ws in range(0, val_tokens.numel() - seq_len, stride):
            chunk = val_tokens[ws:ws + seq_len + 1]
            with torch.no_grad():
                logits = model(chunk[:-1])
            s = 0 if ws == 0 else seq_len - stride
            bias = torch.zeros(1024, requires_grad=True)
            opt = torch.optim.SGD([bias], lr=0.1)
            for _ in range(4):
                if CAUSAL:
                    loss = F.cross_entropy(logits[:s] + bias, chunk[1:][:s])
                else:
                    loss = F.cross_entropy(logits + bias, chunk[1:])
                loss.backward()
                opt.step()
            loss_sum += F.cross_entropy(logits[s:] + bias.detach(), chunk[1:][s:], reduction="sum")
        return loss_sum
    print(ev(None, load_validation_tokens("fineweb_val_*.bin"), 64, 2048))
    """
    found = sorted(_findings(code, "PG103"), key=lambda f: f.severity.rank)
    assert [f.severity for f in found] == [Severity.INFO, Severity.WARNING]
    assert "context-only" in found[1].message


def test_rescore_in_the_other_branch_of_the_ttt_switch_is_not_multipass():
    code = """
    import torch
    def eval_val(model, val_tokens):
        loss_sum = 0.0
        with torch.no_grad():
            loss_sum += model(val_tokens).sum().item()
        return loss_sum
    def eval_val_ttt(model, val_tokens):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss_sum = 0.0
        for i in range(0, len(val_tokens), 64):
            x = val_tokens[i:i + 64]
            with torch.no_grad():
                loss_sum += model(x).sum().item()
            model(x).mean().backward()
            opt.step()
        return loss_sum
    def main(model, use_ttt):
        val_tokens = load_validation_tokens("fineweb_val_*.bin")
        if use_ttt:
            bpb = eval_val_ttt(model, val_tokens)
        else:
            bpb = eval_val(model, val_tokens)
        print(f"final_exact val_bpb:{bpb}")
    main(None, True)
    """
    assert not [f for f in _findings(code, "PG104") if f.severity is not Severity.INFO]


# --- the labelled corpus ----------------------------------------------------------------------------
CORPUS = [
    # (pr, sha, folder, rule, expected severities of that rule's findings)
    (
        "675",
        "5149815cba4cb770ed3f398cfed004936676df92",
        "records/track_10min_16mb/2026-04-03_HypergradientSLOT_0.7625",
        "PG103",
        {"error"},
    ),
    (
        "1229",
        "c0d3bbed1feb145b786a128abaa472da534b1b01",
        "records/track_10min_16mb/2026-04-01_ScoredPos-SLOT-PerSample-GPTQ-QKGain_0.9300",
        "PG103",
        {"error"},
    ),
    (
        "1324",
        "f08da600395fce03e3159515c382282640907b46",
        "records/track_10min_16mb/2026-04-04_SLOT48_VRL_QKGain4_XSA11",
        "PG103",
        {"error"},
    ),
    (
        "1204",
        "e01b7e19895e09efb97c415ad6e32e60d6b4842b",
        "records/track_10min_16mb/2026-03-31_ParallelResiduals_MiniDepthRecurrence",
        "PG103",
        {"info"},
    ),
    (
        "1539",
        "11ca47c1ef44c389b43b4a7a2cc6fce4c3dc9992",
        "records/track_10min_16mb/2026-04-11_SP8192_PreQuantTTT_CompiledTTT",
        "PG103",
        {"warning", "info"},
    ),
    (
        "991",
        "da4750aa811ed4dfa3a70c915ce3a5711e2d2ec0",
        "records/track_10min_16mb/2026-03-27_ApproachB_LargerModel_Int5",
        "PG104",
        {"error"},
    ),
    (
        "870",  # pass 1 stores per-token probabilities, the table is built from all of val, pass 2 rescores
        "21b493b8d57fc5eb87e8fa7f91cfc05d57dae449",
        "records/track_10min_16mb/2026-03-26_FullRescore_NgramCache_0.0935",
        "PG104",
        {"error"},
    ),
    (
        "846",  # pass 1 fills the cache while scoring, pass 2 rescores the cold chunks and replaces them
        "e4cea2ccf12853e4b8dbca827216211a68d18311",
        "records/track_10min_16mb/2026-03-27_TwoPassNgram_0.1434",
        "PG104",
        {"error"},
    ),
    (
        "770",
        "7b786ba0b3dc778d02f179be697a020623a2da36",
        "records/track_10min_16mb/2026-03-25_NgramCache_EntropyAdaptive_0.6672",
        "PG104",
        {"info"},
    ),
]


@pytest.mark.parametrize("pr,sha,folder,rule,want", CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_rows(mirror, pr, sha, folder, rule, want):
    rep = audit_git(mirror, sha, folder)
    got = {f.severity.value for f in rep.findings if f.rule.startswith(rule)}
    assert got == want, [(f.severity.value, f.message[:120]) for f in rep.findings if f.rule.startswith(rule)]
