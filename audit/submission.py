"""Load a record folder — from disk or straight from git objects — into a `Submission`.

Nothing here executes submission code. Files are read with a size bound, symlinks that leave the
folder are not followed, binary files are kept as bytes but never decoded as source.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .findings import Confidence, Finding, Location, Severity

MAX_FILE_BYTES = 8_000_000  # bigger files are measured but not read (a 50 MB log must not hang us)
MAX_FOLDER_FILES = 2_000
LOG_SUFFIXES = (".log", ".txt", ".out")
NOT_LOGS = {"requirements.txt", "readme.txt", "cmakelists.txt", "license.txt"}


class InputError(Exception):
    """Unreadable or unusable input: reported as one line, exit code 2."""


@dataclass
class ResolvedSource:
    """One Python source as the auditor analyses it (wrappers decoded)."""

    path: str  # path of the shipped file, relative to the folder
    text: str  # the decoded source that rules analyse
    chain: tuple[str, ...] = ()  # how it was decoded: ("lzma", "base85", "exec") …
    role: str = "entry"  # entry | module | launcher
    parse_error: str | None = None
    virtual: bool = False  # True when `text` is a decoded payload, not the file as shipped


@dataclass
class Submission:
    name: str  # folder path as given (relative to the repo root when known)
    files: dict[str, bytes] = field(default_factory=dict)  # readable files, relative path -> bytes
    sizes: dict[str, int] = field(default_factory=dict)  # every regular file -> bytes on disk
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why not read)
    head_sha: str | None = None
    repo_url: str | None = None
    sources: list[ResolvedSource] = field(default_factory=list)
    entry: str | None = None  # the script that actually runs
    code_files: list[str] = field(default_factory=list)  # files whose bytes count as code
    load_findings: list[Finding] = field(default_factory=list)

    # --- text access -------------------------------------------------------------------------
    def text(self, path: str) -> str:
        return decode_text(self.files.get(path, b""))

    def find(self, name: str) -> str | None:
        """Case-insensitive lookup of a top-level file."""
        for p in self.files:
            if "/" not in p and p.lower() == name.lower():
                return p
        return None

    @property
    def readme_text(self) -> str:
        p = self.find("README.md")
        return self.text(p) if p else ""

    @property
    def submission_json_path(self) -> str | None:
        return self.find("submission.json")

    @property
    def submission_json(self) -> dict | None:
        p = self.submission_json_path
        if not p:
            return None
        try:
            data = json.loads(self.text(p))
        except (ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None

    @property
    def log_files(self) -> list[str]:
        out = []
        for p in sorted(self.files):
            base = PurePosixPath(p).name.lower()
            if base.endswith(LOG_SUFFIXES) and base not in NOT_LOGS and not is_binary(self.files[p]):
                out.append(p)
        return out

    @property
    def code_bytes(self) -> int:
        return sum(self.sizes.get(p, 0) for p in self.code_files)


def decode_text(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="replace")


def is_binary(data: bytes) -> bool:
    head = data[:4096]
    if b"\0" in head:
        return True
    if not head:
        return False
    # Text files are overwhelmingly printable; compressed blobs are not.
    bad = sum(1 for b in head if b < 9 or 13 < b < 32)
    return bad / len(head) > 0.1


# --- loading from disk ---------------------------------------------------------------------------
def load_folder(path: str | os.PathLike, name: str | None = None) -> Submission:
    root = Path(path)
    if not root.exists():
        raise InputError(f"{path}: no such file or directory")
    if not root.is_dir():
        raise InputError(f"{path}: not a directory (give a record folder or a repository checkout)")
    real_root = root.resolve()
    sub = Submission(name=name or str(path).rstrip("/"))
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in {".git", "__pycache__"})
        for fn in sorted(filenames):
            full = Path(dirpath) / fn
            rel = full.relative_to(root).as_posix()
            count += 1
            if count > MAX_FOLDER_FILES:
                sub.skipped.append((rel, "too many files in folder"))
                continue
            if full.is_symlink():
                target = full.resolve()
                if not target.is_relative_to(real_root):
                    sub.skipped.append((rel, "symlink leaves the folder; not followed"))
                    continue
            try:
                st = full.stat()
            except OSError as e:
                sub.skipped.append((rel, f"cannot stat: {e.strerror}"))
                continue
            if not full.is_file():
                sub.skipped.append((rel, "not a regular file"))
                continue
            sub.sizes[rel] = st.st_size
            if st.st_size > MAX_FILE_BYTES:
                sub.skipped.append((rel, f"{st.st_size} bytes; too large to read"))
                continue
            try:
                sub.files[rel] = full.read_bytes()
            except OSError as e:
                sub.skipped.append((rel, f"cannot read: {e.strerror}"))
    return sub


# --- loading from git objects --------------------------------------------------------------------
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


def load_git_folder(git_dir: str, ref: str, folder: str) -> Submission:
    """Read `folder` at `ref` from a (bare) repository without a checkout."""
    folder = folder.strip("/")
    sha = git(git_dir, "rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
    listing = git(git_dir, "ls-tree", "-r", "-l", "-z", sha, "--", folder + "/")
    sub = Submission(name=folder, head_sha=sha)
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
            sub.skipped.append((rel, "symlink; not followed"))
            continue
        n = int(size) if size.strip().isdigit() else 0
        sub.sizes[rel] = n
        if len(sub.sizes) > MAX_FOLDER_FILES:
            sub.skipped.append((rel, "too many files in folder"))
            continue
        if n > MAX_FILE_BYTES:
            sub.skipped.append((rel, f"{n} bytes; too large to read"))
            continue
        blobs.append((rel, obj))
    if not sub.sizes:
        raise InputError(f"{folder}: no files at {ref}")
    missing: list[str] = []
    sub.files = read_blobs(git_dir, blobs, missing)
    sub.skipped.extend((rel, "object absent from this git mirror") for rel in missing)
    return sub


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


def load_finding(rule: str, message: str, path: str, severity=Severity.WARNING, category=None) -> Finding:
    """A finding raised while loading (unreadable file, decompression bomb …)."""
    return Finding(
        rule=rule,
        category=category,
        severity=severity,
        confidence=Confidence.HIGH,
        message=message,
        location=Location(path=path),
    )
