"""Git under attack: a folder that ships its own `.git/` runs nothing and steers nothing, user refs are never
options, and one slow PR cannot stall a batch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from audit import batch
from audit.errors import InputError
from audit.load.git import check_rev, git, resolve_commit
from tests.support import EXAMPLES, ROOT

BOB = "records/track_10min_16mb/2026-02-01_Bob"
ALICE = "records/track_10min_16mb/2026-03-01_Alice"
DECOY = "records/track_10min_16mb/2026-04-01_Decoy"
HOOKS = (
    "pre-commit",
    "post-checkout",
    "post-index-change",
    "fsmonitor-watchman",
    "reference-transaction",
    "pre-auto-gc",
)


def sh(cwd, *args, env=None):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=env)


def audit_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True, cwd=cwd or ROOT, timeout=180
    )


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _commit(repo: Path, msg: str, author: str = "maint") -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": author,
        "GIT_AUTHOR_EMAIL": f"{author}@x",
        "GIT_COMMITTER_NAME": author,
        "GIT_COMMITTER_EMAIL": f"{author}@x",
    }
    sh(repo, "git", "add", "-A", env=env)
    sh(repo, "git", "commit", "-qm", msg, env=env)


def arm(repo: Path, marker: Path, decoy_tree: Path | None = None) -> None:
    """Every config key and hook that would run a command writes `marker` if git ever honours it."""
    bin_dir = repo.parent / "evil-bin"
    bin_dir.mkdir(exist_ok=True)
    tell = _script(bin_dir / "tell", f'echo "$0 $*" >> "{marker}"\nexit 0\n')
    passthru = _script(bin_dir / "passthru", f'echo "filter $*" >> "{marker}"\nexec cat\n')
    hooks = repo.parent / "evil-hooks"
    hooks.mkdir(exist_ok=True)
    for name in HOOKS:
        shutil.copy(tell, hooks / name)
        shutil.copy(tell, repo / ".git" / "hooks" / name)
    cfg = {
        "core.fsmonitor": str(tell),
        "core.hooksPath": str(hooks),
        "core.pager": str(tell),
        "pager.diff": str(tell),
        "pager.log": str(tell),
        "core.sshCommand": str(tell),
        "diff.external": str(tell),
        "diff.evil.textconv": str(tell),
        "diff.evil.command": str(tell),
        "filter.evil.clean": str(passthru),
        "filter.evil.smudge": str(passthru),
        "filter.evil.process": str(tell),
        "filter.evil.required": "true",
        "log.showSignature": "true",
        "gpg.program": str(tell),
        "protocol.ext.allow": "always",
        "remote.origin.url": f"ext::{tell} %S",
        "extensions.partialClone": "origin",
        "remote.origin.promisor": "true",
    }
    if decoy_tree is not None:
        cfg["core.worktree"] = str(decoy_tree)
    for key, value in cfg.items():
        sh(repo, "git", "config", key, value)
    # stat-dirty every tracked record file so a `git diff` against the work tree re-reads (and would filter) it
    later = time.time() + 5
    for f in (repo / "records").rglob("*"):
        if f.is_file():
            os.utime(f, (later, later))


def build_repo(root: Path) -> Path:
    """main with one record; branch `pr` where bob's folder was merged into alice's fork, then alice's added."""
    repo = root / "pg"
    repo.mkdir(parents=True)
    sh(repo, "git", "init", "-q", "-b", "main")
    shutil.copytree(EXAMPLES / "clean_baseline", repo / "records/track_10min_16mb/2026-01-01_Base")
    (repo / ".gitattributes").write_text("* filter=evil diff=evil\n")
    _commit(repo, "base")
    sh(repo, "git", "checkout", "-q", "-b", "pr")
    shutil.copytree(EXAMPLES / "score_first_ttt", repo / BOB)
    _commit(repo, "bob", "bob")
    shutil.copytree(EXAMPLES / "prequant_ttt", repo / ALICE)
    _commit(repo, "alice", "alice")
    sh(repo, "git", "update-ref", "refs/pull/7/head", "pr")
    sh(repo, "git", "update-ref", "refs/pull/8/head", "main")
    return repo


