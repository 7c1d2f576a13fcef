"""The rule base class (Fixit-style: one class per rule, VALID/INVALID cases inside, docs from the docstring).

A rule receives the `Program` (every source parsed once and indexed in one traversal, plus shared facts) and
the submission context, and yields findings through `self.finding(...)`, which fills in the rule's code,
category, ruling and the reachability verdict: a rule firing only in dead code reports `info`, never `error`.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass, field
from typing import ClassVar, Iterable

from ..analysis.context import Analyses
from ..analysis.program import Program, SourceIndex
from ..codes import REGISTRY, Code
from ..findings import Confidence, Finding, Location, Reachability, Severity
from ..logs.model import LoggedLine


@dataclass(frozen=True)
class Case:
    """A test case kept inside the rule: a `train_gpt.py` body, optionally a README and log files."""

    code: str
    readme: str = ""
    logs: dict[str, str] = field(default_factory=dict)
    note: str = ""
    # For INVALID cases: the severity the rule must reach (default: the rule's own SEVERITY).
    severity: Severity | None = None
    # For INVALID cases: where the finding must point and what its message must say. `line` is 1-based in the
    # dedented file `path` (`files()[path]`): train_gpt.py, or the log file of a log-only finding.
    line: int | None = None
    message: str = ""  # a fragment that must appear in the finding's message
    path: str = "train_gpt.py"

    def files(self) -> dict[str, bytes]:
        out = {"train_gpt.py": textwrap.dedent(self.code).encode()}
        if self.readme:
            out["README.md"] = textwrap.dedent(self.readme).encode()
        for name, text in self.logs.items():
            out[name] = textwrap.dedent(text).encode()
        return out


def Valid(code: str, **kw) -> Case:  # noqa: N802 - reads like Fixit's case constructors
    """A case the rule must not flag; it has no finding to locate, so `line`/`message`/`path` are refused."""
    extra = sorted({"line", "message", "path"} & kw.keys())
    if extra:
        raise TypeError(f"Valid() takes no {', '.join(extra)}: a VALID case has no finding to locate")
    return Case(code=code, **kw)


def Invalid(code: str, *, line: int | None = None, message: str | None = None, **kw) -> Case:  # noqa: N802
    """A case the rule must flag, at `line` (1-based, in the dedented `path`, default train_gpt.py) with
    `message` (a few words) in the finding's message. Both are required, so no case goes in unlocated."""
    if not isinstance(line, int) or isinstance(line, bool) or line < 1:
        raise TypeError(f"Invalid() requires line=<1-based line of the finding>, got {line!r}")
    if not isinstance(message, str) or not message.strip():
        raise TypeError(f"Invalid() requires message=<fragment of the finding's message>, got {message!r}")
    return Case(code=code, line=line, message=message, **kw)


@dataclass
class RuleContext:
    """What a rule may look at: the program, its shared analyses, the log lines, the README and files."""

    analyses: Analyses
    readme: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # the folder's readable files (e.g. a shipped .model)

    @property
    def program(self) -> Program:
        return self.analyses.program

    @property
    def log_events(self) -> list[LoggedLine]:
        """Every non-source log line: (path, lineno, text)."""
        return self.analyses.log_lines


class Rule:
    """Base class. Subclasses set the class attributes and implement `check`; defining a subclass registers
    its `Code` (the rule is that code's descriptor, extended with cases and a check)."""

    CODE: ClassVar[str]  # "PG1xx", set by every rule class
    NAME: ClassVar[str]
    CATEGORY: ClassVar[str | None] = None
    SEVERITY: ClassVar[Severity] = Severity.ERROR
    STATUS: ClassVar[str] = "stable"  # stable | preview (preview rules can only warn)
    RULING: ClassVar[str] = ""
    FIX_HINT: ClassVar[str] = ""
    SUMMARY: ClassVar[str] = ""  # one line for tables and SARIF shortDescription
    VALID: ClassVar[list[Case]] = []
    INVALID: ClassVar[list[Case]] = []

    CODE_INFO: ClassVar[Code]

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        cls.CODE_INFO = REGISTRY.add(
            Code(cls.CODE, cls.NAME, cls.CATEGORY, cls.SEVERITY, cls.SUMMARY, cls.doc(), cls.RULING, origin="rule")
        )

    def __init__(self, ctx: RuleContext):
        self.ctx = ctx
        self.program = ctx.program
        self.analyses = ctx.analyses

    @property
    def rule_id(self) -> str:
        return f"{self.CODE}/{self.NAME}"

    @classmethod
    def doc(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    def check(self) -> Iterable[Finding]:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- reporting -------------------------------------------------------------------------------
    def location(self, idx: SourceIndex, node: ast.AST, note: str = "") -> Location:
        start = getattr(node, "lineno", 0)
        return Location(
            path=idx.path + (" (decoded)" if idx.src.virtual else ""),
            start_line=start,
            end_line=getattr(node, "end_lineno", start) or start,
            snippet=idx.snippet(node),
            note=note,
        )

    def log_finding(
        self,
        message: str,
        location: Location,
        *,
        severity: Severity,
        confidence: Confidence,
        evidence: Iterable[Location] = (),
    ) -> Finding:
        """A finding proven by log lines alone (no code site): the logs show it ran."""
        return self.CODE_INFO.finding(
            message,
            location,
            severity=severity,
            confidence=confidence,
            evidence=evidence,
            reachability=Reachability.REACHABLE,
            reachability_reason="the log shows it ran",
            fix_hint=self.FIX_HINT,
        )

    def finding(
        self,
        idx: SourceIndex,
        node: ast.AST,
        message: str,
        *,
        evidence: Iterable[Location] = (),
        confidence: Confidence = Confidence.HIGH,
        severity: Severity | None = None,
        reach_node: ast.AST | None = None,
        legal_mechanism: str | None = None,
        category: str | None = "",
    ) -> Finding:
        """Build a finding; dead code is demoted to `info`, undecidable guards to `warning`."""
        reach, why = self.program.reachability(idx, reach_node or node)
        sev = severity or self.SEVERITY
        if reach is Reachability.SHOWN_BY_LOGS:
            path, line, text = self.program.log_proof(idx, reach_node or node)
            evidence = [
                *evidence,
                Location(
                    path=path,
                    start_line=line,
                    end_line=line,
                    snippet=text.strip()[:200],
                    note="log line printed only by this code: it ran",
                ),
            ]
        elif reach is Reachability.DISABLED_BY_DEFAULT:
            sev = Severity.INFO
            message = f"{message} — present but not reached under the effective config ({why})"
        elif reach is Reachability.UNKNOWN and sev is Severity.ERROR:
            sev = Severity.WARNING
            confidence = Confidence.MEDIUM
        if self.STATUS == "preview" and sev is Severity.ERROR:
            sev = Severity.WARNING
        return self.CODE_INFO.finding(
            message,
            self.location(idx, node),
            severity=sev,
            category=... if category == "" else category,
            confidence=confidence,
            evidence=evidence,
            reachability=reach,
            reachability_reason=why,
            fix_hint=self.FIX_HINT,
            legal_mechanism=legal_mechanism,
        )
