"""Byte-denominator analysis: per-token byte look-up tables, the scorer's space byte, the tokenizer in use.

`val_bpb` divides the summed NLL by the UTF-8 bytes of the scored text. Submissions rebuild that byte count
from the tokenizer: a loop over the vocabulary (`sp.id_to_piece(i)`) writes per-token byte counts, and the
scorer adds the leading-space byte when the previous token is not a boundary (trainer spec §2). The loop is
recognised by its shape — a loop over token ids that reads the piece text and stores a length or an encoding
per id — never by the function's name. Each table is compared with the baseline contract:

* byte-fallback pieces (`sp.is_byte`, `<0xAB>`) count 1 byte, not the 6 characters of their text;
* `▁` is stripped from the count and the space is added once, in the scorer;
* control / unknown / unused pieces are boundaries worth 0 bytes.

Also here: whether the program asserts that `▁` is a piece of its own, which tokenizer the effective config
loads, a reader for shipped SentencePiece `.model` files (piece types, no protobuf dependency), and
truncations of the validation tokens to a fixed count (a scored subset).
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass, field
from operator import attrgetter

from ..load.parse import walk
from ..logs.patterns import may_contain
from .astutil import UNKNOWN, call_name, dotted, ends_with, is_val_name, scope_nodes
from .program import Program, SourceIndex
from .scopes import single_bindings
from .valueflow import ValFlow

SPACE_MARK = "\u2581"
PIECE_CALLS = {"id_to_piece", "IdToPiece"}
# Decoding one id to text (`sp.decode([i])`, `tok.convert_ids_to_tokens(i)`): trainer spec §2.4 pitfall 3.
DECODE_CALLS = {"decode", "Decode", "DecodeIds", "decode_ids", "convert_ids_to_tokens"}
_TEXT_CALLS = tuple(sorted(PIECE_CALLS | DECODE_CALLS))  # what `piece_call` looks for
BYTE_CALLS = {"is_byte", "IsByte"}
BOUNDARY_CALLS = {
    "is_control": "control",
    "IsControl": "control",
    "is_unknown": "unknown",
    "IsUnknown": "unknown",
    "is_unused": "unused",
    "IsUnused": "unused",
}
# Tokenizers exported by the challenge's own data pipeline (`fineweb_<vocab>_bpe.model`).
CANONICAL_TOKENIZER = re.compile(r"(^|/)fineweb_\d+_bpe\.model$")
# Names of a per-token byte sidecar (CaseOps counts original bytes there, operators weigh 0).
SIDECAR_NAME = re.compile(r"byte_sidecar|val_bytes|bytes_files|token_bytes_files|_byte_counts", re.I)
_SIDECAR_WORDS = ("byte_sidecar", "val_bytes", "bytes_files", "_byte_counts")  # what a match of it holds


@dataclass
class ByteTable:
    """One loop that writes per-token byte counts, and what it does with each kind of piece."""

    idx: SourceIndex
    fn: ast.AST | None  # enclosing function (None at module level)
    loop: ast.For
    var: str  # the token-id loop variable
    piece_call: ast.Call
    from_decode: bool = False  # counts come from decoded text, not from the piece
    count_stores: list[ast.AST] = field(default_factory=list)  # `T[i] = len(...)` / `T[i] = piece.encode()`
    byte_check: ast.AST | None = None  # `sp.is_byte(i)` or `<0x..>` parsing
    boundary: dict[str, ast.AST] = field(default_factory=dict)  # control/unknown/unused -> the call
    boundary_guards_count: bool = False  # the boundary test skips or zeroes the count
    space_test: ast.AST | None = None  # `piece.startswith("▁")`
    space_in_count: ast.AST | None = None  # the count includes the space: `len(p[1:]) + 1`, `" " + p[1:]`
    marker_counted: ast.AST | None = None  # `▁` tested but never stripped: counted as its 3 UTF-8 bytes

    @property
    def name(self) -> str:
        return getattr(self.fn, "name", "<module>")


@dataclass
class ScorerSpace:
    """`has_leading_space[tgt] & ~is_boundary[prev]` added to a byte count: the scorer's space byte."""

    idx: SourceIndex
    node: ast.AST


@dataclass
class SubsetSlice:
    """Validation tokens cut to a fixed count before scoring."""

    idx: SourceIndex
    node: ast.Subscript
    tokens: int
    origin: ast.AST  # the expression (env read / default) the count comes from


# --- the look-up table loops ------------------------------------------------------------------------
def _is_space_literal(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in (SPACE_MARK, SPACE_MARK.encode())


def _space_test(node: ast.AST) -> bool:
    """`p.startswith("▁")`, `p[0] == "▁"`, `"▁" in p[:1]`."""
    for n in walk(node):
        if isinstance(n, ast.Call) and call_name(n) == "startswith" and n.args and _is_space_literal(n.args[0]):
            return True
        if isinstance(n, ast.Compare) and any(_is_space_literal(c) for c in [n.left, *n.comparators]):
            return True
    return False


def _strips_marker(node: ast.AST) -> bool:
    """`p[1:]`, `p.replace("▁", …)`, `p.lstrip("▁")`, `p[len("▁"):]`, `removeprefix`."""
    for n in walk(node):
        if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Slice) and n.slice.lower is not None:
            low = n.slice.lower
            if isinstance(low, ast.Constant) and low.value == 1 or isinstance(low, ast.Call):
                return True
        if isinstance(n, ast.Call) and call_name(n) in ("replace", "lstrip", "strip", "removeprefix") and n.args:
            if _is_space_literal(n.args[0]):
                return True
    return False


