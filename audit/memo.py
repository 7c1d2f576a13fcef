"""Reports of byte-identical folders, kept for a batch: a queue re-audits the same folder many times.

A record folder is often filed again unchanged (a re-opened PR, a fork that re-submits it): 344 of the queue's
2,348 record folders have the path and content of an earlier one. The audit is a function of the folder's bytes
(its files, the launchers the PR adds outside it, the base README) and the selected codes, so such a folder gets
the earlier report; only what names the commit (`head_sha`, `repo_url`) and the time are its own. A report with
a `PG000` finding (a stage that failed or ran out of time) depends on more than the bytes and is never kept.

The memo is a directory the batch's workers share (one JSON file per digest, written atomically), so a duplicate
is found whichever worker audited the first copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from . import codes
from .load.folder import Folder

_UNCACHEABLE = codes.INTERNAL_ERROR.code


def folder_digest(folder: Folder, filters: dict | None = None) -> str:
    """A digest of everything the audit reads from `folder`, and of the code filters it runs under."""
    h = hashlib.sha256()

    def put(*parts: str | bytes) -> None:
        for p in parts:
            b = p if isinstance(p, bytes) else p.encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)

    put("folder", folder.name)
    for path in sorted(folder.files):
        put("file", path, folder.files[path])
    for path in sorted(folder.sizes):
        put("size", path, str(folder.sizes[path]))
    for path, why in folder.skipped:
        put("skipped", path, why)
    for path in sorted(folder.outside_launchers):
        put("outside", path, folder.outside_launchers[path])
    put("base_readme", folder.base_readme)
    put("filters", json.dumps({k: sorted(v) for k, v in (filters or {}).items() if v}, sort_keys=True))
    return h.hexdigest()


class ReportMemo:
    """Report dicts by folder digest, one JSON file each in a directory the batch's workers share."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def get(self, digest: str) -> dict | None:
        try:
            return json.loads((self.directory / f"{digest}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, digest: str, report: dict) -> None:
        if any(str(f.get("rule", "")).startswith(_UNCACHEABLE) for f in report.get("findings", ())):
            return
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(report, f)
            os.replace(tmp, self.directory / f"{digest}.json")
        except OSError:  # a memo that cannot be written only costs time
            pass


def reuse(hit: dict, folder: Folder, seconds: float) -> dict:
    """An earlier report of the same bytes, as the report of `folder`."""
    own = {"head_sha": folder.head_sha, "repo_url": folder.repo_url, "seconds": seconds}
    return {k: own.get(k, v) for k, v in hit.items()}
