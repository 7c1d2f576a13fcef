"""Source resolution: find the script that actually runs and decode self-extracting wrappers statically.

Record folders ship `train_gpt.py` as plain code, as an lzma/zlib/gzip/bz2 + base85/base64 payload passed to
`exec`, as one line that runs a sibling file, or empty next to the real entry script. We evaluate only a tiny,
closed set of pure functions (decompressors with an output bound, base decoders, `.decode()`) on literals —
never the submission's own code.
"""

from __future__ import annotations

import ast
import base64
import binascii
import bisect
import bz2
import codecs
import lzma
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from .. import codes
from ..findings import Finding, Location
from . import parse as pyparse
from .folder import Folder, decode_text
from .parse import walk
from .runcmd import run_commands

DECODE_BYTES = 32_000_000  # all values one file's decoding may produce, together: more is a bomb
DECODE_STEPS = 200_000  # expressions evaluated while decoding one file
MAX_DECODED_BYTES = DECODE_BYTES  # kept for callers: one payload can never exceed the whole budget


class DecodeError(Exception):
    pass


class BombError(DecodeError):
    """The decode budget ran out: a decompression bomb, a `+` / `*` / `.replace` blow-up, or a deep nest."""


@dataclass
class Budget:
    """One byte and step budget shared by every static evaluation of one file (every layer of a wrapper)."""

    bytes_left: int = DECODE_BYTES
    steps_left: int = DECODE_STEPS

    def step(self) -> None:
        self.steps_left -= 1
        if self.steps_left < 0:
            raise BombError(f"decoding took more than {DECODE_STEPS:,} steps")

    def charge(self, n: int, what: str) -> None:
        self.bytes_left -= n
        if self.bytes_left < 0:
            raise BombError(f"{what} inflates beyond {DECODE_BYTES:,} bytes")


# --- bounded codecs ------------------------------------------------------------------------------
def _bounded(decomp, data: bytes, name: str, budget: Budget) -> bytes:
    out = decomp.decompress(data, max(budget.bytes_left, 0) + 1)
    budget.charge(len(out), f"{name} payload")
    return out


def _lzma(budget: Budget, data: bytes, format: int = lzma.FORMAT_AUTO, filters=None) -> bytes:
    return _bounded(lzma.LZMADecompressor(format=format, filters=filters), data, "lzma", budget)


def _zlib(budget: Budget, data: bytes, wbits: int = 15) -> bytes:
    return _bounded(zlib.decompressobj(wbits), data, "zlib", budget)


def _gzip(budget: Budget, data: bytes) -> bytes:
    return _bounded(zlib.decompressobj(31), data, "gzip", budget)


def _bz2(budget: Budget, data: bytes) -> bytes:
    return _bounded(bz2.BZ2Decompressor(), data, "bz2", budget)


def _strip_ws(b: bytes) -> bytes:
    """Payloads are often wrapped over many lines inside a triple-quoted literal."""
    return b"".join(b.split())


def _as_bytes(v) -> bytes:
    if isinstance(v, str):
        return v.encode("latin-1", errors="strict") if v.isascii() else v.encode()
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    raise DecodeError("not bytes")