def _adds_space(node: ast.AST) -> bool:
    """`len(x) + 1` or `" " + x`: the count carries the space byte itself."""
    for n in walk(node):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add):
            sides = (n.left, n.right)
            if any(isinstance(s, ast.Constant) and s.value in (" ", b" ") for s in sides):
                return True
            has_len = any(isinstance(s, ast.Call) and call_name(s) == "len" for s in sides)
            if has_len and any(isinstance(s, ast.Constant) and s.value == 1 for s in sides):
                return True
    return False


def _is_count_value(node: ast.AST) -> bool:
    """A byte length or the bytes themselves — not a flag derived from the text (`len(p) > 0 and p[0] == "▁"`)."""
    if isinstance(node, (ast.Compare, ast.BoolOp)) or isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return False
    return any(isinstance(n, ast.Call) and call_name(n) in ("len", "encode") for n in walk(node))


def _byte_parse(node: ast.AST) -> bool:
    """Parsing `<0xAB>` by hand (`int(p[3:5], 16)`, `p.startswith("<0x")`) counts as an is_byte branch."""
    for n in walk(node):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("<0x"):
            return True
        if isinstance(n, ast.Call) and call_name(n) == "int" and len(n.args) == 2:
            base = n.args[1]
            if isinstance(base, ast.Constant) and base.value == 16:
                return True
    return False


# a branch that skips the rest of the loop body (a `break` ends the table build instead)
_SKIPS = (ast.Continue, ast.Return, ast.Raise)


def _loop_var(loop: ast.For | ast.comprehension) -> str | None:
    return loop.target.id if isinstance(loop.target, ast.Name) else None


def _is_id_arg(arg: ast.AST, var: str) -> bool:
    if isinstance(arg, ast.Call) and call_name(arg) == "int" and arg.args:  # `int(tid)`
        arg = arg.args[0]
    if isinstance(arg, ast.List) and len(arg.elts) == 1:  # `decode([tid])`
        arg = arg.elts[0]
    return isinstance(arg, ast.Name) and arg.id == var


def piece_call(node: ast.AST, var: str) -> ast.Call | None:
    """The call in `node` that turns token id `var` into its text."""
    for c in walk(node):
        if isinstance(c, ast.Call) and c.args and _is_id_arg(c.args[0], var):
            if call_name(c) in PIECE_CALLS or call_name(c) in DECODE_CALLS:
                return c
    return None


def _is_text_call(c: ast.AST) -> bool:
    return isinstance(c, ast.Call) and (call_name(c) in PIECE_CALLS or call_name(c) in DECODE_CALLS)


def _analyse_loop(
    idx: SourceIndex, loop: ast.For, var: str, call: ast.Call, text_name: str | None = None
) -> ByteTable | None:
    table = ByteTable(
        idx=idx,
        fn=idx.enclosing(loop, ast.FunctionDef, ast.AsyncFunctionDef),
        loop=loop,
        var=var,
        piece_call=call,
        from_decode=call_name(call) in DECODE_CALLS,
    )
    # piece-text names: `piece = sp.id_to_piece(i)` and names derived from it (`b = piece.encode()`)
    text_names: set[str] = {text_name} if text_name else set()
    for n in walk(loop):
        if isinstance(n, ast.Assign) and any(c is call or _is_text_call(c) for c in walk(n.value)):
            text_names.update(t.id for t in n.targets if isinstance(t, ast.Name))
    for _ in range(2):
        for n in walk(loop):
            if isinstance(n, ast.Assign) and any(isinstance(x, ast.Name) and x.id in text_names for x in walk(n.value)):
                text_names.update(t.id for t in n.targets if isinstance(t, ast.Name))

    def uses_text(expr: ast.AST) -> bool:
        return any((isinstance(x, ast.Name) and x.id in text_names) or _is_text_call(x) for x in walk(expr))

    for n in walk(loop):
        if isinstance(n, ast.Assign):
            for t in n.targets:
                if (
                    isinstance(t, ast.Subscript)
                    and isinstance(t.slice, ast.Name)
                    and t.slice.id == var
                    and _is_count_value(n.value)
                    and uses_text(n.value)
                ):
                    table.count_stores.append(n)
        if isinstance(n, ast.Call) and call_name(n) in BYTE_CALLS:
            table.byte_check = table.byte_check or n
        if isinstance(n, ast.Call) and call_name(n) in BOUNDARY_CALLS:
            table.boundary.setdefault(BOUNDARY_CALLS[call_name(n)], n)
        if table.space_test is None and isinstance(n, (ast.If, ast.IfExp)) and _space_test(n.test):
            table.space_test = n
    if not table.count_stores:
        return None
    if table.byte_check is None and (
        _byte_parse(loop)
        or (
            table.fn is not None and any(isinstance(c, ast.Call) and call_name(c) in BYTE_CALLS for c in walk(table.fn))
        )
    ):
        table.byte_check = next(
            (
                c
                for c in walk(loop)
                if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.startswith("<0x")
            ),
            loop,
        )
    table.boundary_guards_count = _boundary_guards(loop, table.count_stores[0])
    for store in table.count_stores:
        if _adds_space(store.value) or _adds_space_via_name(loop, store):
            table.space_in_count = table.space_in_count or store
    if not table.from_decode and not _strips_marker(loop) and table.space_in_count is None:
        # `▁` tested but kept, or never looked at: either way it is counted as its 3 UTF-8 bytes
        table.marker_counted = table.space_test or table.count_stores[0]
    return table


