"""Text that comes from a submission (paths, names, snippets, messages that quote them) is escaped before it
reaches a markdown comment, so a file name cannot forge a verdict, a heading or the comment's hidden marker.

- `text(s)`: inline prose — markdown punctuation escaped, HTML comment markers and tags broken, one line.
- `code(s)`: an inline code span that the content cannot close (the fence is longer than any backtick run).
- `block(s, lang)`: a fenced block that the content cannot close.
Control and bidirectional-override characters are shown as `\\u....` escapes everywhere: they can reorder what
a reviewer sees (a "Trojan Source" name) or hide text.
"""

from __future__ import annotations

import re

# C0/C1 controls (tab kept for code blocks), and the Unicode bidi embedding/override/isolate marks.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
# Characters that open markup anywhere in a line (emphasis, code, links, HTML, tables, strikethrough) ...
_MD_PUNCT = re.compile(r"([\\`*_\[\]<>|~])")
# ... and those that open a block only at the start of a line (heading, list, quote, numbered list).
_LINE_START = re.compile(r"^(\s*)(\d*)([#+\-=>.)])")


def _shown(s: str) -> str:
    """Invisible characters shown as escapes."""
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", s)


def visible(s: str) -> str:
    """For code: invisible characters shown, and HTML comment delimiters broken even there, so that a bot
    reading the raw comment for our `<!-- pgolf-audit … -->` marker finds only ours."""
    return _shown(s).replace("<!--", "<\\!--").replace("-->", "--\\>")


def text(s: str) -> str:
    """Inline markdown text: every markdown punctuation character escaped, newlines folded to spaces."""
    s = _MD_PUNCT.sub(r"\\\1", _shown(" ".join(str(s).split()))).replace("<!", "<\\!")
    return _LINE_START.sub(lambda m: m.group(1) + m.group(2) + "\\" + m.group(3), s)


def code(s: str) -> str:
    """An inline code span: backticks in the content cannot end it, newlines cannot start a new block."""
    s = visible(" ".join(str(s).split()))
    if not s:
        return "` `"
    longest = max((len(r) for r in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def block(s: str, lang: str = "") -> str:
    """A fenced code block whose fence is longer than any backtick run inside; `<!--` cannot open a comment
    (markdown does not read HTML inside a fence, but the fence must not be closable from inside)."""
    body = "\n".join(visible(line) for line in str(s).splitlines())
    longest = max((len(r) for r in re.findall(r"`{3,}", body)), default=2)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{body}\n{fence}"


def lang_of(path: str) -> str:
    """The fence language for a file: python for .py, json, markdown, shell; plain text for logs."""
    low = path.lower().replace(" (decoded)", "")
    for suffix, lang in ((".py", "python"), (".json", "json"), (".md", "markdown"), (".sh", "bash"), (".toml", "toml")):
        if low.endswith(suffix):
            return lang
    return "text"
