"""--fix: a violation that hangs on a switch gets the switch turned off — the default rewritten in the code (every
other byte kept) or the run-command change printed — and the folder is re-audited."""

from __future__ import annotations

import shutil

import pytest

from audit.cli import main
from audit.engine import audit_submission
from audit.fix import apply_code_fixes, find_fixes
from audit.report.markdown import review_markdown
from tests.support import EXAMPLES, make_submission

PREQUANT = (EXAMPLES / "prequant_ttt" / "train_gpt.py").read_text()


def run(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return exc.value.code, capsys.readouterr().err


def test_fix_rewrites_only_the_default_and_the_audit_after_is_clean(tmp_path, capsys):
    folder = tmp_path / "rec"
    shutil.copytree(EXAMPLES / "prequant_ttt", folder)
    before = (folder / "train_gpt.py").read_bytes()
    code, err = run(capsys, str(folder), "--fix")
    after = (folder / "train_gpt.py").read_bytes()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines()) and len(changed) == 1
    assert changed[0] == (
        b'    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "1")))',
        b'    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))',
    )
    assert before.replace(changed[0][0], changed[0][1]) == after  # every other byte as it was
    assert "after --fix:" in err and err.rstrip().splitlines()[-2].startswith("CLEAN")
    assert code == 0


def test_a_run_command_switch_is_printed_not_applied():
    code_off = PREQUANT.replace('os.environ.get("TTT_ENABLED", "1")', 'os.environ.get("TTT_ENABLED", "0")')
    readme = "# Record\n\n```bash\nTTT_ENABLED=1 SEED=1 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
    sub = make_submission({"train_gpt.py": code_off, "README.md": readme})
    rep = audit_submission(sub)
    assert rep.verdict == "flag"
    (fix,) = find_fixes(sub, rep)
    assert fix.kind == "run-command" and fix.path == "README.md" and fix.line == 4 and fix.switch == "TTT_ENABLED"
    assert fix.new.startswith("TTT_ENABLED=0 SEED=1 torchrun")
    assert apply_code_fixes(sub, [fix]) == {}


def test_no_fix_where_the_violation_does_not_hang_on_a_switch():
    always_on = PREQUANT.replace("    if args.ttt_enabled:\n", "    if True:\n")
    assert always_on != PREQUANT
    sub = make_submission({"train_gpt.py": always_on})
    rep = audit_submission(sub)
    assert rep.verdict == "flag" and find_fixes(sub, rep) == []


def test_the_review_comment_carries_the_fix_as_a_suggestion():
    sub = make_submission({"train_gpt.py": PREQUANT})
    rep = audit_submission(sub)
    rep.fixes = find_fixes(sub, rep)
    md = review_markdown(rep)
    assert '```suggestion\n    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))\n```' in md