def _adds_space_via_name(loop: ast.For, store: ast.Assign) -> bool:
    """`b = (" " + p[1:]).encode(); T[i] = len(b)`: the space enters through a local name."""
    names = {x.id for x in walk(store.value) if isinstance(x, ast.Name)}
    for n in walk(loop):
        if (
            isinstance(n, ast.Assign)
            and n.lineno <= store.lineno
            and any(isinstance(t, ast.Name) and t.id in names for t in n.targets)
        ):
            if _adds_space(n.value):
                return True
    return False


def _boundary_guards(loop: ast.For, first_store: ast.AST) -> bool:
    """Does a test on control/unknown pieces skip (or zero) the count before it is written?"""
    for stmt in loop.body:
        if stmt.lineno >= first_store.lineno and not (stmt.lineno <= first_store.lineno <= (stmt.end_lineno or 0)):
            break
        if isinstance(stmt, ast.If) and any(
            isinstance(c, ast.Call) and call_name(c) in BOUNDARY_CALLS for c in walk(stmt.test)
        ):
            if (
                ends_with(stmt.body, _SKIPS)
                or stmt.orelse
                and any(first_store is x for s in stmt.orelse for x in walk(s))
            ):
                return True
    return False


def byte_tables(program: Program) -> list[ByteTable]:
    """Every loop (or comprehension) over token ids that reads the token's text and stores byte counts."""
    out: list[ByteTable] = []
    for idx in program.indexes:
        for loop in idx.nodes(ast.For):
            var = _loop_var(loop)
            call = piece_call(loop, var) if var and idx.calls_in_span(loop, *_TEXT_CALLS) else None
            text_name = None
            if call is None:
                var, call, text_name = _enumerated_pieces(idx, loop)
            if call is None or any(o.loop is not loop and _inside(idx, loop, o.loop) for o in out if o.idx is idx):
                continue
            table = _analyse_loop(idx, loop, var, call, text_name)
            if table is not None:
                out.append(table)
        for comp in idx.nodes(ast.ListComp, ast.DictComp, ast.GeneratorExp):
            if len(comp.generators) != 1 or any(_inside(idx, comp, o.loop) for o in out if o.idx is idx):
                continue
            var = _loop_var(comp.generators[0])
            elt = comp.value if isinstance(comp, ast.DictComp) else comp.elt
            call = piece_call(elt, var) if var and idx.calls_in_span(elt, *_TEXT_CALLS) else None
            if call is not None and _is_count_value(elt):
                out.append(_analyse_comprehension(idx, comp, elt, var, call))
    return out


def _enumerated_pieces(idx: SourceIndex, loop: ast.For) -> tuple[str | None, ast.Call | None, str | None]:
    """`pieces = [sp.id_to_piece(i) for i in range(V)]` then `for tid, piece in enumerate(pieces)`."""
    t, it = loop.target, loop.iter
    if not (
        isinstance(t, ast.Tuple)
        and len(t.elts) == 2
        and all(isinstance(e, ast.Name) for e in t.elts)
        and isinstance(it, ast.Call)
        and call_name(it) == "enumerate"
        and it.args
    ):
        return None, None, None
    src = it.args[0]
    scope = idx.enclosing(loop, ast.FunctionDef, ast.AsyncFunctionDef) or idx.tree
    if isinstance(src, ast.Name):  # follow one local binding
        src = next(
            (
                n.value
                for n in scope_nodes(scope, ast.Assign)
                if n.lineno < loop.lineno and any(isinstance(x, ast.Name) and x.id == src.id for x in n.targets)
            ),
            src,
        )
    for comp in walk(src):
        if isinstance(comp, ast.ListComp) and len(comp.generators) == 1:
            gvar = _loop_var(comp.generators[0])
            call = piece_call(comp.elt, gvar) if gvar else None
            if call is not None:
                return t.elts[0].id, call, t.elts[1].id
    return None, None, None


