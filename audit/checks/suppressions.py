"""Inline suppression comments in submitted code are reported, never obeyed (docs/rulings.md §4, lesson 10).

Comments are read as `tokenize` reads them (from the parsed tree's string literals, or with `tokenize`), so a marker
inside a string literal is not mistaken for one, and each finding names the statement the author tried to exempt.
"""

from __future__ import annotations

import ast
import bisect
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
    marked: list[int] = []  # 0-based lines holding a marker, in order (newlines counted between matches: linear)
    line, at = 0, 0
    for m in MARKERS.finditer(text):
        line += text.count("\n", at, m.start())
        at = m.start()
        if not marked or marked[-1] != line:
            marked.append(line)
    one_line: dict[int, list[ast.AST]] = {}  # line -> the one-line string literals on it
    for n in pyparse.walk(tree):
        if n.__class__ is ast.JoinedStr or (n.__class__ is ast.Constant and isinstance(n.value, (str, bytes))):
            if n.lineno == n.end_lineno:
                one_line.setdefault(n.lineno - 1, []).append(n)
            elif bisect.bisect_left(marked, n.lineno - 1) < bisect.bisect_right(marked, n.end_lineno - 1):
                return None  # a string over lines covers a marked line
    out = []
    for i in marked:
        text_i = lines[i]
        in_string = bytearray(len(text_i))  # 1 where a string literal covers the character
        column = None if text_i.isascii() else _char_columns(text_i)  # the parser counts UTF-8 bytes
        for n in one_line.get(i, ()):
            lo, hi = n.col_offset, n.end_col_offset
            if column is not None:
                if hi >= len(column):
                    return None  # columns the line does not have: `tokenize` reads the text
                lo, hi = column[lo], column[hi]
            hi = min(hi, len(text_i))
            in_string[lo:hi] = b"\x01" * max(0, hi - lo)
        at = text_i.find("#")
        while at >= 0 and in_string[at]:
            at = text_i.find("#", at + 1)
        if at >= 0 and MARKERS.search(text_i, at):
            out.append((i + 1, text_i[at:]))
    return out


def _char_columns(line: str) -> list[int]:
    """UTF-8 byte offset -> character offset, for every byte offset of `line` (and its end)."""
    out: list[int] = []
    for k, ch in enumerate(line):
        out.extend([k] * len(ch.encode("utf-8", "surrogatepass")))
    out.append(len(line))
    return out


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
