"""Render a StatsReport: rich console table, Markdown (review comment) and JSON.

The three share one set of columns, pingouin's (T, dof, alternative, p-val, CI, cohen-d), so the
verifier's report and the auditor's review comment embed the same table the CLI prints.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from .claims import ClaimCheck, StatsCase
from .core import StatsReport, Summary, TestResult, Verdict

COLUMNS = ("role", "test", "alternative", "unit", "margin", "T", "dof", "p-val", "CI95%", "cohen-d", "n")


def _ci(res: TestResult) -> str:
    hi = "inf" if not math.isfinite(res.ci_high) else f"{res.ci_high:.5f}"
    return f"[{res.ci_low:.5f}, {hi}]"


def table_rows(report: StatsReport) -> list[tuple[str, ...]]:
    rows = []
    for role, res in report.tests:
        rows.append((
            role,
            res.label,
            res.alternative,
            res.unit,
            res.margin_text,
            f"{res.t:.4g}",
            f"{res.df:.2f}",
            f"{res.p:#.3g}",
            _ci(res),
            f"{res.cohen_d:.3g}",
            f"{res.n_new} vs {res.n_ref}",
        ))
    return rows


def _summary(label: str, s: Summary | None, fallback: str = "") -> str:
    if s is None:
        return f"{label}: {fallback}"
    return (f"{label}: n={s.n} mean={s.mean:.8f} sd={s.sd:.8f} se={s.se:.8f} "
            f"CI{round(s.confidence * 100)}%=[{s.ci_low:.8f}, {s.ci_high:.8f}]")


def _verdict_word(v: Verdict) -> str:
    return {True: "PASS", False: "FAIL", None: "UNDECIDED"}[v.passed]


def render_console(report: StatsReport, console: Console) -> None:
    console.print(_summary("new", report.new))
    console.print(_summary("reference", report.reference_summary, report.reference))
    if report.ratio is not None:
        console.print(f"r = val_loss/val_bpb = {report.ratio:.6f}")
    table = Table(show_header=True, header_style="bold")
    for col in COLUMNS:
        table.add_column(col, overflow="fold")
    for row in table_rows(report):
        table.add_row(*row)
    console.print(table)
    for v in (report.written, report.progression):
        style = {True: "green", False: "red", None: "yellow"}[v.passed]
        console.print(f"[{style}]{_verdict_word(v)}[/{style}] {v.title}: {v.reason}", highlight=False)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    for c in report.claims:
        render_claim_console(c, console)


def render_claim_console(check: ClaimCheck, console: Console) -> None:
    word = "[green]AGREES[/green]" if check.agrees else "[red]DOES NOT AGREE[/red]"
    console.print(f"claim {check.claim!r}: {word}", highlight=False)
    console.print(f"  reproduced by: {check.reproduced_by}", highlight=False)
    console.print(f"  ours: {check.result.brief()}", highlight=False)
    table = Table(show_header=True, header_style="bold")
    for col in ("stated", "ours", "status"):
        table.add_column(col)
    for n in check.numbers:
        ours = "" if not math.isfinite(n.ours) else f"{n.ours:.4g}"
        table.add_row(n.stated.show(), ours, n.status)
    console.print(table)
    for f in check.findings:
        console.print(f"  [yellow]-[/yellow] {f}", highlight=False)


def render_markdown(report: StatsReport) -> str:
    lines = ["#### Statistics", ""]
    lines.append(f"- {_summary('new', report.new)}")
    lines.append(f"- {_summary('reference', report.reference_summary, report.reference)}")
    if report.ratio is not None:
        lines.append(f"- r = val_loss/val_bpb = {report.ratio:.6f}")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in table_rows(report):
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    lines.append("")
    for v in (report.written, report.progression):
        lines.append(f"- **{_verdict_word(v)}** — {v.title}: {_md_cell(v.reason)}")
    for w in report.warnings:
        lines.append(f"- warning: {_md_cell(w)}")
    for c in report.claims:
        lines += ["", claim_markdown(c)]
    return "\n".join(lines) + "\n"


def claim_markdown(check: ClaimCheck) -> str:
    word = "agrees" if check.agrees else "**does not agree**"
    lines = [f"Claim `{check.claim}` {word} — reproduced by: {_md_cell(check.reproduced_by)}; "
             f"ours: `{check.result.brief()}`", "", "| stated | ours | status |", "|---|---|---|"]
    for n in check.numbers:
        ours = "" if not math.isfinite(n.ours) else f"{n.ours:.4g}"
        lines.append(f"| `{n.stated.show()}` | {ours} | {n.status} |")
    lines += [f"- {_md_cell(f)}" for f in check.findings]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_json(report: StatsReport) -> str:
    return json.dumps(report.to_dict(), indent=2)


# --- claims without a full report, and corpus case files ------------------------------------------
def case_rows(cases: Sequence[StatsCase], checks: Sequence[ClaimCheck]) -> list[dict[str, str]]:
    """Per case: what pgolf concludes and, where the file says what to expect, whether it matches."""
    out = []
    for case, check in zip(cases, checks):
        ours = {"reproduced_by": check.reproduced_by, "our_value": check.result.brief(),
                "agrees": "yes" if check.agrees else "no"}
        match = "" if "agrees" not in case.expected else (
            "yes" if case.expected["agrees"] == ours["agrees"] else "no")
        out.append({"case": case.name, "claim": case.claim, **ours, "matches_expected": match})
    return out


def render_cases(rows: Sequence[dict[str, str]], fmt: str, console: Console) -> str | None:
    if fmt == "json":
        from .core import SCHEMA_VERSION

        return json.dumps({"schema_version": SCHEMA_VERSION, "tool": "pgolf-stats", "cases": list(rows)},
                          indent=2)
    cols = ("case", "agrees", "matches_expected", "our_value", "reproduced_by")
    if fmt == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_md_cell(r[c]) for c in cols) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    table = Table(show_header=True, header_style="bold")
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(r[c] for c in cols))
    console.print(table)
    return None
