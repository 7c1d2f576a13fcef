"""Inline suppression comments in submitted code are reported, never obeyed (docs/rulings.md §4, lesson 10).

Comments are read as `tokenize` reads them (from the parsed tree's string literals, or with `tokenize`), so a marker
inside a string literal is not mistaken for one, and each finding names the statement the author tried to exempt.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize

from .. import codes
from ..findings import Finding, Location
from ..load import parse as pyparse
from ..load.resolve import ResolvedSource

MARKERS = re.compile(r"#\s*(noqa|nosec|lint-ignore|lint-fixme|nosemgrep|pgolf:\s*ignore)\b[^\n]*", re.I)


def _comments(text: str) -> list[tuple[int, str]]:
    """(line, comment) of every comment holding a marker, as `tokenize` reads them. From the parsed tree when the
    text parsed as it is: a marker's `#` starts a comment unless it lies in a string literal, and the comment is
    the rest of the line from the first `#` outside one. Read with `tokenize` (a pass over the whole text in
    Python) when the tree cannot tell: no tree, a repaired text, `\r` line ends, or a marker inside a string
    that spans lines (a docstring, or pieces joined across lines with a comment between them)."""
    found = _comments_from_tree(text)
    return _comments_by_tokens(text) if found is None else found


def _comments_from_tree(text: str) -> list[tuple[int, str]] | None:
    if "\r" in text:
        return None
    tree, error = pyparse.parse(text)
    if tree is None or error or pyparse.repaired(text) != text:
        return None
    lines = text.split("\n")
    marked = sorted({text.count("\n", 0, m.start()) for m in MARKERS.finditer(text)})
    strings = [
        n
        for n in pyparse.walk(tree)
        if n.__class__ is ast.JoinedStr or (n.__class__ is ast.Constant and isinstance(n.value, (str, bytes)))
    ]
    out = []
    for i in marked:
        line = lines[i]
        inside = [_char_span(n, i + 1, lines) for n in strings if n.lineno <= i + 1 <= n.end_lineno]
        if any(a is None for a in inside):
            return None  # a string that spans lines covers this one
        at = line.find("#")
        while at >= 0 and any(lo <= at < hi for lo, hi in inside):
            at = line.find("#", at + 1)
        if at >= 0 and MARKERS.search(line, at):
            out.append((i + 1, line[at:]))
    return out


def _char_span(node: ast.AST, lineno: int, lines: list[str]) -> tuple[int, int] | None:
    """The characters of line `lineno` that a one-line string literal covers; None for a literal over lines."""
    if node.lineno != node.end_lineno:
        return None
    line = lines[lineno - 1]
    if line.isascii():
        return node.col_offset, node.end_col_offset
    raw = line.encode("utf-8")  # the parser's columns count UTF-8 bytes
    return len(raw[: node.col_offset].decode("utf-8", "replace")), len(
        raw[: node.end_col_offset].decode("utf-8", "replace")
    )


def _comments_by_tokens(text: str) -> list[tuple[int, str]]:
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
