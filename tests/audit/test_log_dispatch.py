"""The parser tries a line only against the patterns that can start with its first character: the dispatch
table must never drop a pattern that could match (then the first match would change)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from audit.logs.dispatch import first_chars
from audit.logs.patterns import BY_FIRST_CHAR, COMPILED_ORDER, OTHER_FIRST_CHAR


def first_match(text: str, candidates) -> str | None:
    return next((name for name, rx in candidates if rx.match(text)), None)


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
