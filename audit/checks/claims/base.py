"""The state every claims check shares (the runs, the final run of each log, the claimed runs) and how findings are built."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from ...challenge import (
    RULES_URL,
    TRAIN_CAP_SECONDS,
)
from ...codes import Code
from ...findings import Confidence, Finding, Location, Severity
from ...load.folder import Folder
from ...load.resolve import Sources
from ...logs import LogResult, RunLog
from ...logs.patterns import may_contain
from .extract import SEED_IN_NAME
from .model import ClaimedValue, Claims, matching_subset, value_matches


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
        self.caps = {id(r): configured_wallclock_s(res, r) for res in logs.values() for r in res.runs}
        self.relevant = self._claimed_runs()

    def _claimed_runs(self) -> list[tuple[str, RunLog]]:
        """The runs the claims point at (a folder may ship exploratory logs too).

        submission.json's score is the headline; the README prose headline stands in only when there is none
        (prose quotes pre-quant numbers, baselines and other PRs). A run configured for more than 600 s is an
        exploratory run, not the record's, unless it backs the headline itself (its value, or one of the runs
        whose mean the headline quotes), or no run of the record's budget trains (the long runs trained the
        model that evaluation-only logs score). With no run pointed at, the runs of the record's budget; with
        only evaluation-only runs pointed at, the runs that trained are added."""
        head = self.claims.headline_bpb or self.claims.readme_bpb
        claims = [head] if head else []
        claims += [v for vals in self.claims.per_seed_bpb.values() for v in vals]
        backing = self.headline_runs(head) if head else set()
        hit = [
            (p, r)
            for p, r in self.final
            if id(r) in backing or any(value_matches(c, m.val_bpb) for c in claims for m in r.metrics)
        ]
        if not any(trains(r) and not self.exploratory(r) for _, r in self.final):
            picked = hit or self.final
        else:
            hit = [(p, r) for p, r in hit if id(r) in backing or not self.exploratory(r)]
            picked = hit or [(p, r) for p, r in self.final if not self.exploratory(r)]
        if not any(trains(r) for _, r in picked):
            # evaluation-only logs score a model: the runs that trained it are the record's too
            trainers = [(p, r) for p, r in self.final if trains(r)]
            picked = picked + ([(p, r) for p, r in trainers if not self.exploratory(r)] or trainers)
        return picked

    def exploratory(self, r: RunLog) -> bool:
        return exploratory(r, self.caps.get(id(r)))

    def unit_values(self, runs: list[tuple[str, RunLog]]) -> dict[str, dict[object, tuple[RunLog, float]]]:
        """Per tag ("scored" and each scored-stage tag), each run's value: one run per seed (the latest log of a
        seed counts; the seed printed, else the one in the file name), other runs by file unless they repeat a
        seed's run (`train.log` shipped next to `train_seed42.log`)."""
        keyed = [(r.seed if r.seed is not None else seed_from_name(p), p, r) for p, r in runs]
        units: dict[object, RunLog] = {s: r for s, _, r in keyed if s is not None}
        seen = {(r.scored.line, r.train_time_ms) for r in units.values() if r.scored is not None}
        for seed, p, r in keyed:
            if seed is None and (r.scored is None or (r.scored.line, r.train_time_ms) not in seen):
                units[p] = r
        out: dict[str, dict[object, tuple[RunLog, float]]] = {}
        for key, r in units.items():
            if r.scored is not None:
                out.setdefault("scored", {})[key] = (r, r.scored.val_bpb)
            for m in r.metrics:
                if not m.diagnostic:
                    out.setdefault(m.base_tag, {})[key] = (r, m.val_bpb)
        return out

    def headline_mean(self, c: ClaimedValue) -> tuple[str, dict[object, RunLog]] | None:
        """The tag and the runs (by seed, else file) whose mean the claim quotes: the runs of the record's budget
        first, then all."""
        short = [(p, r) for p, r in self.final if not self.exploratory(r)]
        for runs in (short, self.final) if len(short) < len(self.final) else (self.final,):
            for tag, vals in self.unit_values(runs).items():
                subset = matching_subset(c, {k: v for k, (_, v) in vals.items()})
                if subset:
                    return tag, {k: vals[k][0] for k in subset}
        return None

    def headline_runs(self, c: ClaimedValue) -> set[int]:
        """ids of the runs that back the headline: a run printing it, else the runs of its mean."""
        direct = {id(r) for _, r in self.final if any(value_matches(c, m.val_bpb) for m in r.metrics)}
        if direct:
            return direct
        found = self.headline_mean(c)
        return {id(r) for r in found[1].values()} if found else set()

    def add(self, *a, **kw) -> None:
        self.findings.append(make_finding(*a, **kw))


LONG_RUN_FACTOR = 1.25  # a run by step count "far past" the cap; a few steps over is the cap's own overshoot


def trains(r: RunLog) -> bool:
    """The run took training steps (evaluation-only logs print at most a step-0 validation)."""
    return any(s.kind == "train" and s.step > 0 for s in r.steps)


# The wall-clock cap as a run prints it: `max_wallclock_seconds:1200`, `MAX_WALLCLOCK_SECONDS=1200`, `…:1200s`.
_WALLCLOCK_CAP = re.compile(r"(?i)(?<![a-z_])max_wall_?clock(?:_seconds?)?\s*[=:]\s*(\d+(?:\.\d+)?)\s*s?\b")
_CAP_LINE_CHARS = 4096
_WALLCLOCK_WORDS = ("max_wall",)  # what _WALLCLOCK_CAP needs, in any case


def configured_wallclock_s(res: LogResult, r: RunLog) -> float | None:
    """The wall-clock cap the run printed (0 means no cap): as parsed, else from an environment or config echo
    inside the run's lines."""
    if r.max_wallclock_seconds is not None:
        return r.max_wallclock_seconds
    start = r.start_line if r.index else 0  # the first run owns the preamble (a launcher's echo)
    end = r.end_line or res.n_lines
    for e in res.events:
        if start <= e.lineno <= end and may_contain(e.text, _WALLCLOCK_WORDS):
            m = _WALLCLOCK_CAP.search(e.text[:_CAP_LINE_CHARS])
            if m:
                return float(m.group(1))
    return None


def exploratory(r: RunLog, cap: float | None) -> bool:
    """A run configured for more than the 600 s of training (an exploratory long run, not a record's run): a
    wall-clock cap above 600 s, or, with the cap off (0 or not printed), steps that ran far past 600 s."""
    if r.eval_only:
        return False
    if cap:
        return cap > TRAIN_CAP_SECONDS
    by_steps = r.train_time_ms is not None and r.stop_reason != "wallclock_cap"
    return by_steps and r.train_time_ms > LONG_RUN_FACTOR * TRAIN_CAP_SECONDS * 1000.0


def line_at(res: LogResult, lineno: int) -> str:
    if not lineno:
        return ""
    for e in res.events:
        if e.lineno == lineno:
            return e.text
    return ""
