"""Batch mode honours the options a single audit takes: formats, selectors, --fail-on, PR order, the end table,
a missing PR, and the static triage page (clicked in a real headless browser)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from audit.report.html import triage_html
from tests.audit.test_gitsource import repo, run  # noqa: F401 - the fixture
from tests.support import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def batch(repo, *args, cwd=None):  # noqa: F811
    return run("--git-dir", str(repo / ".git"), "--prs", "8,7,99", "--jobs", "2", *args, cwd=cwd)


def test_rows_come_in_pr_order_with_a_row_for_a_missing_pr(repo, tmp_path):  # noqa: F811
    out = tmp_path / "rows.jsonl"
    proc = batch(repo, "-o", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["pr"] for r in rows] == [7, 8, 99]
    assert rows[2]["verdict"] == "error" and "no such commit" in rows[2]["reason"]
    # the end table names every PR to open, flagged first by PR number
    table = proc.stderr[proc.stderr.index("to review") :]
    assert table.index("7") < table.index("99") and "flag" in table and "error" in table
    assert proc.returncode == 1


def test_format_json_is_one_document_and_sarif_is_sarif(repo, tmp_path):  # noqa: F811
    doc = json.loads(batch(repo, "--format", "json").stdout)
    assert [r["pr"] for r in doc["submissions"]] == [7, 8, 99]
    sarif = tmp_path / "q.sarif"
    batch(repo, "--format", "sarif", "-o", str(sarif))
    results = json.loads(sarif.read_text())["runs"][0]["results"]
    assert {r["ruleId"].split("/")[0] for r in results} >= {"PG101"}
    assert all(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].startswith("records/") for r in results)


def test_selectors_and_fail_on_reach_the_workers(repo):  # noqa: F811
    proc = batch(repo, "--format", "json", "--ignore", "prequant_ttt")
    pr7 = next(r for r in json.loads(proc.stdout)["submissions"] if r["pr"] == 7)
    assert "prequant_ttt" not in pr7["categories"] and not any(f["rule"].startswith("PG101") for f in pr7["findings"])
    assert batch(repo, "--fail-on", "never").returncode == 0


def test_markdown_in_batch_is_a_usage_error(repo):  # noqa: F811
    proc = batch(repo, "--format", "markdown")
    assert proc.returncode == 2 and proc.stderr.startswith("pgolf-audit: error: the review comment is written per PR")


ROWS = [
    {
        "schema_version": 1,
        "pr": 12,
        "folder": "records/a",
        "head_sha": "abc123",
        "verdict": "flag",
        "categories": ["prequant_ttt"],
        "reason": "trains on val",
        "claims": {"claimed_bpb": 1.0812, "seeds": [1, 2, 3], "artifact_bytes": 15_900_000},
        "findings": [
            {
                "rule": "PG101/prequant-ttt",
                "severity": "error",
                "message": "Optimiser steps on validation tokens",
                "location": {"path": "train_gpt.py", "start_line": 40, "end_line": 40, "snippet": ""},
            }
        ],
    },
    {
        "schema_version": 1,
        "pr": 3,
        "folder": "records/<img src=x onerror=alert(1)>",
        "verdict": "clean",
        "categories": [],
        "reason": "no compliance rule triggered",
        "claims": {"claimed_bpb": 1.1201, "seeds": [1, 2, 3], "artifact_bytes": 15_000_000},
        "findings": [],
    },
    {
        "schema_version": 1,
        "pr": 40,
        "folder": "records/c",
        "verdict": "needs-human",
        "categories": [],
        "reason": "no training log in the folder",
        "claims": {},
        "findings": [],
    },
]


def test_triage_page_embeds_data_that_cannot_break_out():
    page = triage_html(ROWS, "https://github.com/openai/parameter-golf")
    data = page[page.index('<script id="data"') : page.index("</script>")]
    assert "<img" not in data and "\\u003cimg" in data
    assert "https://github.com/openai/parameter-golf/pull/12" in data
    assert "https://github.com/openai/parameter-golf/blob/abc123/records/a/train_gpt.py#L40" in data
    assert "javascript:" not in triage_html(ROWS, "javascript:alert(1)")


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) drives the browser")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _prs(page) -> list[str]:
    return page.eval_on_selector_all("#triage tbody tr", "rows => rows.map(r => r.dataset.pr)")


def test_triage_page_sorts_and_filters_in_a_real_browser(browser, tmp_path):
    path = tmp_path / "triage.html"
    path.write_text(triage_html(ROWS, "https://github.com/openai/parameter-golf"))
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.as_uri())
    assert _prs(page) == ["3", "12", "40"]  # PR order to start
    assert page.inner_text("#count") == "3 of 3 shown"
    page.click("th[data-key=pr]")  # the same column again: descending
    assert _prs(page) == ["40", "12", "3"]
    page.click("th[data-key=bpb]")
    assert _prs(page) == ["12", "3", "40"]  # 1.0812 < 1.1201, no claim last
    page.select_option("#verdict", "flag")
    assert _prs(page) == ["12"] and page.inner_text("#count") == "1 of 3 shown"
    page.select_option("#verdict", "")
    page.fill("#filter", "onerror")
    assert _prs(page) == ["3"]
    assert "<img src=x onerror=alert(1)>" in page.inner_text("#triage tbody")  # shown as text, never run
    page.fill("#filter", "")
    page.select_option("#category", "prequant_ttt")
    assert _prs(page) == ["12"]
    assert page.get_attribute("#triage tbody a >> nth=0", "href") == "https://github.com/openai/parameter-golf/pull/12"
    page.screenshot(path=str(tmp_path / "triage.png"), full_page=True)
    assert not dialogs and page.eval_on_selector_all("img", "els => els.length") == 0


def test_batch_writes_the_triage_page(repo, tmp_path):  # noqa: F811
    html = tmp_path / "queue.html"
    batch(repo, "--html", str(html), "--repo-url", "https://github.com/openai/parameter-golf")
    text = html.read_text()
    assert '"pr": 7' in text and '"verdict": "flag"' in text and '"pr": 99' in text


def test_ctrl_c_stops_at_once_and_keeps_the_finished_rows(tmp_path):
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    out = tmp_path / "rows.jsonl"
    script = textwrap.dedent(
        f"""
        import time
        from audit import batch
        from audit.cli import main
        def audit(git_dir, pr, repo_url=None, filters=None, memo=None):
            if pr != 1:
                time.sleep(300)
            return [{{"schema_version": 1, "pr": pr, "verdict": "clean", "categories": [], "findings": [],
                      "reason": "ok"}}]
        batch.audit_pr = audit
        main(["--git-dir", "unused", "--prs", "1,2,3", "--jobs", "2", "-o", {str(out)!r}])
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "rows.jsonl.partial"
    end = time.monotonic() + 60
    while not (partial.exists() and '"pr": 1' in partial.read_text()) and time.monotonic() < end:
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    assert time.monotonic() - t0 < 10  # the 300 s audits were not waited for
    assert code == 130 and "pgolf-audit: interrupted" in proc.stderr.read()
    assert '"pr": 1' in partial.read_text() and not out.exists()  # the finished row is kept for --resume


def test_workers_start_with_the_statistics_loaded(tmp_path):
    """A batch imports what audits load on first use (scipy, for significance) before forking its workers: no
    worker pays a second of imports on its first folder, and the forked workers share the modules."""
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "rows.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        from audit import batch
        assert "verify.stats.report" not in sys.modules  # not loaded by the CLI itself
        def audit(git_dir, pr, repo_url=None, filters=None, memo=None):
            return [{{"schema_version": 1, "pr": pr, "verdict": "clean", "categories": [], "findings": [],
                      "reason": str("verify.stats.report" in sys.modules)}}]
        batch.audit_pr = audit
        batch.run_batch("unused", [1, 2], output={str(out)!r}, jobs=2)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["reason"] for line in out.read_text().splitlines()] == ["True", "True"]
