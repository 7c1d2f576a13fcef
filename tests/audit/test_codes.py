"""The code registry: every code documented once, every finding emitted through a registered code."""

from __future__ import annotations

import ast
import re

import pytest

from audit.api import audit_folder
from audit.codes import REGISTRY, UNANALYSED, Code, select_codes
from audit.errors import InputError
from audit.findings import Location, Severity
from audit.rules import CODES, RULES
from audit.verdict import decide
from tests.support import EXAMPLES, ROOT

CODE_LITERAL = re.compile(r"^PG\d{3}(/|$)")


def test_every_rule_class_is_a_registered_code():
    for rule in RULES:
        assert REGISTRY.get(rule.CODE) is rule.CODE_INFO
        assert rule.CODE_INFO.origin == "rule"


def test_codes_are_unique_documented_and_sorted():
    assert [c.code for c in CODES] == sorted({c.code for c in CODES})
    for c in CODES:
        assert c.summary, c.code
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", c.name), c.name
        assert (ROOT / "docs" / "rules" / f"{c.code}.md").exists(), c.code


def test_registering_a_code_twice_differently_is_refused():
    first = REGISTRY.get("PG201")
    with pytest.raises(ValueError):
        REGISTRY.add(Code("PG201", "other-name", None, Severity.INFO, "x"))
    assert REGISTRY.get("PG201") is first


def test_no_code_is_a_string_literal_outside_the_registry():
    """Codes are emitted through their `Code` object; the only literals are the declarations."""
    offenders = []
    for path in sorted((ROOT / "audit").rglob("*.py")):
        if path.name == "codes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CODE" for t in node.targets):
                continue  # a rule class declares its code
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE_LITERAL.match(node.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    # rule classes keep `CODE = "PG1xx"` (skipped above): anything else is a literal code
    assert not [o for o in offenders if not re.search(r"'PG1\d\d'$", o)], offenders


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_every_finding_of_the_examples_has_a_registered_code(example):
    for f in audit_folder(str(EXAMPLES / example)).findings:
        code = REGISTRY.of(f)
        assert code is not None, f.rule
        assert f.rule == code.rule_id


def test_a_part_not_analysed_keeps_the_verdict_off_clean():
    f = REGISTRY.get("PG001").finding("x.py cannot be parsed", Location(path="x.py"))
    assert f.category == UNANALYSED
    v = decide([f])
    assert v.verdict == "needs-human"
    assert v.categories == ()


def test_the_verdict_reads_categories_not_code_prefixes():
    note = Code("PG999", "test-note", None, Severity.WARNING, "a warning without a category")
    assert decide([note.finding("only a note", Location(path="."))]).verdict == "clean"


@pytest.mark.parametrize(
    "selector,expected",
    [
        ("PG101", {"PG101"}),
        ("pg101", {"PG101"}),
        ("PG101/prequant-ttt", {"PG101"}),
        ("prequant-ttt", {"PG101"}),
        ("prequant_ttt", {"PG101"}),
        ("PG11", {"PG110", "PG111", "PG112"}),
    ],
)
def test_selectors_accept_codes_prefixes_names_and_categories_in_any_case(selector, expected):
    assert select_codes([selector], CODES) == expected


def test_a_prefix_selects_a_whole_family():
    assert select_codes(["PG1"], CODES) == {r.CODE for r in RULES}
    assert {"PG230", "PG231"} <= select_codes(["pg23"], CODES)


def test_an_unknown_selector_is_an_error_with_a_suggestion():
    with pytest.raises(InputError, match="did you mean prequant-ttt"):
        select_codes(["prequant-tt"], CODES)
    with pytest.raises(InputError, match="unknown rule selector 'PG999'"):
        select_codes(["PG999"], CODES)
    assert select_codes(None, CODES) is None


def test_evidence_that_could_not_be_checked_keeps_the_verdict_off_clean_only():
    no_logs = REGISTRY.get("PG006").finding("no training log", Location(path="."))
    assert decide([no_logs]).verdict == "needs-human"
    legal = REGISTRY.get("PG102").finding(
        "score-first TTT", Location(path="train_gpt.py"), legal_mechanism="score_first_ttt"
    )
    legal = legal.with_(severity=Severity.INFO)
    assert decide([no_logs, legal]).verdict == "legal_ttt"