@pytest.fixture
def hostile(tmp_path):
    repo = build_repo(tmp_path)
    decoy = tmp_path / "decoy-tree"
    shutil.copytree(EXAMPLES / "clean_baseline", decoy / DECOY)
    marker = tmp_path / "MARKER"
    arm(repo, marker, decoy_tree=decoy)
    (repo / "records/track_10min_16mb/2026-03-01_Alice/untracked_notes.txt").write_text("new\n")
    return repo, marker


def _clean_exit(proc, marker: Path) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not marker.exists(), f"git ran a command from the submission's config: {marker.read_text()}"


def _rows(stdout: str) -> list[dict]:
    """`--format json` is one document: the report, or {"submissions": [...]} for several folders."""
    doc = json.loads(stdout)
    return doc["submissions"] if "submissions" in doc else [doc]


def test_repo_root_without_flag_is_a_one_line_usage_error(hostile):
    repo, marker = hostile
    proc = audit_cli(str(repo), "--format", "json")
    _clean_exit(proc, marker)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--checkout" in proc.stderr


def test_checkout_flag_audits_the_branch_and_runs_nothing(hostile):
    repo, marker = hostile
    proc = audit_cli(str(repo), "--checkout", "--format", "json")
    _clean_exit(proc, marker)
    rows = _rows(proc.stdout)
    # core.worktree in the checkout's config points at a decoy tree: ignored, the checkout itself is audited
    assert {r["folder"] for r in rows} == {BOB, ALICE}
    assert all(r["head_sha"] for r in rows)
    assert proc.returncode == 1


def test_checkout_with_base_runs_nothing(hostile):
    repo, marker = hostile
    proc = audit_cli(str(repo), "--checkout", "--base", "main", "--format", "json")
    _clean_exit(proc, marker)
    assert {r["folder"] for r in _rows(proc.stdout)} == {BOB, ALICE}


@pytest.mark.parametrize("flag", ["--base", "--ref"])
def test_option_shaped_ref_is_rejected_and_writes_nothing(hostile, tmp_path, flag):
    repo, marker = hostile
    planted = tmp_path / "planted.txt"
    if flag == "--base":
        args = [str(repo), "--checkout", f"--base=--output={planted}"]
    else:
        args = ["--git-dir", str(repo / ".git"), f"--ref=--output={planted}"]
    proc = audit_cli(*args)
    _clean_exit(proc, marker)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "cannot start with '-'" in proc.stderr
    assert not planted.exists()


def test_base_without_a_git_mode_is_a_usage_error(hostile):
    repo, marker = hostile
    proc = audit_cli(str(repo / ALICE), "--base", "main")
    _clean_exit(proc, marker)
    assert proc.returncode == 2 and "--checkout" in proc.stderr


def test_git_dir_modes_run_nothing(hostile, tmp_path):
    repo, marker = hostile
    proc = audit_cli("--git-dir", str(repo / ".git"), "--pr", "7", "--format", "json")
    _clean_exit(proc, marker)
    assert _rows(proc.stdout)[0]["folder"] == ALICE
    proc = audit_cli("--git-dir", str(repo / ".git"), "--ref", "pr", "--base", "main", "--format", "json")
    _clean_exit(proc, marker)
    assert _rows(proc.stdout)[0]["folder"] == ALICE
    out = tmp_path / "batch.jsonl"
    proc = audit_cli("--git-dir", str(repo / ".git"), "--all-prs", "--output", str(out), "--jobs", "2")
    _clean_exit(proc, marker)
    assert {json.loads(line)["pr"] for line in out.read_text().splitlines()} == {7, 8}  # batch: JSON lines


def test_record_folder_shipping_a_git_dir_is_audited_as_itself(tmp_path):
    """A record folder with its own `.git/` (armed, and with a history that adds a decoy record) is audited as
    the folder it is: git never runs there and the decoy is not what gets reviewed."""
    folder = tmp_path / "2026-05-01_Sneaky"
    shutil.copytree(EXAMPLES / "prequant_ttt", folder)
    sh(folder, "git", "init", "-q", "-b", "main")
    _commit(folder, "base")
    shutil.copytree(EXAMPLES / "clean_baseline", folder / DECOY)
    _commit(folder, "decoy")
    marker = tmp_path / "MARKER"
    arm(folder, marker)
    plain = tmp_path / "plain"
    shutil.copytree(EXAMPLES / "prequant_ttt", plain)
    shutil.copytree(EXAMPLES / "clean_baseline", plain / DECOY)

    proc = audit_cli(str(folder), "--format", "json")
    _clean_exit(proc, marker)
    rep = _rows(proc.stdout)
    assert len(rep) == 1 and rep[0]["folder"].rstrip("/").endswith("2026-05-01_Sneaky")
    expected = _rows(audit_cli(str(plain), "--format", "json").stdout)[0]
    assert (rep[0]["verdict"], rep[0]["categories"]) == (expected["verdict"], expected["categories"])
    assert rep[0]["verdict"] == "flag"


