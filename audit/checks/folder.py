"""Package checks (MLPerf package-checker style): required files, submission.json, bytes on disk."""

from __future__ import annotations

from .. import codes
from ..challenge import ARTIFACT_CAP_BYTES
from ..codes import Code
from ..findings import Finding, Location, Severity
from ..load.folder import Folder
from ..load.resolve import Sources
from .claims import SCORE_KEYS

REQUIRED = ("README.md", "submission.json")
SOURCE_SUFFIXES = (".py", ".pyw", ".sh")  # what the auditor reads as code (native code: not yet)
NOTEBOOK_SUFFIXES = (".ipynb",)


def is_source_path(path: str) -> bool:
    return path.lower().endswith(SOURCE_SUFFIXES + NOTEBOOK_SUFFIXES)


USUAL_KEYS = ("name", "val_bpb")  # every layout seen carries at least these (author/github_id/date vary)


def _f(code: Code, message: str, path: str, severity: Severity | None = None) -> Finding:
    return code.finding(message, Location(path=path), severity=severity)


def package_findings(sub: Folder, sources: Sources) -> list[Finding]:
    out: list[Finding] = []
    for name in REQUIRED:
        if not sub.find(name):
            out.append(_f(codes.MISSING_FILE, f"required file {name} is missing", name))
    if sources.entry is None:
        out.append(
            _f(
                codes.NOTHING_TO_AUDIT,
                "no Python entry script (train_gpt.py or another *.py): no code was checked",
                ".",
            )
        )
    if not sub.log_files:
        out.append(_f(codes.NO_LOGS, "no training log in the folder (*.log / *.txt / *.out)", "."))
    p = sub.submission_json_path
    if p:
        data = sub.submission_json
        if data is None:
            out.append(_f(codes.SUBMISSION_JSON, "submission.json does not parse as a JSON object", p))
        else:
            missing = [
                k for k in USUAL_KEYS if k not in data and not (k == "val_bpb" and any(s in data for s in SCORE_KEYS))
            ]
            if missing:
                out.append(
                    _f(
                        codes.SUBMISSION_JSON,
                        f"submission.json lacks the usual key(s): {', '.join(missing)}",
                        p,
                        Severity.INFO,
                    )
                )
    for path, why in sub.skipped:
        # code it did not read may hold a mechanism, and so may a folder it did not list (a path ending in "/")
        if is_source_path(path) or path.endswith("/"):
            out.append(_f(codes.SOURCE_NOT_READ, f"{path}: {why}; its code was not analysed", path))
        else:
            out.append(_f(codes.FILE_SKIPPED, f"{path}: {why}", path, Severity.INFO))
    for path in sorted(sub.files):
        if path.lower().endswith(NOTEBOOK_SUFFIXES):
            out.append(_f(codes.SOURCE_NOT_READ, f"{path}: a notebook's cells are not analysed", path))
    if sources.code_bytes > ARTIFACT_CAP_BYTES:
        out.append(
            _f(
                codes.CODE_OVER_CAP,
                f"code files alone are {sources.code_bytes:,} bytes, over the {ARTIFACT_CAP_BYTES:,}-byte cap",
                sources.entry or ".",
            )
        )
    return out
