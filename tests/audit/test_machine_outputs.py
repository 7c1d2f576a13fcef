"""The machine outputs hold a contract: JSON and JSON Lines validate against schema/audit.schema.json, and SARIF
meets what GitHub code scanning ingests (rules with help and real doc links, repository-relative URIs,
fingerprints, an automation id), from any working directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from audit.batch import audit_pr, timeout_row
from audit.cli import main
from audit.engine import audit_submission
from audit.report.github import annotations
from audit.report.sarif import DOCS, sarif_document
from audit.rules import CODES
from tests.support import EXAMPLES, ROOT, make_submission

SCHEMA = json.loads((ROOT / "schema" / "audit.schema.json").read_text())
EXAMPLE_DIRS = sorted(p for p in EXAMPLES.iterdir() if p.is_dir())


def validator(ref: str = "#"):
    schema = SCHEMA if ref == "#" else {"$ref": ref, "$defs": SCHEMA["$defs"]}
    cls = jsonschema.validators.validator_for(SCHEMA)
    cls.check_schema(SCHEMA)
    return cls(schema)


def run(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main([*args])
    return exc.value.code, capsys.readouterr().out


@pytest.mark.parametrize("example", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_json_and_jsonl_of_every_example_validate(capsys, example):
    _, out = run(capsys, str(example), "--format", "json", "--exit-zero", "-v")
    validator().validate(json.loads(out))
    _, out = run(capsys, str(example), "--format", "jsonl", "--exit-zero")
    lines = out.splitlines()
    assert len(lines) == 1
    for line in lines:
        validator("#/$defs/line").validate(json.loads(line))


def test_a_collection_and_batch_rows_validate(tmp_path):
    needs_human = audit_submission(make_submission({"train_gpt.py": "print('hi')\n"}, name="records/x"))
    assert needs_human.verdict == "needs-human"
    flagged = audit_submission(
        make_submission({"train_gpt.py": (EXAMPLES / "prequant_ttt" / "train_gpt.py").read_text()})
    )
    doc = {"schema_version": 1, "submissions": [needs_human.to_dict(), flagged.to_dict(), timeout_row(7, 120.0)]}
    validator().validate(doc)
    # a PR that does not exist in a repository: one row that says so
    (row,) = audit_pr(str(tmp_path), 999)
    validator("#/$defs/line").validate(row)


def test_the_schema_refuses_what_is_not_the_contract():
    good = audit_submission(make_submission({"train_gpt.py": "print('hi')\n"})).to_dict()
    for broken in (
        {**good, "verdict": "probably-fine"},
        {**good, "categories": ["not_a_category"]},
        {k: v for k, v in good.items() if k != "findings"},
        {**good, "surprise": 1},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validator().validate(broken)


def _sarif(capsys, *args: str) -> dict:
    _, out = run(capsys, *args, "--format", "sarif", "--exit-zero")
    return json.loads(out)


def test_sarif_rules_carry_help_and_links_into_the_repository_docs(capsys):
    doc = _sarif(capsys, str(EXAMPLES / "prequant_ttt"))
    rules = doc["runs"][0]["tool"]["driver"]["rules"]
    assert {r["id"] for r in rules} == {c.rule_id for c in CODES}
    for r in rules:
        assert r["help"]["text"].strip() and r["help"]["markdown"].strip()
        assert (
            r["shortDescription"]["text"]
            and r["fullDescription"]["text"][-1] in ".)`:'\""
            or len(r["fullDescription"]["text"]) < 200
        )
        prefix, _ = DOCS.split("{code}")
        assert r["helpUri"].startswith(prefix)
        relative = r["helpUri"].split("/blob/main/", 1)[1]
        assert (ROOT / relative).is_file(), f"{r['helpUri']} points at no file of this repository"


@pytest.mark.parametrize("where", ["repo root", "elsewhere"])
def test_sarif_results_are_repository_relative_from_any_working_directory(capsys, monkeypatch, tmp_path, where):
    if where == "elsewhere":
        monkeypatch.chdir(tmp_path)
    else:
        monkeypatch.chdir(ROOT)
    target = EXAMPLES / "prequant_ttt"
    arg = str(target) if where == "elsewhere" else os.path.relpath(target, ROOT)
    run_ = _sarif(capsys, arg)["runs"][0]
    assert run_["automationDetails"]["id"].endswith("/")
    ids = {r["id"] for r in run_["tool"]["driver"]["rules"]}
    assert run_["results"]
    for res in run_["results"]:
        assert res["ruleId"] in ids and res["partialFingerprints"]["pgolfFingerprint/v1"]
        for loc in res["locations"] + res.get("relatedLocations", []):
            art = loc["physicalLocation"]["artifactLocation"]
            assert art["uriBaseId"] == "%SRCROOT%"
            assert art["uri"].startswith("examples/prequant_ttt/"), art["uri"]
            assert (ROOT / art["uri"]).is_file()


def test_sarif_info_findings_only_when_asked(capsys):
    rep = audit_submission(
        make_submission({"train_gpt.py": (EXAMPLES / "score_first_ttt" / "train_gpt.py").read_text()})
    )
    levels = {f.severity.value for f in rep.findings}
    assert "info" in levels
    quiet = sarif_document([rep.to_dict()])["runs"][0]["results"]
    loud = sarif_document([rep.to_dict()], include_info=True)["runs"][0]["results"]
    assert all(r["level"] != "note" for r in quiet) and any(r["level"] == "note" for r in loud)


@pytest.mark.skipif(
    not os.environ.get("PGOLF_SARIF_SCHEMA"), reason="PGOLF_SARIF_SCHEMA: the OASIS SARIF 2.1.0 schema file"
)
@pytest.mark.parametrize("example", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_sarif_validates_against_the_oasis_schema(capsys, example):
    schema = json.loads(Path(os.environ["PGOLF_SARIF_SCHEMA"]).read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(_sarif(capsys, str(example), "-v"))


def test_github_annotations_point_at_repository_files_and_cannot_be_hijacked():
    rep = audit_submission(
        make_submission({"train_gpt.py": (EXAMPLES / "prequant_ttt" / "train_gpt.py").read_text()}, name="records/r")
    ).to_dict()
    hostile = dict(rep["findings"][0], message="bad\n::error file=x.py::forged, 100%")
    out = annotations([{**rep, "findings": [hostile]}])
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("::error file=records/r/train_gpt.py,line=")
    assert lines[0].endswith("::bad%0A::error file=x.py::forged, 100%25")
    assert lines[1].startswith("::notice title=pgolf-audit records/r::flag: ")
