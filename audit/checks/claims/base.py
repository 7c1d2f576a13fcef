"""The state every claims check shares (the runs, the final run of each log, the claimed runs) and how findings are built."""

from __future__ import annotations

from pathlib import PurePosixPath

from ...challenge import (
    RULES_URL,
)
from ...codes import Code
from ...findings import Confidence, Finding, Location, Severity
from ...load.folder import Folder
from ...load.resolve import Sources
from ...logs import LogResult, RunLog
from .extract import SEED_IN_NAME
from .model import ClaimedValue, Claims, value_matches


def make_finding(
    code: Code,
    message: str,
    loc: Location,
    severity: Severity,
    category: str | None = None,
    evidence: tuple[Location, ...] = (),
    confidence: Confidence = Confidence.HIGH,
) -> Finding:
    return code.finding(
        message, loc, severity=severity, category=category, evidence=evidence, confidence=confidence, ruling=RULES_URL
    )


def loc_claim(c: ClaimedValue, note: str = "claim") -> Location:
    return Location(path=c.path, start_line=c.line, end_line=c.line, snippet=c.snippet, note=note)


def loc_line(path: str, lineno: int, line: str, note: str = "") -> Location:
    return Location(path=path, start_line=lineno, end_line=lineno, snippet=line, note=note)


def is_non_record(sub: Folder) -> bool:
    return "non_record" in sub.name.replace("-", "_").lower()


def seed_from_name(path: str) -> int | None:
    m = SEED_IN_NAME.search(PurePosixPath(path).name)
    if not m:
        return None
    return int(m.group(1) or m.group(2))


def fmt_claim(c: ClaimedValue) -> str:
    return f"{c.text} ({c.key})" if c.key else c.text


class CheckerBase:
    def __init__(self, sub: Folder, sources: Sources, logs: dict[str, LogResult], claims: Claims) -> None:
        self.sub = sub
        self.sources = sources
        self.logs = logs
        self.claims = claims
        self.findings: list[Finding] = []
        self.runs: list[tuple[str, RunLog]] = [(p, r) for p, res in logs.items() for r in res.runs]
        # The run that counts in each file (several runs appended to one file: the last).
        self.final: list[tuple[str, RunLog]] = [(p, res.last) for p, res in logs.items() if res.last is not None]
        self.non_record = is_non_record(sub)
        self.relevant = self._claimed_runs()

    def _claimed_runs(self) -> list[tuple[str, RunLog]]:
        """The runs the claims point at (a folder may ship exploratory logs too); all runs when none match."""
        claims = [c for c in (self.claims.headline_bpb, self.claims.readme_bpb) if c]
        claims += [v for vals in self.claims.per_seed_bpb.values() for v in vals]
        hit = [(p, r) for p, r in self.final if any(value_matches(c, m.val_bpb) for c in claims for m in r.metrics)]
        return hit or self.final

    def add(self, *a, **kw) -> None:
        self.findings.append(make_finding(*a, **kw))


def line_at(res: LogResult, lineno: int) -> str:
    if not lineno:
        return ""
    for e in res.events:
        if e.lineno == lineno:
            return e.text
    return ""
