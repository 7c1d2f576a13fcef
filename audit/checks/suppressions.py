"""Inline suppression comments in submitted code are reported, never obeyed (docs/rulings.md §4, lesson 10).

Comments are read with `tokenize`, so a marker inside a string literal is not mistaken for one, and each
finding names the statement the author tried to exempt.
"""

from __future__ import annotations

import io
import re
import tokenize

from .. import codes
from ..findings import Finding, Location
from ..load.resolve import ResolvedSource

MARKERS = re.compile(r"#\s*(noqa|nosec|lint-ignore|lint-fixme|nosemgrep|pgolf:\s*ignore)\b[^\n]*", re.I)


def _comments(text: str) -> list[tuple[int, str]]:
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT and MARKERS.search(tok.string):
                out.append((tok.start[0], tok.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # an unparsable source is reported elsewhere; what was read so far still counts
    return out


def suppression_findings(src: ResolvedSource) -> list[Finding]:
    if not MARKERS.search(src.text):
        return []
    lines = src.text.splitlines()
    findings = []
    for line, comment in _comments(src.text):
        code = lines[line - 1].split("#", 1)[0].strip() if 0 < line <= len(lines) else ""
        target = f" on `{code[:60]}`" if code else ""
        findings.append(
            codes.AUTHOR_SUPPRESSION.finding(
                f"author-claimed exemption `{comment.strip()}`{target} — reported, not obeyed",
                Location(
                    path=src.path + (" (decoded)" if src.virtual else ""),
                    start_line=line,
                    end_line=line,
                    snippet=lines[line - 1] if 0 < line <= len(lines) else "",
                ),
            )
        )
    return findings
