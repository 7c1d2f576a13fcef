"""The report the CLI, the verifier and the review comment share: `compare()` builds a `StatsReport`
(summaries, the table of tests, both rule verdicts, checked claims) and this module renders it as a rich
console table, Markdown and JSON.

The three renderings share one set of columns, pingouin's (T, dof, alternative, p-val, CI, cohen-d), so
the verifier's report and the auditor's review comment embed the same table the CLI prints.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from .claims import ClaimCheck, StatsCase
from .core import (
    UNITS,
    WRITTEN_MARGIN_NATS,
    Margin,
    Reference,
    RuleVerdict,
    StatsError,
    Summary,
    TestResult,
    finite_values,
    progression_rule,
    run_test,
    written_rule,
)

# --- the report -----------------------------------------------------------------------------------
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StatsReport:
    """What `compare` returns; `claims` is filled in by callers that check stated claims too."""

    new: Summary
    reference: str
    reference_summary: Summary | None
    unit: str
    ratio: float | None
    tests: tuple[tuple[str, TestResult], ...]  # (role, result): the rows of the table
    written: RuleVerdict
    progression: RuleVerdict
    warnings: tuple[str, ...] = ()
    claims: tuple[ClaimCheck, ...] = field(default=())  # when claims were checked
    inputs: tuple[str, ...] = ()  # where the numbers came from (per-seed log lines, a summary): facts, not warnings

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": "pgolf-stats",
            "unit": self.unit,
            "ratio": self.ratio,
            "new": asdict(self.new),
            "reference": self.reference,
            "reference_summary": asdict(self.reference_summary) if self.reference_summary else None,
            "tests": [{"role": role, **res.to_dict()} for role, res in self.tests],
            "verdicts": {"written": self.written.to_dict(), "progression": self.progression.to_dict()},
            "inputs": list(self.inputs),
            "warnings": list(self.warnings),
            "claims": [c.to_dict() for c in self.claims],
        }

    def to_markdown(self) -> str:
        return render_markdown(self)


def compare(
    new: Sequence[float],
    *,
    sota: float | None = None,
    baseline: Sequence[float] | None = None,
    margin_nats: float = WRITTEN_MARGIN_NATS,
    ratio: float | None = None,
    baseline_summary: tuple[float, float, int] | None = None,
    unit: str = "bpb",
) -> StatsReport:
    """Both verdicts and the table for a candidate's per-seed scores.

    The reference is the baseline's seeds, else its summary (mean, sd, n), else the single SOTA
    value. Raises StatsError when nothing can be decided (fewer than 2 new seeds, no reference)."""
    vals = finite_values(new, "new seeds")
    if len(vals) < 2:
        raise StatsError(f"n={len(vals)}: refusing to decide with fewer than 2 seeds")
    if unit not in UNITS:
        raise StatsError(f"unit must be bpb or nats, not {unit!r}")
    ref = _reference(sota, baseline, baseline_summary)
    warnings: list[str] = []
    if len(vals) < 3:
        warnings.append(f"only {len(vals)} new seeds: the maintainers expect a 3-seed mean")
    if baseline is not None and len(baseline) == 1:
        warnings.append("a single baseline run: one-sample test against its value (df = n-1)")
    margin = Margin(margin_nats, "nats")
    written = written_rule(vals, ref, unit=unit, ratio=ratio, margin=margin)
    progression = progression_rule(vals, ref, unit=unit)
    rows: list[tuple[str, TestResult]] = []
    if written.test:
        rows.append(("written rule", written.test))
    if progression.test:
        rows.append(("progression rule", progression.test))
    if sota is not None and ref.kind != "constant":
        # The early-README convention: one-sample against SOTA - margin; shown, never deciding.
        try:
            rows.append(
                (
                    "vs SOTA value",
                    run_test("one_sample", vals, Reference.constant(sota), unit=unit, margin=margin, ratio=ratio),
                )
            )
        except StatsError as e:
            warnings.append(f"one-sample vs SOTA skipped: {e}")
    ref_summary = None
    if ref.kind == "seeds" and ref.n >= 2:
        ref_summary = Summary.of(ref.values)
    elif ref.kind == "summary":
        ref_summary = Summary.from_stats(ref.values[0], ref.values[1], ref.n)
    return StatsReport(
        new=Summary.of(vals),
        reference=ref.describe(),
        reference_summary=ref_summary,
        unit=unit,
        ratio=ratio,
        tests=tuple(rows),
        written=written,
        progression=progression,
        warnings=tuple(warnings),
    )


def _reference(
    sota: float | None,
    baseline: Sequence[float] | None,
    baseline_summary: tuple[float, float, int] | None,
) -> Reference:
    if baseline is not None and baseline_summary is not None:
        raise StatsError("give the baseline as seeds or as a summary, not both")
    if baseline is not None and len(baseline) > 0:
        ref = Reference.seeds(baseline)
        return ref if ref.n >= 2 else Reference.constant(ref.values[0])
    if baseline_summary is not None:
        mean, sd, n = baseline_summary
        return Reference.summary(mean, sd, int(n))
    if sota is not None:
        return Reference.constant(sota)
    raise StatsError("nothing to compare with: give the SOTA value, the baseline seeds or its summary")


# --- rendering ------------------------------------------------------------------------------------
COLUMNS = ("role", "test", "alternative", "unit", "margin", "T", "dof", "p-val", "CI95%", "cohen-d", "n")


def _ci(res: TestResult) -> str:
    hi = "inf" if not math.isfinite(res.ci_high) else f"{res.ci_high:.5f}"
    return f"[{res.ci_low:.5f}, {hi}]"


def table_rows(report: StatsReport) -> list[tuple[str, ...]]:
    rows = []
    for role, res in report.tests:
        rows.append(
            (
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
            )
        )
    return rows


def _summary(label: str, s: Summary | None, fallback: str = "") -> str:
    if s is None:
        return f"{label}: {fallback}"
    return (
        f"{label}: n={s.n} mean={s.mean:.8f} sd={s.sd:.8f} se={s.se:.8f} "
        f"CI{round(s.confidence * 100)}%=[{s.ci_low:.8f}, {s.ci_high:.8f}]"
    )


def _verdict_word(v: RuleVerdict) -> str:
    return {True: "PASS", False: "FAIL", None: "UNDECIDED"}[v.passed]


def render_console(report: StatsReport, console: Console) -> None:
    for line in report.inputs:
        console.print(f"input: {line}", highlight=False, markup=False)
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
    lines += [f"- input: {_md_cell(line)}" for line in report.inputs]
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
    lines = [
        f"Claim `{check.claim}` {word} — reproduced by: {_md_cell(check.reproduced_by)}; "
        f"ours: `{check.result.brief()}`",
        "",
        "| stated | ours | status |",
        "|---|---|---|",
    ]
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
        ours = {
            "reproduced_by": check.reproduced_by,
            "our_value": check.result.brief(),
            "agrees": "yes" if check.agrees else "no",
        }
        match = "" if "agrees" not in case.expected else ("yes" if case.expected["agrees"] == ours["agrees"] else "no")
        out.append({"case": case.name, "claim": case.claim, **ours, "matches_expected": match})
    return out


def render_cases(rows: Sequence[dict[str, str]], fmt: str, console: Console) -> str | None:
    if fmt == "json":
        return json.dumps({"schema_version": SCHEMA_VERSION, "tool": "pgolf-stats", "cases": list(rows)}, indent=2)
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
