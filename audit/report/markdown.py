"""The review comment, ready to post on the PR (community-review layout + MLPerf objection fields).

Everything that comes from the submission goes through `escape` (paths, snippets, messages quoting code)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from .. import __version__
from ..challenge import ARTIFACT_CAP_BYTES, CATEGORIES
from ..findings import Reachability, Severity
from ..post import MARKER
from ..rules import RULES
from .escape import block, code, lang_of, text

COMPLIANCE = {
    "flag": "FLAG",
    "legal_ttt": "LOOKS CLEAN (score-first TTT)",
    "clean": "LOOKS CLEAN",
    "needs-human": "NEEDS HUMAN",
}
RULE_FOR_CATEGORY = {r.CATEGORY: r for r in RULES if r.CATEGORY}


def _permalink(rep, path: str, start: int, end: int) -> str | None:
    if not (rep.repo_url and rep.head_sha) or start <= 0 or "(decoded)" in path:
        return None
    folder = rep.folder.strip("/")
    anchor = f"#L{start}" + (f"-L{end}" if end > start else "")
    return f"{rep.repo_url.rstrip('/')}/blob/{quote(rep.head_sha)}/{quote(folder)}/{quote(path)}{anchor}"


@dataclass(frozen=True)
class _Loc:
    path: str
    start_line: int
    end_line: int = 0


def _where(rep, loc) -> str:
    shown = code(f"{loc.path}:{loc.start_line}" if loc.start_line else loc.path)
    link = _permalink(rep, loc.path, loc.start_line, loc.end_line)
    return f"[{shown}]({link})" if link else shown


def _summary_line(rep) -> str:
    c = rep.claims
    parts = []
    bpb = c.claimed_bpb if c else None
    seeds = c.seeds if c else []
    parts.append(f"**BPB:** {bpb:.4f}" if isinstance(bpb, (int, float)) else "**BPB:** not claimed")
    parts.append(f"**Seeds:** {len(seeds)}" + (f" ({', '.join(map(str, seeds))})" if seeds else ""))
    art = c.artifact_bytes if c else None
    if isinstance(art, int):
        mark = "over" if art > ARTIFACT_CAP_BYTES else "under"
        parts.append(f"**Artifact:** {art:,} / {ARTIFACT_CAP_BYTES:,} bytes ({mark} the cap)")
    else:
        parts.append(f"**Artifact:** not in the logs (code {rep.code_bytes:,} bytes)")
    t, e = (c.train_seconds, c.eval_seconds) if c else (None, None)
    if isinstance(t, (int, float)) or isinstance(e, (int, float)):
        parts.append(
            "**Time:** train "
            + (f"{t:.0f} s" if isinstance(t, (int, float)) else "?")
            + " / eval "
            + (f"{e:.0f} s" if isinstance(e, (int, float)) else "?")
        )
    parts.append(f"**Compliance:** {COMPLIANCE[rep.verdict]} — {text(rep.reason)}")
    return " | ".join(parts)


def review_comment(reports) -> str:
    """The one comment for a PR: the sticky marker, then a section per record folder."""
    return MARKER + "\n" + "\n".join(review_markdown(r) for r in reports)


def review_markdown(rep) -> str:
    lines = [f"<!-- pgolf-audit v1 head={rep.head_sha or 'unknown'} verdict={rep.verdict} -->"]
    lines.append(f"## pgolf review — {code(rep.folder)}")
    lines.append("")
    lines.append(_summary_line(rep))
    lines.append("")
    shape = rep.model_shape
    if shape:
        lines.append(
            "**Model (from code defaults):** "
            + ", ".join(f"{k.replace('_', ' ')} {text(str(v))}" for k, v in shape.items())
        )
    chain = "; ".join(f"{code(p)} decoded via {text(' → '.join(c))}" for p, c in rep.decode_chain.items())
    entry = code(rep.entry) if rep.entry else "none found"
    lines.append(
        f"**Entry script:** {entry} · code files {', '.join(code(p) for p in rep.code_files) or '—'}"
        f" ({rep.code_bytes:,} bytes)" + (f" · {chain}" if chain else "")
    )
    if rep.categories:
        lines.append(f"**Categories:** {', '.join(f'`{c}`' for c in rep.categories)}")
    lines.append("")
    shown = [f for f in rep.findings if f.severity is not Severity.INFO or f.legal_mechanism or f.category]
    if shown:
        lines += ["### Findings", "", "| rule | severity | confidence | where | finding |", "|---|---|---|---|---|"]
        for f in shown:
            lines.append(
                f"| `{f.rule}` | {f.severity.value} | {f.confidence.value} | {_where(rep, f.location)} | {text(f.message)} |"
            )
        lines.append("")
    for f in rep.findings:
        if f.severity is Severity.INFO:
            continue
        lines.append(f"#### `{f.rule}` — {f.severity.value}" + (f" (`{f.category}`)" if f.category else ""))
        lines.append("")
        lines.append(text(f.message))
        lines.append("")
        if f.location.snippet:
            lines += [f"{_where(rep, f.location)}:", block(f.location.snippet, lang_of(f.location.path))]
        if f.evidence:
            lines.append("Evidence chain:")
            for i, e in enumerate(f.evidence, 1):
                first = e.snippet.strip().splitlines()[0] if e.snippet.strip() else ""
                lines.append(f"{i}. {_where(rep, e)} — {text(e.note or 'see')}" + (f": {code(first)}" if first else ""))
        reach = f.reachability.value + (f" — {text(f.reachability_reason)}" if f.reachability_reason else "")
        lines.append(f"- Reachability: {reach}")
        if f.ruling:
            lines.append(f"- Ruling: {f.ruling}")
        if f.fix_hint:
            lines.append(f"- Compliant alternative: {f.fix_hint}")
        lines.append("- Maintainer status: confirm / dismiss (false positive) / needs author response")
        lines.append("")
    if rep.fixes:
        lines += ["### Mechanical fixes", ""]
        for fx in rep.fixes:
            where = _where(rep, _Loc(fx.path, fx.line))
            how = "its default in the code" if fx.kind == "code-default" else "the run command"
            removes = ", ".join(code(r) for r in fx.removes)
            lines.append(f"{where}: turn {code(fx.switch)} off in {how} (removes {removes}):")
            # a fence inside the line would end the suggestion early: then the line is shown, not suggested
            lines += ["```suggestion", fx.new, "```", ""] if "```" not in fx.new else [block(fx.new, "python"), ""]
    fired = {f.category for f in rep.findings if f.category and f.severity is not Severity.INFO}
    lines += ["### Checks not triggered", ""]
    for cat in CATEGORIES:
        if cat in fired:
            continue
        info = [f for f in rep.findings if f.category == cat]
        if info:
            why = f"present but not live — {text(info[0].reachability_reason or info[0].message)}"
        elif cat in RULE_FOR_CATEGORY or cat in {"size_over_cap", "time_over_cap"}:
            why = "NOT TRIGGERED"
        else:
            why = "no rule for this category in this ruleset yet"
        lines.append(f"- `{cat}`: {why}")
    dead = [f for f in rep.findings if f.reachability is Reachability.DISABLED_BY_DEFAULT]
    if dead:
        lines += ["", "<details><summary>Present but disabled by default</summary>", ""]
        lines += [f"- `{f.rule}` {_where(rep, f.location)}: {text(f.message)}" for f in dead]
        lines += ["", "</details>"]
    lines += [
        "",
        "---",
        f"*Automated reviewer aid (pgolf-audit {__version__}); every finding is a hypothesis for a human reviewer.*",
    ]
    return "\n".join(lines) + "\n"
