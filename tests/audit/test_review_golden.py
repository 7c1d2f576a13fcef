"""The review comments of the bundled examples, as committed golden files: a change to the comment shows up as a
diff a reviewer reads. Regenerate after an intended change with `PGOLF_UPDATE_GOLDEN=1 python -m pytest
tests/audit/test_review_golden.py`."""

from __future__ import annotations

import os

import pytest

from audit.api import audit_folder
from audit.fix import find_fixes
from audit.load.folder import load_folder
from audit.report.markdown import review_comment
from tests.support import EXAMPLES

GOLDEN = EXAMPLES.parent / "tests" / "audit" / "golden"
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())


def comment(name: str) -> str:
    rep = audit_folder(str(EXAMPLES / name))
    rep.folder = f"examples/{name}"
    rep.repo_url, rep.head_sha = "https://github.com/pgolf/pgolf", "0123abc"
    rep.fixes = find_fixes(load_folder(EXAMPLES / name), rep)
    return review_comment([rep])


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_review_comment_matches_the_golden_file(name):
    got, path = comment(name), GOLDEN / f"{name}.md"
    if os.environ.get("PGOLF_UPDATE_GOLDEN"):
        path.write_text(got, encoding="utf-8")
    assert path.exists(), f"no golden file {path.name}: run with PGOLF_UPDATE_GOLDEN=1"
    assert got == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_the_first_visible_line_is_the_verdict_and_its_reason(name):
    lines = comment(name).splitlines()
    assert lines[0] == "<!-- pgolf-audit:review -->" and lines[1].startswith("<!-- pgolf-audit v1 ")
    assert lines[2].startswith("### pgolf-audit: **") and " — " in lines[2]
