"""Native code (C, C++, CUDA) that a submission builds or loads, read for what it does to the scored positions.

Byte-level mixtures and target-gated hints often live in C held in a Python string or in a sibling `.c`/`.cpp`
file, compiled at run time (`cpp_extension.load_inline`/`load`, `cffi`, `ctypes` + `subprocess` gcc). Such code
is never treated as absent: each native source is tokenised and its functions parsed into statements (enough
structure for order, guards and loops, not a compiler), and two shapes are looked for inside loops over the
scored positions:

- **byte spread + mixture (C2)**: a per-position model score (`nll[i]`, a float input read at the position)
  divided by a count that depends on the token at the position (its byte length), and the quotient then mixed
  with another model (`log(exp(a) + exp(b))`, `w*p + (1-w)*q`) — the token's probability spread over its bytes
  and mixed per byte is not a distribution over the vocabulary;
- **target-conditioned gate (C1)**: the output written for position i (a hint, a weight, a validity flag)
  depends on a per-symbol flag table (`uint8_t`/`bool` array) read at the symbol of position i, while that
  symbol is absorbed into the model's state only after the write — the symbol is the one being predicted.

The Python side ties each source to the calls of its exported functions and to the compile/load calls, so a
rule can decide whether the code runs on the evaluation path. A library whose source is not shipped (a
prebuilt `.so`, a path built at run time) cannot be read: that is reported, never silently nothing.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import PurePosixPath
from typing import Mapping

from ..findings import Reachability
from ..load.folder import decode_text, is_binary
from ..load.parse import walk
from .astutil import FUNCS, SHELL_CALLS, SHELL_MODULES, dotted
from .network import eval_phase
from .program import Program, SourceIndex

NATIVE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".cu", ".cuh", ".h", ".hh", ".hpp")
LIBRARY_SUFFIXES = (".so", ".dylib", ".dll", ".pyd")
MAX_NATIVE_CHARS = 600_000  # larger native text is not tokenised (reported as unread on the evaluation path)
MAX_NESTING = 120  # braces and control statements nested deeper than this: the function is not parsed
MAX_LOOP_STMTS = 5_000  # statements in one loop (with its inner loops) that the shape search reads
# A Python string that is C/C++/CUDA source, not prose that mentions it.
_C_TEXT = re.compile(
    r'#\s*include\s*[<"]|__global__\s|extern\s+"C"|PYBIND11_MODULE|'
    r"\b(?:void|int|float|double|u?int\d+_t|size_t)\s+\**\s*\w+\s*\([^()]*\)\s*(?:const\s*)?\{"
)
_COMPILERS = re.compile(r"(?:^|[\s/'\"])(?:gcc|g\+\+|cc|c\+\+|clang|clang\+\+|nvcc|icc|icpx)(?:-\d+)?(?:$|[\s'\"])")


# --- C/C++ text: tokens --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tok:
    text: str
    kind: str  # id | num | str | op
    line: int  # 1-based line in the native text


_TOKEN = re.compile(
    r"""(?P<nl>\n)|(?P<ws>[ \t\r\f\v]+|\\\n)|(?P<com>//[^\n]*|/\*.*?\*/)
    |(?P<str>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
    |(?P<num>(?:\d|\.\d)(?:[\w.]|[eE][+-])*)|(?P<id>[A-Za-z_]\w*)
    |(?P<op>->|\+\+|--|<<=|>>=|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^]=|::|.)""",
    re.X | re.S,
)


def tokenize(text: str) -> list[Tok]:
    """C tokens without comments or preprocessor lines; string literals kept as one token."""
    out: list[Tok] = []
    line, bol, skipping = 1, True, False
    for m in _TOKEN.finditer(text):
        kind, s = m.lastgroup, m.group()
        if kind == "nl":
            line, bol, skipping = line + 1, True, False
            continue
        if kind in ("ws", "com"):
            line += s.count("\n")
            continue
        if skipping:
            continue
        if bol and s == "#":  # a preprocessor line (its continuations are whitespace tokens)
            skipping = True
            continue
        bol = False
        out.append(Tok(s, kind, line))
    return out


_OPEN = {"(": ")", "[": "]", "{": "}"}


def _match(toks: list[Tok], i: int) -> int:
    """Index of the bracket closing the one at `i` (the last token when unbalanced)."""
    want, depth = _OPEN[toks[i].text], 0
    opener = toks[i].text
    for j in range(i, len(toks)):
        t = toks[j].text
        if t == opener:
            depth += 1
        elif t == want:
            depth -= 1
            if depth == 0:
                return j
    return len(toks) - 1


def _split(toks: list[Tok], sep: str) -> list[list[Tok]]:
    """`toks` split at `sep` outside brackets."""
    parts: list[list[Tok]] = [[]]
    depth = 0
    for t in toks:
        if t.text in _OPEN:
            depth += 1
        elif t.text in (")", "]", "}"):
            depth -= 1
        if t.text == sep and depth == 0:
            parts.append([])
        else:
            parts[-1].append(t)
    return [p for p in parts if p]


def _text(toks: list[Tok]) -> str:
    """Tokens back to compact text: a space only between two words."""
    out = ""
    for t in toks:
        if out and t.kind in ("id", "num") and (out[-1].isalnum() or out[-1] == "_"):
            out += " "
        out += t.text
    return out if len(out) <= 80 else out[:77] + "..."


def _ids(toks: list[Tok]) -> set[str]:
    return {t.text for t in toks if t.kind == "id"}


# --- C/C++ text: functions and statements ---------------------------------------------------------------------
_KEYWORDS = {
    "if", "for", "while", "switch", "return", "sizeof", "do", "else", "case", "default", "break", "continue",
    "goto", "new", "delete", "throw", "static_cast", "reinterpret_cast", "const_cast", "dynamic_cast",
}  # fmt: skip
_ATTRS = {"__launch_bounds__", "__attribute__", "alignas", "__declspec", "decltype", "noexcept", "throw"}
_ACCESS = {"public", "private", "protected"}
_TYPE_WORDS = {
    "void", "int", "long", "short", "char", "float", "double", "bool", "unsigned", "signed", "const", "auto",
    "static", "inline", "constexpr", "volatile", "register", "extern", "struct", "size_t", "half", "__half",
}  # fmt: skip
_ASSIGN_OPS = {"=", "+=", "-=", "*=", "/=", "%=", "|=", "&=", "^=", "<<=", ">>="}
_EXITS = {"return", "break", "continue", "goto", "throw"}
_NARROW = re.compile(r"\b(?:u?int8_t|bool|char|uchar|byte)\b")
_FLOATING = re.compile(r"\b(?:double|float|half|__half|bfloat16|__nv_bfloat16|scalar_t)\b")


def _is_type_word(name: str) -> bool:
    return name in _TYPE_WORDS or name.endswith("_t")


@dataclass
class CParam:
    name: str
    type: str
    out: bool  # a non-const pointer or reference: the callee can write through it


@dataclass
class CStmt:
    toks: list[Tok]
    conds: tuple[tuple[Tok, ...], ...]  # guards it runs under: enclosing if/while/for conditions, earlier exits
    loops: tuple[int, ...]  # enclosing loops, outermost first

    @property
    def line(self) -> int:
        return self.toks[0].line if self.toks else 0

    # each statement is read many times (every symbol, every loop around it): parse its parts once
    @cached_property
    def defs(self) -> list[Def]:
        return defs(self.toks)

    @cached_property
    def calls(self) -> list[Call]:
        return calls(self.toks)

    @cached_property
    def subscripts(self) -> list[tuple[str, list[Tok]]]:
        return subscripts(self.toks)

    @cached_property
    def ids(self) -> set[str]:
        return _ids(self.toks)


@dataclass
class CLoop:
    id: int
    var: str | None  # the counter (`for (int i = 0; …)`) or the range variable
    line: int


@dataclass
class CFunction:
    name: str
    params: list[CParam]
    line: int
    exported: bool  # callable from Python: a free function not marked static, or inside `extern "C"`
    stmts: list[CStmt] = field(default_factory=list)
    loops: list[CLoop] = field(default_factory=list)
    locals: set[str] = field(default_factory=set)  # names declared in the body or as parameters

    def is_state(self, name: str) -> bool:
        """A name the function does not declare: a member or a global, which outlives the call."""
        return name not in self.locals


@dataclass
class CUnit:
    """One native text, parsed: its functions and the declared type of every name (params, members, locals)."""

    functions: dict[str, CFunction]
    types: dict[str, str]
    bound_names: set[str]  # names a Python module could call: exported functions and pybind11 `m.def` names
    unread: list[str] = field(default_factory=list)  # functions nested too deep to parse


def _header_kind(header: list[Tok]) -> str:
    texts = [t.text for t in header]
    depth = 0
    for t in texts:
        depth += t in _OPEN
        depth -= t in (")", "]", "}")
        if t == "=" and depth == 0:
            return "init"
    if "enum" in texts:
        return "skip"
    if "(" in texts and not {"class", "struct", "union", "namespace"} & set(texts[: texts.index("(")]):
        return "function"
    if {"class", "struct", "union"} & set(texts):
        return "class"
    return "scope"


def _declared(toks: list[Tok], types: dict[str, str]) -> str | None:
    """`const uint8_t* lut = nullptr` → types["lut"]; the name is the last identifier before `=`, `[` or the end."""
    head = _split(toks, "=")[0] if toks else []
    names = [i for i, t in enumerate(head) if t.kind == "id" and not _is_type_word(t.text)]
    if not names or len(head) < 2:
        return None
    k = names[-1]
    if k + 1 < len(head) and head[k + 1].text not in ("[",):
        return None
    type_toks = [t.text for t in head[:k]]
    if type_toks and any(_is_type_word(x) or x[:1].isupper() or x in ("*", "&") for x in type_toks):
        types.setdefault(head[k].text, " ".join(type_toks + (["*"] if k + 1 < len(head) else [])))
        return head[k].text
    return None


def _params(toks: list[Tok], types: dict[str, str]) -> list[CParam]:
    out = []
    for part in _split(toks, ","):
        part = _split(part, "=")[0] if part else part  # drop a default value
        names = [t for t in part if t.kind == "id"]
        if not names or [t.text for t in part] == ["void"]:
            continue
        name = names[-1].text
        typ = " ".join(t.text for t in part if t is not names[-1])
        if part[-1].text == "]":
            typ += " *"
        types[name] = typ
        pointer = "*" in typ or "&" in typ
        out.append(CParam(name, typ, pointer and "const" not in typ.split()))
    return out


class _Parser:
    """Scopes → functions; a function body → statements with their guards and loops (recursive descent)."""

    def __init__(self, toks: list[Tok]):
        self.toks = toks
        self.types: dict[str, str] = {}
        self.functions: dict[str, CFunction] = {}
        self.bound: set[str] = set()
        self.unread: list[str] = []  # functions nested too deep to parse

    def unit(self) -> CUnit:
        self._scope(0, len(self.toks), in_class=False, extern=False)
        for i, t in enumerate(self.toks[:-3]):  # pybind11: m.def("name", &fn)
            if t.text == "def" and self.toks[i + 1].text == "(" and self.toks[i + 2].kind == "str":
                self.bound.add(self.toks[i + 2].text.strip("\"'"))
        self.bound |= {f.name for f in self.functions.values() if f.exported}
        return CUnit(self.functions, self.types, self.bound, self.unread)

    def _scope(self, i: int, end: int, in_class: bool, extern: bool, depth: int = 0) -> None:
        if depth > MAX_NESTING:
            self.unread.append(f"scope at line {self.toks[i].line}" if i < len(self.toks) else "scope")
            return
        start = i
        while i < end:
            t = self.toks[i].text
            if t == ";":
                if in_class:
                    _declared(self.toks[start:i], self.types)
                start = i + 1
            elif t == ":" and self.toks[start].text in _ACCESS:
                start = i + 1
            elif t == "{":
                close = _match(self.toks, i)
                header = self.toks[start:i]
                kind = _header_kind(header)
                if kind == "function":
                    self._function(header, i, close, in_class, extern)
                elif kind == "class":
                    self._scope(i + 1, close, True, extern, depth + 1)
                elif kind == "scope":
                    is_c = any(h.kind == "str" and h.text == '"C"' for h in header)
                    self._scope(i + 1, close, in_class, extern or is_c, depth + 1)
                i, start = close, close + 1
            elif t == "}":
                start = i + 1
            i += 1

    def _function(self, header: list[Tok], open_: int, close: int, in_class: bool, extern: bool) -> None:
        texts = [t.text for t in header]
        first = texts.index("(")
        cut = len(header)
        j = _match(header, first) + 1 if "(" in texts else 0
        for k in range(j, len(header)):  # a constructor's initialiser list starts at a lone ':'
            if texts[k] == ":":
                cut = k
                break
        name, params, k = None, [], 0
        while k < cut:
            if texts[k] == "(":
                close_p = _match(header, k)
                prev = header[k - 1] if k else None
                if prev is not None and prev.kind == "id" and prev.text not in _ATTRS | _KEYWORDS:
                    name, params = prev, header[k + 1 : close_p]
                k = close_p + 1
            else:
                k += 1
        if name is None:
            return
        idx = header.index(name)
        method = in_class or (idx > 0 and header[idx - 1].text == "::")
        exported = not method and (extern or "static" not in texts[:idx])
        fn = CFunction(name.text, _params(params, self.types), name.line, exported)
        fn.locals = {p.name for p in fn.params}
        try:
            _Body(self, fn).block(open_ + 1, close, (), ())
        except _TooDeepError:
            self.unread.append(fn.name)
            return
        self.functions.setdefault(fn.name, fn)


class _TooDeepError(Exception):
    pass


class _Body:
    def __init__(self, parser: _Parser, fn: CFunction):
        self.p, self.fn, self.toks = parser, fn, parser.toks
        self.depth = 0

    def block(self, i: int, end: int, conds: tuple, loops: tuple) -> bool:
        """Statements from i to end; True when the block always leaves (ends in return/break/continue)."""
        exits = False
        early: list[tuple[Tok, ...]] = []
        while i < end:
            i, exits, leave_if = self.stmt(i, end, conds + tuple(early), loops)
            if leave_if is not None:
                early.append(leave_if)  # `if (c) continue;`: what follows runs only when c is false
        return exits

    def stmt(self, i: int, end: int, conds: tuple, loops: tuple) -> tuple[int, bool, tuple | None]:
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise _TooDeepError
            return self._stmt(i, end, conds, loops)
        finally:
            self.depth -= 1

    def _stmt(self, i: int, end: int, conds: tuple, loops: tuple) -> tuple[int, bool, tuple | None]:
        toks = self.toks
        t = toks[i].text
        if t == "{":
            close = _match(toks, i)
            return close + 1, self.block(i + 1, close, conds, loops), None
        if t == ";":
            return i + 1, False, None
        if t in ("case", "default"):
            while i < end and toks[i].text != ":":
                i += 1
            return i + 1, False, None
        if t in ("if", "while", "switch") and i + 1 < end and toks[i + 1].text == "(":
            close = _match(toks, i + 1)
            cond = tuple(toks[i + 2 : close])
            if t == "while":
                loops = loops + (self._loop(None, toks[i].line),)
            if cond:  # the condition is evaluated too: `if (score(…)) return -1;` calls score
                self.fn.stmts.append(CStmt(list(cond), conds, loops))
            j, body_exits, _ = self.stmt(close + 1, end, conds + (cond,), loops)
            if t == "if" and j < end and toks[j].text == "else":
                j, else_exits, _ = self.stmt(j + 1, end, conds + (cond,), loops)
                return j, body_exits and else_exits, None
            return j, False, (cond if t == "if" and body_exits else None)
        if t == "for" and i + 1 < end and toks[i + 1].text == "(":
            close = _match(toks, i + 1)
            header = toks[i + 2 : close]
            semi = [k for k, h in enumerate(header) if h.text == ";"]
            var, cond = None, ()
            if semi:
                init_toks = header[: semi[0]]
                cond = tuple(header[semi[0] + 1 : semi[1]]) if len(semi) > 1 else ()
                if init_toks:
                    self.fn.stmts.append(CStmt(list(init_toks), conds, loops))
                    self._declare(init_toks)
                    d = defs(init_toks)
                    var = d[0].root if d else None
            else:  # range-for: `for (auto& x : xs)`
                colon = [k for k, h in enumerate(header) if h.text == ":"]
                if colon:
                    names = [h.text for h in header[: colon[0]] if h.kind == "id" and not _is_type_word(h.text)]
                    var = names[-1] if names else None
                    cond = tuple(header[colon[0] + 1 :])
            loop = self._loop(var, toks[i].line)
            j, _, _ = self.stmt(close + 1, end, conds + ((cond,) if cond else ()), loops + (loop,))
            return j, False, None
        if t == "do":
            loop = self._loop(None, toks[i].line)
            j, _, _ = self.stmt(i + 1, end, conds, loops + (loop,))
            while j < end and toks[j].text != ";":
                j += 1
            return j + 1, False, None
        if t == "else":
            return self.stmt(i + 1, end, conds, loops)
        j, depth = i, 0
        while j < end:
            x = toks[j].text
            if x in _OPEN:
                depth += 1
            elif x in (")", "]", "}"):
                depth -= 1
            elif x == ";" and depth <= 0:
                break
            j += 1
        body = list(toks[i:j])
        if body:
            self.fn.stmts.append(CStmt(body, conds, loops))
            self._declare(body)
        return j + 1, bool(body) and body[0].text in _EXITS, None

    def _declare(self, toks: list[Tok]) -> None:
        """Record the names a statement declares (`int a = 1, b = 2` declares both) as locals of the function."""
        parts = _split(toks, ",")
        first = _declared(parts[0], self.p.types) if parts else None
        if first is None:
            return
        self.fn.locals.add(first)
        for part in parts[1:]:
            d = defs(part)
            if d and d[0].kind == "var":
                self.fn.locals.add(d[0].root)

    def _loop(self, var: str | None, line: int) -> int:
        loop = CLoop(len(self.fn.loops), var, line)
        self.fn.loops.append(loop)
        return loop.id


def parse_native(text: str) -> CUnit:
    return _Parser(tokenize(text)).unit()


# --- expressions --------------------------------------------------------------------------------------------
@dataclass
class Def:
    root: str  # the variable (or array, or object) written
    kind: str  # var | index | deref | member
    index: list[Tok]  # the subscript of an `index` write
    rhs: list[Tok]
    compound: bool


def _lvalue(lhs: list[Tok]) -> tuple[str, str, list[Tok]] | None:
    """(root, kind, index) of the assigned expression: `out[i]` → (out, index, [i]); `st->x` → (st, member)."""
    k = len(lhs) - 1
    chain_start = None
    while k >= 0:
        t = lhs[k].text
        if t == "]":
            depth = 0
            while k >= 0:
                depth += lhs[k].text == "]"
                depth -= lhs[k].text == "["
                if depth == 0:
                    break
                k -= 1
            k -= 1
        elif lhs[k].kind == "id":
            chain_start = k
            if k > 0 and lhs[k - 1].text in (".", "->", "::"):
                k -= 2
                continue
            break
        elif t == ")":
            k -= 1
        else:
            break
    if chain_start is None:
        return None
    root = lhs[chain_start].text
    rest = lhs[chain_start + 1 :]
    deref = chain_start > 0 and lhs[chain_start - 1].text == "*"
    if rest and rest[0].text in (".", "->"):
        return root, "member", []
    if rest and rest[0].text == "[":
        close = _match(rest, 0)
        return root, "index", rest[1:close]
    return root, ("deref" if deref else "var"), []


def defs(toks: list[Tok]) -> list[Def]:
    """The writes of one statement: `a = …`, `a[i] += …`, `int x = …, y = …`, `++n`, `st->k = …`."""
    out: list[Def] = []
    for part in _split(toks, ","):
        depth, at = 0, None
        for k, t in enumerate(part):
            if t.text in _OPEN:
                depth += 1
            elif t.text in (")", "]", "}"):
                depth -= 1
            elif depth == 0 and t.text in _ASSIGN_OPS:
                at = k
                break
        if at is not None:
            lv = _lvalue(part[:at])
            if lv:
                out.append(Def(lv[0], lv[1], lv[2], part[at + 1 :], part[at].text != "="))
        elif part and (part[0].text in ("++", "--") or part[-1].text in ("++", "--")):
            core = [t for t in part if t.text not in ("++", "--")]
            lv = _lvalue(core)
            if lv:
                out.append(Def(lv[0], lv[1], lv[2], core, True))
    return out


@dataclass
class Call:
    name: str
    args: list[list[Tok]]
    at: int  # token index of the name in the statement


def calls(toks: list[Tok]) -> list[Call]:
    out = []
    for k in range(len(toks) - 1):
        t = toks[k]
        if t.kind == "id" and toks[k + 1].text == "(" and t.text not in _KEYWORDS and not _is_type_word(t.text):
            close = _match(toks, k + 1)
            out.append(Call(t.text, _split(toks[k + 2 : close], ","), k))
    return out


def subscripts(toks: list[Tok]) -> list[tuple[str, list[Tok]]]:
    """`(array, index tokens)` of every `name[...]` read."""
    out = []
    for k in range(len(toks) - 1):
        if toks[k].kind == "id" and toks[k + 1].text == "[":
            close = _match(toks, k + 1)
            out.append((toks[k].text, toks[k + 2 : close]))
    return out


def _operand(toks: list[Tok], k: int) -> list[Tok]:
    """The operand starting at k (after a `/`): casts skipped, then a name with its subscripts/calls or a group."""
    while k < len(toks) and toks[k].text == "(":
        close = _match(toks, k)
        inner = toks[k + 1 : close]
        if inner and all(_is_type_word(t.text) or t.text == "*" for t in inner):
            k = close + 1  # a cast: `(double)nb`
            continue
        return inner
    out = []
    while k < len(toks):
        t = toks[k]
        if t.kind in ("id", "num") or t.text in (".", "->", "::"):
            out.append(t)
            k += 1
        elif t.text in ("[", "(") and out:
            close = _match(toks, k)
            out.extend(toks[k : close + 1])
            k = close + 1
        else:
            break
    return out


def _is_one(t: Tok) -> bool:
    try:
        return float(t.text.rstrip("fFlLuU")) == 1.0
    except ValueError:
        return False


_LOGS = {"log", "logf", "logl", "log1p", "log1pf", "log2", "log2f"}
_EXPS = {"exp", "expf", "expl", "exp2", "exp2f", "__expf", "expm1", "expm1f"}


def mixes(toks: list[Tok]) -> bool:
    """Does the expression mix two models: `log(exp(a) + exp(b))`, or `w*p + (1-w)*q`?"""
    for c in calls(toks):
        if c.name in _LOGS and sum(t.text in _EXPS for a in c.args for t in a) >= 2:
            return True
    for k in range(1, len(toks) - 2):  # a weight's complement `(1 - w)` multiplying a term
        if toks[k - 1].text == "(" and _is_one(toks[k]) and toks[k + 1].text == "-":
            close = _match(toks, k - 1)
            before = toks[k - 2].text if k >= 2 else ""
            after = toks[close + 1].text if close + 1 < len(toks) else ""
            if "*" in (before, after):
                return True
    return False


# --- the two shapes, per loop -----------------------------------------------------------------------------------
@dataclass
class Shape:
    kind: str  # "byte-spread mixture" | "target-conditioned gate"
    condition: str  # C1 | C2
    category: str
    function: str
    line: int  # native line of the decisive statement
    evidence_line: int  # native line of the second half (the mix; the later absorption of the symbol)
    detail: str


class _Reader:
    def __init__(self, unit: CUnit):
        self.unit = unit
        self.types = unit.types

    def _narrow_table(self, name: str) -> bool:
        typ = self.types.get(name, "")
        return bool(_NARROW.search(typ)) and ("*" in typ or "[" in typ)

    def _float_array(self, name: str) -> bool:
        typ = self.types.get(name, "")
        return bool(_FLOATING.search(typ)) and "*" in typ

    def shapes(self) -> list[Shape]:
        out: list[Shape] = []
        for fn in self.unit.functions.values():
            for loop in fn.loops:
                if loop.var is None:
                    continue
                body = [s for s in fn.stmts if loop.id in s.loops][:MAX_LOOP_STMTS]
                out.extend(self._gate(fn, loop, body))
                out.extend(self._spread(fn, loop, body))
        return out

    def _positions(self, loop: CLoop, body: list[CStmt]) -> tuple[set[str], dict[str, CStmt]]:
        """Position variables (the counter, `p = pos[i]`, names used as `x[p - 1]`) and the symbols read at a
        position (`tok = tokens[p]`), with the statement that reads each."""
        pos = {loop.var}
        offsets = {ix[0].text for s in body for _, ix in s.subscripts if len(ix) >= 3 and ix[1].text in ("+", "-")}
        for s in body:
            for d in s.defs:
                reads_at_counter = any(len(ix) == 1 and ix[0].text == loop.var for _, ix in subscripts(d.rhs))
                if d.kind == "var" and reads_at_counter and d.root in offsets:
                    pos.add(d.root)  # `p = pos[i]` then `x[p - 1]`: a position, not a symbol
        symbols: dict[str, CStmt] = {}
        for s in body:
            for d in s.defs:
                if d.kind != "var" or d.root in pos:
                    continue
                core = [t.text for t in d.rhs if not _is_type_word(t.text) and t.text not in ("(", ")")]
                at = core[1:2] == ["["] and core[-1:] == ["]"] and len(core) in (4, 6) and core[2] in pos
                ahead = len(core) == 6 and core[3] == "+" and core[4].isdigit()  # `toks[i + 1]`: a later symbol
                if at and (len(core) == 4 or ahead):
                    symbols.setdefault(d.root, s)
        return pos, symbols

    def _gate(self, fn: CFunction, loop: CLoop, body: list[CStmt]) -> list[Shape]:
        pos, symbols = self._positions(loop, body)
        if not symbols:
            return []
        params = {p.name: p for p in fn.params}
        taint: dict[str, set[str]] = {}  # name -> symbols whose flag it carries

        def carried(toks) -> set[str]:
            out: set[str] = set()
            for name in _ids(toks):
                out |= taint.get(name, set())
            for table, ix in subscripts(toks):
                if self._narrow_table(table):
                    out |= _ids(ix) & symbols.keys()
            return out

        for k, s in enumerate(body):
            gate, gate_line = set(), 0
            for c in s.conds:
                flag = carried(list(c))
                if flag and not gate_line:
                    gate_line = c[0].line
                gate |= flag
            for d in s.defs:
                flows = carried(d.rhs) | gate
                out_buffer = d.kind == "index" and (
                    (d.root in params and params[d.root].out)
                    or (d.root not in params and "*" in self.types.get(d.root, ""))
                )
                if out_buffer and len(d.index) == 1 and d.index[0].text in pos and flows:
                    for sym in sorted(flows):
                        later = self._absorbed_after(fn, body, k, sym)
                        if later is not None and not self._absorbed_before(fn, body, k, sym):
                            how = "is written under a condition that reads" if gate else "depends on"
                            return [
                                Shape(
                                    "target-conditioned gate",
                                    "C1",
                                    "ngram_target_key",
                                    fn.name,
                                    gate_line or s.line,
                                    later.line,
                                    f"in `{fn.name}()`, the output for position `{loop.var}` "
                                    f"(`{d.root}[{d.index[0].text}]`) {how} a per-symbol flag of `{sym}`, the symbol at that "
                                    "position, which the state absorbs only after the write: the gate reads the "
                                    "token being predicted",
                                )
                            ]
                if d.kind == "var" or d.compound:
                    taint[d.root] = flows | (taint.get(d.root, set()) if d.compound else set())
                elif flows:
                    taint.setdefault(d.root, set()).update(flows)
            for c in s.calls:
                flows = set().union(*(carried(a) for a in c.args)) if c.args else set()
                callee = self.unit.functions.get(c.name)
                if not flows or callee is None:
                    continue
                for a, p in zip(c.args, callee.params):
                    if p.out and a and a[-1].kind == "id":
                        taint.setdefault(a[-1].text, set()).update(flows | gate)
        return []

    @staticmethod
    def _absorbed_before(fn: CFunction, body: list[CStmt], k: int, sym: str) -> bool:
        """Is the symbol handed to a call or stored into state before statement k (then it is context)?"""
        read: set[str] = set()
        for s in body[:k]:
            if any(sym in _ids(a) for c in s.calls for a in c.args):
                return True
            for d in s.defs:
                carried = d.kind == "var" and (d.root in read or d.root in _ids(d.rhs)) and d.root != sym
                stored = d.kind in ("member", "deref") or (d.kind == "var" and fn.is_state(d.root))
                if sym in _ids(d.rhs) and (stored or carried):
                    return True
            read |= s.ids
        return False

    @staticmethod
    def _absorbed_after(fn: CFunction, body: list[CStmt], k: int, sym: str) -> CStmt | None:
        """The first later statement that hands the symbol to a call, stores it, or folds it into a variable the
        loop read earlier (state carried to the next position): the state takes it in."""
        read_before = set().union(*(s.ids for s in body[: k + 1]))
        for s in body[k + 1 :]:
            if any(sym in _ids(a) for c in s.calls for a in c.args):
                return s
            for d in s.defs:
                carried = d.root in read_before or fn.is_state(d.root)
                if sym in _ids(d.rhs) and (d.kind != "var" or (carried and d.root != sym)):
                    return s
        return None

    def _spread(self, fn: CFunction, loop: CLoop, body: list[CStmt]) -> list[Shape]:
        pos, symbols = self._positions(loop, body)
        if not symbols:
            return []
        by_symbol: set[str] = set(symbols)  # names that depend on the symbol at the position
        scores: set[str] = set()  # names that carry the model's per-position score
        for k, s in enumerate(body):
            for d in s.defs:
                reads = _ids(d.rhs)
                position_score = any(
                    self._float_array(a) and len(ix) == 1 and ix[0].text in pos for a, ix in subscripts(d.rhs)
                )
                if reads & by_symbol:
                    by_symbol.add(d.root)
                if position_score or reads & scores:
                    scores.add(d.root)
                if not (position_score or reads & scores) or d.kind != "var":
                    continue
                for j, t in enumerate(d.rhs):
                    if t.text == "/" and _ids(_operand(d.rhs, j + 1)) & by_symbol:
                        mix = self._mixed(fn, body[k + 1 :], {d.root}, depth=0)
                        if mix is not None:
                            where, line = mix
                            return [
                                Shape(
                                    "byte-spread mixture",
                                    "C2",
                                    "ngram_unnormalized",
                                    fn.name,
                                    s.line,
                                    line,
                                    f"in `{fn.name}()`, the model's per-position score is divided by a count that "
                                    f"depends on the token at the position (`{d.root} = {_text(d.rhs)}`), "
                                    f"spreading the token's probability over its bytes, and the result is mixed "
                                    f"with another model in {where}: the mixture is not a "
                                    "distribution over the vocabulary",
                                )
                            ]
        return []

    def _mixed(self, fn: CFunction, stmts: list[CStmt], tainted: set[str], depth: int) -> tuple[str, int] | None:
        """Where a value derived from `tainted` is mixed with another model: here or in a function it is passed to."""
        tainted = set(tainted)
        for s in stmts:
            reads = s.ids
            if reads & tainted and mixes(s.toks):
                return f"`{fn.name}()`", s.line
            for d in s.defs:
                if _ids(d.rhs) & tainted:
                    tainted.add(d.root)
            if depth < 2:
                for c in s.calls:
                    callee = self.unit.functions.get(c.name)
                    if callee is None or callee is fn:
                        continue
                    passed = {p.name for a, p in zip(c.args, callee.params) if _ids(a) & tainted}
                    if passed:
                        hit = self._mixed(callee, callee.stmts, passed, depth + 1)
                        if hit is not None:
                            return hit
        return None


def native_shapes(unit: CUnit) -> list[Shape]:
    return _Reader(unit).shapes()


# --- the Python side: where native code comes from and who calls it ------------------------------------------
@dataclass
class NativeSource:
    """One native text: a sibling file, or a string constant in a Python source."""

    path: str  # the file its lines are in (the sibling, or the Python source holding the string)
    first_line: int  # line of `path` where the text's line 1 is
    text: str
    idx: SourceIndex | None = None  # the Python source holding the string
    node: ast.AST | None = None  # the string constant

    @property
    def label(self) -> str:
        return self.path if self.node is None else f"C/C++ source in a string at {self.path}:{self.first_line}"

    def line(self, native_line: int) -> int:
        """The line of `path` holding `native_line`; a string whose value spans other lines than its source
        (escaped newlines, implicit concatenation) points at the string's first line."""
        if self.node is not None:
            span = (getattr(self.node, "end_lineno", None) or self.first_line) - self.first_line
            if span != self.text.count("\n"):
                return self.first_line
        return self.first_line + native_line - 1

    @cached_property
    def unit(self) -> CUnit | None:
        return parse_native(self.text) if len(self.text) <= MAX_NATIVE_CHARS else None

    @cached_property
    def shapes(self) -> list[Shape]:
        return native_shapes(self.unit) if self.unit is not None else []


@dataclass
class PySite:
    idx: SourceIndex
    node: ast.AST
    what: str  # the resolved callable or command


@dataclass
class NativeUse:
    """A native source as the evaluation sees it: who calls its functions, who builds it, and whether any of that
    runs during evaluation (`eval_at`: the Python site and why)."""

    source: NativeSource
    calls: list[PySite]
    loaders: list[PySite]
    eval_at: tuple[PySite, str] | None

    def runs(self, function: str) -> bool:
        """Can `function` run when Python calls this source? True when no call was traced (nothing to narrow it
        by); else it must be reachable in the native call graph from a function Python calls."""
        unit = self.source.unit
        if not self.calls or unit is None:
            return True
        todo = [c.what for c in self.calls]
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen or name not in unit.functions:
                continue
            seen.add(name)
            todo.extend(c.name for s in unit.functions[name].stmts for c in s.calls)
        return function in seen


@dataclass
class OpaqueLoad:
    """Native code loaded whose source is not in the submission (a prebuilt library, a path built at run time)."""

    site: PySite
    eval_at: tuple[PySite, str] | None
    why: str


# Fully qualified callables that compile or load native code (import aliases resolved).
_LOADERS = frozenset(
    {
        "torch.utils.cpp_extension.load_inline",
        "torch.utils.cpp_extension.load",
        "ctypes.CDLL",
        "ctypes.PyDLL",
        "ctypes.cdll.LoadLibrary",
        "numpy.ctypeslib.load_library",
        "torch.ops.load_library",
    }
)
_CFFI_METHODS = {"set_source", "verify", "compile", "dlopen"}
# Libraries of the system or the CUDA toolkit (`ctypes.CDLL("libc.so.6").malloc_trim(0)`): not submission code.
_SYSTEM_LIB = re.compile(
    r"(?:^|/)(?:lib)?(?:c|m|dl|rt|pthread|cuda|cudart|nvrtc|nccl|nvidia-ml|nvToolsExt|gomp|stdc\+\+|jemalloc|"
    r"tcmalloc|numa)(?:[.-]|$)|msvcrt|kernel32"
)
DEAD = Reachability.DISABLED_BY_DEFAULT


def _literal_text(node: ast.AST) -> str:
    return " ".join(
        n.value for n in walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str) and len(n.value) < 400
    )