def _analyse_comprehension(idx: SourceIndex, comp: ast.AST, elt: ast.AST, var: str, call: ast.Call) -> ByteTable:
    """`[len(sp.id_to_piece(i).encode()) for i in range(V)]`: the element is the count, an IfExp the branches."""
    table = ByteTable(
        idx=idx,
        fn=idx.enclosing(comp, ast.FunctionDef, ast.AsyncFunctionDef),
        loop=comp,
        var=var,
        piece_call=call,
        from_decode=call_name(call) in DECODE_CALLS,
        count_stores=[elt],
    )
    scope = [elt, *comp.generators[0].ifs]
    for part in scope:
        for n in walk(part):
            if isinstance(n, ast.Call) and call_name(n) in BYTE_CALLS:
                table.byte_check = table.byte_check or n
            if isinstance(n, ast.Call) and call_name(n) in BOUNDARY_CALLS:
                table.boundary.setdefault(BOUNDARY_CALLS[call_name(n)], n)
            if table.space_test is None and isinstance(n, ast.IfExp) and _space_test(n.test):
                table.space_test = n
    if table.byte_check is None and _byte_parse(elt):
        table.byte_check = elt
    table.boundary_guards_count = bool(table.boundary)
    if _adds_space(elt):
        table.space_in_count = elt
    if not table.from_decode and not _strips_marker(elt) and table.space_in_count is None:
        table.marker_counted = table.space_test or elt  # the piece text goes into the count with its `▁`
    return table


def _inside(idx: SourceIndex, node: ast.AST, outer: ast.AST) -> bool:
    return any(a is outer for a in idx.ancestors(node))


# --- the scorer -----------------------------------------------------------------------------------------
def _is_negated_subscript(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Invert, ast.Not)):
        inner = node.operand
        while isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute):  # `~x[p].bool()`
            inner = inner.func.value
        return isinstance(inner, ast.Subscript)
    return False


def scorer_space_sites(program: Program) -> list[ScorerSpace]:
    """`A[tgt] & ~B[prev]` (or `A[t] and not B[p]`) whose result is added to a byte count."""
    out: list[ScorerSpace] = []
    for idx in program.indexes:
        for n in idx.nodes(ast.BinOp, ast.BoolOp):
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitAnd):
                parts = [n.left, n.right]
            elif isinstance(n, ast.BoolOp) and isinstance(n.op, ast.And):
                parts = list(n.values)
            else:
                continue
            plain = [
                p
                for p in parts
                if isinstance(p, ast.Subscript) or (isinstance(p, ast.Call) and isinstance(p.func, ast.Subscript))
            ]
            if plain and any(_is_negated_subscript(p) for p in parts):
                if _flows_into_addition(idx, n):
                    out.append(ScorerSpace(idx, n))
    return out


def _flows_into_addition(idx: SourceIndex, node: ast.AST) -> bool:
    for anc in idx.ancestors(node):
        if isinstance(anc, ast.AugAssign) and isinstance(anc.op, ast.Add):
            return True
        if isinstance(anc, ast.BinOp) and isinstance(anc.op, ast.Add):
            return True
        if isinstance(anc, ast.IfExp):  # `n + (1 if has_space and not prev_boundary else 0)`
            continue
        if isinstance(anc, ast.If):  # `if has_space and not boundary: n += 1`
            return any(isinstance(s, ast.AugAssign) and isinstance(s.op, ast.Add) for s in anc.body)
        if isinstance(anc, (ast.stmt,)) and not isinstance(anc, ast.Expr):
            if isinstance(anc, ast.Assign):
                # `include_space = has_space and not prev_is_boundary` then `n = len(tb) + (1 if include_space…)`
                names = [t.id for t in anc.targets if isinstance(t, ast.Name)]
                fn = idx.enclosing(anc, ast.FunctionDef, ast.AsyncFunctionDef) or idx.tree
                return any(
                    x.id in names
                    and isinstance(x.ctx, ast.Load)
                    and any(isinstance(a, (ast.BinOp, ast.AugAssign, ast.If)) for a in idx.ancestors(x))
                    for x in scope_nodes(fn, ast.Name)
                )
            return False
    return False


# --- the standalone `▁` assertion and the tokenizer in use ---------------------------------------------
def space_piece_checks(program: Program) -> list[tuple[SourceIndex, ast.AST]]:
    """`sp.piece_to_id("▁") != sp.unk_id()` (in an assert, an `if … raise`, or any comparison)."""
    out = []
    for idx in program.indexes:
        if not idx.calls_named("piece_to_id", "PieceToId"):
            continue  # no comparison can hold one
        for n in idx.nodes(ast.Compare):
            calls = [c for c in walk(n) if isinstance(c, ast.Call)]
            if any(
                call_name(c) in ("piece_to_id", "PieceToId") and c.args and _is_space_literal(c.args[0]) for c in calls
            ):
                out.append((idx, n))
    return out


def tokenizer_paths(program: Program) -> list[tuple[SourceIndex, ast.AST, str]]:
    """The tokenizer files the effective configuration loads: (where, expression, folded path)."""
    out: list[tuple[SourceIndex, ast.AST, str]] = []
    logged = program.config.logged.get("tokenizer_path")
    for name in ("tokenizer_path", "TOKENIZER_PATH", "tokenizer", "tok_path"):
        for table in (program.attrs, program.consts):
            if name in table:
                idx, expr = table[name]
                v = program.fold(expr)
                if isinstance(v, str) and v.endswith(".model"):
                    out.append((idx, expr, v))
    if logged and logged.endswith(".model") and not any(p == logged for _, _, p in out) and out:
        idx, expr, _ = out[0]
        out = [(idx, expr, logged)]
    return out


