"""Inputs from git: a checkout's branch, a ref in a bare mirror, a PR ref, and the batch over PRs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from audit.batch import heaviest_first
from audit.load import git as gitmod
from audit.load.git import pr_folders, pr_heads
from audit.load.queue import pr_weights
from tests.support import EXAMPLES


def sh(cwd, *args, env=None):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=env)


GIT_ENV = None


@pytest.fixture
def repo(tmp_path):
    """main with one merged record; a PR branch by `alice` adding her record on top of a fork merge of bob's."""
    r = tmp_path / "pg"
    r.mkdir()
    import os

    def commit(msg, author):
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": author,
            "GIT_AUTHOR_EMAIL": f"{author}@x",
            "GIT_COMMITTER_NAME": author,
            "GIT_COMMITTER_EMAIL": f"{author}@x",
        }
        sh(r, "git", "add", "-A", env=env)
        sh(r, "git", "commit", "-qm", msg, env=env)

    sh(r, "git", "init", "-q", "-b", "main")
    shutil.copytree(EXAMPLES / "clean_baseline", r / "records/track_10min_16mb/2026-01-01_Base")
    commit("base", "maint")
    sh(r, "git", "checkout", "-q", "-b", "pr")
    shutil.copytree(EXAMPLES / "score_first_ttt", r / "records/track_10min_16mb/2026-02-01_Bob")
    commit("bob's record merged into the fork", "bob")
    shutil.copytree(EXAMPLES / "prequant_ttt", r / "records/track_10min_16mb/2026-03-01_Alice")
    commit("alice's record", "alice")
    sh(r, "git", "update-ref", "refs/pull/7/head", "pr")
    sh(r, "git", "update-ref", "refs/pull/8/head", "main")
    return r


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_pr_folder_is_the_one_the_submitter_adds(repo):
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "pr"], capture_output=True, text=True).stdout.strip()
    assert pr_folders(str(repo / ".git"), head) == ["records/track_10min_16mb/2026-03-01_Alice"]


def _rev(repo, rev: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", rev], capture_output=True, text=True).stdout.strip()


def test_every_pr_head_from_one_listing(repo):
    # a tag object under refs/pull is not a commit: left to the one-by-one resolution, which refuses it
    subprocess.run(["git", "-C", str(repo), "tag", "-a", "-m", "t", "t1", "main"], check=True)
    subprocess.run(["git", "-C", str(repo), "update-ref", "refs/pull/5/head", _rev(repo, "t1")], check=True)
    subprocess.run(["git", "-C", str(repo), "update-ref", "refs/pull/6/other", "main"], check=True)
    assert pr_heads(str(repo / ".git")) == {7: _rev(repo, "pr"), 8: _rev(repo, "main")}


def test_a_known_pr_head_is_not_asked_of_git_again(repo, monkeypatch):
    git_dir = str(repo / ".git")
    gitmod.known_pr_head(git_dir, 7, _rev(repo, "pr"))
    calls = []
    monkeypatch.setattr(gitmod, "_run", lambda argv, *a: calls.append(argv))
    assert gitmod.resolve_commit(git_dir, "refs/pull/7/head") == _rev(repo, "pr") and not calls
    gitmod.known_pr_head(git_dir, 7, "not a commit id")  # never taken for one
    assert gitmod._KNOWN_REFS[(git_dir, "refs/pull/7/head")] == _rev(repo, "pr")


def test_a_batch_reports_the_heads_it_listed(repo, tmp_path):
    out = tmp_path / "rows.jsonl"
    run("--git-dir", str(repo / ".git"), "--prs", "7,8,404", "--jobs", "2", "-o", str(out), "--format", "jsonl")
    rows = {r["pr"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows[7]["head_sha"] == _rev(repo, "pr") and rows[8]["head_sha"] == _rev(repo, "main")
    assert rows[404]["verdict"] == "error" and "no such commit" in rows[404]["reason"]  # not listed: asked of git


def _weighed_bytes(repo, rev: str, folder: str) -> int:
    listing = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "-l", rev, "--", folder], capture_output=True, text=True
    ).stdout
    rows = [line.split("\t")[0].split() + [line.split("\t")[1]] for line in listing.splitlines()]
    return sum(int(r[3]) for r in rows if r[4].endswith((".py", ".log", ".txt", ".out")))


_AS_CAROL = {
    **os.environ,
    **{f"GIT_{who}_{what}": v for who in ("AUTHOR", "COMMITTER") for what, v in (("NAME", "carol"), ("EMAIL", "c@x"))},
}


def test_pr_weights_are_the_sources_and_logs_a_pr_adds_since_its_fork_point(repo):
    # a second PR forked from the first commit of main, after main moved on: only its own folder is weighed
    sh(repo, "git", "checkout", "-q", "main")
    shutil.copytree(EXAMPLES / "lzma_wrapped_ttt", repo / "records/track_10min_16mb/2026-04-01_Main")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "main moves on", env=_AS_CAROL)
    sh(repo, "git", "checkout", "-q", "-b", "carol", "main~1")
    shutil.copytree(EXAMPLES / "clean_baseline", repo / "records/track_10min_16mb/2026-05-01_Carol")
    (repo / "records/track_10min_16mb/2026-05-01_Carol/notes.md").write_text("not weighed\n")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "carol's record", env=_AS_CAROL)
    sh(repo, "git", "update-ref", "refs/pull/9/head", "carol")
    git_dir = str(repo / ".git")
    weights = pr_weights(git_dir, pr_heads(git_dir))
    added_by_7 = ("records/track_10min_16mb/2026-02-01_Bob", "records/track_10min_16mb/2026-03-01_Alice")
    assert weights[7] == sum(_weighed_bytes(repo, "pr", f) for f in added_by_7) > 0
    assert weights[9] == _weighed_bytes(repo, "carol", "records/track_10min_16mb/2026-05-01_Carol") > 0
    assert weights[8] == 0  # main itself adds nothing
    assert heaviest_first([7, 8, 9], weights)[-1] == 8


