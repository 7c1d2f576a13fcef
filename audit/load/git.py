"""Which record folders a branch or PR adds — from a checkout or straight from git objects."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ..errors import InputError
from .folder import MAX_FILE_BYTES, MAX_FOLDER_FILES, Folder

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


# --- reading folders from git objects --------------------------------------------------------------------
def git(git_dir: str, *args: str, input: bytes | None = None, check: bool = True) -> bytes:
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        input=input,
        capture_output=True,
    )
    if check and proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(f"git {' '.join(args[:2])}: {msg[-1] if msg else 'failed'}")
    return proc.stdout


def load_git_folder(git_dir: str, ref: str, folder: str) -> Folder:
    """Read `folder` at `ref` from a (bare) repository without a checkout."""
    folder = folder.strip("/")
    sha = git(git_dir, "rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
    listing = git(git_dir, "ls-tree", "-r", "-l", "-z", sha, "--", folder + "/")
    sizes: dict[str, int] = {}
    skipped: list[tuple[str, str]] = []
    blobs: list[tuple[str, str]] = []
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _, path_b = entry.partition(b"\t")
        mode, kind, obj, size = meta.decode().split(None, 3)
        rel = path_b.decode(errors="replace")[len(folder) + 1 :]
        if kind != "blob":
            continue
        if mode == "120000":
            skipped.append((rel, "symlink; not followed"))
            continue
        n = int(size) if size.strip().isdigit() else 0
        sizes[rel] = n
        if len(sizes) > MAX_FOLDER_FILES:
            skipped.append((rel, "too many files in folder"))
            continue
        if n > MAX_FILE_BYTES:
            skipped.append((rel, f"{n} bytes; too large to read"))
            continue
        blobs.append((rel, obj))
    if not sizes:
        raise InputError(f"{folder}: no files at {ref}")
    missing: list[str] = []
    files = read_blobs(git_dir, blobs, missing)
    skipped.extend((rel, "object absent from this git mirror") for rel in missing)
    return Folder(folder, files, sizes, tuple(skipped), head_sha=sha)


def read_blobs(git_dir: str, blobs: list[tuple[str, str]], missing: list[str] | None = None) -> dict[str, bytes]:
    """Read many blobs with one `git cat-file --batch` process; absent objects go to `missing`."""
    if not blobs:
        return {}
    out = git(git_dir, "cat-file", "--batch", input="".join(f"{o}\n" for _, o in blobs).encode())
    files: dict[str, bytes] = {}
    pos = 0
    for rel, _ in blobs:
        nl = out.index(b"\n", pos)
        header = out[pos:nl].split()
        if len(header) < 3:  # "<sha> missing": a partial mirror lacks the object
            if missing is not None:
                missing.append(rel)
            pos = nl + 1
            continue
        size = int(header[2])
        files[rel] = out[nl + 1 : nl + 1 + size]
        pos = nl + 1 + size + 1
    return files
