"""SARIF 2.1.0 as plain dicts, in the subset GitHub code scanning accepts."""

from __future__ import annotations

from .. import __version__
from ..findings import Severity
from ..rules import CODES

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
DOCS = "https://github.com/pgolf/pgolf/blob/main/docs/rules/{code}.md"


def _uri(path: str, folder: str) -> str:
    path = path.replace(" (decoded)", "")
    if folder and folder not in (".",) and not path.startswith(folder):
        return f"{folder.rstrip('/')}/{path}".lstrip("./")
    return path


def _rules_meta(reports) -> list[dict]:
    del reports  # every registered code is described, whether or not it fired
    return [
        {
            "id": c.rule_id,
            "name": c.name,
            "shortDescription": {"text": c.summary or c.name},
            "fullDescription": {"text": c.doc[:1000] or c.summary or c.name},
            "helpUri": DOCS.format(code=c.code),
            "properties": {"tags": [t for t in ("compliance", c.category) if t]},
        }
        for c in CODES
    ]


def _location(loc, folder: str) -> dict:
    region = {"startLine": max(loc.start_line, 1)}
    if loc.end_line >= loc.start_line > 0:
        region["endLine"] = loc.end_line
    if loc.snippet:
        region["snippet"] = {"text": loc.snippet}
    return {"physicalLocation": {"artifactLocation": {"uri": _uri(loc.path, folder)}, "region": region}}


def sarif_document(reports) -> dict:
    results = []
    for rep in reports:
        for f in rep.findings:
            res = {
                "ruleId": f.rule,
                "level": LEVEL[f.severity],
                "message": {"text": f.message},
                "locations": [_location(f.location, rep.folder)],
                "partialFingerprints": {"pgolfFingerprint/v1": f.fingerprint},
                "properties": {
                    "category": f.category,
                    "precision": {"high": "high", "medium": "medium", "low": "low"}[f.confidence.value],
                    "reachability": f.reachability.value,
                    "verdict": rep.verdict,
                },
            }
            if f.evidence:
                res["relatedLocations"] = [
                    {**_location(e, rep.folder), "id": i, "message": {"text": e.note or "evidence"}}
                    for i, e in enumerate(f.evidence)
                ]
            results.append(res)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "pgolf-audit",
                        "version": __version__,
                        "informationUri": "https://github.com/pgolf/pgolf",
                        "rules": _rules_meta(reports),
                    }
                },
                "results": results,
            }
        ],
    }
