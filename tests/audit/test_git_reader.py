"""The long-lived `git cat-file --batch` behind `read_blobs`: the bytes a one-shot cat-file gives, one process per
(process, git dir) reused across calls, and fail-closed on death, hangs, forks and hostile object names."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit import batch
from audit.errors import InputError
from audit.load import git as gitmod
from audit.load.git import load_git_folder, read_blobs
from tests.support import ROOT

FOLDER = "records/track_10min_16mb/2026-01-01_A"
BINARY = bytes(range(256)) * 40 + b"\n\n0 blob 3\n"  # newlines and a header-shaped tail inside the content


def sh(cwd, *args) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "a",
        "GIT_AUTHOR_EMAIL": "a@x",
        "GIT_COMMITTER_NAME": "a",
        "GIT_COMMITTER_EMAIL": "a@x",
    }
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=env, text=True).stdout


def _main_then_pr(r: Path, top: str, text: str) -> None:
    """A repository at `r`: main with one top-level file, then a branch `pr` checked out."""
    r.mkdir()
    sh(r, "git", "init", "-q", "-b", "main")
    (r / top).write_text(text)
    sh(r, "git", "add", "-A")
    sh(r, "git", "commit", "-qm", "base")
    sh(r, "git", "checkout", "-q", "-b", "pr")


@pytest.fixture
def repo(tmp_path) -> str:
    """main with a README; branch `pr` adds a record folder and a launcher outside it that names the folder."""
    r = tmp_path / "pg"
    _main_then_pr(r, "README.md", "| leaderboard |\n")
    folder = r / FOLDER
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_text("print('hi')\n")
    (folder / "README.md").write_text("val_bpb 1.2\n")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blob.bin").write_bytes(BINARY)
    (r / "scripts").mkdir()
    (r / "scripts/run_A.sh").write_text(f"cd {FOLDER} && torchrun train_gpt.py\n")
    sh(r, "git", "add", "-A")
    sh(r, "git", "commit", "-qm", "record")
    return str(r / ".git")


@pytest.fixture(autouse=True)
def _no_leftover_readers():
    yield
    gitmod._close_readers()


@pytest.fixture
def spawns(monkeypatch) -> list[subprocess.Popen]:
    """Every reader process started, in order."""
    started: list[subprocess.Popen] = []
    real = gitmod._spawn

    def spy(argv, env):
        proc = real(argv, env)
        proc.spawn_env = env
        started.append(proc)
        return proc

    monkeypatch.setattr(gitmod, "_spawn", spy)
    return started


def _blobs(git_dir: str) -> list[tuple[str, str]]:
    out = sh(None, "git", f"--git-dir={git_dir}", "ls-tree", "-r", "pr", f"{FOLDER}/")
    return [(line.split("\t")[1], line.split()[2]) for line in out.splitlines()]


def _one_shot(git_dir: str, blobs: list[tuple[str, str]]) -> tuple[dict[str, bytes], list[str]]:
    """What a fresh `git cat-file --batch` per call gives (the reader's predecessor)."""
    out = subprocess.run(
        ["git", f"--git-dir={git_dir}", "cat-file", "--batch"],
        input="".join(f"{o}\n" for _, o in blobs).encode(),
        capture_output=True,
        check=True,
    ).stdout
    files, missing, pos = {}, [], 0
    for rel, _ in blobs:
        nl = out.index(b"\n", pos)
        header = out[pos:nl].split()
        if len(header) < 3:
            missing.append(rel)
            pos = nl + 1
            continue
        size = int(header[2])
        files[rel] = out[nl + 1 : nl + 1 + size]
        pos = nl + 1 + size + 1
    return files, missing


def _reader_of(git_dir: str) -> gitmod._BlobReader:
    return gitmod._READERS[(os.getpid(), git_dir)]


def _gone(pid: int, within: float = 10.0) -> bool:
    """Exited (or a zombie nobody reaped yet: it runs nothing)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.05)
    return False


def _fake_git(tmp_path: Path, monkeypatch, cat_file: str) -> str:
    """`git` on PATH that answers `config` with nothing and runs `cat_file` for cat-file; a fresh git dir."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = cat-file ] && {{ {cat_file}; }}; done\nexit 0\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    git_dir = tmp_path / "fake.git"
    git_dir.mkdir()
    return str(git_dir)


# --- same results ------------------------------------------------------------------------------------------
def test_same_bytes_as_a_one_shot_cat_file(repo, spawns):
    blobs = _blobs(repo) + [
        ("base readme", "main:README.md"),
        ("absent sha", "0" * 40),
        ("absent path", "main:nosuchfile.md"),
        ("empty name", ""),
    ]
    missing: list[str] = []
    files = read_blobs(repo, blobs, missing)
    want_files, want_missing = _one_shot(repo, blobs)
    assert files == want_files and missing == want_missing
    assert files[f"{FOLDER}/blob.bin"] == BINARY and files[f"{FOLDER}/empty.txt"] == b""
    assert files["base readme"] == b"| leaderboard |\n"
    assert missing == ["absent sha", "absent path", "empty name"]
    assert read_blobs(repo, []) == {} and read_blobs(repo, [], missing) == {}
    # "<name> missing" for a name with spaces has 3+ fields: still missing (a one-shot parse of it raised)
    spaced: list[str] = []
    assert read_blobs(repo, [("s", "main:no such 12"), ("r", "main:README.md")], spaced) == {
        "r": want_files["base readme"]
    }
    assert spaced == ["s"] and len(spawns) == 1


def test_the_reader_runs_with_the_same_hardening_as_git(repo, spawns, monkeypatch):
    sh(None, "git", f"--git-dir={repo}", "config", "filter.evil.smudge", "touch /tmp/pwned")
    gitmod._driver_overrides.cache_clear()
    seen = []
    real_run = gitmod._run

    def run(argv, what, input, cwd, env):
        seen.append((argv, env))
        return real_run(argv, what, input, cwd, env)

    monkeypatch.setattr(gitmod, "_run", run)
    gitmod.git(repo, "cat-file", "-t", revs=["main"])
    read_blobs(repo, [("r", "main:README.md")])
    git_argv, git_env = seen[-1]
    reader_argv, reader_env = spawns[0].args, spawns[0].spawn_env
    assert reader_argv[:-2] == git_argv[: len(reader_argv) - 2] and reader_argv[-2:] == ["cat-file", "--batch"]
    assert reader_env == git_env and reader_env["GIT_CONFIG_KEY_0"] == "filter.evil.smudge"
    assert "--no-pager" in reader_argv and "core.hooksPath=/dev/null" in reader_argv


# --- one process, reused ----------------------------------------------------------------------------------
def test_one_reader_serves_every_call_and_every_folder(repo, spawns):
    blobs = _blobs(repo)
    want, _ = _one_shot(repo, blobs)
    for _ in range(25):
        assert read_blobs(repo, blobs) == want
    for _ in range(3):  # the folder, its base README and the launcher outside it: all through the same reader
        sub = load_git_folder(repo, "pr", FOLDER)
        assert sub.files["blob.bin"] == BINARY and sub.base_readme == "| leaderboard |\n"
        assert list(sub.outside_launchers) == ["scripts/run_A.sh"]
    assert len(spawns) == 1 and spawns[0].poll() is None


def test_a_reader_killed_between_calls_is_replaced(repo, spawns):
    blobs = _blobs(repo)
    want, _ = _one_shot(repo, blobs)
    assert read_blobs(repo, blobs) == want
    spawns[0].kill()
    spawns[0].wait()
    assert read_blobs(repo, blobs) == want
    assert len(spawns) == 2


def test_a_reused_reader_found_dead_mid_read_is_retried_once(repo, spawns, monkeypatch):
    blobs = _blobs(repo)
    want, _ = _one_shot(repo, blobs)
    assert read_blobs(repo, blobs) == want
    os.kill(spawns[0].pid, signal.SIGKILL)
    assert _gone(spawns[0].pid)
    monkeypatch.setattr(spawns[0], "poll", lambda: None)  # it looks alive: the death shows up in the exchange
    assert read_blobs(repo, blobs) == want
    assert len(spawns) == 2


def test_a_fresh_reader_that_dies_mid_answer_is_one_input_error(tmp_path, monkeypatch, spawns):
    git_dir = _fake_git(tmp_path, monkeypatch, "printf '%040d blob 10\\nabc' 0; echo 'fatal: boom' >&2; exit 1")
    with pytest.raises(InputError) as e:
        read_blobs(git_dir, [("a", "1" * 40)])
    assert str(e.value) == "git cat-file --batch: fatal: boom"
    assert (os.getpid(), git_dir) not in gitmod._READERS and spawns[0].poll() is not None


def test_a_hung_reader_times_out_and_is_killed(tmp_path, monkeypatch, spawns, repo):
    monkeypatch.setattr(gitmod, "GIT_TIMEOUT_S", 0.5)
    git_dir = _fake_git(tmp_path, monkeypatch, "exec sleep 60")
    t0 = time.monotonic()
    with pytest.raises(InputError) as e:
        read_blobs(git_dir, [("a", "1" * 40)])
    assert str(e.value) == "git cat-file --batch: timed out after 0.5 s"
    assert time.monotonic() - t0 < 10
    assert _gone(spawns[0].pid) and (os.getpid(), git_dir) not in gitmod._READERS
    monkeypatch.undo()  # the real git again: a fresh reader
    want, _ = _one_shot(repo, _blobs(repo))
    assert read_blobs(repo, _blobs(repo)) == want


# --- hostile names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["\n", "\r", "\0"])
def test_an_object_name_that_would_inject_a_request_never_reaches_git(repo, spawns, bad):
    blobs = _blobs(repo)
    with pytest.raises(InputError) as e:
        read_blobs(repo, [("a", blobs[0][1]), ("b", f"{blobs[1][1]}{bad}main:README.md")])
    assert "\n" not in str(e.value) and not spawns  # refused before a reader was started or written to
    want, _ = _one_shot(repo, blobs)
    assert read_blobs(repo, blobs) == want  # the stream is in step
    with pytest.raises(InputError):
        read_blobs(repo, [(f"x{bad}", blobs[0][1] + bad)])
    assert read_blobs(repo, blobs) == want and len(spawns) == 1


# --- processes: fork, batch workers, exit ----------------------------------------------------------------
def test_a_forked_child_starts_its_own_reader_and_leaves_the_parents_alone(repo, spawns):
    blobs = _blobs(repo)
    want, _ = _one_shot(repo, blobs)
    assert read_blobs(repo, blobs) == want
    parent = _reader_of(repo)
    inherited_fd = parent.proc.stdin.fileno()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            try:
                os.fstat(inherited_fd)
                fd_closed = False
            except OSError:
                fd_closed = True
            ok = read_blobs(repo, blobs) == want
            mine = _reader_of(repo)
            os.write(wfd, json.dumps([fd_closed, ok, mine.proc.pid, mine.pid, os.getpid()]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        fd_closed, ok, child_reader, reader_owner, child = json.loads(f.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert fd_closed and ok and reader_owner == child
    assert child_reader != parent.proc.pid
    assert _reader_of(repo) is parent and parent.proc.poll() is None
    assert read_blobs(repo, blobs) == want and _reader_of(repo) is parent


def _report_reader(git_dir, pr, repo_url=None, filters=None, memo=None):
    """In the batch worker: read, then say which reader did it."""
    blobs = _blobs(git_dir)
    files = read_blobs(git_dir, blobs)
    reader = _reader_of(git_dir)
    return [{"pr": pr, "worker": os.getpid(), "reader": reader.proc.pid, "bytes": sum(map(len, files.values()))}]


def test_a_batch_worker_reads_through_one_reader_that_its_kill_takes_down(repo, tmp_path, monkeypatch):
    read_blobs(repo, _blobs(repo))  # the parent has a reader of its own before the worker forks
    parent_reader = _reader_of(repo)
    monkeypatch.setattr(batch, "audit_pr", _report_reader)
    w = batch._Worker(batch._mp_context(), repo, None, None, str(tmp_path))
    rows = []
    try:
        for pr in (1, 2, 3):
            w.conn.send((pr, None, None))  # (PR, its head and its diff when the batch read them)
            assert w.conn.poll(60)
            rows.extend(w.conn.recv())
        readers = {r["reader"] for r in rows}
        assert len(readers) == 1 and rows[0]["bytes"] > len(BINARY)
        (reader,) = readers
        assert reader != parent_reader.proc.pid and not _gone(reader, within=0.2)
        assert os.getpgid(reader) == rows[0]["worker"]  # in the worker's group
    finally:
        w.kill()  # killpg of the worker's group
    assert _gone(rows[0]["worker"]) and _gone(reader)
    assert parent_reader.proc.poll() is None and _reader_of(repo) is parent_reader


def test_readers_are_closed_at_exit(repo):
    script = (
        "import atexit, os, sys\n"
        "from audit.load import git\n"
        f"git.read_blobs({repo!r}, [('r', 'main:README.md')])\n"
        f"pid = git._READERS[(os.getpid(), {repo!r})].proc.pid\n"
        "atexit._run_exitfuncs()\n"
        "try:\n"
        "    os.kill(pid, 0)\n"
        "except ProcessLookupError:\n"
        "    print('closed')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "closed", proc.stderr


# --- the base README, read from the diff -------------------------------------------------------------------
@pytest.mark.parametrize(
    "change",
    ["untouched", "edited", "deleted", "main moved on"],
)
def test_the_base_readme_from_one_diff_is_the_one_at_the_merge_base(repo, change):
    work = Path(repo).parent
    if change == "edited":
        (work / "README.md").write_text("| my own leaderboard row |\n")
    elif change == "deleted":
        (work / "README.md").unlink()
    elif change == "main moved on":  # main's README changed after the fork: the base is still the fork point's
        sh(work, "git", "checkout", "-q", "main")
        (work / "README.md").write_text("| a later leaderboard |\n")
    if change != "untouched":
        sh(work, "git", "commit", "-qam", change)
        sh(work, "git", "checkout", "-q", "pr")
    head = sh(work, "git", "rev-parse", "pr").strip()
    fork = sh(work, "git", "merge-base", "main", "pr").strip()
    fused = gitmod.pr_diff(repo, head)
    stepwise = gitmod.pr_diff(repo, head, fork)  # an explicit base: merge-base, diff and base:README.md
    assert fused.base is None and fused.status == stepwise.status  # one git process, the same changes
    one = load_git_folder(repo, head, FOLDER, diff=fused)
    two = load_git_folder(repo, head, FOLDER, diff=stepwise)
    assert one.base_readme == two.base_readme == "| leaderboard |\n"
    assert gitmod.pr_folders(repo, head, diff=fused) == [FOLDER]


def test_a_readme_the_pr_adds_has_no_base(tmp_path):
    r = tmp_path / "pg"
    _main_then_pr(r, "LICENSE", "x\n")
    (r / FOLDER).mkdir(parents=True)
    (r / FOLDER / "train_gpt.py").write_text("print('hi')\n")
    (r / "README.md").write_text("| added |\n")
    sh(r, "git", "add", "-A")
    sh(r, "git", "commit", "-qm", "record")
    repo = str(r / ".git")
    fused = gitmod.pr_diff(repo, "pr")
    assert fused.base is None and fused.readme == ""
    assert load_git_folder(repo, "pr", FOLDER, diff=fused).base_readme == ""


def test_a_pr_with_a_launcher_outside_its_folder_is_read_in_two_git_processes(repo, monkeypatch):
    # the diff (merge-base inside), one listing of the folder and its launchers; the blobs through the reader
    work = Path(repo).parent
    (work / "scripts/big.sh").write_text(f"# {FOLDER}\n" + "#" * (gitmod.MAX_LAUNCHER_BYTES + 1) + "\n")
    sh(work, "git", "add", "-A")
    sh(work, "git", "commit", "-qm", "more launchers")
    head = sh(work, "git", "rev-parse", "pr").strip()
    gitmod.pr_diff(repo, head)  # the head and which ref is main: asked once per process
    calls: list[list[str]] = []
    real = gitmod._run
    monkeypatch.setattr(gitmod, "_run", lambda argv, *a: calls.append(argv) or real(argv, *a))
    sub = load_git_folder(repo, head, FOLDER, diff=gitmod.pr_diff(repo, head))
    assert [c[c.index(f"--git-dir={repo}") + 1] for c in calls] == ["diff", "ls-tree"]
    assert list(sub.outside_launchers) == ["scripts/run_A.sh"]  # too big to read
    assert sub.base_readme == "| leaderboard |\n" and sorted(sub.files) == [
        "README.md",
        "blob.bin",
        "empty.txt",
        "train_gpt.py",
    ]


def test_a_clone_whose_main_is_origin_main_gets_its_diff_in_one_process(repo, monkeypatch):
    work = Path(repo).parent
    main = sh(work, "git", "rev-parse", "main").strip()
    sh(work, "git", "update-ref", "refs/remotes/origin/main", main)
    sh(work, "git", "branch", "-D", "main")
    head = sh(work, "git", "rev-parse", "pr").strip()
    gitmod.pr_diff(repo, head)  # which ref is main: looked up once (refs/heads/main first)
    calls: list[list[str]] = []
    real = gitmod._run
    monkeypatch.setattr(gitmod, "_run", lambda argv, *a: calls.append(argv) or real(argv, *a))
    fused = gitmod.pr_diff(repo, head)
    assert [c[c.index(f"--git-dir={repo}") + 1] for c in calls] == ["diff"]
    assert fused.base is None and fused.status == gitmod.pr_diff(repo, head, main).status
    assert load_git_folder(repo, head, FOLDER, diff=fused).base_readme == "| leaderboard |\n"
