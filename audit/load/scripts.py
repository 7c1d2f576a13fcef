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
import re
from dataclasses import dataclass

from .. import codes
from ..findings import Location
from . import parse as pyparse

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
            # one bare key ("pre_quant_ttt_epochs:") is also what a hyperparameter dump prints
            if len(piece) >= MIN_CHUNK and _WORDY.search(piece) and len(piece.split()) >= 2:
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


# A log line that echoes source code (a dump the parser did not recognise) proves nothing.
_CODE_LINE = re.compile(r"""\b(print|log\w*)\s*\(|\bf["']|^\s*(def|class|import|from|return|if|elif|for|while|with)\b""")


def message_lines(events: list[tuple[str, int, str, str]]) -> list[tuple[str, int, str]]:
    """The log lines that can prove a message was printed: not hyperparameter dumps (`key: value`), not code."""
    return [(p, n, t) for p, n, t, kind in events if kind != "kv_line" and not _CODE_LINE.search(t)]


def printed_by(tree: ast.AST, others: str, logs: LogText) -> list[tuple[str, tuple[str, int, str]]]:
    """Log lines printed by the script `tree` and by none of `others` (the source text of the other code):
    [(the literal piece, the log line)], one per piece."""
    out = []
    for lc in log_calls(tree):
        for chunk in lc.chunks:
            if chunk in others:
                continue
            hit = logs.find(chunk)
            if hit is not None:
                out.append((chunk, hit))
    return out


def add_scripts_that_ran(sub, lines: list[tuple[str, int, str]]) -> list:
    """Audit a script of the folder that is not the entry (a nested copy of the record, an eval script) when
    the logs print at least two messages that only it prints: that script produced (some of) the results.

    Ablation folders hold many near-copies that print the same messages: a message any other candidate also
    prints does not count, so a script is added only when the evidence points at it alone."""
    from .resolve import resolve_file

    if not lines or not sub.sources:
        return []
    logs = LogText(lines)
    audited = {s.path for s in sub.sources} | set(sub.code_files)
    candidates = []
    for path in sorted(p for p in sub.files if p.endswith(".py") and p not in audited):
        if path.rsplit("/", 1)[-1] in _NOT_SCRIPTS:
            continue
        n_load = len(sub.load_findings)
        src = resolve_file(sub, path, "ran")
        del sub.load_findings[n_load:]  # a file that did not run is not worth a loader finding
        tree, _ = pyparse.parse(src.text) if not src.parse_error else (None, None)
        if tree is not None:
            candidates.append((path, src, tree))
    if not candidates or len(candidates) > MAX_CANDIDATES:
        return []
    # messages compared as printed (implicitly concatenated literals joined), and as raw text
    audited = [s.text for s in sub.sources] + [_printed_text(t) for t in _trees(sub.sources)]
    printed = {path: _printed_text(tree) for path, _, tree in candidates}
    findings = []
    for path, src, tree in candidates:
        others = "\n".join(audited + [s.text + "\n" + printed[p] for p, s, _ in candidates if p != path])
        hits = printed_by(tree, others, logs)
        if len({hit[1] for hit in hits}) < 2:
            continue  # one matching line may be chance
        chunk, (log_path, line, text) = hits[0]
        sub.sources.append(src)
        proof = tuple(
            Location(path=lp, start_line=ln, end_line=ln, snippet=t.strip()[:200], note="log line only this script prints")
            for _, (lp, ln, t) in hits[:3]
        )
        findings.append(
            codes.SCRIPT_THAT_RAN.finding(
                f"{path} is not the entry script, but the logs print {len(hits)} messages only it prints "
                f"(e.g. {log_path}:{line} `{chunk}`): it produced (some of) the results and is audited too",
                Location(path=path),
                evidence=proof,
            )
        )
    return findings


def _printed_text(tree: ast.AST) -> str:
    return "\0".join(ch for lc in log_calls(tree) for ch in lc.chunks)


def _trees(sources) -> list[ast.AST]:
    trees = (pyparse.parse(s.text)[0] for s in sources if not s.parse_error)
    return [t for t in trees if t is not None]


_NOT_SCRIPTS = {"setup.py", "__init__.py", "conftest.py"}
MAX_CANDIDATES = 40  # a vendored package is a library, not a script that ran

__all__ = ["LogCall", "LogText", "add_scripts_that_ran", "log_calls", "message_chunks", "message_lines", "printed_by"]
