"""Inline suppression comments in submitted code are reported, never obeyed (RULES.md lesson 10).

A cheap regex pre-scan finds candidates; libcst (which keeps comments, unlike `ast`) then tells which statement
each comment is attached to, so the finding can name what the author tried to exempt.
"""

from __future__ import annotations

import re

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from .findings import Confidence, Finding, Location, Severity
from .submission import ResolvedSource

MARKERS = re.compile(r"#\s*(noqa|nosec|lint-ignore|lint-fixme|nosemgrep|pgolf:\s*ignore|type:\s*ignore\[pgolf)", re.I)


class _CommentCollector(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self) -> None:
        self.hits: list[tuple[int, str, str]] = []  # (line, comment, statement)

    def visit_Comment(self, node: cst.Comment) -> None:
        if MARKERS.search(node.value):
            pos = self.get_metadata(PositionProvider, node).start
            self.hits.append((pos.line, node.value, ""))


def suppression_findings(src: ResolvedSource) -> list[Finding]:
    if not MARKERS.search(src.text):
        return []
    lines = src.text.splitlines()
    hits: list[tuple[int, str]] = []
    try:
        wrapper = MetadataWrapper(cst.parse_module(src.text))
        collector = _CommentCollector()
        wrapper.visit(collector)
        hits = [(line, comment) for line, comment, _ in collector.hits]
    except Exception:  # libcst rejects some sources ast accepts: fall back to a line scan
        hits = [(n, m.group(0)) for n, line in enumerate(lines, 1) for m in [MARKERS.search(line)] if m]
    out = []
    for line, comment in hits:
        out.append(
            Finding(
                rule="PG020/author-suppression",
                category=None,
                severity=Severity.INFO,
                confidence=Confidence.HIGH,
                message=f"author-claimed exemption `{comment.strip()}` — reported, not obeyed",
                location=Location(
                    path=src.path + (" (decoded)" if src.virtual else ""),
                    start_line=line,
                    end_line=line,
                    snippet=lines[line - 1] if 0 < line <= len(lines) else "",
                ),
            )
        )
    return out
