"""The README's commands and every output format, through the real console script."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from tests.support import EXAMPLES

EXPECTED = {
    "clean_baseline": ("clean", [], 0),
    "score_first_ttt": ("legal_ttt", [], 0),
    "prequant_ttt": ("flag", ["prequant_ttt"], 1),
    "lzma_wrapped_ttt": ("flag", ["prequant_ttt"], 1),
}

# A deliberately small structural schema of the SARIF 2.1.0 subset GitHub code scanning reads.
SARIF_SCHEMA = {
    "type": "object",
    "required": ["version", "runs", "$schema"],
    "properties": {
        "version": {"const": "2.1.0"},
        "runs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["tool", "results"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name", "rules"],
                                "properties": {
                                    "rules": {
                                        "type": "array",
                                        "items": {"type": "object", "required": ["id", "shortDescription"]},
                                    }
                                },
                            }
                        },
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["ruleId", "level", "message", "locations", "partialFingerprints"],
                            "properties": {
                                "level": {"enum": ["error", "warning", "note", "none"]},
                                "message": {"type": "object", "required": ["text"]},
                                "locations": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["physicalLocation"],
                                        "properties": {
                                            "physicalLocation": {
                                                "type": "object",
                                                "required": ["artifactLocation", "region"],
                                                "properties": {
                                                    "region": {
                                                        "type": "object",
                                                        "required": ["startLine"],
                                                        "properties": {"startLine": {"type": "integer", "minimum": 1}},
                                                    }
                                                },
                                            }
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_json_verdict(name):
    verdict, cats, code = EXPECTED[name]
    proc = run(str(EXAMPLES / name), "--format", "json")
    assert proc.returncode == code, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema_version"] == 1
    assert doc["verdict"] == verdict
    assert doc["categories"] == cats
    for f in doc["findings"]:
        assert set(f) >= {
            "rule",
            "category",
            "severity",
            "confidence",
            "message",
            "location",
            "reachability",
            "evidence",
            "ruling",
        }
        assert set(f["location"]) >= {"path", "start_line", "end_line"}
    assert "Traceback" not in proc.stderr


def test_flag_names_lines_and_evidence():
    doc = json.loads(run(str(EXAMPLES / "prequant_ttt"), "--format", "json").stdout)
    err = [f for f in doc["findings"] if f["severity"] == "error"]
    assert err and err[0]["rule"] == "PG101/prequant-ttt"
    assert err[0]["location"]["start_line"] > 0
    assert err[0]["evidence"], "a flag must carry its evidence chain"


def test_wrapper_decoded_and_run_command_override():
    doc = json.loads(run(str(EXAMPLES / "lzma_wrapped_ttt"), "--format", "json").stdout)
    assert doc["decode_chain"]["train_gpt.py"] == ["base85", "lzma", "exec"]
    err = [f for f in doc["findings"] if f["severity"] == "error"][0]
    assert err["reachability"] == "enabled-by-run-command"
    assert "README" in err["reachability_reason"]


def test_markdown_review_comment():
    proc = run(
        str(EXAMPLES / "prequant_ttt"),
        "--format",
        "markdown",
        "--repo-url",
        "https://github.com/openai/parameter-golf",
        "--head-sha",
        "abc123",
    )
    md = proc.stdout
    assert md.splitlines()[:2] == ["<!-- pgolf-audit:review -->", "<!-- pgolf-audit v1 head=abc123 verdict=flag -->"]
    assert md.splitlines()[2].startswith("### pgolf-audit: **FLAG `prequant_ttt`** — Optimiser steps")
    assert "blob/abc123/" in md and "#L" in md
    assert "\nChecks not triggered: `ngram_target_key`" in md
    assert "hypothesis for a human" in md
    assert "layers 9" in md and "dim 512" in md


def test_sarif_shape():
    proc = run(str(EXAMPLES / "prequant_ttt"), "--format", "sarif")
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, SARIF_SCHEMA)
    assert any(r["level"] == "error" for r in doc["runs"][0]["results"])


def test_output_file_and_exit_zero(tmp_path):
    out = tmp_path / "r.json"
    proc = run(str(EXAMPLES / "prequant_ttt"), "--format", "json", "--output", str(out), "--exit-zero")
    assert proc.returncode == 0
    assert json.loads(out.read_text())["verdict"] == "flag"
    assert proc.stdout == ""


def test_fail_on_never_and_warning():
    assert run(str(EXAMPLES / "prequant_ttt"), "--fail-on", "never").returncode == 0
    assert run(str(EXAMPLES / "clean_baseline"), "--fail-on", "error").returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ["/nonexistent/folder"],
        [str(EXAMPLES / "clean_baseline" / "README.md")],
        ["--git-dir", "/nonexistent", "--pr", "1"],
        ["--all-prs"],
        ["--format", "yaml", str(EXAMPLES / "clean_baseline")],
        [],
    ],
)
def test_bad_input_is_one_line_exit_2(args):
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") <= 3


def test_list_rules():
    proc = run("--list-rules")
    assert proc.returncode == 0 and "PG101/prequant-ttt" in proc.stdout


def test_ignore_and_select_filter_every_finding_kind():
    doc = json.loads(run(str(EXAMPLES / "prequant_ttt"), "--format", "json", "--ignore", "PG101").stdout)
    assert doc["verdict"] == "clean" and not any(f["rule"].startswith("PG101") for f in doc["findings"])
    doc = json.loads(run(str(EXAMPLES / "prequant_ttt"), "--format", "json", "--select", "PG101").stdout)
    assert {f["rule"] for f in doc["findings"]} == {"PG101/prequant-ttt"}
