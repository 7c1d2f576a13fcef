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


def _uri(path: str, folder: str) -> str:
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


def _location(loc, folder: str) -> dict:
    region = {"startLine": max(loc.start_line, 1)}
    if loc.end_line >= loc.start_line > 0:
        region["endLine"] = loc.end_line
    if loc.snippet:
        region["snippet"] = {"text": loc.snippet}
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": _uri(loc.path, folder), "uriBaseId": SRCROOT},
            "region": region,
        }
    }


def _result(f, rep) -> dict:
    res = {
        "ruleId": f.rule,
        "level": LEVEL[f.severity],
        "message": {"text": f.message},
        "locations": [_location(f.location, rep.folder)],
        "partialFingerprints": {"pgolfFingerprint/v1": f.fingerprint},
        "properties": {
            "category": f.category,
            "precision": f.confidence.value,
            "reachability": f.reachability.value,
            "verdict": rep.verdict,
        },
    }
    if f.evidence:
        res["relatedLocations"] = [
            {**_location(e, rep.folder), "id": i, "message": {"text": e.note or "evidence"}}
            for i, e in enumerate(f.evidence)
        ]
    return res


def sarif_document(reports, include_info: bool = False) -> dict:
    results = [
        _result(f, rep) for rep in reports for f in rep.findings if include_info or f.severity is not Severity.INFO
    ]
    prs = sorted({rep.pr for rep in reports if rep.pr is not None})
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
                "properties": {"verdicts": {rep.folder: rep.verdict for rep in reports}},
            }
        ],
    }
