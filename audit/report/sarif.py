"""SARIF 2.1.0 as plain dicts, in the subset GitHub code scanning ingests.

GitHub's rules, beyond the schema: every rule has `help` (shown on the alert page), URIs are relative to the
repository root (`%SRCROOT%`), results carry `partialFingerprints` so an alert survives unrelated edits, and the
run names its `automationDetails.id` so a PR's analysis replaces the previous one. Info findings are optional
(`-v`): they are not violations and would show as alerts.
"""

from __future__ import annotations

from .. import PROJECT_URL, __version__
from ..codes import Code
from ..findings import Severity
from ..rules import CODES

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
DOCS = PROJECT_URL + "/blob/main/docs/rules/{code}.md"
SRCROOT = "%SRCROOT%"


def repo_uri(path: str, folder: str) -> str:
    """A repository-relative URI: the folder (already relative to the repository root) joined with the path."""
    path = path.replace(" (decoded)", "")
    folder = folder.strip("/")
    if folder and folder != "." and not path.startswith(folder + "/"):
        path = f"{folder}/{path}"
    while path.startswith("./"):
        path = path[2:]
    return path


def _first_paragraph(doc: str) -> str:
    return doc.strip().split("\n\n", 1)[0].replace("\n", " ").strip()


def _help(c: Code) -> dict:
    parts = [c.summary or c.name]
    if c.doc:
        parts.append(c.doc.strip())
    if c.ruling:
        parts.append(f"Ruling: {c.ruling}")
    body = "\n\n".join(parts)
    return {"text": body, "markdown": body + f"\n\n[Documentation]({DOCS.format(code=c.code)})"}


def _rules_meta() -> list[dict]:
    # every registered code is described, whether or not it fired: a code-scanning UI lists them all
    return [
        {
            "id": c.rule_id,
            "name": c.name,
            "shortDescription": {"text": c.summary or c.name},
            "fullDescription": {"text": _first_paragraph(c.doc) or c.summary or c.name},
            "help": _help(c),
            "helpUri": DOCS.format(code=c.code),
            "defaultConfiguration": {"level": LEVEL[c.severity]},
            "properties": {"tags": [t for t in ("compliance", c.category) if t]},
        }
        for c in CODES
    ]


def _location(loc: dict, folder: str) -> dict:
    start, end = loc.get("start_line") or 0, loc.get("end_line") or 0
    region = {"startLine": max(start, 1)}
    if end >= start > 0:
        region["endLine"] = end
    if loc.get("snippet"):
        region["snippet"] = {"text": loc["snippet"]}
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": repo_uri(loc.get("path") or ".", folder), "uriBaseId": SRCROOT},
            "region": region,
        }
    }


def _result(f: dict, rep: dict) -> dict:
    folder = rep.get("folder") or ""
    res = {
        "ruleId": f["rule"],
        "level": LEVEL[Severity(f["severity"])],
        "message": {"text": f["message"]},
        "locations": [_location(f["location"], folder)],
        "partialFingerprints": {"pgolfFingerprint/v1": f["fingerprint"]},
        "properties": {
            "category": f.get("category"),
            "precision": f.get("confidence"),
            "reachability": f.get("reachability"),
            "verdict": rep.get("verdict"),
        },
    }
    if f.get("evidence"):
        res["relatedLocations"] = [
            {**_location(e, folder), "id": i, "message": {"text": e.get("note") or "evidence"}}
            for i, e in enumerate(f["evidence"])
        ]
    return res


def sarif_document(reports: list[dict], include_info: bool = False) -> dict:
    """SARIF for reports as their JSON documents (`AuditReport.to_dict()`, or batch rows)."""
    results = [
        _result(f, rep)
        for rep in reports
        for f in rep.get("findings", ())
        if include_info or f["severity"] != Severity.INFO.value
    ]
    prs = sorted({rep["pr"] for rep in reports if rep.get("pr") is not None})
    category = f"pr-{prs[0]}" if len(prs) == 1 else "folders"
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "pgolf-audit",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": PROJECT_URL,
                        "rules": _rules_meta(),
                    }
                },
                "automationDetails": {"id": f"pgolf-audit/{category}/"},
                "originalUriBaseIds": {SRCROOT: {"description": {"text": "The repository root."}}},
                "results": results,
                "properties": {
                    "verdicts": {rep.get("folder") or f"PR {rep.get('pr')}": rep.get("verdict") for rep in reports}
                },
            }
        ],
    }
