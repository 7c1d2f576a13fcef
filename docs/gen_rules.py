"""Generate docs/rules/<CODE>.md for every registered finding code: rule classes (docstring, metadata,
VALID/INVALID cases) and the loader / folder / claims codes (their registry entry).

    python docs/gen_rules.py          # write the pages
    python docs/gen_rules.py --check  # exit 1 when a page is out of date (used by the tests)
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit.rules import CODES, RULES  # noqa: E402

OUT = Path(__file__).resolve().parent / "rules"


def page(rule) -> str:
    lines = [
        f"# {rule.CODE} `{rule.NAME}`",
        "",
        f"*{rule.SUMMARY}*",
        "",
        "| | |",
        "|---|---|",
        f"| category | `{rule.CATEGORY or '—'}` |",
        f"| severity when live | `{rule.SEVERITY.value}` |",
        f"| status | {rule.STATUS} |",
        f"| ruling | {rule.RULING or '—'} |",
        "",
        rule.doc(),
        "",
    ]
    if rule.FIX_HINT:
        lines += ["## Fix hint", "", rule.FIX_HINT, ""]
    for title, cases in (
        ("Cases that must not be flagged (VALID)", rule.VALID),
        ("Cases that must be flagged (INVALID)", rule.INVALID),
    ):
        lines += [f"## {title}", ""]
        for i, c in enumerate(cases, 1):
            lines.append(f"{i}. {c.note or 'case'}" + (" (README run command switches it on)" if c.readme else ""))
            lines += ["", "```python", textwrap.dedent(c.code).strip(), "```", ""]
            if c.line is not None:
                lines += [flagged_at(rule, c), ""]
    return "\n".join(lines).rstrip() + "\n"


def flagged_at(rule, case) -> str:
    """Where an INVALID case is flagged. The code block above is stripped, so a train_gpt.py line is shifted by
    the blank lines `strip()` removed from the top of the dedented file; a log line is given in its own file."""
    severity = (case.severity or rule.SEVERITY).value
    if case.path == "train_gpt.py":
        dedented = textwrap.dedent(case.code)
        shown = case.line - (dedented[: len(dedented) - len(dedented.lstrip())].count("\n"))
        where = f"line {shown} of the code above"
    else:
        where = f"line {case.line} of `{case.path}`"
    return f"Flagged (`{severity}`) at {where}: “…{case.message}…”"


def code_page(code) -> str:
    """A code that no rule class emits (loader, folder, claims checks): its registry entry."""
    lines = [
        f"# {code.code} `{code.name}`",
        "",
        f"*{code.summary}*",
        "",
        "| | |",
        "|---|---|",
        f"| category | `{code.category or '—'}` |",
        f"| default severity | `{code.severity.value}` |",
        f"| raised by | {code.origin} |",
        f"| ruling | {code.ruling or '—'} |",
        "",
    ]
    if code.doc:
        lines += [code.doc, ""]
    return "\n".join(lines).rstrip() + "\n"


def index() -> str:
    rows = ["# pgolf-audit finding codes", "", "| code | name | category | summary |", "|---|---|---|---|"]
    for c in CODES:
        rows.append(f"| [{c.code}]({c.code}.md) | `{c.name}` | `{c.category or '—'}` | {c.summary} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    check = "--check" in sys.argv
    rule_codes = {r.CODE for r in RULES}
    wanted = {OUT / f"{c.code}.md": code_page(c) for c in CODES if c.code not in rule_codes}
    wanted.update({OUT / f"{r.CODE}.md": page(r) for r in RULES})
    wanted[OUT / "README.md"] = index()
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if check:
        for p in stale:
            print(f"out of date: {p}")
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for p, text in wanted.items():
        p.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
