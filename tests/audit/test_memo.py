"""A batch audits byte-identical folders once: the re-filed copy gets the same report under its own commit."""

from __future__ import annotations

import json
import subprocess

from audit.batch import audit_folder
from audit.memo import ReportMemo, folder_digest
from tests.audit.test_gitsource import repo, run  # noqa: F401 - the fixture
from tests.support import make_submission

TTT = "import os\nfor epoch in range(3):\n    loss = model(val_tokens).loss\n    loss.backward()\n    opt.step()\n"


def test_digest_follows_every_byte_the_audit_reads():
    base = make_submission({"train_gpt.py": TTT, "README.md": "run: torchrun train_gpt.py"})
    same = make_submission({"README.md": "run: torchrun train_gpt.py", "train_gpt.py": TTT})
    assert folder_digest(base) == folder_digest(same)
    changed = make_submission({"train_gpt.py": TTT + "\n", "README.md": "run: torchrun train_gpt.py"})
    assert folder_digest(changed) != folder_digest(base)
    assert folder_digest(base, {"ignore": {"PG101"}}) != folder_digest(base)
    from dataclasses import replace

    assert folder_digest(replace(base, base_readme="leaderboard")) != folder_digest(base)
    assert folder_digest(replace(base, outside_launchers={"run.sh": b"TTT=1"})) != folder_digest(base)
    assert folder_digest(replace(base, name="records/other")) != folder_digest(base)


def test_a_memo_hit_is_the_same_report_under_its_own_pr_and_commit(tmp_path):
    memo = ReportMemo(tmp_path)
    first = make_submission({"train_gpt.py": TTT}).at("a" * 40, "https://x/y")
    second = make_submission({"train_gpt.py": TTT}).at("b" * 40, "https://x/y")
    row1 = audit_folder(first, 1, None, memo)
    assert len(list(tmp_path.glob("*.json"))) == 1
    row2 = audit_folder(second, 2, None, memo)
    assert (row2["pr"], row2["head_sha"]) == (2, "b" * 40) and list(row2) == list(row1)
    strip = ("pr", "head_sha", "seconds")
    assert {k: v for k, v in row2.items() if k not in strip} == {k: v for k, v in row1.items() if k not in strip}


def test_a_report_whose_stage_failed_is_never_reused(tmp_path):
    memo = ReportMemo(tmp_path)
    memo.put("d", {"verdict": "needs-human", "findings": [{"rule": "PG000/internal-error"}]})
    assert memo.get("d") is None
    memo.put("e", {"verdict": "clean", "findings": []})
    assert memo.get("e") == {"verdict": "clean", "findings": []}


def test_batch_rows_of_a_refiled_folder_match_the_first(repo, tmp_path):  # noqa: F811
    # PR 9 files Alice's record again, unchanged, on another commit
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "-b", "again", "pr"], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=a",
            "-c",
            "user.email=a@x",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    subprocess.run(["git", "-C", str(repo), "update-ref", "refs/pull/9/head", "again"], check=True)
    out = tmp_path / "rows.jsonl"
    run("--git-dir", str(repo / ".git"), "--prs", "7,9", "--jobs", "1", "-o", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    r7, r9 = (next(r for r in rows if r["pr"] == pr and r["folder"].endswith("_Alice")) for pr in (7, 9))
    assert r7["head_sha"] != r9["head_sha"] and r9["pr"] == 9 and r9["verdict"] == "flag"
    assert r9["findings"] == r7["findings"] and r9["categories"] == r7["categories"]
