"""Which code printed the logs: the literal text of log calls, matched against the submission's log lines.

Logs are evidence (docs/rulings.md §4, lesson 2). A message counts only through a distinctive piece of its literal text
(`"lora_ttt_batch ["`, not `"val_loss:"`) that no log call outside the region in question prints: text printed
on a live path proves nothing. Used for scripts that ran (scripts.py) and for code that the logs show ran
although it is off under the effective config (analysis/reachability.py).

Whole templates (`log_templates`, `explained`) rebuild each log call's entire message, so that a log line can be
proven printed, or not printable, by the shipped code (checks/logsource.py); `silent_mechanism` is the negative
evidence: every log reaches the line printed just before a mechanism and none prints the mechanism's first message.
"""

from __future__ import annotations

import ast
import bisect
import re
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter

from . import parse as pyparse
from .parse import children, walk

_POSITION = attrgetter("lineno", "col_offset")  # a call's (line, column): its place in the source

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


def is_log_name(name: str) -> bool:
    """A called name that prints (`log0`, `print`, `logger.info`): only its calls make log templates."""
    return _LOG_NAME.search(name) is not None


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
    return _chunks(call)


def _chunks(call: ast.Call) -> tuple[str, ...]:
    """The literal pieces of a log call's message (`message_chunks`, its callee already known to print)."""
    out = []
    for part in _literal_parts(call.args[0]):
        for piece in _PLACEHOLDER.split(part):
            piece = piece.strip()
            # one bare key ("pre_quant_ttt_epochs:") is also what a hyperparameter dump prints
            if len(piece) >= MIN_CHUNK and _WORDY.search(piece) and len(piece.split()) >= 2:
                out.append(piece)
    return tuple(out)


def log_calls(tree: ast.AST) -> list[LogCall]:
    """The log calls of a tree (with the literal pieces they print), in line order. A module's are kept for the
    audit: the scripts-that-ran stage and the liveness of guarded code both read them. Callers do not modify
    the list."""
    hit = _LOG_CALLS.get(id(tree))
    if hit is not None and hit[0] is tree:
        return hit[1]
    out = _log_calls(tree)
    if tree.__class__ is ast.Module:
        _LOG_CALLS[id(tree)] = (tree, out)
    return out


_LOG_CALLS: dict[int, tuple[ast.AST, list[LogCall]]] = pyparse.module_cache()


def _log_calls(tree: ast.AST) -> list[LogCall]:
    out = []
    prints: dict[str, bool] = {}  # callee name -> whether it prints: a script calls a few hundred names
    for node in [n for n in walk(tree) if n.__class__ is ast.Call]:
        name = _callee(node)
        if name not in prints:
            prints[name] = is_log_name(name)
        if not prints[name] or not node.args:
            continue
        chunks = _chunks(node)
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


# What each branch of _CODE_LINE needs: a `(`, a quote, or a keyword at the start (after any whitespace).
_CODE_KEYWORDS = ("def", "class", "import", "from", "return", "if", "elif", "for", "while", "with")


def _may_be_code(t: str) -> bool:
    """Whether `_CODE_LINE` can match `t`, from substrings its branches need (a call needs `(` and `print` or
    `log`; an f-string `f"` or `f'`; a statement its keyword at the start)."""
    return (
        ("(" in t and ("log" in t or "print" in t))
        or 'f"' in t
        or "f'" in t
        or t[:1].isspace()
        or t.startswith(_CODE_KEYWORDS)
    )


def message_lines(events: list[tuple[str, int, str, str]]) -> list[tuple[str, int, str]]:
    """The log lines that can prove a message was printed: not hyperparameter dumps (`key: value`), not code."""
    return [
        (p, n, t) for p, n, t, kind in events if kind != "kv_line" and not (_may_be_code(t) and _CODE_LINE.search(t))
    ]


def printed_by(calls: list[LogCall], others: str, logs: LogText) -> list[tuple[str, tuple[str, int, str]]]:
    """Log lines printed by a script's log `calls` and by none of `others` (the source text of the other code):
    [(the literal piece, the log line)], one per piece."""
    out = []
    for lc in calls:
        for chunk in lc.chunks:
            if chunk in others:
                continue
            hit = logs.find(chunk)
            if hit is not None:
                out.append((chunk, hit))
    return out


