"""Sources written for Python 3.12 parse on 3.11: each f-string that reuses its own quote (PEP 701) is blanked, on
the same line and at the same length, and the source is parsed again; anything else is a parse error."""

from __future__ import annotations

from audit.load import parse as pyparse


def test_a_source_that_parses_is_returned_as_it_is():
    text = 'x = f"{1}"\nprint(x)\n'
    tree, parsed, err = pyparse._parse_text(text)
    assert tree is not None and parsed == text and err is None


def test_each_pep701_fstring_is_blanked_in_place():
    text = 'd = {"k": 1}\na = f"{d["k"]}"\nb = 2\nc = f"{d["k"]} and {d["k"]}"\n'
    tree, parsed, err = pyparse._parse_text(text)
    assert tree is not None and err is None
    lines, fixed = text.split("\n"), parsed.split("\n")
    assert len(fixed) == len(lines) and [len(x) for x in fixed] == [len(x) for x in lines]
    assert fixed[0] == lines[0] and fixed[2] == lines[2] and fixed[1] != lines[1] and fixed[3] != lines[3]
    assert [n.lineno for n in tree.body] == [1, 2, 3, 4]


def test_other_errors_are_reported_with_their_line():
    tree, parsed, err = pyparse._parse_text("x = 1\ndef f(:\n")
    assert tree is None and parsed == "x = 1\ndef f(:\n" and err.startswith("line 2:")
    tree, _, err = pyparse._parse_text("x = 1\0\n")
    assert tree is None and ("null bytes" in err or err == "ValueError")  # which one depends on the 3.11 release
