"""Find the script source that most logs echo before the run (baseline `log0(code, console=False)`).

The echo starts at a line that opens a Python file (docstring, `import`, `from __future__`, shebang) and ends
at the next line of '=' the script prints after it. A candidate block counts as source only when it holds
several unmistakable Python statements, so a hyperparameter dump between two rules is never swallowed.
Runs concatenated into one file echo their source again; each block is found.
"""

from __future__ import annotations

import re
from itertools import accumulate

from .patterns import PY_START_RE, PY_STRONG_RE, RULE_RE

# A line that can sit inside Python source (used to walk back from a rule over a truncated echo).
_CODE_LIKE_RE = re.compile(
    r"^(?:$|[ \t]+\S|#|@|[)\]}]|(?:def|class|if|elif|else|for|while|with|try|except|finally|return|import|from|raise|"
    r"assert|global|nonlocal|async|await|pass|break|continue|del|yield)\b|[A-Za-z_][\w.]*(?:\[[^\]]*\])?\s*[-+*/|&]?=[^=]"
    r"|[A-Za-z_][\w.]*\()"
)
# Indented log lines that must stop the walk (hyperparameter dumps, progress).
_INDENTED_LOG_RE = re.compile(r"^ {1,2}(?:[a-z_][a-z0-9_]*: \S|ttt_chunk \[|sliding_eval \[)")

_START_CHARS = frozenset("\"'#fi")
_STRONG_CHARS = frozenset("dcifr")  # a PY_STRONG_RE line starts with one of these or with white space
MIN_STRONG = 3  # def/class/import/return lines required to call a block source
PROBE = 400  # lines inspected to decide (enough to see imports and the first defs)


def source_spans(lines: list[str]) -> list[tuple[int, int]]:
    """Half-open [start, end) index ranges of echoed source; `end` is the closing rule line (not included)."""
    rules = [i for i, line in enumerate(lines) if line[:1] == "=" and RULE_RE.match(line)]
    if not rules:
        return []
    strong = _strong_prefix(lines)
    spans: list[tuple[int, int]] = []
    ri = 0
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        if line[:1] in _START_CHARS and PY_START_RE.match(line):
            while ri < len(rules) and rules[ri] <= i:
                ri += 1
            if ri == len(rules):
                break  # no closing rule: not an echo the script wrote
            end = rules[ri]
            if strong[min(end, i + PROBE)] - strong[i] >= MIN_STRONG:  # enough def/class/import lines to be code
                spans.append((i, end))
                i = end + 1
                continue
        i += 1
    return _add_headless(lines, rules, spans, strong)


def echo_blocks(lines: list[str], spans: list[tuple[int, int]]) -> list[tuple[int, tuple[tuple[int, str], ...]]]:
    """Each echo span as (its first line, 1-based; its non-blank lines as (line, stripped text))."""
    return [
        (start + 1, tuple((i + 1, t) for i in range(start, end) if (t := lines[i].strip()))) for start, end in spans
    ]


def _strong_prefix(lines: list[str]) -> list[int]:
    """prefix[k] = how many of lines[:k] are strong Python lines (def/class/import/return): any window's count
    in O(1), so a log of 100,000 lines that each open a candidate echo costs one pass, not 400 reads a line."""
    match = PY_STRONG_RE.match
    return [
        0,
        *accumulate(1 if (line[:1] in _STRONG_CHARS or line[:1].isspace()) and match(line) else 0 for line in lines),
    ]


def _add_headless(
    lines: list[str], rules: list[int], spans: list[tuple[int, int]], strong: list[int]
) -> list[tuple[int, int]]:
    """Echoes whose first lines were cut (a truncated or concatenated file): walk back from the closing rule."""
    starts = {e: s for s, e in spans}
    out: list[tuple[int, int]] = []
    prev = -1
    for r in rules:
        if r in starts:
            out.append((_walk_back(lines, starts[r], prev), r))
        else:
            lo = max(prev + 1, r - PROBE)
            if strong[r] - strong[lo] >= MIN_STRONG:
                k = _walk_back(lines, r, prev)
                if r - k >= MIN_STRONG:
                    out.append((k, r))
        prev = r
    return out


def _walk_back(lines: list[str], k: int, floor: int) -> int:
    while k - 1 > floor and _CODE_LIKE_RE.match(lines[k - 1]) and not _INDENTED_LOG_RE.match(lines[k - 1]):
        k -= 1
    return k