# --- whole templates: which log lines a shipped log call can have printed ---------------------------------------
#
# A log call's message is rebuilt whole: literal text and holes (formatted values), with the alternatives of
# conditional fragments (`f"{'a' if x else 'b'}"`), `+`-joined pieces, `%` and `.format` placeholders, and a
# message held in a local variable. A log line is explained when some template matches it entirely.

HOLE = None  # a formatted value: any text on one line
MAX_ALTERNATIVES = 16  # conditional fragments multiply; past this the call is one hole-only template
MAX_MATCH_CHARS = 600  # longer lines are compared by their head
DISTINCTIVE_LETTERS = 8  # a template with this much literal text may sit behind a logging prefix
_PCT = re.compile(r"%%|%(?:\([^)]*\))?[-+ #0-9.*]*[sdifgexrcouXEGa]")
_FMT = re.compile(r"\{\{|\}\}|\{[^{}]*\}")
_LETTER = re.compile(r"[A-Za-z]")
_PRINT_NAMES = {"print"}

Parts = tuple  # of str | None (HOLE)


@dataclass(frozen=True)
class Template:
    """One line a log call can print: `regex` (from `pattern`) matches the whole (stripped) line; `anchor` is its
    longest literal piece, looked up with `in` before the regex runs."""

    path: str
    line: int
    text: str  # the template as written for a reader: literal text, holes as `{…}`
    pattern: str
    anchor: str
    letters: int  # letters in the literal text: how much the template says

    @cached_property
    def regex(self) -> re.Pattern:
        # compiled on the first line that holds the anchor: most templates never meet one
        return re.compile(self.pattern, re.S)

    def explains(self, line: str) -> bool:
        if self.anchor and self.anchor not in line:
            return False
        if self.regex.fullmatch(line):
            return True
        # a logging formatter may put a prefix (time, level) before a distinctive message
        return self.letters >= DISTINCTIVE_LETTERS and self.regex.search(line) is not None


def _concat(a: list[Parts], b: list[Parts]) -> list[Parts]:
    out = [x + y for x in a for y in b]
    return out if len(out) <= MAX_ALTERNATIVES else [(HOLE,)]


def _split_placeholders(text: str, rx: re.Pattern, escapes: dict[str, str]) -> Parts:
    out: list[str | None] = []
    pos = 0
    for m in rx.finditer(text):
        out.append(text[pos : m.start()])
        out.append(escapes.get(m.group(0), HOLE))
        pos = m.end()
    out.append(text[pos:])
    return tuple(out)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class _Scope:
    """The string-valued local bindings of one function (or module) body: `msg = f"…"`, `msg += f"…"`."""

    def __init__(self, nodes: list[ast.AST]):
        self.assigned: dict[str, list[ast.expr]] = {}
        self.extended: set[str] = set()
        for n in nodes:
            if isinstance(n, ast.Assign):
                for t in n.targets:
                    if isinstance(t, ast.Name):
                        self.assigned.setdefault(t.id, []).append(n.value)
            elif isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name) and isinstance(n.op, ast.Add):
                self.extended.add(n.target.id)


def _own_nodes(scope: ast.AST) -> list[ast.AST]:
    """The nodes of one function (or module) body, nested functions and classes left out."""
    out: list[ast.AST] = []
    stack: list[ast.AST] = list(getattr(scope, "body", []))
    while stack:
        n = stack.pop()
        out.append(n)
        if not isinstance(n, _SCOPES):
            stack.extend(children(n))
    return out


def _raw_fstring(raw: str) -> Parts:
    """A string literal read from its source text (an f-string the parser had to blank, PEP 701 quotes):
    literal text and `{…}` holes, braces counted."""
    body = raw.lstrip("rRbBfFuU")
    q = body[:3] if body[:3] in ('"""', "'''") else body[:1]
    body = body[len(q) : len(body) - len(q)] if body.endswith(q) and len(body) >= 2 * len(q) else body[len(q) :]
    out: list[str | None] = []
    lit, depth, i = "", 0, 0
    while i < len(body):
        c = body[i]
        if depth == 0 and c in "{}" and body[i : i + 2] in ("{{", "}}"):
            lit += c
            i += 2
            continue
        if c == "{":
            if depth == 0:
                out.extend((lit, HOLE))
                lit = ""
            depth += 1
        elif c == "}" and depth:
            depth -= 1
        elif depth == 0:
            lit += c
        i += 1
    out.append(lit)
    return tuple(p.replace("\\n", "\n") if isinstance(p, str) else p for p in out)