# Pure functions we agree to evaluate, keyed by qualified name (decoders never produce more than they read,
# decompressors are bounded by the budget).
PURE_FUNCS = {
    "lzma.decompress": lambda bud, b, *a, **kw: _lzma(
        bud, _as_bytes(b), **{k: v for k, v in kw.items() if k in ("format", "filters")}
    ),
    "zlib.decompress": lambda bud, b, *a: _zlib(bud, _as_bytes(b), *(a[:1] or [15])),
    "gzip.decompress": lambda bud, b, *a: _gzip(bud, _as_bytes(b)),
    "bz2.decompress": lambda bud, b, *a: _bz2(bud, _as_bytes(b)),
    "base64.b85decode": lambda bud, b, *a: base64.b85decode(_strip_ws(_as_bytes(b))),
    "base64.b64decode": lambda bud, b, *a: base64.b64decode(_as_bytes(b)),
    "base64.standard_b64decode": lambda bud, b, *a: base64.standard_b64decode(_as_bytes(b)),
    "base64.urlsafe_b64decode": lambda bud, b, *a: base64.urlsafe_b64decode(_as_bytes(b)),
    "base64.a85decode": lambda bud, b, *a: base64.a85decode(_strip_ws(_as_bytes(b))),
    "base64.b32decode": lambda bud, b, *a: base64.b32decode(_as_bytes(b)),
    "base64.b16decode": lambda bud, b, *a: base64.b16decode(_as_bytes(b)),
    "base64.decodebytes": lambda bud, b, *a: base64.decodebytes(_as_bytes(b)),
    "binascii.a2b_base64": lambda bud, b, *a: binascii.a2b_base64(_as_bytes(b)),
    "binascii.unhexlify": lambda bud, b, *a: binascii.unhexlify(_as_bytes(b)),
    "bytes.fromhex": lambda bud, s, *a: bytes.fromhex(s),
}

# `codecs.decode(x, name)`: only these codecs, by their canonical name (every alias, e.g. "bz2_codec" or
# "zip", resolves to one of them); each decompressor goes through the budget. Anything else is opaque.
CODECS = {
    "base64": lambda bud, v: base64.b64decode(_as_bytes(v)),
    "hex": lambda bud, v: binascii.unhexlify(_as_bytes(v)),
    "zlib": lambda bud, v: _zlib(bud, _as_bytes(v)),
    "bz2": lambda bud, v: _bz2(bud, _as_bytes(v)),
    "rot-13": lambda bud, v: codecs.decode(v, "rot13") if isinstance(v, str) else _raise("rot13 of bytes"),
    "utf-8": lambda bud, v: _as_bytes(v).decode("utf-8", errors="replace"),
    "ascii": lambda bud, v: _as_bytes(v).decode("ascii", errors="replace"),
    "iso8859-1": lambda bud, v: _as_bytes(v).decode("latin-1"),
}


def _raise(why: str):
    raise DecodeError(why)


def _codec(name) -> str:
    if not isinstance(name, str):
        raise DecodeError("codec name not a string")
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        raise DecodeError(f"unknown codec {name!r}") from None
    return canonical.replace("_codec", "")


CHAIN_NAME = {
    "lzma.decompress": "lzma",
    "zlib.decompress": "zlib",
    "gzip.decompress": "gzip",
    "bz2.decompress": "bz2",
    "base64.b85decode": "base85",
    "base64.a85decode": "ascii85",
    "base64.b64decode": "base64",
    "base64.standard_b64decode": "base64",
    "base64.urlsafe_b64decode": "base64",
    "base64.decodebytes": "base64",
    "binascii.a2b_base64": "base64",
    "base64.b32decode": "base32",
    "base64.b16decode": "hex",
    "binascii.unhexlify": "hex",
    "bytes.fromhex": "hex",
}


@dataclass
class _Ctx:
    aliases: dict[str, str]  # local name -> qualified name ("L" -> "lzma", "dec" -> "lzma.decompress")
    consts: dict[str, object]  # module-level names bound to literal/decoded values
    files: Mapping[str, bytes]  # sibling files (for `open(x).read()`)
    chain: list[str]
    budget: Budget


def _qualname(node: ast.AST, ctx: _Ctx) -> str | None:
    if isinstance(node, ast.Name):
        return ctx.aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _qualname(node.value, ctx)
        return f"{base}.{node.attr}" if base else None
    return None


def _add_chain(node: ast.BinOp, ctx: _Ctx):
    """`a + b + c + …` folded iteratively: a 2,500-term chain must not exhaust the Python stack."""
    terms: list[ast.AST] = []
    cur: ast.AST = node
    while isinstance(cur, ast.BinOp) and isinstance(cur.op, ast.Add):
        terms.append(cur.right)
        cur = cur.left
    terms.append(cur)
    values = [_eval(t, ctx) for t in reversed(terms)]
    kinds = {type(v) for v in values}
    if len(kinds) != 1 or not kinds <= {str, bytes, list}:
        raise DecodeError("mixed or unsupported `+` operands")
    ctx.budget.charge(sum(len(v) for v in values), "concatenation")
    if isinstance(values[0], list):
        return [x for v in values for x in v]
    return values[0][:0].join(values)


