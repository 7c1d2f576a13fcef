"""Package checks (MLPerf package-checker style): required files, submission.json, bytes on disk."""

from __future__ import annotations

from ..challenge import ARTIFACT_CAP_BYTES
from ..findings import Finding, Severity
from ..load.folder import Submission, load_finding

SUBMISSION_PROCESS = "https://github.com/openai/parameter-golf#submission-process"

REQUIRED = ("README.md", "submission.json")
USUAL_KEYS = ("name", "val_bpb")  # every layout seen carries at least these (author/github_id/date vary)
SCORE_KEYS = ("val_bpb", "mean_val_bpb", "val_bpb_mean", "score")


def _f(code: str, message: str, path: str, severity=Severity.WARNING, category=None) -> Finding:
    return load_finding(code, message, path, severity, category).with_(ruling=SUBMISSION_PROCESS)


def package_findings(sub: Submission) -> list[Finding]:
    out: list[Finding] = []
    for name in REQUIRED:
        if not sub.find(name):
            out.append(_f("PG010/missing-file", f"required file {name} is missing", name))
    if sub.entry is None:
        out.append(_f("PG010/missing-file", "no Python entry script (train_gpt.py or another train*.py)", "train_gpt.py"))
    if not sub.log_files:
        out.append(_f("PG010/missing-file", "no training log in the folder (*.log / *.txt)", "."))
    p = sub.submission_json_path
    if p:
        data = sub.submission_json
        if data is None:
            out.append(_f("PG011/submission-json", "submission.json does not parse as a JSON object", p))
        else:
            missing = [k for k in USUAL_KEYS if k not in data and not (k == "val_bpb" and any(s in data for s in SCORE_KEYS))]
            if missing:
                out.append(
                    _f("PG011/submission-json", f"submission.json lacks the usual key(s): {', '.join(missing)}", p, Severity.INFO)
                )
    for path, why in sub.skipped:
        out.append(_f("PG012/file-skipped", f"{path}: {why}", path, Severity.INFO))
    if sub.code_bytes > ARTIFACT_CAP_BYTES:
        out.append(
            _f(
                "PG013/code-over-cap",
                f"code files alone are {sub.code_bytes:,} bytes, over the {ARTIFACT_CAP_BYTES:,}-byte cap",
                sub.entry or ".",
                Severity.ERROR,
                "size_over_cap",
            )
        )
    return out
