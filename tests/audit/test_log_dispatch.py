"""The parser tries a line only against the patterns that can start with its first character: the dispatch
table must never drop a pattern that could match (then the first match would change)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.logs.dispatch import first_chars, required_literal
from audit.logs.patterns import BY_FIRST_CHAR, COMPILED_ORDER, OTHER_FIRST_CHAR


def first_match(text: str, candidates) -> str | None:
    """The first pattern that matches, as the parser tries them: skipping one whose literal the line lacks."""
    return next((c[0] for c in candidates if (len(c) < 3 or c[2] is None or c[2] in text) and c[1].match(text)), None)


def test_first_characters_read_from_the_pattern():
    assert first_chars(re.compile(r"^stopping_early:")) == {"s"}
    assert first_chars(re.compile(r"^(?:step:\s*)?\d+/")) == {"s", *"0123456789"}
    assert first_chars(re.compile(r"^(?i:peak memory)")) == {"p", "P"}
    assert first_chars(re.compile(r"^\[(?:EVAL|ROUNDTRIP)\]|^x")) == {"[", "x"}
    negated = first_chars(re.compile(r"^[^ab]"))
    assert negated is not None and "a" not in negated and "c" in negated
    assert first_chars(re.compile(r"^.*?seed=")) is None  # any character
    assert first_chars(re.compile(r"^(?:x)?$")) is None  # can match the empty line
    assert "\x1c" in first_chars(re.compile(r"^\s+x"))  # ASCII whitespace beyond the usual six


def test_required_literals_read_from_the_pattern():
    assert required_literal(re.compile(r"^stopping_early:\s*(\d+)")) == "stopping_early:"
    # every alternative holds "seed": a line without it matches none of them
    assert required_literal(re.compile(r"^(?:seed[:=]\d+|\s+seed:\d+|.*?\bRUN\s+seed=(\d+))")) == "seed"
    assert required_literal(re.compile(r"^(?:abc)+x")) == "abc"  # a repeat that runs at least once
    assert required_literal(re.compile(r"^(?:abcd)?x")) is None  # an optional part is not required
    assert required_literal(re.compile(r"^(?:abcd|\d+)")) is None  # one alternative has no literal
    assert required_literal(re.compile(r"^(?i:peak memory)")) is None  # case-insensitive: not a plain substring
    assert required_literal(re.compile(r"^ab\d+")) is None  # too short to be worth a test


SAMPLE_LINES = [
    "step:100/20000 train_loss:2.3456 train_time:12345ms step_avg:82.1ms",
    "step:4000/20000 val_loss:2.0123 val_bpb:1.1923 train_time:300000ms",
    "final_int8_zlib_roundtrip_exact val_loss:2.01234567 val_bpb:1.19234567",
    "Serialized model int8+zlib: 15830000 bytes",
    "  seed: 42",
    "seed=1337",
    "=== RUN 2 seed=7",
    "Peak memory: 10240 MiB",
    '  "val_bpb": 1.0812,',
    "[EVAL] val_bpb (sliding): 1.1012",
    "stopping_early: wallclock_cap train_time:600123ms step:7000/20000",
    "world_size:8 grad_accum_steps:1",
]


def test_the_dispatch_finds_the_first_match_of_the_full_scan_on_real_shapes():
    for text in SAMPLE_LINES:
        assert first_match(text, BY_FIRST_CHAR.get(text[0], OTHER_FIRST_CHAR)) == first_match(text, COMPILED_ORDER)


ALPHABET = st.sampled_from(list("sSteEvV _:=/.0123456789[]\"'|+-xkMBmb") + ["val_bpb", "seed", "bytes", "\x1c", "é"])


@settings(max_examples=400, deadline=None)
@given(st.lists(ALPHABET, min_size=1, max_size=30).map("".join))
def test_the_dispatch_agrees_with_the_full_scan_on_any_line(text):
    assert first_match(text, BY_FIRST_CHAR.get(text[0], OTHER_FIRST_CHAR)) == first_match(text, COMPILED_ORDER)


def _with_literals():
    return [(name, rx, lit) for name, rx, lit in OTHER_FIRST_CHAR if lit is not None]


@pytest.mark.parametrize("name,rx,lit", _with_literals(), ids=[n for n, _, _ in _with_literals()])
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_match_of_a_pattern_holds_its_required_literal(name, rx, lit, data):
    text = data.draw(st.from_regex(rx))
    if rx.match(text):
        assert lit in text, (name, text)
