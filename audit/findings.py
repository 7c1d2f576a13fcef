"""The finding model shared by the auditor, the claims checks and the verifier.

A finding is a hypothesis for a human reviewer: it names the rule, the category from docs/rulings.md §1, how
sure we are, where it is, the chain of lines that makes the case, and whether the code is reachable.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from enum import Enum


class Severity(str, Enum):
    """`error` breaks a rule, `warning` needs a human, `info` is notable only."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 3, "warning": 2, "info": 1}[self.value]


class Confidence(str, Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Reachability(str, Enum):
    REACHABLE = "reachable"
    DISABLED_BY_DEFAULT = "disabled-by-default"  # guard is false under the effective config
    ENABLED_BY_RUN_COMMAND = "enabled-by-run-command"  # off in code, switched on by README/log
    SHOWN_BY_LOGS = "shown-by-logs"  # off or undecidable statically, but the logs print its own messages
    UNKNOWN = "unknown"
    NOT_APPLICABLE = "n/a"  # package / log findings


@dataclass(frozen=True)
class Location:
    path: str
    start_line: int = 0
    end_line: int = 0
    snippet: str = ""
    note: str = ""  # what this location contributes to the case ("val tokens bound here")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Finding:
    rule: str  # "PG101/prequant-ttt"
    category: str | None  # docs/rulings.md §1 vocabulary, or None for package/info findings
    severity: Severity
    confidence: Confidence
    message: str
    location: Location
    evidence: tuple[Location, ...] = ()
    reachability: Reachability = Reachability.NOT_APPLICABLE
    reachability_reason: str = ""
    ruling: str = ""
    fix_hint: str = ""
    # A finding that only asserts something legal happened (e.g. score-first TTT) and not a violation.
    legal_mechanism: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def code(self) -> str:
        return self.rule.split("/", 1)[0]

    @property
    def fingerprint(self) -> str:
        """Line-free hash (bandit-style equality) so baselines survive code moving."""
        snippet = re.sub(r"\s+", " ", self.location.snippet).strip()
        h = hashlib.sha256(f"{self.rule}\0{self.location.path}\0{snippet}\0{self.message}".encode())
        return h.hexdigest()[:16]

    def with_(self, **changes) -> "Finding":
        data = {f: getattr(self, f) for f in self.__dataclass_fields__}
        data.update(changes)
        return Finding(**data)

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "category": self.category,
            "severity": self.severity.value,
            "confidence": self.confidence.value,
            "message": self.message,
            "location": {
                "path": self.location.path,
                "start_line": self.location.start_line,
                "end_line": self.location.end_line,
                "snippet": self.location.snippet,
            },
            "reachability": self.reachability.value,
            "reachability_reason": self.reachability_reason,
            "evidence": [e.to_dict() for e in self.evidence],
            "ruling": self.ruling,
            "fix_hint": self.fix_hint,
            "legal_mechanism": self.legal_mechanism,
            "fingerprint": self.fingerprint,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }


def report_order(f: Finding) -> tuple:
    """Findings are reported most severe first, then by code and place."""
    return (-f.severity.rank, f.rule, f.location.path, f.location.start_line)