def is_canonical_tokenizer(path: str) -> bool:
    return bool(CANONICAL_TOKENIZER.search(path.replace("\\", "/")))


def uses_byte_sidecar(program: Program) -> bool:
    """CaseOps-style accounting: bytes come from a per-token sidecar file, not from the LUT."""
    names: set[str] = set()  # each name searched once: a script repeats a few hundred names thousands of times
    for idx in program.indexes:
        if not may_contain(idx.src.text, _SIDECAR_WORDS):
            continue  # an ASCII source's names are in its text as written: none can match
        names.update(idx.identifiers(ast.Name))
        names.update(idx.identifiers(ast.Attribute))
        names.update(map(attrgetter("name"), idx.unordered(ast.FunctionDef)))
    # one scan of the names joined by newlines: no alternative of the pattern holds or folds to one, so a match
    # lies inside one name
    return SIDECAR_NAME.search("\n".join(names)) is not None


# --- shipped SentencePiece models ------------------------------------------------------------------------
PIECE_TYPES = {1: "normal", 2: "unknown", 3: "control", 4: "user_defined", 5: "unused", 6: "byte"}


@dataclass
class ModelSummary:
    """What a `.model` file says about byte accounting."""

    pieces: list[tuple[str, str]]  # (piece, type)

    @property
    def has_space_piece(self) -> bool:
        return any(p == SPACE_MARK and t in ("normal", "user_defined") for p, t in self.pieces)

    @property
    def byte_pieces(self) -> int:
        return sum(1 for _, t in self.pieces if t == "byte")

    @property
    def user_defined(self) -> list[str]:
        return [p for p, t in self.pieces if t == "user_defined"]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message; length-delimited values as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield num, wire, val


def read_sentencepiece_model(data: bytes) -> ModelSummary | None:
    """Piece texts and types of a SentencePiece ModelProto (field 1 = pieces: 1 text, 3 type); None if not one."""
    pieces: list[tuple[str, str]] = []
    try:
        for num, wire, val in _fields(data):
            if num != 1 or wire != 2:
                continue
            text, typ = "", 1
            for pnum, pwire, pval in _fields(val):
                if pnum == 1 and pwire == 2:
                    text = pval.decode("utf-8", errors="replace")
                elif pnum == 3 and pwire == 0:
                    typ = pval
            pieces.append((text, PIECE_TYPES.get(typ, "normal")))
    except ValueError:
        return None
    return ModelSummary(pieces) if pieces else None


# --- validation subsets -----------------------------------------------------------------------------------
def _param_defaults(fn: ast.AST | None) -> dict[str, ast.expr]:
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return {}
    a = fn.args
    pos = a.posonlyargs + a.args
    out = {p.arg: d for p, d in zip(pos[len(pos) - len(a.defaults) :], a.defaults)}
    out.update({p.arg: d for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None})
    return out


class _Substitute(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, ast.expr]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.AST:  # noqa: N802 - NodeTransformer API
        return self.mapping.get(node.id, node)


def fold_with_defaults(program: Program, expr: ast.expr, fn: ast.AST | None):
    """Fold `expr` under the effective config, reading function parameters as their defaults."""
    defaults = _param_defaults(fn)
    if defaults:
        expr = _Substitute(defaults).visit(copy.deepcopy(expr))
    return program.fold(expr)


def _val_data(node: ast.AST) -> bool:
    name = dotted(node) or ""
    last = name.rsplit(".", 1)[-1]
    return bool(last) and is_val_name(last)


def subset_slices(program: Program, *, full_split_min: int = 40_000_000) -> list[SubsetSlice]:
    """`val_tokens[:N]` (or a loader's `tokens[:N + 1]` returned as validation data) with a folded N below a
    full split. Guards around the slice are folded with parameter defaults too (`if max_tok > 0:`)."""
    out: list[SubsetSlice] = []
    for idx in program.indexes:
        for sub in idx.nodes(ast.Subscript):
            if not isinstance(sub.ctx, ast.Load) or not isinstance(sub.slice, ast.Slice):
                continue
            sl = sub.slice
            if (
                sl.upper is None
                or sl.step is not None
                or (sl.lower is not None and not (isinstance(sl.lower, ast.Constant) and sl.lower.value == 0))
            ):
                continue
            fn = idx.enclosing(sub, ast.FunctionDef, ast.AsyncFunctionDef)
            if not (_val_data(sub.value) or _val_loader(fn)):
                continue
            n = fold_with_defaults(program, sl.upper, fn)
            if not isinstance(n, int) or isinstance(n, bool) or not 0 < n < full_split_min:
                continue
            if _guard_false(program, idx, sub, fn):
                continue
            out.append(SubsetSlice(idx, sub, n, sl.upper))
    return out