class NativeAnalysis:
    def __init__(self, program: Program, files: Mapping[str, bytes]):
        self.program = program
        self.files = files

    @cached_property
    def sources(self) -> list[NativeSource]:
        out: list[NativeSource] = []
        for path in sorted(self.files):
            if path.lower().endswith(NATIVE_SUFFIXES) and not is_binary(self.files[path]):
                out.append(NativeSource(path, 1, decode_text(self.files[path])))
        for idx in self.program.indexes:
            for node in idx.strings(longer_than=60):
                if _C_TEXT.search(node.value):
                    path = idx.path + (" (decoded)" if idx.src.virtual else "")
                    out.append(NativeSource(path, node.lineno, node.value, idx, node))
        return out

    @cached_property
    def libraries(self) -> list[str]:
        """Prebuilt native libraries shipped in the folder."""
        return sorted(p for p in self.files if p.lower().endswith(LIBRARY_SUFFIXES))

    @cached_property
    def loaders(self) -> list[PySite]:
        """Python calls that compile or load native code."""
        out: list[PySite] = []
        for idx in self.program.indexes:
            # names bound to `cffi.FFI()`: their set_source/verify/compile/dlopen build or load C. However it is
            # imported or aliased, "FFI" is written in the source (the call's attribute, or its import)
            ffis = {
                t.id
                for a in (idx.nodes(ast.Assign) if "FFI" in idx.src.text else ())
                if isinstance(a.value, ast.Call) and idx.qualified(a.value.func)[0] == "cffi.FFI"
                for t in a.targets
                if isinstance(t, ast.Name)
            }
            for call, full, _ in idx.calls_to(
                _LOADERS, lasts=_CFFI_METHODS | SHELL_CALLS
            ):  # what the tests below accept
                last = full.rsplit(".", 1)[-1]
                if full in _LOADERS:
                    out.append(PySite(idx, call, full))
                elif last in _CFFI_METHODS and full.split(".")[0] in ffis:
                    out.append(PySite(idx, call, f"cffi {last}"))
                elif last in SHELL_CALLS and full.startswith(SHELL_MODULES) and call.args:
                    cmd = _literal_text(call.args[0])
                    if _COMPILERS.search(cmd):
                        out.append(PySite(idx, call, " ".join(cmd.split())[:80]))
        return out

    def _scope(self, idx: SourceIndex, node: ast.AST) -> ast.AST:
        return idx.enclosing(node, *FUNCS) or idx.tree

    def _tied_loaders(self, src: NativeSource) -> list[PySite]:
        """Loaders that build this source: in the same function as the string (or given its name), or, for a
        sibling file, in the function or module that names the file."""
        out = []
        if src.node is not None:
            scope = self._scope(src.idx, src.node)
            names = {
                t.id
                for a in src.idx.nodes(ast.Assign)
                if a.value is src.node
                for t in a.targets
                if isinstance(t, ast.Name)
            }
            # scopes that read the string's name (`f.write(SRC)` in the function that compiles it)
            readers = {scope} | {
                self._scope(src.idx, n)
                for n in src.idx.unordered(ast.Name)
                if n.id in names and isinstance(n.ctx, ast.Load)
            }
            return [s for s in self.loaders if s.idx is src.idx and self._scope(s.idx, s.node) in readers]
        base = PurePosixPath(src.path).name
        stem = PurePosixPath(src.path).stem
        for idx in self.program.indexes:
            for node in idx.strings():
                if base in node.value or node.value.endswith(f"{stem}.so"):
                    scope = self._scope(idx, node)
                    scopes = {scope, idx.tree}
                    out.extend(s for s in self.loaders if s.idx is idx and self._scope(s.idx, s.node) in scopes)
        return list({id(s.node): s for s in out}.values())

    def _calls_of(self, names: set[str]) -> list[PySite]:
        out = []
        for idx in self.program.indexes:
            for call in idx.calls_named(*names):
                if isinstance(call.func, ast.Attribute):
                    out.append(PySite(idx, call, call.func.attr))
        return out

    def _eval_at(self, sites: list[PySite]) -> tuple[PySite, str] | None:
        """The first site that runs during evaluation, preferring one that is live under the effective config."""
        hits = []
        for site in sites:
            phase = eval_phase(self.program, site.idx, site.node)
            if phase is not None:
                hits.append((site, phase[2]))
        live = [h for h in hits if self.program.reachability(h[0].idx, h[0].node)[0] is not DEAD]
        return (live or hits or [None])[0]

    @cached_property
    def uses(self) -> list[NativeUse]:
        out = []
        for src in self.sources:
            names = set(src.unit.bound_names) if src.unit is not None else set()
            py_calls = self._calls_of(names) if names else []
            loaders = self._tied_loaders(src)
            out.append(NativeUse(src, py_calls, loaders, self._eval_at(py_calls) or self._eval_at(loaders)))
        return out

    @cached_property
    def opaque(self) -> list[OpaqueLoad]:
        """Loads whose native source cannot be read: a library is loaded and no native source is shipped, or a
        shipped prebuilt library is loaded by name."""
        out = []
        tied = {id(s.node) for u in self.uses for s in u.loaders}
        for site in self.loaders:
            if id(site.node) in tied:
                continue
            text = _literal_text(site.node)
            if self._system_library(site.node):
                continue
            shipped = [lib for lib in self.libraries if PurePosixPath(lib).name in text]
            if shipped:
                why = f"it loads the prebuilt library {shipped[0]}, whose source is not shipped"
            elif not self.sources:
                why = "no native source is shipped or held in a string, so what it loads cannot be read"
            else:
                continue
            out.append(OpaqueLoad(site, self._eval_at([site]), why))
        return out

    @staticmethod
    def _system_library(call: ast.Call) -> bool:
        """`CDLL("libc.so.6")`, `CDLL(None)`, `CDLL(find_library("m"))`: the system's code, not the submission's."""
        if not call.args:
            return False
        arg = call.args[0]
        if isinstance(arg, ast.Constant):
            return arg.value is None or (isinstance(arg.value, str) and bool(_SYSTEM_LIB.search(arg.value)))
        return any(isinstance(n, ast.Call) and (dotted(n.func) or "").endswith("find_library") for n in walk(arg))