class _Builder:
    def __init__(self, scope: _Scope, raw_lines: list[str]):
        self.scope = scope
        self.raw_lines = raw_lines
        self.resolving: set[str] = set()

    def _blanked(self, node: ast.JoinedStr) -> Parts | None:
        """The literal as written when the parser blanked it (same line, same length, only spaces left)."""
        if any(isinstance(v, ast.FormattedValue) for v in node.values) or node.lineno != node.end_lineno:
            return None
        if not self.raw_lines or node.lineno > len(self.raw_lines):
            return None
        raw = self.raw_lines[node.lineno - 1][node.col_offset : node.end_col_offset]
        if "{" not in raw or not all(isinstance(v, ast.Constant) and not v.value.strip() for v in node.values):
            return None
        return _raw_fstring(raw)

    def alts(self, node: ast.AST) -> list[Parts]:
        """The alternatives of text `node` can evaluate to, each a sequence of literal parts and holes."""
        if isinstance(node, ast.Constant):
            return [(str(node.value),)] if isinstance(node.value, (str, int, float)) else [(HOLE,)]
        if isinstance(node, ast.JoinedStr):
            blanked = self._blanked(node)
            if blanked is not None:
                return [blanked]
            out: list[Parts] = [()]
            for v in node.values:
                if isinstance(v, ast.FormattedValue):
                    # a conditional fragment gives its alternatives; any other formatted value is one hole
                    textual = isinstance(v.value, (ast.IfExp, ast.Constant)) and v.format_spec is None
                    out = _concat(out, self.alts(v.value) if textual and v.conversion == -1 else [(HOLE,)])
                else:
                    out = _concat(out, self.alts(v))
            return out
        if isinstance(node, ast.IfExp):
            return (self.alts(node.body) + self.alts(node.orelse))[:MAX_ALTERNATIVES]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return _concat(self.alts(node.left), self.alts(node.right))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            return [self._placeholders(p, _PCT, {"%%": "%"}) for p in self.alts(node.left)]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            return [self._placeholders(p, _FMT, {"{{": "{", "}}": "}"}) for p in self.alts(node.func.value)]
        if isinstance(node, ast.Name) and node.id in self.scope.assigned and node.id not in self.resolving:
            self.resolving.add(node.id)
            out = [a for v in self.scope.assigned[node.id] for a in self.alts(v)][:MAX_ALTERNATIVES]
            self.resolving.discard(node.id)
            if node.id in self.scope.extended:  # `msg += …`: more text may follow
                out = [a + (HOLE,) for a in out]
            return out
        return [(HOLE,)]

    @staticmethod
    def _placeholders(parts: Parts, rx: re.Pattern, escapes: dict[str, str]) -> Parts:
        out: list[str | None] = []
        for p in parts:
            out.extend(_split_placeholders(p, rx, escapes) if isinstance(p, str) else (p,))
        return tuple(out)

    def message(self, call: ast.Call) -> list[Parts] | None:
        """The alternatives of the whole text `call` writes, or None when it is not a log call."""
        name = _callee(call)
        if not call.args or not _LOG_NAME.search(name):
            return None
        kw = {k.arg: k.value for k in call.keywords if k.arg}
        if name in _PRINT_NAMES:
            sep = kw.get("sep")
            sep_alts = self.alts(sep) if sep is not None else [(" ",)]
            out = self.alts(call.args[0])
            for a in call.args[1:]:
                out = _concat(_concat(out, sep_alts), self.alts(a))
        elif len(call.args) > 1:  # logging style: logger.info("fmt %s", x)
            out = [self._placeholders(p, _PCT, {"%%": "%"}) for p in self.alts(call.args[0])]
        else:
            out = self.alts(call.args[0])
        if name in _PRINT_NAMES and "end" in kw:
            out = [a + (HOLE,) for a in out]  # the next print continues the line
        return out


