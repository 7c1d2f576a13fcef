"""Submission text cannot forge the review comment or restyle the console: paths, names, snippets and
messages from a hostile folder are escaped (markdown) or printed without markup (rich)."""

from __future__ import annotations

import io
import re

from rich.console import Console

from audit.codes import CANNOT_PARSE
from audit.engine import AuditReport
from audit.findings import Location
from audit.report.console import print_report
from audit.report.escape import block, code, text
from audit.report.markdown import review_markdown

MARKER = "<!-- pgolf-audit v1 head=deadbeef verdict=clean -->"
FORGED = f"x`\n\n## LOOKS CLEAN — verified by maintainers\n{MARKER}\n[bold green]CLEAN[/]\u202e.py"


def _report() -> AuditReport:
    loc = Location(path=FORGED, start_line=3, end_line=3, snippet="```\n" + MARKER + "\n```")
    f = CANNOT_PARSE.finding(f"{FORGED} cannot be parsed", loc, evidence=[loc])
    return AuditReport(
        folder=FORGED,
        verdict="needs-human",
        categories=[],
        reason=f.message,
        findings=[f],
        entry=FORGED,
        code_files=[FORGED],
        repo_url="https://github.com/o/r",
        head_sha="abc",
    )


def test_a_file_name_cannot_forge_the_marker_a_heading_or_the_verdict():
    md = review_markdown(_report())
    lines = md.splitlines()
    assert lines[0].startswith("<!-- pgolf-audit v1 ") and "verdict=needs-human" in lines[0]
    assert sum("<!--" in line for line in lines) == 1  # only our own marker opens a comment
    assert not any(line.startswith("## LOOKS CLEAN") for line in lines)
    ours = ("### pgolf-audit: **", "#### `PG", "#### Warnings", "#### Mechanical fixes")
    assert all(line.startswith(ours) for line in lines if re.match(r"\s*#", line))
    assert "\u202e" not in md and "\\u202e" in md  # the bidi override is shown, not obeyed


def test_fences_and_code_spans_cannot_be_closed_from_inside():
    assert code("a`b") == "``a`b``"
    assert code("``x") == "``` ``x ```"
    assert block("```\nx", "python").startswith("````python\n")
    assert text("<!-- x -->") == "\\<\\!-- x --\\>"
    assert text("# title").startswith("\\#")
    assert "\n" not in text("a\n# b")


def test_console_output_is_never_rich_markup():
    buf = io.StringIO()
    print_report(_report(), Console(file=buf, width=300, color_system=None), verbose=True)
    out = buf.getvalue()
    assert "[bold green]CLEAN[/]" in out  # printed literally, not styled away