def _eval(node: ast.AST, ctx: _Ctx):
    """Evaluate a closed, side-effect-free expression or raise DecodeError (BombError past the budget)."""
    ctx.budget.step()
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        return node.value
    if isinstance(node, ast.Name) and node.id in ctx.consts:
        return ctx.consts[node.id]
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, (ast.Attribute, ast.Name)):
        qn = _qualname(node, ctx) or ""
        mod, _, const = qn.rpartition(".")
        if mod == "lzma" and const.isupper() and hasattr(lzma, const):
            return getattr(lzma, const)  # FORMAT_RAW, FILTER_LZMA2 …: plain integers
    if isinstance(node, ast.List):
        return [_eval(e, ctx) for e in node.elts]
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_eval(k, ctx): _eval(v, ctx) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _add_chain(node, ctx)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _eval(node.left, ctx), _eval(node.right, ctx)
        seq, n = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, (str, bytes)) and isinstance(n, int) and not isinstance(n, bool):
            ctx.budget.charge(len(seq) * max(n, 0), "repetition")  # charged before it is built
            return seq * n
        raise DecodeError("unsupported `*` operands")
    if isinstance(node, ast.JoinedStr):
        raise DecodeError("f-string")
    if isinstance(node, ast.Call):
        return _eval_call(node, ctx)
    raise DecodeError(f"cannot evaluate {type(node).__name__}")


def _eval_call(node: ast.Call, ctx: _Ctx):
    func = node.func
    qn = _qualname(func, ctx)
    # x.decode(...) / x.encode(...) — not the module functions `codecs.decode` / `base64.*decode*`
    if (
        isinstance(func, ast.Attribute)
        and func.attr in ("decode", "encode")
        and qn not in PURE_FUNCS
        and qn != "codecs.decode"
    ):
        target = _eval(func.value, ctx)
        if func.attr == "decode" and isinstance(target, bytes):
            return target.decode("utf-8", errors="replace")
        if func.attr == "encode" and isinstance(target, str):
            return target.encode()
        raise DecodeError("bad decode/encode target")
    # b"...".replace(b"\n", b"") / .strip(): pure methods on literals, the output size charged first
    if isinstance(func, ast.Attribute) and func.attr in ("replace", "strip", "lstrip", "rstrip"):
        target = _eval(func.value, ctx)
        args = [_eval(a, ctx) for a in node.args]
        if isinstance(target, (str, bytes)) and all(type(a) is type(target) for a in args):
            if func.attr == "replace" and len(args) >= 2:
                grow = max(len(args[1]) - len(args[0]), 0) * (target.count(args[0]) if args[0] else len(target) + 1)
                ctx.budget.charge(len(target) + grow, "replace")
            return getattr(target, func.attr)(*args)
        raise DecodeError("bad string method call")
    # open(sibling).read() / Path(sibling).read_text()
    if isinstance(func, ast.Attribute) and func.attr in ("read", "read_text", "read_bytes"):
        path = _opened_path(func.value, ctx)
        if path is not None:
            data = _sibling(path, ctx)
            ctx.chain.append(f"read:{path}")
            return data if func.attr == "read_bytes" else decode_text(data)
    if qn == "codecs.decode" and len(node.args) >= 2:
        codec = _codec(_eval(node.args[1], ctx))
        if codec not in CODECS:
            raise DecodeError(f"codec {codec!r} is not decoded statically")
        try:
            out = CODECS[codec](ctx.budget, _eval(node.args[0], ctx))
        except (ValueError, TypeError, zlib.error, OSError, EOFError) as e:
            raise DecodeError(f"codecs.decode: {e}") from e
        ctx.chain.append(codec)
        return out
    if qn == "compile" and node.args:
        return _eval(node.args[0], ctx)
    if qn in ("str", "bytes") and len(node.args) >= 1:
        v = _eval(node.args[0], ctx)
        if qn == "str" and isinstance(v, bytes):
            return v.decode("utf-8", errors="replace")
        if qn == "bytes" and isinstance(v, str):
            return v.encode()
        return v
    if qn in PURE_FUNCS:
        args = [_eval(a, ctx) for a in node.args]
        kwargs = {k.arg: _eval(k.value, ctx) for k in node.keywords if k.arg}
        if not args:
            raise DecodeError("no payload")
        name = CHAIN_NAME.get(qn, qn.split(".")[-1])
        try:
            out = (
                PURE_FUNCS[qn](ctx.budget, *args, **kwargs)
                if qn == "lzma.decompress"
                else PURE_FUNCS[qn](ctx.budget, *args)
            )
        except BombError:
            raise
        except (ValueError, TypeError, KeyError, lzma.LZMAError, zlib.error, OSError, EOFError) as e:
            raise DecodeError(f"{qn}: {e}") from e
        ctx.chain.append(name)
        return out
    raise DecodeError(f"cannot evaluate a call of {qn or 'an expression'}")