def test_git_function_never_passes_an_option_as_a_ref(hostile):
    repo, _ = hostile
    gd = str(repo / ".git")
    for bad in ("--output=/tmp/x", "-p", "--exec=sh"):
        with pytest.raises(InputError):
            git(gd, "rev-parse", "--verify", revs=[bad])
        with pytest.raises(InputError):
            resolve_commit(gd, bad)
        with pytest.raises(InputError):
            check_rev(bad)
    assert len(resolve_commit(gd, "pr")) == 40
    with pytest.raises(InputError):
        resolve_commit(gd, "does-not-exist")


# --- batch: a per-PR wall-clock limit ------------------------------------------------------------------------
def _fake_audit(pid_dir: Path, slow: set[int]):
    def audit(git_dir, pr, repo_url=None, filters=None, memo=None):
        (pid_dir / f"{pr}.pid").write_text(str(os.getpid()))
        if pr in slow:
            time.sleep(60)
        return [{"schema_version": 1, "pr": pr, "verdict": "clean", "categories": [], "findings": []}]

    return audit


def _dead(pid: int, within: float = 10.0) -> bool:
    """Gone, or a zombie nobody has reaped yet (it runs nothing either way)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.05)
    return False


def test_batch_times_out_one_pr_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "audit_pr", _fake_audit(tmp_path, {2}))
    out = tmp_path / "rows.jsonl"
    t0 = time.monotonic()
    rows = batch.run_batch("unused", [1, 2, 3, 4], output=str(out), jobs=2, pr_timeout=1.0)
    elapsed = time.monotonic() - t0
    by_pr = {r["pr"]: r for r in rows}
    assert set(by_pr) == {1, 2, 3, 4}
    assert by_pr[2]["verdict"] == "needs-human" and by_pr[2]["reason"] == "audit timed out after 1 s"
    assert all(by_pr[p]["verdict"] == "clean" for p in (1, 3, 4))
    assert [json.loads(line)["pr"] for line in out.read_text().splitlines()].count(2) == 1
    assert elapsed < 30, elapsed  # the 60 s audit was cut off, not waited for
    assert _dead(int((tmp_path / "2.pid").read_text()))  # the stuck worker was killed


def _crash_on_2(git_dir, pr, repo_url=None, filters=None, memo=None):
    if pr == 2:
        os._exit(3)
    return [{"schema_version": 1, "pr": pr, "verdict": "clean", "categories": [], "findings": []}]


def test_batch_worker_that_dies_is_a_row_not_a_stall(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "audit_pr", _crash_on_2)
    rows = batch.run_batch("unused", [1, 2, 3], output=str(tmp_path / "rows.jsonl"), jobs=1, pr_timeout=30)
    by_pr = {r["pr"]: r for r in rows}
    assert by_pr[2]["verdict"] == "needs-human" and "exit code 3" in by_pr[2]["reason"]
    assert by_pr[1]["verdict"] == by_pr[3]["verdict"] == "clean"


def test_batch_workers_do_not_outlive_a_killed_parent(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from audit import batch
        def slow(git_dir, pr, repo_url=None, filters=None, memo=None):
            Path({str(tmp_path)!r}, f"{{pr}}.pid").write_text(str(os.getpid()))
            time.sleep(120)
            return []
        batch.audit_pr = slow
        batch.run_batch("unused", [1, 2], output={str(tmp_path / "rows.jsonl")!r}, jobs=2, pr_timeout=300)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        pid_files = [tmp_path / "1.pid", tmp_path / "2.pid"]
        end = time.monotonic() + 60
        while not all(p.exists() and p.read_text() for p in pid_files) and time.monotonic() < end:
            time.sleep(0.05)
        workers = [int(p.read_text()) for p in pid_files]
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert all(_dead(pid) for pid in workers)