def _line_templates(path: str, line: int, parts: Parts) -> list[Template]:
    lines: list[list[str | None]] = [[]]
    for p in parts:
        if p is HOLE:
            lines[-1].append(HOLE)
            continue
        first, *rest = p.split("\n")
        lines[-1].append(first)
        lines.extend([r] for r in rest)
    out = []
    for pieces in lines:
        merged: list[str | None] = []
        for p in pieces:
            if p == "":
                continue
            if p is HOLE and merged and merged[-1] is HOLE:
                continue
            if isinstance(p, str) and merged and isinstance(merged[-1], str):
                merged[-1] += p
            else:
                merged.append(p)
        if merged and isinstance(merged[0], str):
            merged[0] = merged[0].lstrip()
        if merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1].rstrip()
        merged = [p for p in merged if p != ""]
        literal = [p for p in merged if isinstance(p, str)]
        if not literal:
            continue  # a hole-only line (a wrapper passing its argument on) says nothing
        pattern = "".join(".*?" if p is HOLE else re.escape(p) for p in merged)
        text = "".join("{…}" if p is HOLE else p for p in merged)
        letters = sum(len(_LETTER.findall(p)) for p in literal)
        out.append(Template(path, line, text, pattern, max(literal, key=len).strip(), letters))
    return out


def _log_calls_in(nodes: list[ast.AST], path: str, raw_lines: list[str]) -> list[tuple[ast.Call, list[Template]]]:
    builder = _Builder(_Scope(nodes), raw_lines)
    out: list[tuple[ast.Call, list[Template]]] = []
    for n in nodes:
        if isinstance(n, ast.Call):
            templates = [t for parts in builder.message(n) or () for t in _line_templates(path, n.lineno, parts)]
            if templates:
                out.append((n, templates))
    out.sort(key=lambda ct: (ct[0].lineno, ct[0].col_offset))
    return out


def scope_log_calls(scope: ast.AST, path: str = "", text: str = "") -> list[tuple[ast.Call, list[Template]]]:
    """The log calls of one function (or module) body, nested functions left out, each with its templates, in
    source order (`text`: the source as written, for f-strings the parser had to blank)."""
    return _log_calls_in(_own_nodes(scope), path, text.split("\n") if text else [])


def log_templates(tree: ast.AST, path: str = "", text: str = "") -> list[Template]:
    """Every line each log call of `tree` can print, as whole templates (`text`: the source as written, for
    f-strings the parser had to blank)."""
    scope_of: dict[int, ast.AST] = {}
    calls: list[ast.Call] = []
    bindings: list[ast.AST] = []
    stack: list[tuple[ast.AST, ast.AST]] = [(c, tree) for c in children(tree)]
    while stack:  # one walk: each node with the function, class or module body it belongs to
        n, scope = stack.pop()
        scope_of[id(n)] = scope
        if isinstance(n, ast.Call):
            calls.append(n)
        elif isinstance(n, (ast.Assign, ast.AugAssign)):
            bindings.append(n)
        inner = n if isinstance(n, _SCOPES) else scope
        stack.extend((c, inner) for c in children(n))
    calls.sort(key=_POSITION)
    return indexed_log_templates(calls, bindings, lambda n: scope_of[id(n)], path, text)


def indexed_log_templates(calls, bindings, scope_of, path: str = "", text: str = "") -> list[Template]:
    """The same templates from an index built once elsewhere: the source's `Call` nodes, its `Assign` and
    `AugAssign` nodes, and `scope_of(node)`, the function, class or module body a node belongs to."""
    by_scope: dict[int, list[ast.AST]] = {}
    for n in bindings:
        by_scope.setdefault(id(scope_of(n)), []).append(n)
    raw_lines = text.split("\n") if text else []
    builders: dict[int, _Builder] = {}
    out: list[Template] = []
    for call in calls:
        if not call.args or not _LOG_NAME.search(_callee(call)):
            continue
        key = id(scope_of(call))
        if key not in builders:
            builders[key] = _Builder(_Scope(by_scope.get(key, [])), raw_lines)
        for parts in builders[key].message(call) or ():
            out.extend(_line_templates(path, call.lineno, parts))
    return out


@dataclass(frozen=True)
class Silence:
    """Negative log evidence: every log prints the line just before a mechanism, none prints its first message."""

    before: tuple[str, int, str]  # (log path, line, text) of the line printed just before, in the first log
    first: Template  # the mechanism's first message, which no log prints


