"""Marker comments are found as `tokenize` finds them, from the parsed tree's string literals when it can tell
(checks/suppressions.py): the two readings agree on generated sources and on this repository's own."""

from __future__ import annotations

from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from audit.checks.suppressions import _comments, _comments_by_tokens, _comments_from_tree
from audit.load import parse as pyparse

ROOT = Path(__file__).resolve().parents[2]

_LINES = [
    "x = 1  # noqa: E501",
    's = "# noqa"',
    's = "# noqa"  # nosec',
    "t = '#'  # see # noqa",
    'u = f"{x!r} # noqa"  # pgolf: ignore',
    "v = 'é' + \"#\"  # noqa",  # columns are UTF-8 bytes
    "v = 'éééé' + \"#\"  # noqa",
    '"""doc # noqa"""',
    '"""doc',
    "# noqa inside a docstring",
    '"""',
    "w = ('a'  # noqa",
    "     'b')",
    "y = b'# nosec'",
    "def f():  # lint-ignore",
    "    return 1",
    "z = {'#': 1}  # NOSEMGREP",
    "# plain comment",
    "",
]


def _source(lines: list[str]) -> str | None:
    text = "\n".join(lines) + "\n"
    tree, error = pyparse.parse(text)
    return text if tree is not None and not error else None


@given(st.lists(st.sampled_from(_LINES), min_size=1, max_size=12))
@settings(max_examples=300, deadline=None)
@example(["w = ('a'  # noqa", "     'b')"])  # pieces joined across lines with a comment between them
@example(['"""doc', "# noqa inside a docstring", '"""'])
@example(["v = 'éééé' + \"#\"  # noqa"])
def test_comments_from_the_tree_are_the_comments_tokenize_reads(lines):
    text = _source(lines)
    if text is None:
        return  # not Python: only `tokenize` reads it
    from_tree = _comments_from_tree(text)
    if from_tree is not None:
        assert from_tree == _comments_by_tokens(text)
    assert _comments(text) == _comments_by_tokens(text)


def test_the_tree_answers_for_ordinary_sources():
    """On this repository's sources the tree reads the marker comments of most files (`tokenize` the others,
    which hold one in a docstring), and reads them as `tokenize` does."""
    texts = [p.read_text() for p in sorted(ROOT.glob("audit/**/*.py")) + sorted(ROOT.glob("tests/**/*.py"))]
    marked = [t for t in texts if _comments_by_tokens(t)]
    answered = [t for t in marked if _comments_from_tree(t) is not None]
    assert len(marked) >= 10 and len(answered) >= len(marked) // 2
    for text in answered:
        assert _comments_from_tree(text) == _comments_by_tokens(text)


def test_many_markers_and_many_strings_on_a_line_read_as_tokenize_reads_them():
    """Thousands of marked lines, and one line of thousands of `"#"` literals before its comment: the same
    comments (the tree's reading is linear in them: newlines counted between markers, a line's literals marked
    once)."""
    text = "x = 1  # noqa\n" * 3000 + "y = [" + ", ".join(['"#"'] * 3000) + "]  # noqa\n" + "z = 'é#'  # nosec\n"
    assert _comments_from_tree(text) is not None
    assert _comments(text) == _comments_by_tokens(text)