def _opened_path(node: ast.AST, ctx: _Ctx) -> str | None:
    if isinstance(node, ast.Call):
        qn = _qualname(node.func, ctx)
        if qn in ("open", "io.open", "Path", "pathlib.Path", "codecs.open") and node.args:
            try:
                v = _eval(node.args[0], ctx)
            except DecodeError:
                v = _path_literal(node.args[0], ctx)
            return v if isinstance(v, str) else None
    return None


def _path_literal(node: ast.AST, ctx: _Ctx) -> str | None:
    """`os.path.join(os.path.dirname(__file__), "x.py")`, `Path(__file__).parent / "x.py"` → "x.py"."""
    strs = [n.value for n in walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return strs[-1] if strs and strs[-1].endswith(".py") else None


def _sibling(path: str, ctx: _Ctx) -> bytes:
    name = PurePosixPath(path.replace("\\", "/")).name
    for p, data in ctx.files.items():
        if p == path or PurePosixPath(p).name == name:
            return data
    raise DecodeError(f"sibling {path} not in folder")


# exec/eval as a name of its own (`exec(`, `(exec)(`, `f = eval`), not an attribute (`model.eval(`) or part of a
# longer name (`eval_val`). Without one, and without a `builtins` alias, no node can be an exec/eval call.
# What `(?<![\w.])(?:exec|eval)\b` finds, 16x faster: a leading look-behind is tried at every position of the
# text, the word found at C speed first. (Two finds cannot overlap: a match starts after a letter of the other.)
_EXEC_WORD = re.compile(r"(?:exec|eval)\b")
_NAME_CHAR = re.compile(r"[\w.]")


def _bare_exec(text: str) -> bool:
    return any(m.start() == 0 or not _NAME_CHAR.match(text, m.start() - 1) for m in _EXEC_WORD.finditer(text))


def _collect_aliases(tree: ast.Module) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for node in walk(tree):
        cls = node.__class__  # class tests: this runs for every node of the module
        if cls is ast.Import:
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif cls is ast.ImportFrom and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


_EXEC_NAMES = frozenset({"exec", "builtins.exec", "eval", "builtins.eval"})


_EXEC_ATTRS = frozenset(name.rpartition(".")[2] for name in _EXEC_NAMES)  # what each ends in


def _is_exec_call(node: ast.AST, ctx: _Ctx) -> bool:
    return isinstance(node, ast.Call) and _qualname(node.func, ctx) in _EXEC_NAMES


@dataclass(frozen=True)
class Opaque:
    """An `exec`/`eval` whose argument the decoder could not build from literals: the code it runs is unknown."""

    line: int
    why: str


def decode_once(
    text: str, files: Mapping[str, bytes], budget: Budget | None = None
) -> tuple[str, list[str]] | Opaque | None:
    """If `text` is a wrapper, return (payload source, chain); an `Opaque` when it runs code through
    `exec`/`eval` that cannot be evaluated statically; None when it is ordinary code.

    A wrapper is a module whose `exec` argument we can evaluate from literals, within `budget`.
    """
    if "exec" not in text and "eval" not in text:
        return None  # no payload can run without exec/eval
    if "builtins" not in text and not _bare_exec(text):
        return None  # `model.eval()` and `eval_val(` are not exec/eval: only a bare or builtins call runs code
    tree, _ = pyparse.parse(text)
    if tree is None:
        return None
    ctx = _Ctx(aliases=_collect_aliases(tree), consts={}, files=files, chain=[], budget=budget or Budget())
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                ctx.consts[stmt.targets[0].id] = _eval(stmt.value, ctx)
            except BombError:
                raise
            except (DecodeError, RecursionError):
                pass
    opaque = None
    for node in walk(tree):
        if node.__class__ is not ast.Call or not node.args:
            continue
        if node.func.__class__ is ast.Attribute and node.func.attr not in _EXEC_ATTRS:
            continue  # a dotted callee ends in its attribute: only `….exec`/`….eval` can be the builtins
        if _is_exec_call(node, ctx):
            ctx.chain.clear()
            try:
                payload = _eval(node.args[0], ctx)
            except BombError:
                raise
            except (DecodeError, RecursionError) as e:
                why = str(e) if isinstance(e, DecodeError) else "nested too deeply"
                opaque = opaque or Opaque(getattr(node, "lineno", 0), why)
                continue
            chain = ctx.chain + ["exec"]
            if isinstance(payload, bytes):
                payload = decode_text(payload)
            if isinstance(payload, str):
                return payload, chain
            opaque = opaque or Opaque(getattr(node, "lineno", 0), f"runs a {type(payload).__name__}, not source text")
    return opaque


# --- finding the entry script --------------------------------------------------------------------
# `x.py` in a run command: what `(?:^|[\s/=])([\w.\-/]+\.py)\b` finds, in one pass. That regex rescans the rest
# of a long path-like run from every `/` (quadratic); each run holds at most one match, so it is read once.
_PY_IN_CMD = re.compile(r"[\w.\-/]+")
_PY_IN_CMD_LEAD = re.compile(r"[\s=]")
# A launch of a sibling script: `run_path(…"x.py"…)`, `subprocess.run([… 'x.py'])`, `os.system("… x.py")`.
# Was one regex, `(?:run_path|…|execv\w*)\s*\(.*?["']([\w.\-/]+\.py)["']` with re.S, which rescans the rest
# of the file from every call that has no such literal after it. Now: the call, then the first literal that
# starts after its `(` (bisected from a list made in one pass). `(?!execv)` keeps `execvexecv…` linear;
# every call in one word ends at the same `(`, so the same literal is found.
_LAUNCH_SIBLING = re.compile(r"(?:run_path|run_module|subprocess\.\w+|os\.system|execv(?:(?!execv)\w)*)\s*\(")
# what every match of _LAUNCH_SIBLING starts with
_LAUNCH_WORDS = ("run_path", "run_module", "subprocess.", "os.system", "execv")
_LAUNCH_TRIES = 256  # occurrences of those words tried one by one; more (a hostile text) are scanned for
# a quoted `x.py`, whole (group 1). Led by the quote, not a look-behind, so the search skips to quotes at C speed
_PY_LITERAL = re.compile(r"""["']([\w.\-/]+\.py)(?=["'])""")


def _py_in_cmd(text: str) -> list[str]:
    """Every `x.py` path in a command, in order (see _PY_IN_CMD)."""
    out: list[str] = []
    for m in _PY_IN_CMD.finditer(text):
        start, run = m.start(), m.group()
        if start == 0 or _PY_IN_CMD_LEAD.match(text, start - 1):
            lead = 0
        else:  # only a `/` inside the run can start the path
            lead = run.find("/") + 1
            if lead == 0:
                continue
        k = run.rfind(".py")  # the longest path ends at the last `.py` followed by a non-word character
        while k >= 0 and not (k + 3 == len(run) or run[k + 3] in ".-/"):
            k = run.rfind(".py", 0, k)
        if k > lead:
            out.append(run[lead : k + 3])
    return out


def _launch_targets(text: str) -> list[str]:
    """The `.py` literal each sibling launch names, in order (see _LAUNCH_SIBLING)."""
    counts = [text.count(word) for word in _LAUNCH_WORDS]  # at memory speed
    if not any(counts):
        return []  # most sources launch nothing: the pattern's alternation is never run over them
    if sum(counts) > _LAUNCH_TRIES:  # a text of little but these words: the regex engine scans it
        return _launches(text, lambda pos: _LAUNCH_SIBLING.search(text, pos))
    # every match starts with one of the words: the match at the first occurrence from `pos` on is what a search
    # from `pos` finds, without running the alternation over the text between them
    at = sorted({i for word, n in zip(_LAUNCH_WORDS, counts) if n for i in _occurrences(text, word)})
    calls = [(i, m) for i in at if (m := _LAUNCH_SIBLING.match(text, i)) is not None]
    starts = [i for i, _ in calls]
    return _launches(text, lambda pos: calls[k][1] if (k := bisect.bisect_left(starts, pos)) < len(calls) else None)


def _launches(text: str, next_call) -> list[str]:
    """The literal after each launch call, `next_call(pos)` giving the first call that starts at `pos` or later."""
    call = next_call(0)
    if call is None:
        return []
    lits = [(m.start(1), m.end(1) + 1, m.group(1)) for m in _PY_LITERAL.finditer(text, call.end())]
    starts = [s - 1 for s, _, _ in lits]  # the opening quote
    out: list[str] = []
    while call is not None:
        i = bisect.bisect_left(starts, call.end())
        if i == len(lits):
            break  # no literal after this call, so none after any later one either
        _, pos, name = lits[i]
        out.append(name)
        call = next_call(pos)
    return out


def _is_effectively_empty(text: str) -> bool:
    """No line holds anything but whitespace and a comment. Read from the first non-blank character on, a
    comment line at a time (without splitting the whole text into lines)."""
    pos = 0
    while (first := _NOT_SPACE.search(text, pos)) is not None:
        if text[first.start()] != "#":
            return False
        end = _LINE_BREAK.search(text, first.start())
        if end is None:
            return True
        pos = end.end()
    return True


_NOT_SPACE = re.compile(r"\S")  # what `str.strip` keeps: `\s` is `str.isspace` on str patterns
_LINE_BREAK = re.compile("\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")  # where `str.splitlines` splits


_DISTRIBUTED = re.compile(r"\b(torchrun|torch\.distributed\.(run|launch)|accelerate\s+launch|srun|deepspeed)\b")


def _readme_scripts(sub: Folder) -> list[str]:
    """Scripts the README runs, most likely entry first: a distributed launch (`torchrun … x.py`), then a
    `train*.py`, then anything else (data download / preparation scripts come last)."""
    ranked: list[tuple[int, int, str]] = []
    for cmd in run_commands(sub.readme_text):
        launched = bool(_DISTRIBUTED.search(cmd.text))
        for path in _py_in_cmd(cmd.text):
            name = PurePosixPath(path).name
            rank = 0 if launched else 1 if name.startswith("train") else 2
            ranked.append((rank, len(ranked), name))
    out: list[str] = []
    for _, _, name in sorted(ranked):
        if name not in out:
            out.append(name)
    return out


def _launched_distributed(sub: Folder, name: str) -> bool:
    return any(_DISTRIBUTED.search(c.text) and name in c.text for c in run_commands(sub.readme_text))


def _is_helper_script(name: str) -> bool:
    return not (name.startswith("train") or "gpt" in name)


def _top_py(sub: Folder, name: str) -> str | None:
    """`name` at the folder's top level, else one level down."""
    if name in sub.files:
        return name
    for p in sorted(sub.files):
        if PurePosixPath(p).name == name and p.count("/") == 1:
            return p
    return None


def choose_entry(sub: Folder) -> str | None:
    """The script that runs: README run command, else non-empty train_gpt.py, else another train*.py."""
    # a .py is read as source unless it holds NUL bytes: the "looks binary" guess is for logs, and a comment of
    # control bytes must not hide a script (it is parsed, and reported when it does not parse)
    pys = [p for p in sub.files if p.endswith(".py") and b"\0" not in sub.files[p]]
    if not pys:
        return None
    train = _top_py(sub, "train_gpt.py")
    train_real = bool(train) and not _is_effectively_empty(sub.text(train))
    for name in _readme_scripts(sub):
        p = _top_py(sub, name)
        if p and not _is_effectively_empty(sub.text(p)):
            if train_real and p != train and _is_helper_script(name) and not _launched_distributed(sub, name):
                return train  # a data-preparation script the README also runs is not the entry
            return p
    if train and not _is_effectively_empty(sub.text(train)):
        return train
    trains = sorted(
        (p for p in pys if PurePosixPath(p).name.startswith("train") and "/" not in p),
        key=lambda p: -len(sub.files[p]),
    )
    trains = [p for p in trains if not _is_effectively_empty(sub.text(p))]
    if trains:
        return trains[0]
    top = [p for p in pys if "/" not in p and not _is_effectively_empty(sub.text(p))]
    return max(top, key=lambda p: len(sub.files[p])) if top else (train or pys[0])


_IMPORT_LINE = re.compile(r"^\s*(?:from\s+(\.?[\w.]+)\s+import|import\s+([\w.]+(?:\s*,\s*[\w.]+)*))", re.M)


def import_lines(text: str) -> Iterator[re.Match]:
    """The matches `_IMPORT_LINE.finditer(text)` gives (their groups and ends; a match may start on a later blank
    line), with the pattern tried only where one can start: a match starts at a line start and, past whitespace,
    at its keyword, so at the start of a line whose text before a `from` or `import` is whitespace. Its groups
    and end are the same whichever blank line above the keyword it is tried from (the whitespace is only
    skipped). Finding the keywords runs at memory speed; the pattern tried at every character, as finditer does
    with a `^` under MULTILINE, does not."""
    end = 0  # matches do not overlap: a keyword inside the previous match starts none
    for pos in sorted(_occurrences(text, "from") + _occurrences(text, "import")):
        if pos < end:
            continue
        start = text.rfind("\n", 0, pos) + 1
        if start < end or not (start == pos or text[start:pos].isspace()):
            continue
        m = _IMPORT_LINE.match(text, start)
        if m is not None:
            end = m.end()
            yield m


def _occurrences(text: str, word: str) -> list[int]:
    out = []
    at = text.find(word)
    while at >= 0:
        out.append(at)
        at = text.find(word, at + 1)
    return out


def _local_imports(text: str, sub: Folder) -> list[str]:
    """Sibling modules imported by a source (`import utils`, `from model import GPT`), found from the import
    lines (cheaper than walking the tree, and lazy imports inside functions count too)."""
    found = []
    for m in import_lines(text):
        names = [m.group(1).lstrip(".")] if m.group(1) else [n.strip() for n in m.group(2).split(",")]
        for n in names:
            for p in (n.replace(".", "/") + ".py", n.split(".")[0] + ".py"):
                if p in sub.files and p not in found:
                    found.append(p)
    return found


def _launched_siblings(text: str, sub: Folder) -> list[str]:
    out = []
    for path in _launch_targets(text):
        p = _top_py(sub, PurePosixPath(path).name)
        if p and p not in out:
            out.append(p)
    return out


@dataclass(frozen=True)
class ResolvedSource:
    """One Python source as the auditor analyses it (wrappers decoded)."""

    path: str  # path of the shipped file, relative to the folder
    text: str  # the decoded source that rules analyse
    chain: tuple[str, ...] = ()  # how it was decoded: ("lzma", "base85", "exec") …
    role: str = "entry"  # entry | module | ran
    parse_error: str | None = None
    virtual: bool = False  # True when `text` is a decoded payload, not the file as shipped


@dataclass(frozen=True)
class Sources:
    """The second stage: the script that runs, every source it reaches (decoded), the files whose bytes
    count as code, and what the loader could not analyse."""

    entry: str | None = None
    sources: tuple[ResolvedSource, ...] = ()
    code_files: tuple[str, ...] = ()
    code_bytes: int = 0  # the code files' bytes as shipped (a compressed wrapper counts as its own bytes)
    findings: tuple[Finding, ...] = ()

    def adding(self, sources: Iterable[ResolvedSource], findings: Iterable[Finding]) -> Sources:
        return replace(self, sources=self.sources + tuple(sources), findings=self.findings + tuple(findings))


def resolve(folder: Folder) -> Sources:
    """Pick the entry script and follow its local imports and launched siblings. Never executes anything."""
    entry = choose_entry(folder)
    if entry is None:
        return Sources()
    code_files: list[str] = []
    sources: list[ResolvedSource] = []
    findings: list[Finding] = []
    queue: list[tuple[str, str]] = [(entry, "entry")]
    seen: set[str] = set()
    while queue:
        path, role = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        code_files.append(path)
        src, siblings, found = resolve_file(folder, path, role)
        code_files.extend(s for s in siblings if s not in code_files)
        sources.append(src)
        findings.extend(found)
        if src.parse_error:
            continue
        for p in _local_imports(src.text, folder) + _launched_siblings(src.text, folder):
            if p not in seen:
                queue.append((p, "module"))
    code_bytes = sum(folder.sizes.get(p, 0) for p in code_files)
    return Sources(entry, tuple(sources), tuple(code_files), code_bytes, tuple(findings))


def resolve_file(folder: Folder, path: str, role: str) -> tuple[ResolvedSource, list[str], list[Finding]]:
    """One file decoded: the source, the siblings its wrapper reads (`exec(open(sibling).read())`: their
    bytes count as code too), and what could not be analysed."""
    text = folder.text(path)
    chain: list[str] = []
    siblings: list[str] = []
    findings: list[Finding] = []
    budget = Budget()  # one budget for every layer: the depth of a nest is bounded by what it costs
    while True:
        try:
            step = decode_once(text, folder.files, budget)
        except BombError as e:
            findings.append(codes.DECOMPRESSION_BOMB.finding(f"{path}: {e}; payload not analysed", Location(path=path)))
            break
        except RecursionError:
            findings.append(
                codes.DECOMPRESSION_BOMB.finding(
                    f"{path}: nested too deeply; payload not analysed", Location(path=path)
                )
            )
            break
        if isinstance(step, Opaque):
            where = f"{path} (decoded)" if chain else path
            findings.append(
                codes.SOURCE_NOT_READ.finding(
                    f"{where} line {step.line}: `exec`/`eval` of something not built from literals ({step.why}); "
                    "the code it runs was not analysed",
                    Location(path=where, start_line=step.line if not chain else 0),
                )
            )
            break
        if step is None or step[0] == text:
            break
        text, how = step
        chain.extend(how)
        for h in how:
            sib = _top_py(folder, PurePosixPath(h[5:]).name) if h.startswith("read:") else None
            if sib and sib not in siblings:
                siblings.append(sib)
    _, parse_error = pyparse.parse(text)
    src = ResolvedSource(path, text, tuple(chain), role, parse_error, virtual=bool(chain))
    if parse_error:
        py2 = " (Python 2 syntax?)" if re.search(r"^\s*print\s+[\"'\w]", text, re.M) else ""
        findings.append(
            codes.CANNOT_PARSE.finding(
                f"{path}{' (decoded)' if chain else ''} cannot be parsed as Python 3: "
                f"{parse_error}{py2}; its code rules were not run",
                Location(path=path, start_line=_err_line(parse_error)),
            )
        )
    return src, siblings, findings


def _err_line(msg: str) -> int:
    m = re.match(r"line (\d+)", msg or "")
    return int(m.group(1)) if m else 0
