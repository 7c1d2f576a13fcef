"""Which code printed the logs: the literal text of log calls, matched against the submission's log lines.

Logs are evidence (docs/rulings.md §4, lesson 2). A message counts only through a distinctive piece of its literal text
(`"lora_ttt_batch ["`, not `"val_loss:"`) that no log call outside the region in question prints: text printed
on a live path proves nothing. Used for scripts that ran (scripts.py) and for code that the logs show ran
although it is off under the effective config (analysis/reachability.py).
"""

from __future__ import annotations

import ast
import bisect
import re
from dataclasses import dataclass

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
_CODE_LINE = re.compile(
    r"""\b(print|log\w*)\s*\(|\bf["']|^\s*(def|class|import|from|return|if|elif|for|while|with)\b"""
)


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
