"""Human output on stderr through rich."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..findings import Severity

STYLE = {"flag": "bold red", "needs-human": "bold yellow", "legal_ttt": "bold green", "clean": "bold green"}
SEV_STYLE = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "dim"}


def print_report(rep, console: Console | None = None, verbose: bool = False) -> None:
    con = console or Console(stderr=True)
    # submission text (folder names, messages quoting code) is never read as rich markup
    cats = f" [{', '.join(rep.categories)}]" if rep.categories else ""
    con.print(Text.assemble((rep.verdict.upper(), STYLE[rep.verdict]), cats, "  ", rep.folder), highlight=False)
    con.print(f"  {rep.reason}", style="dim", markup=False, highlight=False)
    shown = [f for f in rep.findings if verbose or f.severity is not Severity.INFO or f.legal_mechanism]
    if not shown:
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("rule", "sev", "where", "finding"):
        table.add_column(col, overflow="fold")
    for f in shown:
        where = f"{f.location.path}:{f.location.start_line}" if f.location.start_line else f.location.path
        table.add_row(Text(f.rule), Text(f.severity.value, style=SEV_STYLE[f.severity]), Text(where), Text(f.message))
    con.print(table)


def print_summary(rows: list[dict], console: Console | None = None) -> None:
    """Batch summary: verdict counts, categories, then every PR a maintainer must open (flagged, needs-human,
    errors), in PR order."""
    con = console or Console(stderr=True)
    counts: dict[str, int] = {}
    cats: dict[str, int] = {}
    for r in rows:
        counts[r.get("verdict", "error")] = counts.get(r.get("verdict", "error"), 0) + 1
        for c in r.get("categories", []):
            cats[c] = cats.get(c, 0) + 1
    con.print("pgolf-audit batch summary", style="bold")
    t = Table(box=None)
    t.add_column("verdict")
    t.add_column("folders", justify="right")
    for k, v in sorted(counts.items(), key=lambda kv: -kv[1]):
        t.add_row(Text(k), str(v))
    con.print(t)
    if cats:
        t2 = Table(box=None)
        t2.add_column("category")
        t2.add_column("flagged", justify="right")
        for k, v in sorted(cats.items(), key=lambda kv: -kv[1]):
            t2.add_row(Text(k), str(v))
        con.print(t2)
    to_open = [r for r in rows if r.get("verdict") in ("flag", "needs-human", "error")]
    if to_open:
        t3 = Table(box=None, title="to review", title_justify="left")
        for col in ("PR", "verdict", "categories", "folder", "reason"):
            t3.add_column(col, overflow="fold")
        for r in to_open:
            t3.add_row(
                str(r.get("pr", "")),
                Text(r.get("verdict", ""), style=STYLE.get(r.get("verdict", ""), "")),
                Text(", ".join(r.get("categories", []))),
                Text(r.get("folder") or ""),
                Text(r.get("reason", "")[:160]),
            )
        con.print(t3)
