"""The stable JSON document (schema_version 1): one object per record folder."""

from __future__ import annotations

import json

from .. import __version__

SCHEMA_VERSION = 1


def report_dict(rep) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "pgolf-audit", "version": __version__},
        "folder": rep.folder,
        "pr": rep.pr,
        "head_sha": rep.head_sha,
        "verdict": rep.verdict,
        "categories": list(rep.categories),
        "reason": rep.reason,
        "entry": rep.entry,
        "code_bytes": rep.code_bytes,
        "code_files": rep.code_files,
        "decode_chain": rep.decode_chain,
        "model_shape": rep.model_shape,
        "claims": rep.claims.to_dict() if rep.claims is not None else {},
        "rules_run": rep.rules_run,
        "seconds": round(rep.seconds, 4),
        "facts": rep.facts.to_dict() if rep.facts is not None else None,
        "findings": [f.to_dict() for f in rep.findings],
    }


def jsonl(rows: list[dict]) -> str:
    """One JSON document per line."""
    return "".join(json.dumps(r) + "\n" for r in rows)
