"""First-character dispatch for the log patterns: which anchored patterns can match a line that starts with `c`.

Every pattern of patterns.py is anchored (`^…`), so a line can only match the patterns whose possible first
characters include its own. They are read from the compiled pattern's parse tree (the `re` module's own parser):
literals, classes, ranges, categories, optional prefixes, alternations, groups and case-insensitive flags. Where
the tree says "any character" (`.`, a lazy `.*?` prefix, a back-reference…), the pattern is kept for every line.
Only ASCII first characters are dispatched; a line starting with anything else is tried against every pattern, so
Unicode classes (`\\d`, `\\s`, `\\w` match more than ASCII) never lose a match.

Each pattern also gets the literal text every match of it contains, when the tree has one (`required_literal`):
a pattern that must scan the line before it fails (`.*?(?:RUN|DONE) seed=`) is not tried on a line without it.
"""

from __future__ import annotations

import re

try:  # the parser of the `re` module; if a Python ever moves it, every pattern is simply tried on every line
    import re._parser as _parser
except ImportError:  # pragma: no cover
    _parser = None

ASCII = [chr(i) for i in range(128)]
_CATEGORY_RE = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}


class _AnyCharError(Exception):
    """The pattern may start with any character."""


def _category(name: str) -> set[str]:
    rx = _CATEGORY_RE.get(name)
    if rx is None:
        raise _AnyCharError
    return {c for c in ASCII if re.match(rx, c)}


def _class(items) -> set[str]:
    chars: set[str] = set()
    negate = False
    for op, av in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            chars.add(chr(av))
        elif name == "RANGE":
            chars.update(chr(i) for i in range(av[0], min(av[1], 127) + 1))
        elif name == "CATEGORY":
            chars |= _category(str(av))
        else:
            raise _AnyCharError
    return set(ASCII) - chars if negate else chars


def _fold(chars: set[str]) -> set[str]:
    return chars | {c.swapcase() for c in chars}


def _first_of_seq(seq, ignorecase: bool) -> tuple[set[str], bool]:
    """(first characters, whether the sequence can match the empty string)."""
    out: set[str] = set()
    for op, av in seq:
        chars, nullable = _first_of_item(str(op), av, ignorecase)
        out |= chars
        if not nullable:
            return out, False
    return out, True


def _first_of_item(op: str, av, ignorecase: bool) -> tuple[set[str], bool]:
    if op == "AT" or op in ("ASSERT", "ASSERT_NOT"):  # anchors and look-arounds consume nothing
        return set(), True
    if op == "LITERAL":
        c = {chr(av)}
        return (_fold(c) if ignorecase else c), False
    if op == "IN":
        c = _class(av)
        return (_fold(c) if ignorecase else c), False
    if op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
        lo, _hi, sub = av
        chars, nullable = _first_of_seq(sub, ignorecase)
        return chars, lo == 0 or nullable
    if op == "SUBPATTERN":
        _group, add_flags, _del_flags, sub = av
        return _first_of_seq(sub, ignorecase or bool(add_flags & re.IGNORECASE))
    if op == "ATOMIC_GROUP":
        return _first_of_seq(av, ignorecase)
    if op == "BRANCH":
        chars, nullable = set(), False
        for alt in av[1]:
            c, n = _first_of_seq(alt, ignorecase)
            chars |= c
            nullable = nullable or n
        return chars, nullable
    raise _AnyCharError  # ANY, NOT_LITERAL, GROUPREF, …: could be any character


def first_chars(rx: re.Pattern[str]) -> frozenset[str] | None:
    """The ASCII characters a match of `rx` (anchored at the start) can begin with; None when it could be any
    (or when the pattern can match the empty string, which every line begins with)."""
    if _parser is None:
        return None
    try:
        chars, nullable = _first_of_seq(_parser.parse(rx.pattern, rx.flags), bool(rx.flags & re.IGNORECASE))
    except (_AnyCharError, re.error, TypeError, ValueError):
        return None
    return None if nullable else frozenset(chars)


def _required_of_seq(seq, ignorecase: bool) -> set[str] | None:
    """Strings of which every match of `seq` contains at least one, or None when the tree does not say. Taken
    from one part every match goes through: a run of literal characters, or a group, a branch or a repeat
    (at least once) whose own parts say; the part whose strings are the longest wins."""
    best: set[str] | None = None
    run: list[str] = []

    def offer(cands: set[str] | None) -> None:
        nonlocal best
        if cands and (best is None or min(map(len, cands)) > min(map(len, best))):
            best = cands

    for op, av in seq:
        name = str(op)
        if name == "LITERAL" and not ignorecase:
            run.append(chr(av))
            continue
        offer({"".join(run)} if run else None)
        run = []
        if name == "SUBPATTERN":
            _group, add_flags, _del_flags, sub = av
            offer(_required_of_seq(sub, ignorecase or bool(add_flags & re.IGNORECASE)))
        elif name == "ATOMIC_GROUP":
            offer(_required_of_seq(av, ignorecase))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and av[0] >= 1:
            offer(_required_of_seq(av[2], ignorecase))
        elif name == "BRANCH":
            alts = [_required_of_seq(alt, ignorecase) for alt in av[1]]
            if all(alts):
                offer(set().union(*alts))
    offer({"".join(run)} if run else None)
    return best


def _common_substring(strings: set[str]) -> str:
    """The longest string contained in every one of `strings` (the first found, shortest member's order)."""
    first = min(strings, key=len)
    for size in range(len(first), 0, -1):
        for i in range(len(first) - size + 1):
            cand = first[i : i + size]
            if all(cand in s for s in strings):
                return cand
    return ""


MIN_LITERAL = 3  # shorter literals are in most lines: testing them costs more than it saves


def required_literal(rx: re.Pattern[str]) -> str | None:
    """A string every match of `rx` contains (so a line without it cannot match), or None when the pattern's tree
    gives none of at least MIN_LITERAL characters. Case-insensitive parts give none."""
    if _parser is None:
        return None
    try:
        cands = _required_of_seq(_parser.parse(rx.pattern, rx.flags), bool(rx.flags & re.IGNORECASE))
    except (re.error, TypeError, ValueError):
        return None
    literal = _common_substring(cands) if cands else ""
    return literal if len(literal) >= MIN_LITERAL else None


def dispatch_table(ordered):
    """({first ASCII character: the patterns to try, in order}, the full order for any other first character);
    each pattern as (name, compiled, the literal every match contains or None)."""
    entries = [(name, rx, first_chars(rx), required_literal(rx)) for name, rx in ordered]
    table = {c: tuple((name, rx, lit) for name, rx, f, lit in entries if f is None or c in f) for c in ASCII}
    return table, tuple((name, rx, lit) for name, rx, _, lit in entries)
