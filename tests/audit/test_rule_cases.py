"""Tests generated from every rule's VALID / INVALID cases (Fixit's pattern)."""

from __future__ import annotations

import pytest

from audit.engine import audit_submission
from audit.findings import Severity
from audit.rules import RULES
from audit.rules.base import Invalid, Valid
from tests.support import make_submission


def _run(rule_cls, case):
    sub = make_submission(case.files())
    rep = audit_submission(sub, select={rule_cls.CODE})
    return [f for f in rep.findings if f.rule.startswith(rule_cls.CODE)]


CASES = [
    pytest.param(r, c, kind, id=f"{r.CODE}-{kind}-{i}")
    for r in RULES
    for kind, cases in (("VALID", r.VALID), ("INVALID", r.INVALID))
    for i, c in enumerate(cases)
]


@pytest.mark.parametrize("rule_cls,case,kind", CASES)
def test_rule_case(rule_cls, case, kind):
    found = _run(rule_cls, case)
    want = case.severity or rule_cls.SEVERITY
    if kind == "VALID":
        # A valid case may produce info (e.g. "present but disabled"), never a finding at the rule's severity.
        bad = [f for f in found if f.severity.rank >= max(want.rank, Severity.WARNING.rank)]
        assert not bad, [f.message for f in bad]
    else:
        # The rule must reach the expected severity at the expected place, saying what it saw.
        at_severity = [f for f in found if f.severity is want]
        assert at_severity, [(f.severity, f.message) for f in found]
        assert any(
            f.location.path.endswith(case.path) and f.location.start_line == case.line and case.message in f.message
            for f in at_severity
        ), (
            f"expected a {want.value} finding at {case.path}:{case.line} containing {case.message!r}",
            [(f.location.path, f.location.start_line, f.message) for f in at_severity],
        )


def test_every_rule_has_cases_and_docs():
    for r in RULES:
        assert r.VALID and r.INVALID, r.CODE
        doc = r.doc()
        for heading in ("## What it does", "## Example", "## Compliant alternative", "## Known false positives"):
            assert heading in doc, (r.CODE, heading)
        assert r.SUMMARY


@pytest.mark.parametrize("rule_cls,case,kind", [c for c in CASES if c.values[2] == "INVALID"])
def test_invalid_case_location_is_in_the_case(rule_cls, case, kind):
    """`line` names a real line of the file `path` of the case (train_gpt.py or one of its logs)."""
    files = case.files()
    assert case.path in files, (case.path, sorted(files))
    n_lines = len(files[case.path].decode().splitlines())
    assert case.line is not None and 1 <= case.line <= n_lines, (case.path, case.line, n_lines)
    assert case.message.strip()


def test_invalid_requires_line_and_message():
    with pytest.raises(TypeError):
        Invalid("x = 1\n")
    with pytest.raises(TypeError):
        Invalid("x = 1\n", line=1)
    with pytest.raises(TypeError):
        Invalid("x = 1\n", message="something")
    with pytest.raises(TypeError):
        Invalid("x = 1\n", line=None, message="something")
    with pytest.raises(TypeError):
        Invalid("x = 1\n", line=1, message="  ")
    case = Invalid("x = 1\n", line=1, message="something", path="train.log")
    assert (case.line, case.message, case.path) == (1, "something", "train.log")
    assert Invalid("x = 1\n", line=1, message="m").path == "train_gpt.py"


def test_valid_refuses_a_location():
    with pytest.raises(TypeError):
        Valid("x = 1\n", line=1)
    with pytest.raises(TypeError):
        Valid("x = 1\n", message="m")


def test_codes_unique():
    codes = [r.CODE for r in RULES]
    assert len(codes) == len(set(codes))
