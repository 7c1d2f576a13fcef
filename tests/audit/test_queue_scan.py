"""The batch's scan of the whole queue: each PR's diff and folder listing, as its worker would ask git for them."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from audit.load import git as gitmod
from audit.load.git import load_git_folder, pr_diff, pr_folders, pr_heads
from audit.load.queue import scan_queue
from tests.support import EXAMPLES

FOLDER = "records/track_10min_16mb/2026-03-01_Alice"


def sh(cwd, *args, author="maint"):
    env = {**os.environ}
    for who in ("AUTHOR", "COMMITTER"):
        env[f"GIT_{who}_NAME"], env[f"GIT_{who}_EMAIL"] = author, f"{author}@x"
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def commit(r, msg, author="maint"):
    sh(r, "git", "add", "-A", author=author)
    sh(r, "git", "commit", "-qm", msg, author=author)


@pytest.fixture
def repo(tmp_path):
    """main moves on after PR 7 forks; PR 7 adds a folder and a launcher, changes the README; PR 9 adds a log to a
    folder main already has; PR 10 merges main twice over a criss-cross (two merge-bases)."""
    r = tmp_path / "pg"
    r.mkdir()
    sh(r, "git", "init", "-q", "-b", "main")
    (r / "README.md").write_text("| leaderboard |\n")
    shutil.copytree(EXAMPLES / "clean_baseline", r / "records/track_10min_16mb/2026-01-01_Base")
    commit(r, "base")
    sh(r, "git", "checkout", "-q", "-b", "pr7")
    shutil.copytree(EXAMPLES / "prequant_ttt", r / FOLDER)
    os.symlink("train_gpt.py", r / FOLDER / "link.py")
    (r / "scripts").mkdir()
    (r / "scripts/run_alice.sh").write_text("cd records/track_10min_16mb/2026-03-01_Alice && torchrun train_gpt.py\n")
    (r / "README.md").write_text("| leaderboard | alice |\n")
    commit(r, "alice's record", "alice")
    sh(r, "git", "checkout", "-q", "main")
    (r / "notes.md").write_text("main moves on\n")
    commit(r, "main moves on")
    sh(r, "git", "checkout", "-q", "-b", "pr9")
    (r / "records/track_10min_16mb/2026-01-01_Base/extra.log").write_text("val_bpb: 1.2\n")
    commit(r, "a log for an existing folder", "carol")
    # criss-cross: main merges x while the PR merges main's previous commit into x: two merge-bases
    sh(r, "git", "checkout", "-q", "-b", "x", "main~1")
    (r / "x.txt").write_text("x\n")
    commit(r, "x")
    sh(r, "git", "checkout", "-q", "main")
    sh(r, "git", "merge", "-q", "--no-edit", "x")
    sh(r, "git", "checkout", "-q", "-b", "pr10", "x")
    sh(r, "git", "merge", "-q", "--no-edit", "main^1")
    shutil.copytree(EXAMPLES / "clean_baseline", r / "records/track_10min_16mb/2026-04-01_Dan")
    commit(r, "dan", "dan")
    for pr, branch in ((7, "pr7"), (8, "main"), (9, "pr9"), (10, "pr10")):
        sh(r, "git", "update-ref", f"refs/pull/{pr}/head", branch)
    return r


def _folder_facts(folder):
    return (
        list(folder.files.items()),
        list(folder.sizes.items()),
        folder.skipped,
        list(folder.outside_launchers.items()),
        folder.base_readme,
    )


def test_the_scan_diffs_a_pr_as_its_worker_would(repo):
    git_dir = str(repo / ".git")
    heads = pr_heads(git_dir)
    scan = scan_queue(git_dir, heads)
    planned = scan.diffs[heads[7]]
    alone = pr_diff(git_dir, heads[7])  # what a worker asks git for itself
    assert planned.status == alone.status
    assert planned.base == sh(repo, "git", "merge-base", "main", "pr7")
    assert gitmod.read_blobs(git_dir, [("r", planned.readme)]) == {"r": b"| leaderboard |\n"}
    assert FOLDER in planned.whole  # absent at the base: the diff holds every file of it
    listed = load_git_folder(git_dir, heads[7], FOLDER, diff=planned)
    asked = load_git_folder(git_dir, heads[7], FOLDER, diff=alone)
    assert _folder_facts(listed) == _folder_facts(asked)
    assert "link.py" in dict(asked.skipped) and "scripts/run_alice.sh" in asked.outside_launchers


def test_a_folder_main_has_already_is_listed_by_git(repo):
    git_dir = str(repo / ".git")
    heads = pr_heads(git_dir)
    planned = scan_queue(git_dir, heads).diffs[heads[9]]
    base_folder = "records/track_10min_16mb/2026-01-01_Base"
    assert planned.whole == frozenset() and planned.listing(base_folder, []) is None
    [folder] = pr_folders(git_dir, heads[9], diff=planned)
    files = load_git_folder(git_dir, heads[9], folder, diff=planned).files
    assert "extra.log" in files and "train_gpt.py" in files  # the files the PR did not change are there too


def test_no_diff_for_a_pr_without_one_merge_base_or_on_main(repo):
    git_dir = str(repo / ".git")
    heads = pr_heads(git_dir)
    bases = sh(repo, "git", "merge-base", "--all", "main", "pr10").split()
    assert len(bases) == 2
    diffs = scan_queue(git_dir, heads).diffs
    assert heads[10] not in diffs and heads[8] not in diffs  # each worker asks git itself, as it always has
    assert pr_folders(git_dir, heads[10]) == ["records/track_10min_16mb/2026-04-01_Dan"]


def test_a_worker_takes_the_scanned_diff_without_asking_git(repo, monkeypatch):
    git_dir = str(repo / ".git")
    heads = pr_heads(git_dir)
    planned = scan_queue(git_dir, heads).diffs[heads[7]]
    gitmod.known_pr_head(git_dir, 7, heads[7])
    gitmod.known_pr_diff(git_dir, planned)
    calls = []
    real = gitmod._run
    monkeypatch.setattr(
        gitmod, "_run", lambda argv, *a: calls.append(argv[argv.index(f"--git-dir={git_dir}") + 1]) or real(argv, *a)
    )
    [folder] = pr_folders(git_dir, heads[7], diff=pr_diff(git_dir, heads[7]))
    load_git_folder(git_dir, heads[7], folder, diff=pr_diff(git_dir, heads[7]))
    assert calls == []  # no diff, merge-base or ls-tree: the blobs come through the long-lived reader


def test_a_failed_scan_is_empty(repo):
    sh(repo, "git", "branch", "-m", "main", "trunk")
    git_dir = str(repo / ".git")
    scan = scan_queue(git_dir, pr_heads(git_dir))
    assert scan.weights == {} and scan.diffs == {}