def _unconditional_calls(body: list[ast.stmt]) -> list[ast.Call]:
    """Calls that are whole statements of `body` (or of a `with` block in it): they run whenever the body runs."""
    out: list[ast.Call] = []
    for st in body:
        if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call):
            out.append(st.value)
        elif isinstance(st, (ast.With, ast.AsyncWith)):
            out.extend(_unconditional_calls(st.body))
    return out


def _distinctive(templates: list[Template]) -> bool:
    return all(t.letters >= DISTINCTIVE_LETTERS for t in templates)


def silent_mechanism(
    scope: ast.AST,
    site: ast.AST,
    mechanism: ast.AST,
    logs: list[tuple[str, int, str]],
    text: str = "",
    mechanism_text: str = "",
) -> Silence | None:
    """Whether the logs show that a mechanism did not run although the code calls it by default: the last
    distinctive log call before `site` (the call that enters the mechanism) in `scope` prints a line in every log,
    and the first distinctive log call of `mechanism` (its function) prints in none. None when the code or the logs
    cannot tell (no such messages, a log that stops before the mechanism, a log that prints its message)."""
    before = [ts for c, ts in scope_log_calls(scope, "", text) if c.lineno < site.lineno and _distinctive(ts)]
    always = {id(c) for c in _unconditional_calls(getattr(mechanism, "body", []))}
    first = [ts for c, ts in scope_log_calls(mechanism, "", mechanism_text) if id(c) in always and _distinctive(ts)]
    if not before or not first or not logs:
        return None
    by_file: dict[str, list[tuple[str, int, str]]] = {}
    for e in logs:
        by_file.setdefault(e[0], []).append(e)
    reached = []
    for lines in by_file.values():
        hit = next((e for e in lines if explained(e[2], before[-1]) is not None), None)
        if hit is None:
            return None  # this log stops before the mechanism (or printed the line differently)
        if any(explained(e[2], first[0]) is not None for e in lines):
            return None  # the mechanism ran here
        reached.append(hit)
    return Silence(reached[0], first[0][0])


_SH_ECHO = re.compile(r"""\b(?:echo|printf)\s+(?:-[neE]+\s+)?(["']?)(.+?)\1\s*(?:[|;&>]|$)""")
_SH_VAR = re.compile(r"\$\{[^}]*\}|\$\([^)]*\)|\$\w+|%[-0-9.]*[sdf]")


def shell_templates(text: str, path: str = "") -> list[Template]:
    """`echo "… $VAR …"` lines of a shipped shell script, as templates."""
    out: list[Template] = []
    for i, line in enumerate(text.splitlines(), 1):
        for m in _SH_ECHO.finditer(line):
            parts = _split_placeholders(m.group(2).replace("\\n", "\n"), _SH_VAR, {})
            out.extend(_line_templates(path, i, parts))
    return out


def explained(line: str, templates: list[Template]) -> Template | None:
    """The first template that can have printed `line` (compared stripped, by its head when very long)."""
    text = line.strip()[:MAX_MATCH_CHARS]
    for t in templates:
        if t.explains(text):
            return t
    return None


@dataclass(frozen=True)
class EchoDiff:
    """A log that echoes a source which no shipped file holds: the echoed lines no shipped file has."""

    path: str
    start: int  # 1-based line of the echo in the log
    closest: str  # the shipped file nearest to it
    only_in_echo: tuple[tuple[int, str], ...]  # (log line, text)
    echo_lines: int

    @property
    def other_program(self) -> bool:
        """Most of the echo is in no shipped file: not an edit of the shipped script but another program."""
        return 2 * len(self.only_in_echo) > self.echo_lines


@dataclass(frozen=True)
class LogProvenance:
    """What the logs show that no shipped source can have printed. Lines are (log path, line, text)."""

    scored: tuple[tuple[str, int, str], ...] = ()  # metric lines (the claimed numbers) printed by other code
    mechanism: tuple[tuple[str, int, str], ...] = ()  # mechanism messages printed by other code
    echoes: tuple[EchoDiff, ...] = ()
    checked: int = 0  # message lines compared with the templates (one per shape)

    @property
    def other_code_ran(self) -> bool:
        # one unexplained message may be a launcher's; two mechanism messages are a run of other code
        return bool(self.scored or len(self.mechanism) >= 2 or any(e.other_program for e in self.echoes))
