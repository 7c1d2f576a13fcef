"""Load a record folder — from disk or straight from git objects — into a `Submission`.

Nothing here executes submission code. Files are read with a size bound, symlinks that leave the
folder are not followed, binary files are kept as bytes but never decoded as source.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import InputError
from ..findings import Finding

MAX_FILE_BYTES = 8_000_000  # bigger files are measured but not read (a 50 MB log must not hang us)
MAX_FOLDER_FILES = 2_000
LOG_SUFFIXES = (".log", ".txt", ".out")
NOT_LOGS = {"requirements.txt", "readme.txt", "cmakelists.txt", "license.txt"}


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
