"""Logs as evidence of which code ran: message pieces, blocked regions, scripts that printed the logs."""

from __future__ import annotations

import ast

from audit.engine import audit_submission
from audit.findings import Reachability, Severity
from audit.load.folder import Folder
from audit.load.messages import LogText, message_chunks
from tests.support import make_submission


def _chunks(src: str) -> tuple[str, ...]:
    return message_chunks(ast.parse(src).body[0].value)


def test_message_pieces_split_at_every_placeholder():
    assert _chunks('log0(f"lora_ttt_batch [{pct:.1f}%] docs={n} running_bpb={b:.6f}")') == ("lora_ttt_batch [",)
    assert _chunks('print("ttt_final val_loss:%.4f val_bpb:%.4f" % (a, b))') == ("ttt_final val_loss:",)
    assert _chunks('logger.info("stage {} prequant adaptation done".format(i))') == ("prequant adaptation done",)
    # too short or not wordy: printed by every script, proves nothing
    assert _chunks('log0(f"val_bpb:{b:.4f}")') == ()
    assert _chunks('log0(f"pre_quant_ttt_epochs: {h.epochs}")') == ()  # what a hyperparameter dump prints too
    assert _chunks('print(f"{a} ---------- {b}")') == ()
    # not a log call
    assert _chunks('os.path.join("records/track_10min_16mb", name)') == ()


def test_log_text_finds_the_line():
    logs = LogText([("a.log", 3, "step:1 loss:2.0"), ("b.log", 7, "lora_ttt_batch [50.0%] docs=10")])
    assert logs.find("lora_ttt_batch [") == ("b.log", 7, "lora_ttt_batch [50.0%] docs=10")
    assert logs.find("not there at all") is None


def _sub(files: dict[str, str]) -> Folder:
    return make_submission(files, dedent=True)


CLEAN_ENTRY = """
    def main(model, val_tokens, log0):
        log0(f"final_sliding_window val_bpb:{eval_val(model, val_tokens):.8f}")
    main(None, None, print)
"""

NESTED_TTT = """
    def per_doc_ttt(model, opt, val_tokens, log0):
        for epoch in range(3):
            loss = model(val_tokens).mean()
            loss.backward()
            opt.step()
            log0(f"per_doc_ttt epoch:{epoch} loss:{loss.item():.4f}")
        log0(f"per_doc_ttt finished adapting on {len(val_tokens)} tokens")
    def main(model, opt, val_tokens, log0):
        per_doc_ttt(model, opt, val_tokens, log0)
        log0(f"final_sliding_window val_bpb:{eval_val(model, val_tokens):.8f}")
    main(None, None, None, print)
"""


def test_a_nested_script_that_printed_the_logs_is_audited():
    sub = _sub(
        {
            "train_gpt.py": CLEAN_ENTRY,
            "v2/train_gpt.py": NESTED_TTT,
            "v2/train_seed1.log": "per_doc_ttt epoch:0 loss:2.91\nper_doc_ttt epoch:2 loss:2.60\n"
            "per_doc_ttt finished adapting on 4096 tokens\nfinal_sliding_window val_bpb:1.01\n",
        }
    )
    rep = audit_submission(sub)
    ran = [f for f in rep.findings if f.rule == "PG003/script-that-ran"]
    assert ran and ran[0].location.path == "v2/train_gpt.py" and ran[0].evidence[0].path == "v2/train_seed1.log"
    assert rep.verdict == "flag" and "prequant_ttt" in rep.categories


def test_one_matching_line_or_a_message_other_copies_print_is_not_enough():
    one_line = _sub(
        {
            "train_gpt.py": CLEAN_ENTRY,
            "v2/train_gpt.py": NESTED_TTT,
            "v2/train_seed1.log": "per_doc_ttt epoch:0 loss:2.91\nfinal_sliding_window val_bpb:1.01\n",
        }
    )
    assert audit_submission(one_line).verdict == "clean"
    two_copies = _sub(
        {
            "train_gpt.py": CLEAN_ENTRY,
            "ablations/a.py": NESTED_TTT,
            "ablations/b.py": NESTED_TTT,
            "ablations/a.log": "per_doc_ttt epoch:0 loss:2.91\nper_doc_ttt finished adapting on 4096 tokens\n",
        }
    )
    rep = audit_submission(two_copies)
    assert not [f for f in rep.findings if f.rule == "PG003/script-that-ran"] and rep.verdict == "clean"


def test_a_nested_script_the_logs_do_not_show_is_not_audited():
    # the shared "final_sliding_window val_bpb:" message is printed by the entry too: no evidence for v2/
    sub = _sub(
        {
            "train_gpt.py": CLEAN_ENTRY,
            "v2/train_gpt.py": NESTED_TTT,
            "train_seed1.log": "final_sliding_window val_bpb:1.01\n",
        }
    )
    rep = audit_submission(sub)
    assert not [f for f in rep.findings if f.rule == "PG003/script-that-ran"]
    assert rep.verdict == "clean"


def test_an_undecidable_guard_with_log_proof_is_live():
    sub = _sub(
        {
            "train_gpt.py": """
            import os, json
            CFG = json.load(open(os.environ["CFG_PATH"]))
            def adapt(model, opt, val_tokens, log0):
                for epoch in range(2):
                    loss = model(val_tokens).mean()
                    loss.backward()
                    opt.step()
            def main(model, opt, val_tokens, log0):
                if CFG["adapt"]:
                    log0("adapting on the held-out stream now")
                    adapt(model, opt, val_tokens, log0)
                log0(f"final val_bpb:{eval_val(model, val_tokens):.8f}")
            main(None, None, None, print)
        """,
            "train.log": "adapting on the held-out stream now\nfinal val_bpb:1.0\n",
        }
    )
    rep = audit_submission(sub, select={"PG101"})
    errs = [f for f in rep.findings if f.rule.startswith("PG101") and f.severity is Severity.ERROR]
    assert errs and errs[0].reachability is Reachability.SHOWN_BY_LOGS
    assert any(e.path == "train.log" for e in errs[0].evidence)
