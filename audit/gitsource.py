"""Which record folders a branch or PR adds — from a checkout or straight from git objects."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .submission import InputError, git

_RECORD = re.compile(r"^(records/track_[^/]+/[^/]+|records/(?!track_)[^/]+)/")


def record_folder_of(path: str) -> str | None:
    m = _RECORD.match(path)
    return m.group(1) if m else None


def _default_base(git_dir: str, head: str) -> str:
    cands = ("refs/heads/main", "refs/remotes/origin/main", "main", "origin/main")
    for cand in cands:
        out = git(git_dir, "merge-base", cand, head, check=False).decode().strip()
        if out:
            return out
    for cand in cands:  # unrelated histories (a PR from a re-created fork): diff against main itself
        out = git(git_dir, "rev-parse", "--verify", "--quiet", f"{cand}^{{commit}}", check=False).decode().strip()
        if out:
            return out
    raise InputError("cannot find main or origin/main to diff against; pass --base")


def _folders(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        f = record_folder_of(n)
        if f and f not in out:
            out.append(f)
    return out


def pr_folders(git_dir: str, head: str, base: str | None = None) -> list[str]:
    """Record folders the PR itself adds. A fork may carry folders merged in from other people's branches;
    keep the ones whose commits share the head commit's author (the submitter), else all added ones."""
    base = base or _default_base(git_dir, head)
    status = git(git_dir, "diff", "--name-status", "--no-renames", f"{base}..{head}", "--", "records/").decode()
    added, changed = [], []
    for line in status.splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        if parts[0] == "D":
            continue  # a folder the PR deletes is not a submission
        (added if parts[0] == "A" else changed).append(parts[1])
    folders = _folders(added) or _folders(changed)
    if len(folders) <= 1:
        return folders
    author = git(git_dir, "log", "-1", "--format=%ae", head).decode().strip()
    log = git(git_dir, "log", "--format=@@%ae", "--name-only", f"{base}..{head}", "--", "records/").decode()
    mine: list[str] = []
    current = ""
    for line in log.splitlines():
        if line.startswith("@@"):
            current = line[2:]
        elif line and current == author:
            f = record_folder_of(line)
            if f in folders and f not in mine:
                mine.append(f)
    return mine or folders


def checkout_folders(repo: Path, base: str | None = None) -> tuple[str, list[str]]:
    """Folders a checked-out branch adds or changes (committed, staged, modified or untracked)."""
    git_dir = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--absolute-git-dir"], capture_output=True, text=True
    ).stdout.strip()
    if not git_dir:
        raise InputError(f"{repo}: not a git checkout")
    head = git(git_dir, "rev-parse", "HEAD").decode().strip()
    base = base or _default_base(git_dir, head)
    diff = subprocess.run(
        ["git", "-C", str(repo), "diff", "--name-only", base, "--", "records/"], capture_output=True, text=True
    ).stdout.splitlines()
    untracked = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "--others", "--exclude-standard", "--", "records/"],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    folders = [f for f in _folders(diff + untracked) if (repo / f).is_dir()]
    return head, folders


def list_prs(git_dir: str) -> list[int]:
    refs = git(git_dir, "for-each-ref", "--format=%(refname)", "refs/pull/").decode().split()
    nums = sorted({int(m.group(1)) for r in refs for m in [re.match(r"refs/pull/(\d+)/head$", r)] if m})
    return nums
