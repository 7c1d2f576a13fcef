"""Record checks: does the folder's claim meet what a *record* needs, beyond the rules of the evaluation?

- three or more seed runs in the record track (the maintainers accept a 3-seed mean);
- the headline is the mean of the seeds, not the best seed;
- a folder in the record track does not declare itself a non-record submission;
- the claimed score beats the leaderboard's best at the base commit (the README the PR was written against), and
  the significance table of `pgolf-stats` (both verdicts) against that row.

These are warnings and info without a rule category: they decide whether a run is a record, not whether it broke
a rule, so they never turn the verdict to `flag`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..codes import (
    RECORD_BEST_SEED_HEADLINE,
    RECORD_NOT_BETTER,
    RECORD_SEED_COUNT,
    RECORD_SIGNIFICANCE,
    RECORD_TRACK_MISMATCH,
)
from ..findings import Finding, Location
from .facts import Facts

MIN_RECORD_SEEDS = 3
_HEADING = re.compile(r"^#{1,4}\s*Leaderboard\s*$", re.I)
_NON_RECORD = re.compile(r"\bnon[- _]?record\b", re.I)
_NUM = re.compile(r"^\s*\**\s*([0-9]+\.[0-9]+)\s*\**\s*$")


@dataclass(frozen=True)
class LeaderboardRow:
    run: str
    score: float
    line: int


def leaderboard(readme: str) -> list[LeaderboardRow]:
    """The rows of the record leaderboard: the first table with a `Score` column under a `## Leaderboard` heading."""
    lines = readme.splitlines()
    start = next((i for i, ln in enumerate(lines) if _HEADING.match(ln.strip())), None)
    if start is None:
        return []
    rows: list[LeaderboardRow] = []
    col = None
    for i in range(start + 1, len(lines)):
        ln = lines[i].strip()
        if ln.startswith("#"):
            break
        if not ln.startswith("|"):
            if col is not None and rows:
                break
            continue
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if col is None:
            low = [c.lower() for c in cells]
            col = next((j for j, c in enumerate(low) if c in ("score", "val_bpb", "bpb")), None)
            continue
        if col < len(cells):
            m = _NUM.match(cells[col])
            if m:
                rows.append(LeaderboardRow(cells[0], float(m.group(1)), i + 1))
    return rows


def record_findings(
    folder_name: str,
    readme: str,
    submission_json: str,
    facts: Facts,
    claimed_bpb: float | None,
    base_readme: str = "",
) -> list[Finding]:
    out: list[Finding] = []
    readme_loc = Location("README.md", 0, 0, "")
    in_record_track = facts.track == "record"
    scored = facts.scored_runs
    if in_record_track and len(scored) < MIN_RECORD_SEEDS:
        where = ", ".join(f"{r.log} (seed {r.seed})" if r.seed is not None else r.log for r in scored) or "none"
        out.append(
            RECORD_SEED_COUNT.finding(
                f"record track with {len(scored)} scored seed run(s) in the logs ({where}); a record is a mean of "
                f"at least {MIN_RECORD_SEEDS} seeds",
                Location(scored[0].log, scored[0].line, scored[0].line, "") if scored else readme_loc,
            )
        )
    values = [r.val_bpb for r in scored]
    if facts.headline(claimed_bpb) == "best":
        mean = sum(values) / len(values)
        out.append(
            RECORD_BEST_SEED_HEADLINE.finding(
                f"the headline {claimed_bpb} is the best seed ({min(values):.8g}), not the mean of the {len(values)} "
                f"seeds ({mean:.8g})",
                readme_loc,
            )
        )
    declared = _declares_non_record(readme, submission_json)
    if in_record_track and declared:
        out.append(
            RECORD_TRACK_MISMATCH.finding(
                f"the folder is in the record track ({folder_name}) but the submission calls itself "
                f"non-record: {declared!r}",
                readme_loc,
            )
        )
    rows = leaderboard(base_readme) if base_readme else []
    if in_record_track and rows and claimed_bpb is not None and not declared:
        top = min(rows, key=lambda r: r.score)
        if claimed_bpb >= top.score:
            out.append(
                RECORD_NOT_BETTER.finding(
                    f"the claimed {claimed_bpb} does not beat the leaderboard's best {top.score} "
                    f"({top.run}) at the base commit",
                    readme_loc,
                )
            )
        elif len(values) >= 2:
            out.append(_significance(values, facts.ratio, top))
    return out


def _declares_non_record(readme: str, submission_json: str) -> str:
    """The line by which the submission calls itself non-record (submission.json, or the README's first lines:
    its title and status)."""
    for text in (submission_json, "\n".join(readme.splitlines()[:15])):
        for line in text.splitlines():
            if _NON_RECORD.search(line):
                return line.strip()[:120]
    return ""


def load_statistics() -> None:
    """Load pgolf-stats (scipy). `_significance` imports it on first use: most audits never test a record's
    significance, and a single-folder audit starts faster without it. A batch loads it before its workers fork."""
    import verify.stats.report  # noqa: F401 - loaded for the import itself


def _significance(values: list[float], ratio: float | None, top: LeaderboardRow) -> Finding:
    """Both verdicts of pgolf-stats against the leaderboard's best row (a constant: its seeds are not here)."""
    from verify.stats.core import StatsError
    from verify.stats.report import compare

    where = Location("README.md", 0, 0, "")
    try:
        rep = compare(values, sota=top.score, ratio=ratio)
    except StatsError as e:
        return RECORD_SIGNIFICANCE.finding(f"significance vs {top.score} not computed: {e}", where)
    words = {True: "passes", False: "fails", None: "undecided"}
    msg = (
        f"vs the leaderboard's best {top.score} ({top.run}): progression rule {words[rep.progression.passed]}, "
        f"written rule {words[rep.written.passed]} ({len(values)} seeds, mean {sum(values) / len(values):.5f})"
    )
    return replace(RECORD_SIGNIFICANCE.finding(msg, where), extra=(("stats_markdown", rep.to_markdown()),))