def test_pr_weights_without_main_are_no_order(repo):
    sh(repo, "git", "branch", "-m", "main", "trunk")
    git_dir = str(repo / ".git")
    assert pr_weights(git_dir, pr_heads(git_dir)) == {}
    assert heaviest_first([3, 1, 2], {}) == [3, 1, 2]


def test_heaviest_first_puts_a_repeated_weight_after_the_others():
    # 11 and 12 weigh the same (the same folder filed twice): run side by side both would be audited
    weights = {10: 5, 11: 900, 12: 900, 13: 40, 14: 0, 15: 0}
    assert heaviest_first([10, 11, 12, 13, 14, 15, 16], weights) == [11, 13, 10, 14, 15, 16, 12]


def test_git_dir_pr_and_ref(repo):
    proc = run("--git-dir", str(repo / ".git"), "--pr", "7", "--format", "json")
    doc = json.loads(proc.stdout)
    assert doc["folder"].endswith("2026-03-01_Alice") and doc["verdict"] == "flag" and doc["pr"] == 7
    assert proc.returncode == 1
    proc = run(
        "--git-dir",
        str(repo / ".git"),
        "--ref",
        "pr",
        "--folder",
        "records/track_10min_16mb/2026-02-01_Bob",
        "--format",
        "json",
    )
    assert json.loads(proc.stdout)["verdict"] == "legal_ttt"


def test_checkout_mode_audits_changed_folders(repo):
    proc = run(str(repo), "--checkout", "--format", "json")
    rows = json.loads(proc.stdout)["submissions"]  # one document, a report per folder
    lines = run(str(repo), "--checkout", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["folder"] for line in lines] == [r["folder"] for r in rows]
    assert {r["folder"] for r in rows} == {
        "records/track_10min_16mb/2026-02-01_Bob",
        "records/track_10min_16mb/2026-03-01_Alice",
    }
    assert all(r["head_sha"] for r in rows)


def test_batch_writes_json_lines_and_summary(repo, tmp_path):
    out = tmp_path / "all.jsonl"
    proc = run("--git-dir", str(repo / ".git"), "--all-prs", "--output", str(out), "--jobs", "2")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_pr = {r["pr"]: r for r in rows}
    assert by_pr[7]["verdict"] == "flag"
    assert by_pr[8]["verdict"] == "no-record"
    assert "batch summary" in proc.stderr
    assert proc.returncode == 1


def test_unknown_ref_is_exit_2(repo):
    proc = run("--git-dir", str(repo / ".git"), "--ref", "does-not-exist")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_batch_rerun_keeps_the_previous_output_until_done_and_resume_skips_finished_prs(repo, tmp_path):
    out = tmp_path / "queue.jsonl"
    first = run("--git-dir", str(repo / ".git"), "--all-prs", "--output", str(out), "--jobs", "1")
    assert first.returncode in (0, 1) and not (tmp_path / "queue.jsonl.partial").exists()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # an interrupted run left only PR 7 in its partial file: --resume audits just the other one
    (tmp_path / "queue.jsonl.partial").write_text(json.dumps(next(r for r in rows if r["pr"] == 7)) + "\n{cut")
    out.write_text("")
    again = run("--git-dir", str(repo / ".git"), "--all-prs", "--output", str(out), "--resume", "--jobs", "1")
    assert "resuming: 1 PR(s) already audited, 1 to go" in again.stderr
    assert sorted(json.loads(line)["pr"] for line in out.read_text().splitlines()) == sorted(r["pr"] for r in rows)


def test_resume_needs_an_output_file(repo):
    proc = run("--git-dir", str(repo / ".git"), "--all-prs", "--resume")
    assert proc.returncode == 2 and "--resume needs --output" in proc.stderr
