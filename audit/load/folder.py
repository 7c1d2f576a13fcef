"""Load a record folder from disk into a `Folder` (git objects: git.py): the first stage of the audit.

Nothing here executes submission code. Files are read with a size bound, symlinks that leave the
folder are not followed, binary files are kept as bytes but never decoded as source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from ..errors import InputError

MAX_FILE_BYTES = 8_000_000  # bigger files are measured but not read (a 50 MB log must not hang us)
MAX_FOLDER_FILES = 2_000
LOG_SUFFIXES = (".log", ".txt", ".out")
NOT_LOGS = {"requirements.txt", "readme.txt", "cmakelists.txt", "license.txt"}


@dataclass(frozen=True)
class Folder:
    """What was read from a record folder: every later stage reads it, none changes it."""

    name: str  # folder path as given (relative to the repo root when known)
    files: Mapping[str, bytes] = field(default_factory=dict)  # readable files, relative path -> bytes
    sizes: Mapping[str, int] = field(default_factory=dict)  # every regular file -> bytes on disk
    skipped: tuple[tuple[str, str], ...] = ()  # (path, why not read)
    head_sha: str | None = None
    repo_url: str | None = None

    def at(self, head_sha: str | None, repo_url: str | None) -> Folder:
        """The same folder, placed at a commit of a repository (for permalinks)."""
        return replace(self, head_sha=head_sha, repo_url=repo_url)

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
def load_folder(path: str | os.PathLike, name: str | None = None) -> Folder:
    root = Path(path)
    if not root.exists():
        raise InputError(f"{path}: no such file or directory")
    if not root.is_dir():
        raise InputError(f"{path}: not a directory (give a record folder or a repository checkout)")
    real_root = root.resolve()
    files: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    skipped: list[tuple[str, str]] = []
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in {".git", "__pycache__"})
        for fn in sorted(filenames):
            full = Path(dirpath) / fn
            rel = full.relative_to(root).as_posix()
            count += 1
            if count > MAX_FOLDER_FILES:
                skipped.append((rel, "too many files in folder"))
                continue
            if full.is_symlink():
                target = full.resolve()
                if not target.is_relative_to(real_root):
                    skipped.append((rel, "symlink leaves the folder; not followed"))
                    continue
            try:
                st = full.stat()
            except OSError as e:
                skipped.append((rel, f"cannot stat: {e.strerror}"))
                continue
            if not full.is_file():
                skipped.append((rel, "not a regular file"))
                continue
            sizes[rel] = st.st_size
            if st.st_size > MAX_FILE_BYTES:
                skipped.append((rel, f"{st.st_size} bytes; too large to read"))
                continue
            try:
                files[rel] = full.read_bytes()
            except OSError as e:
                skipped.append((rel, f"cannot read: {e.strerror}"))
    return Folder(name or str(path).rstrip("/"), files, sizes, tuple(skipped))
