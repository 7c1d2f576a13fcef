"""Mechanical fixes: a violation that is live only because of a switch gets the change that turns it off.

A candidate is an environment switch read with a literal truthy default (`os.environ.get("TTT_ENABLED", "1")`)
or set truthy by the README's run command (`TTT_ENABLED=1 torchrun …`). Each candidate is tried on a copy of the
folder and the folder re-audited: a fix is a candidate whose change removes a rule violation. The judgement is the
auditor's own, so a fix is offered only where the mechanism really hangs on that switch. The logs are left out of
those trial audits (they record the run as it was, whatever the code says now).

Code defaults are rewritten with libcst, so every other byte of the file — formatting, comments — stays as it
was; run-command changes are printed, not applied (a README is the author's prose).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import libcst as cst

from .codes import REGISTRY
from .engine import AuditReport, audit_submission
from .findings import Severity
from .load.folder import Folder

ENV_CALLS = {"os.environ.get", "os.getenv", "environ.get", "getenv"}
TRUTHY = {"1", "true", "yes", "on"}
MAX_CANDIDATES = 24  # each is one re-audit
LOG_SUFFIXES = (".log", ".txt", ".out")


@dataclass(frozen=True)
class Fix:
    path: str  # file in the folder
    line: int  # 1-based line the change is on
    old: str  # that line as it is
    new: str  # that line after the fix
    switch: str  # the environment variable
    removes: tuple[str, ...]  # rule ids the change makes disappear
    kind: str  # "code-default" (applied by --fix) | "run-command" (printed)

    def describe(self) -> str:
        what = "default" if self.kind == "code-default" else "run command"
        return f"{self.path}:{self.line}: turn {self.switch} off in the {what} (removes {', '.join(self.removes)})"


def _dotted(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    return ""


def _falsy_like(node: cst.BaseExpression) -> cst.BaseExpression | None:
    """The same literal kind, turned off: "1" -> "0" (quote style kept), 1 -> 0, True -> False."""
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        if isinstance(value, str) and value.strip().lower() in TRUTHY:
            quote = node.value[len(node.prefix)]
            return node.with_changes(value=f"{node.prefix}{quote}0{quote}")
    if isinstance(node, cst.Integer) and node.evaluated_value != 0:
        return node.with_changes(value="0")
    if isinstance(node, cst.Name) and node.value == "True":
        return node.with_changes(value="False")
    return None


class _Switches(cst.CSTVisitor):
    """Every env read with a literal name and a truthy literal default."""

    METADATA_DEPENDENCIES = (cst.metadata.PositionProvider,)

    def __init__(self) -> None:
        self.found: list[tuple[str, int, cst.BaseExpression, cst.BaseExpression]] = []

    def visit_Call(self, node: cst.Call) -> None:  # noqa: N802 - libcst dispatches on node type names
        if _dotted(node.func) not in ENV_CALLS or len(node.args) < 2:
            return
        name, default = node.args[0].value, node.args[1].value
        off = _falsy_like(default)
        if isinstance(name, cst.SimpleString) and isinstance(name.evaluated_value, str) and off is not None:
            line = self.get_metadata(cst.metadata.PositionProvider, default).start.line
            self.found.append((name.evaluated_value, line, default, off))


class _Replace(cst.CSTTransformer):
    def __init__(self, old: cst.BaseExpression, new: cst.BaseExpression) -> None:
        self.old, self.new = old, new

    def leave_SimpleString(self, original, updated):  # noqa: N802
        return self.new if original is self.old else updated

    def leave_Integer(self, original, updated):  # noqa: N802
        return self.new if original is self.old else updated

    def leave_Name(self, original, updated):  # noqa: N802
        return self.new if original is self.old else updated


def _code_candidates(path: str, source: str) -> list[tuple[str, int, str]]:
    """(switch, line, new source) for each truthy env default of one Python file; none when it does not parse."""
    try:
        wrapper = cst.metadata.MetadataWrapper(cst.parse_module(source))
    except (cst.ParserSyntaxError, RecursionError, ValueError):
        return []
    visitor = _Switches()
    wrapper.visit(visitor)
    out = []
    for name, line, old, new in visitor.found:
        out.append((name, line, wrapper.module.visit(_Replace(old, new)).code))
    return out


_ASSIGN = r"(?<![\w-])({name})=(['\"]?)({value})\2(?![\w.])"


def _readme_candidates(readme: str) -> list[tuple[str, int, str]]:
    """(switch, line, new README) for each `VAR=1`-style assignment on a README line that launches a script."""
    out = []
    lines = readme.splitlines(keepends=True)
    for i, line in enumerate(lines):
        for m in re.finditer(_ASSIGN.format(name=r"[A-Z][A-Z0-9_]*", value=r"1|true|True|yes|on"), line):
            new_line = line[: m.start(3)] + "0" + line[m.end(3) :]
            out.append((m.group(1), i + 1, "".join(lines[:i] + [new_line] + lines[i + 1 :])))
    return out


def _is_rule_violation(f) -> bool:
    """An error of a rule class (the code as shipped), not of the claims/log checks."""
    code = REGISTRY.of(f)
    return f.severity is Severity.ERROR and bool(f.category) and code is not None and code.origin == "rule"


def _violations(folder: Folder, report_filters: dict) -> set[str]:
    rep = audit_submission(folder, **report_filters)
    return {f.rule for f in rep.findings if _is_rule_violation(f)}


def find_fixes(folder: Folder, report: AuditReport, filters: dict | None = None) -> list[Fix]:
    """The switches whose change removes a rule violation of `report`, one Fix each (code defaults first)."""
    filters = filters or {}
    if not any(_is_rule_violation(f) for f in report.findings):
        return []
    no_logs = replace(
        folder,
        files={p: b for p, b in folder.files.items() if not p.lower().endswith(LOG_SUFFIXES)},
    )
    before = _violations(no_logs, filters)
    if not before:
        return []  # the violations rest on the logs alone: no switch in the code turns them off
    text = " ".join(f"{f.message} {f.reachability_reason}" for f in report.findings).lower()
    candidates: list[tuple[str, str, int, str, str]] = []  # (kind, path, line, switch, new text)
    for path in report.code_files:
        if path in folder.files and path.endswith(".py"):
            for name, line, new in _code_candidates(path, folder.text(path)):
                candidates.append(("code-default", path, line, name, new))
    readme = folder.find("README.md")
    if readme:
        for name, line, new in _readme_candidates(folder.text(readme)):
            candidates.append(("run-command", readme, line, name, new))
    # switches the findings mention first (`args.ttt_enabled is True`), then the rest, within the budget
    candidates.sort(key=lambda c: (c[3].lower() not in text, c[0] != "code-default"))
    fixes: list[Fix] = []
    for kind, path, line, name, new in candidates[:MAX_CANDIDATES]:
        trial = replace(no_logs, files={**no_logs.files, path: new.encode()})
        removed = tuple(sorted(before - _violations(trial, filters)))
        if removed:
            old_line = folder.text(path).splitlines()[line - 1]
            fixes.append(Fix(path, line, old_line, new.splitlines()[line - 1], name, removed, kind))
    return fixes


def apply_code_fixes(folder: Folder, fixes: list[Fix]) -> dict[str, str]:
    """The new text of each file the code-default fixes change (all of a file's fixes applied together)."""
    out: dict[str, str] = {}
    for fix in fixes:
        if fix.kind != "code-default":
            continue
        source = out.get(fix.path, folder.text(fix.path))
        lines = source.splitlines(keepends=True)
        current = lines[fix.line - 1]
        ending = current[len(current.rstrip("\r\n")) :]
        if current.rstrip("\r\n") == fix.old:
            lines[fix.line - 1] = fix.new + ending
            out[fix.path] = "".join(lines)
    return out
