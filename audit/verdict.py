"""From findings to the per-folder verdict: flag | legal_ttt | clean | needs-human."""

from __future__ import annotations

from dataclasses import dataclass

from .challenge import CATEGORIES, UNCHECKED
from .findings import Finding, Reachability, Severity


@dataclass(frozen=True)
class Verdict:
    verdict: str
    categories: tuple[str, ...]
    reason: str


def decide(findings: list[Finding]) -> Verdict:
    errors = [f for f in findings if f.severity is Severity.ERROR and f.category in CATEGORIES]
    if errors:
        cats = tuple(c for c in CATEGORIES if any(f.category == c for f in errors))
        return Verdict("flag", cats, errors[0].message)
    # a warning with a category (a suspected violation, or a part the auditor could not analyse) needs a human
    warnings = [f for f in findings if f.severity is Severity.WARNING and f.category and f.category != UNCHECKED]
    if warnings:
        cats = tuple(c for c in CATEGORIES if any(f.category == c for f in warnings))
        return Verdict("needs-human", cats, warnings[0].message)
    legal = live_legal_mechanisms(findings)
    if legal:
        return Verdict("legal_ttt", (), legal[0].message)
    # nothing to check is not clean: with no evidence of what ran (no logs), a human must look
    unchecked = [f for f in findings if f.severity is Severity.WARNING and f.category == UNCHECKED]
    if unchecked:
        return Verdict("needs-human", (), unchecked[0].message)
    return Verdict("clean", (), "no compliance rule triggered")


def live_legal_mechanisms(findings: list[Finding]) -> list[Finding]:
    """Findings of a live legal mechanism (score-first TTT): what tells `legal_ttt` from `clean`."""
    return [
        f
        for f in findings
        if f.legal_mechanism
        and f.reachability is not Reachability.DISABLED_BY_DEFAULT
        and f.severity is not Severity.ERROR
    ]


CAP_CATEGORIES = frozenset({"size_over_cap", "time_over_cap"})


def told_apart_as_legal_ttt(verdict: str, categories, findings: list[Finding]) -> bool:
    """Was score-first TTT recognised? `legal_ttt`, or a `flag` for a size/time cap only (a separate axis)
    with the live legal TTT still recognised. Used by the corpus measurement."""
    if verdict == "legal_ttt":
        return True
    return verdict == "flag" and set(categories) <= CAP_CATEGORIES and bool(live_legal_mechanisms(findings))