def _val_loader(fn: ast.AST | None) -> bool:
    """A function that loads validation files: its name or the caller's binding says validation."""
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    name = fn.name.lower()
    return bool(re.search(r"(^|_)(val|valid|validation)(_|$)", name)) and bool(re.search(r"load|ld|read", name))


def _guard_false(program: Program, idx: SourceIndex, node: ast.AST, fn: ast.AST | None) -> bool:
    child = node
    for anc in idx.ancestors(node):
        if anc is fn:
            break
        if isinstance(anc, (ast.If, ast.IfExp)) and child is not anc.test:
            in_body = child in anc.body if isinstance(anc, ast.If) else child is anc.body
            v = fold_with_defaults(program, anc.test, fn)
            if v is not UNKNOWN and bool(v) != in_body:
                return True
        child = anc
    return False


# --- constant byte denominators ---------------------------------------------------------------------------
LN2_VALUE = 0.6931471805599453
# Bytes per token a constant denominator may stand for: above 1 (a byte-level model's bits/token *are* its
# bits/byte) and below any real tokenizer's average.
BPT_RANGE = (1.05, 16.0)


@dataclass
class ConstantDenominator:
    """`loss / (ln 2 × c)`: bits per token turned into bits per byte by a constant, not by counted bytes."""

    idx: SourceIndex
    node: ast.AST  # the whole multiplicative expression
    bytes_per_token: float  # the constant the loss is divided by (besides ln 2)
    loss: ast.AST  # the one non-constant factor
    from_val: bool  # the loss is computed from validation data


def _ln2_power(program: Program, node: ast.AST, local: dict) -> int:
    """+1 for `math.log(2)` (or a name bound to it, or 0.6931…), -1 for `1/ln 2` written as 1.4427…, 0 else."""
    for _ in range(4):  # follow a few name bindings: `LN2 = math.log(2.0)`
        if isinstance(node, ast.Name) and node.id in local:
            node = local[node.id]
        elif isinstance(node, ast.Name) and node.id in program.consts:
            node = program.consts[node.id][1]
        else:
            break
    if isinstance(node, ast.Call) and call_name(node) == "log" and len(node.args) == 1:
        if program.fold(node.args[0], local=local) == 2:
            return 1
    if isinstance(node, ast.Call) and call_name(node) == "log2" and len(node.args) == 1:
        arg = dotted(node.args[0]) or ""
        if arg.rsplit(".", 1)[-1] == "e":  # `math.log2(math.e)` = 1 / ln 2
            return -1
    if isinstance(node, ast.Constant):  # `0.693`, `1.4427` written out
        return _ln2_float(node.value)
    return 0


def _ln2_candidate(node: ast.AST) -> bool:
    """What `_ln2_power` can find non-zero once the names are followed: a `log`/`log2` call, a float near ln 2
    or 1/ln 2."""
    if node.__class__ is ast.Call:
        return call_name(node) in ("log", "log2")
    return isinstance(node, ast.Constant) and _ln2_float(node.value) != 0


def _ln2_float(v) -> int:
    """+1 for a float written as ln 2 (0.6931…), -1 for one written as 1/ln 2 (1.4427…), 0 else."""
    if not isinstance(v, float):
        return 0
    if abs(v / LN2_VALUE - 1) < 1e-3:
        return 1
    return -1 if abs(v * LN2_VALUE - 1) < 1e-3 else 0


def _ln2_functions(program: Program) -> set[ast.AST | None] | None:
    """The functions (None: module level) in which a product can hold a power of ln 2, or None when any can.
    A factor reaches ln 2 through the product itself, the function's own bindings (both inside the function)
    or a module-level constant: unless a constant is bound to ln 2 itself, only a function holding a candidate
    node (`_ln2_candidate`) can. Most functions hold none, and are not read."""
    if any(_ln2_candidate(value) for _, value in program.consts.values()):
        return None
    hot: set[ast.AST | None] = set()
    for idx in program.indexes:
        floats = [n for n in idx.unordered(ast.Constant) if n.value.__class__ is float and _ln2_float(n.value)]
        for node in (*idx.calls_named("log", "log2"), *floats):
            hot.add(idx.enclosing(node, ast.FunctionDef, ast.AsyncFunctionDef))
    return hot


