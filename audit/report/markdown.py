"""The review comment a maintainer reads in ten seconds.

Layout: the verdict and its one-sentence reason on the first line; the facts table (claim and how it was
aggregated, seeds and where they were found, per-seed score / train / eval / artifact from the logs, track,
leaderboard); errors in full (evidence chain, reachability, ruling, fix), warnings one line each, info collapsed;
the record statistics; mechanical fixes as `suggestion` blocks; the checks that did not trigger in one line.
One comment per PR (`review_comment`) with a section per record folder.

Everything that comes from the submission goes through `escape` (paths, snippets, messages quoting code)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from urllib.parse import quote

from .. import __version__
from ..challenge import ARTIFACT_CAP_BYTES, CATEGORIES
from ..findings import Reachability, Severity
from ..post import MARKER
from .escape import block, code, lang_of, text, visible

VERDICT_WORD = {
    "flag": "FLAG",
    "legal_ttt": "LOOKS CLEAN (score-first TTT)",
    "clean": "LOOKS CLEAN",
    "needs-human": "NEEDS HUMAN",
}
TRACK_WORD = {"record": "10 min / 16 MB record track", "non-record": "non-record track", None: "not under records/"}


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


def _num(v, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else "—"


# --- facts ---------------------------------------------------------------------------------------------------
def _aggregation(facts, claimed: float | None) -> str:
    """How the headline relates to the logged seed scores (`Facts.headline`), in words."""
    values = [r.val_bpb for r in facts.scored_runs] if facts else []
    relation = facts.headline(claimed) if facts else ""
    if not relation:
        return ""
    mean = statistics.fmean(values)
    return {
        "single": "a single run",
        "mean": f"the mean of {len(values)} seeds",
        "best": f"the best of {len(values)} seeds (their mean is {mean:.5f})",
        "neither": f"neither the mean ({mean:.5f}) nor the best of the {len(values)} logged seeds",
    }[relation]


def _facts(rep) -> list[str]:
    facts, claims = rep.facts, rep.claims
    runs = facts.scored_runs if facts else ()
    claimed = claims.claimed_bpb if claims else None
    rows: list[tuple[str, str]] = []
    if claimed is not None:
        how = _aggregation(facts, claimed)
        rows.append(("claimed val_bpb", f"{claimed}" + (f" — {how}" if how else "")))
    else:
        rows.append(("claimed val_bpb", "not stated"))
    if runs:
        seeds = [f"{r.seed}" if r.seed is not None else "?" for r in runs]
        names = ", ".join(code(r.log) for r in runs)
        from_names = any(r.seed_from == "file name" for r in runs)
        rows.append(
            (
                "seeds",
                f"{len(runs)}: {', '.join(seeds)} (from {names}{'; seeds from file names' if from_names else ''})",
            )
        )
    else:
        rows.append(("seeds", "no scored run in the logs"))
    rows.append(("track", TRACK_WORD.get(facts.track if facts else None, "?")))
    arts = [r.artifact_bytes for r in runs if r.artifact_bytes is not None]
    if arts:
        worst = max(arts)
        mark = "over" if worst > ARTIFACT_CAP_BYTES else "under"
        rows.append(("artifact", f"max {worst:,} / {ARTIFACT_CAP_BYTES:,} bytes ({mark} the cap)"))
    else:
        rows.append(("artifact", f"not in the logs (code {rep.code_bytes:,} bytes)"))
    if rep.model_shape:
        rows.append(
            (
                "model (code defaults)",
                ", ".join(f"{k.replace('_', ' ')} {text(str(v))}" for k, v in rep.model_shape.items()),
            )
        )
    entry = code(rep.entry) if rep.entry else "none found"
    chain = "; ".join(f"{code(p)} decoded via {text(' → '.join(c))}" for p, c in rep.decode_chain.items())
    rows.append(("entry script", entry + (f" ({chain})" if chain else "")))
    lines = ["| fact | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    if runs:
        lines += ["", "| seed | log | val_bpb | train s | eval s | artifact bytes |", "|---|---|---|---|---|---|"]
        for r in runs:
            log = _where(rep, _Loc(r.log, r.line))
            lines.append(
                f"| {_num(r.seed, 'd')} | {log} | {_num(r.val_bpb, '.8f')} | {_num(r.train_seconds, '.1f')} | "
                f"{_num(r.eval_seconds, '.1f')} | {_num(r.artifact_bytes, ',d')} |"
            )
    return lines


# --- findings ------------------------------------------------------------------------------------------------
def _error(rep, f) -> list[str]:
    lines = [f"#### {code(f.rule)}" + (f" — {code(f.category)}" if f.category else ""), "", text(f.message), ""]
    if f.location.snippet:
        lines += [f"{_where(rep, f.location)}:", block(f.location.snippet, lang_of(f.location.path)), ""]
    if f.evidence:
        lines.append("Evidence chain:")
        for i, e in enumerate(f.evidence, 1):
            first = e.snippet.strip().splitlines()[0] if e.snippet.strip() else ""
            lines.append(f"{i}. {_where(rep, e)} — {text(e.note or 'see')}" + (f": {code(first)}" if first else ""))
        lines.append("")
    reach = f.reachability.value + (f" — {text(f.reachability_reason)}" if f.reachability_reason else "")
    lines.append(f"- Reachability: {reach}")
    if f.ruling:
        lines.append(f"- Ruling: {f.ruling}")
    if f.fix_hint:
        lines.append(f"- Compliant alternative: {text(f.fix_hint)}")
    return lines + [""]


def _one_line(rep, f) -> str:
    cat = f" ({code(f.category)})" if f.category else ""
    return f"- {code(f.rule)}{cat} {_where(rep, f.location)}: {text(f.message)}"


def _stats(rep) -> list[str]:
    for f in rep.findings:
        table = dict(f.extra).get("stats_markdown")
        if table:
            return [
                "<details><summary>Statistics vs the leaderboard (pgolf-stats)</summary>",
                "",
                table,
                "</details>",
                "",
            ]
    return []


def _fixes(rep) -> list[str]:
    if not rep.fixes:
        return []
    lines = ["#### Mechanical fixes", ""]
    for fx in rep.fixes:
        how = "its default in the code" if fx.kind == "code-default" else "the run command"
        removes = ", ".join(code(r) for r in fx.removes)
        lines.append(f"{_where(rep, _Loc(fx.path, fx.line))}: turn {code(fx.switch)} off in {how} (removes {removes}):")
        new = visible(fx.new)
        # a fence inside the line would end the suggestion early: then the line is shown, not suggested
        lines += ["```suggestion", new, "```", ""] if "```" not in new else [block(fx.new, "python"), ""]
    return lines


def _not_triggered(rep) -> str:
    seen = {f.category for f in rep.findings if f.category}
    quiet = [c for c in CATEGORIES if c not in seen]
    return "Checks not triggered: " + (", ".join(code(c) for c in quiet) if quiet else "none") + "."


def review_markdown(rep) -> str:
    """One record folder's section of the review."""
    head = f"{VERDICT_WORD[rep.verdict]}"
    if rep.categories:
        head += " " + ", ".join(code(c) for c in rep.categories)
    lines = [
        f"<!-- pgolf-audit v1 head={rep.head_sha or 'unknown'} verdict={rep.verdict} -->",
        f"### pgolf-audit: **{head}** — {text(rep.reason)}",
        "",
        f"Folder {code(rep.folder)}",
        "",
    ]
    lines += _facts(rep) + [""]
    errors = [f for f in rep.findings if f.severity is Severity.ERROR]
    warnings = [f for f in rep.findings if f.severity is Severity.WARNING]
    infos = [f for f in rep.findings if f.severity is Severity.INFO]
    for f in errors:
        lines += _error(rep, f)
    if warnings:
        lines += ["#### Warnings", ""] + [_one_line(rep, f) for f in warnings] + [""]
    lines += _stats(rep)
    lines += _fixes(rep)
    if infos:
        dead = [f for f in infos if f.reachability is Reachability.DISABLED_BY_DEFAULT]
        title = f"Info ({len(infos)}" + (f", {len(dead)} present but disabled by default" if dead else "") + ")"
        lines += [f"<details><summary>{title}</summary>", ""] + [_one_line(rep, f) for f in infos]
        lines += ["", "</details>", ""]
    lines += [
        _not_triggered(rep),
        "",
        f"<sub>pgolf-audit {__version__}: an automated reviewer aid; every finding is a hypothesis for a human.</sub>",
    ]
    return "\n".join(lines) + "\n"


def review_comment(reports) -> str:
    """The one comment for a PR: the sticky marker, then a section per record folder."""
    return MARKER + "\n" + "\n---\n\n".join(review_markdown(r) for r in reports)
