"""SARIF 2.1.0 as plain dicts, in the subset GitHub code scanning accepts."""

from __future__ import annotations

from .. import __version__
from ..findings import Severity
from ..rules import RULES

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
DOCS = "https://github.com/pgolf/pgolf/blob/main/docs/rules/{code}.md"


def _uri(path: str, folder: str) -> str:
    path = path.replace(" (decoded)", "")
    if folder and folder not in (".",) and not path.startswith(folder):
        return f"{folder.rstrip('/')}/{path}".lstrip("./")
    return path


def _rules_meta(reports) -> list[dict]:
    meta = {}
    for r in RULES:
        meta[f"{r.CODE}/{r.NAME}"] = {
            "id": f"{r.CODE}/{r.NAME}",
            "name": r.NAME,
            "shortDescription": {"text": r.SUMMARY or r.NAME},
            "fullDescription": {"text": r.doc()[:1000] or r.NAME},
            "helpUri": DOCS.format(code=r.CODE),
            "properties": {"tags": [t for t in ("compliance", r.CATEGORY) if t]},
        }
    for rep in reports:  # package / claims / loader rules have no class: describe them from their id
        for f in rep.findings:
            if f.rule not in meta:
                meta[f.rule] = {
                    "id": f.rule,
                    "name": f.rule.split("/", 1)[-1],
                    "shortDescription": {"text": f.rule.split("/", 1)[-1].replace("-", " ")},
                    "properties": {"tags": [t for t in ("compliance", f.category) if t]},
                }
    return list(meta.values())


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