def _factors(program: Program, expr: ast.AST, local: dict, sign: int = 1, depth: int = 0):
    """(factor, ±1) of a product/quotient; a local name is expanded when its value divides by ln 2
    (`bits = loss / math.log(2); bpb = bits / 3.5`)."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Mult, ast.Div)):
        right = -sign if isinstance(expr.op, ast.Div) else sign
        return _factors(program, expr.left, local, sign, depth) + _factors(program, expr.right, local, right, depth)
    if isinstance(expr, ast.Name) and expr.id in local and depth < 3:
        inner = _factors(program, local[expr.id], local, sign, depth + 1)
        if any(_ln2_power(program, f, local) for f, _ in inner):
            return inner
    return [(expr, sign)]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def constant_denominators(program: Program, valflow: ValFlow | None = None) -> list[ConstantDenominator]:
    """Every `x / (ln 2 × c)` (in one expression or across local names) whose only non-constant parts are the
    loss (and at most one divisor, `nll_sum / n_tokens`), with a constant `c` in the range of a bytes-per-token:
    a per-token byte count would be a second divisor and leave no such constant (`bits × tokens / bytes`)."""
    out: list[ConstantDenominator] = []
    hot = _ln2_functions(program)
    for idx in program.indexes:
        for expr in idx.nodes(ast.BinOp):
            if not isinstance(expr.op, (ast.Mult, ast.Div)):
                continue
            parent = idx.parents.get(expr)
            if isinstance(parent, ast.BinOp) and isinstance(parent.op, (ast.Mult, ast.Div)):
                continue  # judged at the whole product
            fn = idx.enclosing(expr, ast.FunctionDef, ast.AsyncFunctionDef)
            if hot is not None and fn not in hot:
                continue  # no factor of this product can be ln 2: its powers sum to 0
            local = single_bindings(fn)
            factors = [(f, sign, _ln2_power(program, f, local)) for f, sign in _factors(program, expr, local)]
            if sum(power * sign for _, sign, power in factors) != -1:
                continue  # no 1/ln 2 in the product: nothing to fold
            const, loose = 1.0, []
            for f, sign, power in factors:
                if power:
                    continue
                v = program.fold(f, local=local)
                if _is_number(v) and v != 0:
                    const *= float(v) ** sign
                else:
                    loose.append((f, sign))
            if const <= 0 or sorted(sign for _, sign in loose) not in ([1], [-1, 1]):
                continue
            bpt = 1.0 / const
            if not BPT_RANGE[0] < bpt < BPT_RANGE[1]:
                continue
            if len(loose) == 2 and float(bpt).is_integer():
                continue  # `nll / (ln 2 × n × 8)`: an integer is a rank or batch count next to a mean, not bytes
            loss = next(f for f, sign in loose if sign == 1)
            scope = fn or idx.tree
            from_val = bool(valflow is not None and valflow.is_val(scope, loss, expr.lineno))
            out.append(ConstantDenominator(idx, expr, bpt, loss, from_val))
    return out


# --- evaluation over a constant number of batches ------------------------------------------------------------
@dataclass
class FixedEvalLoop:
    """`for i in range(50): … val[i*B : …]` accumulating a loss: the eval stops after a fixed number of batches."""

    idx: SourceIndex
    loop: ast.For
    batches: int
    tokens: int | None  # tokens the loop can reach (batches × the read's stride); None: batches of a loader
    read: ast.AST  # the validation read indexed by the loop variable, or the loader enumerated


def _accumulates(loop: ast.For, program: Program, local: dict) -> bool:
    """The body adds a computed value to something that outlives an iteration (`total += loss.item()`)."""
    for n in walk(loop):
        if isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Add):
            if not _is_number(program.fold(n.value, local=local)):
                return True
        if isinstance(n, ast.Call) and call_name(n) == "append" and n.args:
            return True
    return False


def _divides_by_ln2(program: Program, scope: ast.AST) -> bool:
    """Does the scope turn a loss into bits (`/ math.log(2)`)? Marks a scoring function."""
    local = single_bindings(scope)
    return any(
        isinstance(n.op, ast.Div) and any(_ln2_power(program, f, local) for f, _ in _factors(program, n, local))
        for n in scope_nodes(scope, ast.BinOp)
    )


def _in_scorer(program: Program, idx: SourceIndex, fn: ast.AST | None) -> bool:
    """The loop's function converts the loss to bits itself, or a direct caller does with what it returns
    (calibration or statistics loops over validation windows never do)."""
    scope = fn or idx.tree
    if _divides_by_ln2(program, scope):
        return True
    name = getattr(fn, "name", None)
    for cidx in program.indexes if name else ():
        for call in cidx.calls_named(name):
            caller = cidx.enclosing(call, ast.FunctionDef, ast.AsyncFunctionDef) or cidx.tree
            if caller is not scope and _divides_by_ln2(program, caller):
                return True
    return False


def _read_offset(sl: ast.AST) -> ast.AST | None:
    """Where a window read starts: the lower bound of a slice (the first axis of a tuple index). A single
    element (`grid[step]`) is not a window of tokens."""
    if isinstance(sl, ast.Tuple) and sl.elts:
        sl = sl.elts[0]
    return sl.lower if isinstance(sl, ast.Slice) else None


def _fold_local(program: Program, expr: ast.expr, fn: ast.AST | None, local: dict):
    """Fold through the function's single-bound locals, else through its parameters' defaults."""
    v = program.fold(expr, local=local)
    return v if _is_number(v) else fold_with_defaults(program, expr, fn)


def fixed_eval_loops(
    program: Program, valflow: ValFlow | None, *, full_split_min: int = 40_000_000
) -> list[FixedEvalLoop]:
    """Loops over `range(<constant>)` whose variable moves a read through validation data, whose body
    accumulates a loss that the scorer turns into bits, and whose reads end before the smallest full split.
    A stride that does not fold (a chunk size derived from the data length) is the whole-split shape and is
    not reported; nor is a loop that accumulates nothing (a thrown-away warm-up)."""
    out: list[FixedEvalLoop] = []
    if valflow is None:
        return out
    for idx in program.indexes:
        for loop in idx.nodes(ast.For):
            it = loop.iter
            if not (isinstance(it, ast.Call) and call_name(it) in ("enumerate", "range")):
                continue  # neither shape below: not `enumerate(loader)` nor `range(n)`
            fn = idx.enclosing(loop, ast.FunctionDef, ast.AsyncFunctionDef)
            local = single_bindings(fn)
            capped = _capped_enumeration(program, valflow, idx, loop, fn, local)
            if capped is not None:
                out.append(capped)
                continue
            if not (isinstance(it, ast.Call) and call_name(it) == "range" and isinstance(loop.target, ast.Name)):
                continue
            bounds = [_fold_local(program, a, fn, local) for a in it.args]
            if not bounds or not all(_is_number(b) and float(b).is_integer() for b in bounds):
                continue
            steps = range(*(int(b) for b in bounds))
            if not steps or not _accumulates(loop, program, local) or not _in_scorer(program, idx, fn):
                continue
            var = loop.target.id
            inner = {  # variables of nested loops/comprehensions read at their first value
                t.id: ast.Constant(0)
                for n in walk(loop)
                if isinstance(n, (ast.For, ast.comprehension)) and n is not loop
                for t in walk(n.target)
                if isinstance(t, ast.Name)
            }
            scope = fn or idx.tree
            for sub in walk(loop):
                if not isinstance(sub, ast.Subscript) or not isinstance(sub.ctx, ast.Load):
                    continue
                offset = _read_offset(sub.slice)
                if offset is None:
                    continue
                at = [
                    program.fold(offset, local={**local, **inner, var: ast.Constant(v)})
                    for v in (steps[0], steps[0] + steps.step)
                ]
                if not all(_is_number(a) for a in at) or at[1] == at[0]:
                    continue
                if not valflow.is_val(scope, sub.value, sub.lineno):
                    continue
                tokens = len(steps) * abs(int(at[1] - at[0]))
                if tokens < full_split_min:
                    out.append(FixedEvalLoop(idx, loop, len(steps), tokens, sub))
                break
    return out


def _capped_enumeration(
    program: Program, valflow: ValFlow, idx: SourceIndex, loop: ast.For, fn: ast.AST | None, local: dict
) -> FixedEvalLoop | None:
    """`for i, batch in enumerate(val_loader): if i >= 50: break` with an accumulated loss: the loader's
    batches are cut at a constant count (found by folding the guard over `i`). A guard switched off by its
    default (`if cap > 0 and i >= cap`) folds to False for every `i` and is not a cap."""
    it, target = loop.iter, loop.target
    if not (
        isinstance(it, ast.Call)
        and call_name(it) == "enumerate"
        and it.args
        and isinstance(target, ast.Tuple)
        and target.elts
        and isinstance(target.elts[0], ast.Name)
    ):
        return None
    var = target.elts[0].id
    if not valflow.is_val(fn or idx.tree, it.args[0], loop.lineno) or not _accumulates(loop, program, local):
        return None
    if not _in_scorer(program, idx, fn):
        return None

    defaults = _param_defaults(fn)
    for stmt in loop.body:
        if not (isinstance(stmt, ast.If) and ends_with(stmt.body, (ast.Break,))):
            continue
        test = _Substitute(defaults).visit(copy.deepcopy(stmt.test)) if defaults else stmt.test

        def stops_at(i: int, test=test):
            return program.fold(test, local={**local, var: ast.Constant(i)})

        if stops_at(0) is not False or stops_at(10**12) is not True:
            continue
        lo, hi = 0, 10**12  # the first index that stops the loop: the number of batches scored
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if stops_at(mid) is True else (mid, hi)
        return FixedEvalLoop(idx, loop, hi, None, it.args[0])
    return None


@dataclass(frozen=True)
class ByteAccounting:
    """Everything the byte-accounting rule reads, computed once per submission."""

    tables: list[ByteTable]
    scorer: list[ScorerSpace]
    space_checks: list[tuple[SourceIndex, ast.AST]]
    tokenizers: list[tuple[SourceIndex, ast.AST, str]]
    subsets: list[SubsetSlice]
    sidecar: bool
    constant_denominators: list[ConstantDenominator] = field(default_factory=list)
    fixed_eval_loops: list[FixedEvalLoop] = field(default_factory=list)


def byte_accounting(program: Program, valflow: ValFlow | None = None) -> ByteAccounting:
    """`valflow` (the shared `ValFlow`) decides which losses and reads are validation data."""
    return ByteAccounting(
        tables=byte_tables(program),
        scorer=scorer_space_sites(program),
        space_checks=space_piece_checks(program),
        tokenizers=tokenizer_paths(program),
        subsets=subset_slices(program),
        sidecar=uses_byte_sidecar(program),
        constant_denominators=constant_denominators(program, valflow),
        fixed_eval_loops=fixed_eval_loops(program, valflow),
    )
