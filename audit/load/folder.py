"""Load a record folder from disk into a `Folder` (git objects: git.py): the first stage of the audit.

Nothing here executes submission code. Files are read with a size bound, symlinks that leave the
folder are not followed, binary files are kept as bytes but never decoded as source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path, PurePosixPath

from ..errors import InputError

MAX_FILE_BYTES = 8_000_000  # bigger files are measured but not read (a 50 MB log must not hang us)
MAX_FOLDER_FILES = 2_000
MAX_FOLDER_BYTES = 64_000_000  # read in total per folder (a 16 MB record is far below)
MAX_DEPTH = 24  # nested folders below the record folder
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
    # launchers the PR adds outside the folder that run it (repo-relative path -> bytes; git mode, load/git.py)
    outside_launchers: Mapping[str, bytes] = field(default_factory=dict)
    base_readme: str = ""  # the repository's README at the base the record is compared with (its leaderboard)

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

    # derived once per folder (the folder is frozen): stages and rules ask for these many times
    @cached_property
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

    @cached_property
    def log_files(self) -> tuple[str, ...]:
        out = []
        for p in sorted(self.files):
            base = PurePosixPath(p).name.lower()
            if base.endswith(LOG_SUFFIXES) and base not in NOT_LOGS and not is_binary(self.files[p]):
                out.append(p)
        return tuple(out)


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
    """Read a record folder: an iterative walk (no recursion, whatever the depth), symlinks never followed
    (one that leaves the folder is noted), bounded per file, per folder (files and bytes) and in depth."""
    root = Path(path)
    if not root.exists():
        raise InputError(f"{path}: no such file or directory")
    if not root.is_dir():
        raise InputError(f"{path}: not a directory (give a record folder or a repository checkout)")
    real_root = root.resolve()
    files: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    skipped: list[tuple[str, str]] = []
    read_bytes = 0
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        if len(sizes) + len(skipped) >= MAX_FOLDER_FILES:  # the rest is not even listed: one entry says so
            rest = sorted(f"{p.relative_to(root).as_posix()}/" if p != root else "./" for p, _ in [(folder, 0), *stack])
            skipped.append(
                (rest[0], f"more than {MAX_FOLDER_FILES:,} entries; this folder and {len(rest) - 1} more not listed")
            )
            break
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError as e:
            skipped.append((folder.relative_to(root).as_posix() + "/", f"cannot list: {e.strerror}"))
            continue
        for entry in entries:
            full = Path(entry.path)
            rel = full.relative_to(root).as_posix()
            if entry.is_dir(follow_symlinks=False):
                if entry.name in {".git", "__pycache__"}:
                    continue
                if depth + 1 > MAX_DEPTH:
                    skipped.append((rel + "/", f"nested deeper than {MAX_DEPTH} folders; not read"))
                else:
                    stack.append((full, depth + 1))
                continue
            if len(sizes) + len(skipped) >= MAX_FOLDER_FILES:
                here = folder.relative_to(root).as_posix() + "/" if folder != root else "./"
                skipped.append((here, f"more than {MAX_FOLDER_FILES:,} entries; the rest of this folder not listed"))
                break
            if entry.is_symlink():
                try:
                    inside = full.resolve(strict=True).is_relative_to(real_root)
                except RuntimeError:
                    skipped.append((rel, "symlink loop; not followed"))
                    continue
                except OSError:
                    skipped.append((rel, "dangling symlink"))
                    continue
                if not inside:
                    skipped.append((rel, "symlink leaves the folder; not followed"))
                    continue
            try:
                st = full.stat()  # a symlink inside the folder reads its target
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
            if read_bytes + st.st_size > MAX_FOLDER_BYTES:
                skipped.append((rel, f"the folder's first {MAX_FOLDER_BYTES:,} bytes were read; not this file"))
                continue
            try:
                files[rel] = full.read_bytes()
                read_bytes += len(files[rel])
            except OSError as e:
                skipped.append((rel, f"cannot read: {e.strerror}"))
    return Folder(name or str(path).rstrip("/"), files, sizes, tuple(sorted(skipped)))


def not_a_record_folder(folder: Folder) -> str | None:
    """Why `folder` is not one submission at all (nothing in it; several record folders and nothing of its
    own), else None. A record folder that merely lacks its code is audited: that is a finding, not a usage error."""
    if not folder.sizes and not folder.skipped:
        return "empty folder: nothing to audit"
    if any("/" not in p for p in folder.sizes):
        return None  # it has files of its own
    subs = sorted({p.split("/", 1)[0] for p in folder.sizes if p.endswith((".py", ".ipynb", "README.md"))})
    if len(subs) >= 2:
        shown = ", ".join(subs[:3]) + (f" and {len(subs) - 3} more" if len(subs) > 3 else "")
        return (
            f"holds {len(subs)} record folders ({shown}), not one: audit each, e.g. pgolf-audit {folder.name}/{subs[0]}"
        )
    return None
