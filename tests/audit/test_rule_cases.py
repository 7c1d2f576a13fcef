"""Tests generated from every rule's VALID / INVALID cases (Fixit's pattern)."""

from __future__ import annotations

import pytest

from audit.engine import audit_submission
from audit.findings import Severity
from audit.rules import RULES
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
        assert any(f.severity is want for f in found), [(f.severity, f.message) for f in found]


def test_every_rule_has_cases_and_docs():
    for r in RULES:
        assert r.VALID and r.INVALID, r.CODE
        doc = r.doc()
        for heading in ("## What it does", "## Example", "## Compliant alternative", "## Known false positives"):
            assert heading in doc, (r.CODE, heading)
        assert r.SUMMARY


def test_codes_unique():
    codes = [r.CODE for r in RULES]
    assert len(codes) == len(set(codes))
