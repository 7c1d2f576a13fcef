"""A batch worker audits thousands of folders: nothing of one audit may outlive the next (issue 17: ≤ 500 MB per
worker). Every cache keyed by AST nodes must be emptied per audit; one that is not keeps every tree it saw."""

from __future__ import annotations

import ast
import gc
import weakref
from pathlib import Path

from audit.engine import audit_submission
from audit.load import parse as pyparse
from audit.load.folder import load_folder

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_no_tree_of_an_earlier_audit_survives_the_next():
    first, second = load_folder(EXAMPLES / "score_first_ttt"), load_folder(EXAMPLES / "prequant_ttt")
    audit_submission(first)
    trees = [pyparse.parse(first.text(p))[0] for p in first.files if p.endswith(".py")]
    refs = [weakref.ref(t) for t in trees if t is not None]
    assert refs
    del trees
    audit_submission(second)
    gc.collect()
    assert [r for r in refs if r() is not None] == []


def test_an_audit_drops_its_trees_before_the_collector_runs_again():
    # the collector is off during an audit; its first pass afterwards must not trace the audit's trees
    audit_submission(load_folder(EXAMPLES / "score_first_ttt"))
    assert gc.isenabled()
    assert not pyparse._TREES and not pyparse._WALKS and not pyparse._PARENTS


RECURSIVE = """
def chunks(tokens, size):
    if len(tokens) <= size:
        return [tokens]
    return [tokens[:size]] + chunks(tokens[size:], size)


def ping(n):
    return pong(n - 1) if n else 0


def pong(n):
    return ping(n - 1) if n else 0


def eval_val(model, val_tokens):
    total = 0.0
    for chunk in chunks(val_tokens, 1024):
        total += model(chunk).loss.item() + ping(3)
    return total
"""


def test_reference_counting_frees_an_audits_trees(tmp_path):
    # recursive helpers once made the evaluation model's function summaries a cycle that held every tree until the
    # cycle collector ran (half of its work after the audits of a 296-folder sample): nothing of a tree may be
    # left to it
    (tmp_path / "train_gpt.py").write_text(RECURSIVE)
    folder = load_folder(tmp_path)
    audit_submission(folder)  # the first audit's lazy imports leave their own cycles
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        audit_submission(folder)
        gc.collect()
        held = [type(o).__name__ for o in gc.garbage if isinstance(o, ast.AST)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert held == []


def test_a_folders_other_script_is_parsed_once_per_audit(tmp_path, monkeypatch):
    # the scripts-that-ran stage parses every other script of the folder; the log provenance reads the same
    # scripts' templates when a log line is printed by none of the program's sources: one parse serves both
    (tmp_path / "train_gpt.py").write_text('print("step 1 train loss 3.2")\n')
    (tmp_path / "sweep_helper.py").write_text('print("sweeping the warmdown schedule across seeds now")\n')
    (tmp_path / "train.log").write_text(
        "step 1 train loss 3.2\nsweeping the warmdown schedule across seeds now\nfinal_int8_zlib_roundtrip_exact "
        "val_loss:2.0 val_bpb:1.2\nsomething printed by a library about the mixture of experts\n"
    )
    parsed: list[str] = []
    real = pyparse._parse_text
    monkeypatch.setattr(pyparse, "_parse_text", lambda text: parsed.append(text) or real(text))
    audit_submission(load_folder(tmp_path))
    helper = (tmp_path / "sweep_helper.py").read_text()
    assert parsed.count(helper) == 1


def test_a_modules_log_calls_are_read_once_and_go_with_its_tree():
    """The log calls of a module are kept for the audit (two stages read them), and dropped with the tree:
    a forgotten script's tree is not held by them."""
    from audit.load import messages

    text = "def main(log0):\n    log0(f'ttt:start chunks={1} lr={2}')\n"
    pyparse.clear()
    tree, _ = pyparse.parse(text)
    first = messages.log_calls(tree)
    assert first and messages.log_calls(tree) is first
    ref = weakref.ref(tree)
    del tree, first
    pyparse.forget(text)
    gc.collect()
    assert ref() is None and not messages._LOG_CALLS
    tree, _ = pyparse.parse(text)
    messages.log_calls(tree)
    pyparse.clear()
    assert not messages._LOG_CALLS
