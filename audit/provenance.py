"""Which code printed the logs: the literal text of log calls, matched against the submission's log lines.

Logs are evidence (RULES.md, lesson 2). Two questions are answered here:
- a block that is off under the effective config, but whose own log messages appear in the logs, did run in
  the logged run (a switch set outside the README, a default edited after the run);
- a script that is not the entry (a nested copy of the record, a second script) but whose log messages appear
  in the logs is code that ran, and is audited too.

A message counts only through a distinctive piece of its literal text (`"lora_ttt_batch ["`, not `"val_loss:"`)
that no log call outside the region in question prints: text printed on a live path proves nothing.
"""

from __future__ import annotations

import ast
import bisect
import dataclasses
import re
from dataclasses import dataclass

from . import pyparse

MIN_CHUNK = 10  # shorter literal pieces ("val_bpb:") are printed by every script
_LOG_NAME = re.compile(r"(^|_)(log\w*|print\w*|info|warning|warn|write)$", re.I)
_PLACEHOLDER = re.compile(r"\{[^{}]*\}|%[-+ #0-9.]*[sdifgexr]")
_WORDY = re.compile(r"[A-Za-z]{3}")


@dataclass(frozen=True)
class LogCall:
    """A call that writes a message, with the distinctive literal pieces of that message."""

    call: ast.Call
    start: int
    end: int
    chunks: tuple[str, ...]


def _callee(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _literal_parts(node: ast.AST) -> list[str]:
    """Literal text of a message expression; a formatted value splits it into separate pieces."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    if isinstance(node, ast.BinOp):  # "a" + x + "b", "fmt %s" % x
        return _literal_parts(node.left) + ([] if isinstance(node.op, ast.Mod) else _literal_parts(node.right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _literal_parts(node.func.value)
    return []


def message_chunks(call: ast.Call) -> tuple[str, ...]:
    if not call.args or not _LOG_NAME.search(_callee(call)):
        return ()
    out = []
    for part in _literal_parts(call.args[0]):
        for piece in _PLACEHOLDER.split(part):
            piece = piece.strip()
            if len(piece) >= MIN_CHUNK and _WORDY.search(piece):
                out.append(piece)
    return tuple(out)


def log_calls(tree: ast.AST) -> list[LogCall]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            chunks = message_chunks(node)
            if chunks:
                out.append(LogCall(node, node.lineno, getattr(node, "end_lineno", node.lineno) or node.lineno, chunks))
    out.sort(key=lambda c: c.start)
    return out


class LogText:
    """All log lines of a submission, searchable for a literal piece in one pass."""

    def __init__(self, events: list[tuple[str, int, str]]):
        self.events = events
        self.starts: list[int] = []
        pos = 0
        for e in events:
            self.starts.append(pos)
            pos += len(e[2]) + 1
        self.text = "\n".join(e[2] for e in events)

    def find(self, chunk: str) -> tuple[str, int, str] | None:
        """The first log line containing `chunk`, as (log path, line number, text)."""
        at = self.text.find(chunk)
        if at < 0:
            return None
        return self.events[bisect.bisect_right(self.starts, at) - 1]


def printed_by(text: str, others: str, logs: LogText) -> tuple[str, tuple[str, int, str]] | None:
    """A log line that only the script `text` prints: (the literal piece, the log line), or None.

    `others` is the source text of the code already audited; a piece it contains is not distinctive."""
    tree, _ = pyparse.parse(text)
    if tree is None:
        return None
    for lc in log_calls(tree):
        for chunk in lc.chunks:
            if chunk in others:
                continue
            hit = logs.find(chunk)
            if hit is not None:
                return chunk, hit
    return None


def add_scripts_that_ran(sub, events: list[tuple[str, int, str]]) -> list:
    """Audit a script of the folder that is not the entry (a nested copy of the record, a second script)
    when the logs print messages only it prints: that script, not (only) the entry, produced the results."""
    from .findings import Location, Severity
    from .resolve import resolve_file
    from .submission import load_finding

    if not events or not sub.sources:
        return []
    logs = LogText(events)
    audited = {s.path for s in sub.sources} | set(sub.code_files)
    findings = []
    for path in sorted(p for p in sub.files if p.endswith(".py") and p not in audited):
        if path.rsplit("/", 1)[-1] in _NOT_SCRIPTS:
            continue
        n_load = len(sub.load_findings)
        src = resolve_file(sub, path, "ran")
        del sub.load_findings[n_load:]  # a file that did not run is not worth a loader finding
        if src.parse_error:
            continue
        hit = printed_by(src.text, "\n".join(s.text for s in sub.sources), logs)
        if hit is None:
            continue
        chunk, (log_path, line, text) = hit
        sub.sources.append(src)
        f = load_finding(
            "PG003/script-that-ran",
            f"{path} is not the entry script, but {log_path}:{line} prints its message `{chunk}`: "
            "it produced (some of) the logs and is audited too",
            path,
            Severity.INFO,
        )
        proof = Location(path=log_path, start_line=line, end_line=line, snippet=text.strip()[:200],
                         note="log line only this script prints")
        findings.append(dataclasses.replace(f, evidence=(proof,)))
    return findings


_NOT_SCRIPTS = {"setup.py", "__init__.py", "conftest.py"}

__all__ = ["LogCall", "LogText", "add_scripts_that_ran", "log_calls", "message_chunks", "printed_by"]
