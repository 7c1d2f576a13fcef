"""N-gram cache and byte-mixture analysis, shared by the `ngram_target_key` and `ngram_unnormalized` rules.

Four questions are answered once per submission, each named after the condition it breaks:

- **Target-keyed reads (C1).** A *count table* is anything the code increments (`np.add.at(T, k, 1)`,
  `T[k] += 1`, `d[k] = d.get(k, 0) + 1`, `T.index_add_`, `T += np.bincount(k)`, or a helper that does one of
  these to a table passed as an argument). A read of such a table whose key is a *hash* (xor / multiply /
  mask / modulo / shift) that contains the token being predicted is the disallowed pattern. The target is
  recognised either by name (`tgt`, `target`, `y_batch[i, t]` …) or structurally: the key holds `tokens[P]`
  next to shifted `tokens[P - k]` (or the aligned slices `tok[a:b]` next to `tok[a-k:b-k]`) while a sibling
  read of a count table in the same function uses only the shifted context (the ctx-count / full-count pair
  of every hashed backoff cache). Writes at a target-bearing key after scoring are the legal cache update and
  are ignored; a token used as the exact column of a hashed row (`T[hash(ctx), y]`) reads a distribution.
- **Target-only mixtures (C2).** The count read at the target's key, or one candidate picked from the hashed
  counts of every candidate, divided by a context counter instead of a sum over the vocabulary.
- **Unnormalised byte mixtures (C2).** A token's log-probability divided by that token's byte length (or
  `p ** (1 / L)`), i.e. the token's NLL spread over its bytes, which is not a distribution over 256 bytes.
  The token's log-probability is found by name or by data flow (a gather of the log-softmax at the target).
- **Target-conditioned gates (C1).** A hint written for position `i` only when the token at `i` passes a test;
  a tilt applied `where(LUT[y], …)` at the scored target; a mixing weight chosen from the realised symbol's
  own probability. The scored targets are found by use (the gather index of a softmax, the target of
  `cross_entropy`), not by name.

Reachability adds two things the shared guard folding cannot see: guards on *local* variables bound from the
environment (`use_ngram = bool(int(os.environ.get("NGRAM_CACHE", d)))`), folded with `world_size = 8` (the
official 8xH100 evaluation), and log lines printed by the mechanism, which prove that a branch ran.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from ..findings import Confidence, Finding, Reachability, Severity
from ..load.parse import children, walk
from ..load.runcmd import run_commands
from .astutil import FUNCS, SCOPE_CLASSES, UNKNOWN, call_name, dotted, scope_nodes
from .config import Config
from .program import Program, SourceIndex
from .scopes import BINDER_CLASSES
from .source import POSITION

CALL_DEPTH = 6  # helper calls followed into when reading a hash key or a table update
OFFICIAL_WORLD_SIZE = 8

# Names that hold the token being predicted (or a batch of them).
TARGET_NAME = re.compile(
    r"^(tgt|tgts|target|targets|y|ys|y_batch|yb|labels?|true_(byte|tok|token|sym|id)s?|next_(tok|token)s?)$"
    r"|^(tgt|target|targets|true)_|_(tgt|tgts|target|targets)$",
    re.I,
)
# Hash parameters named after their role (`target_prime`, `tgt_mult`) are not tokens.
_NOT_TARGET = re.compile(r"prime|mult|mask|hash|seed|salt|bucket|shift", re.I)
_HASH_OPS = (ast.BitXor, ast.BitAnd, ast.BitOr, ast.Mod, ast.LShift, ast.RShift, ast.Mult)
_HASH_CALLS = {"bitwise_xor", "bitwise_and", "hash", "crc32", "xxhash", "fmix"}
# A token's log-probability (not a sum over many tokens).
_LOGP_NAME = re.compile(r"(^|_)(log_?p|logp|lp|lps|nll|log_?prob|logprob|nats|lprob)s?(_|$)", re.I)
_PROB_NAME = re.compile(r"(^|_)(p|prob|probs?|p_tok\w*|p_target|p_token\w*)(_|$)", re.I)
_AGGREGATE = re.compile(r"(sum|total|mean|avg|mix|acc|running)", re.I)
# A per-token byte length (not the byte count of the whole split).
_BYTE_LEN = re.compile(r"(^|_)(len|lens|length|lengths|n_?bytes|nb|byte_?len|byte_?lens|tok_?len|L)(_|$)", re.I)
_NOT_BYTE_LEN = re.compile(r"(total|count|sum|num_|all|seq|window|ctx|context|order|vocab|batch)", re.I)
_WEIGHT_NAME = re.compile(r"^(lam|lamb|lambda_?|alpha|w|weight|mix_?w|gate|lam_\w+|alpha_\w+)$", re.I)
_NOT_OUTCOME = re.compile(r"(ent|entropy|conf|max|thr|thresh)", re.I)

# Log lines that mechanisms print when they run (evidence that a branch was live in the logged run).
NGRAM_LOG = re.compile(r"^\s*(\[?ngram[\w:\]\[]*|final_ngram|sliding_eval:ngram|phrase_cache:|ngram_hits)", re.I)
PPM_LOG = re.compile(r"^\s*(\[?ppm_mix[\w:\]]*|ppm_mix_bpb|starting ppm|ppm:|\[ppm\])", re.I)


@dataclass
class KeyFacts:
    hashed: bool = False
    target: list[tuple[SourceIndex, ast.AST, str]] = field(default_factory=list)
    # (array, position name, shifted?) for every `tokens[P]` / `tokens[P - k]` in the key
    tokens: set[tuple[str, str, bool]] = field(default_factory=set)
    token_nodes: dict[tuple[str, str, bool], tuple[SourceIndex, ast.AST]] = field(default_factory=dict)
    # an `arange` broadcast against the context (`ctx[:, None] * M + arange(V)[None, :]`): one key per candidate
    arange: bool = False
    broadcast: bool = False

    @property
    def candidates(self) -> bool:
        return self.arange and self.broadcast

    def merge(self, other: "KeyFacts") -> None:
        self.hashed |= other.hashed
        self.arange |= other.arange
        self.broadcast |= other.broadcast
        self.target.extend(t for t in other.target if t not in self.target)
        self.tokens |= other.tokens
        for k, v in other.token_nodes.items():
            self.token_nodes.setdefault(k, v)


@dataclass
class TableRead:
    idx: SourceIndex
    node: ast.AST  # the read (Subscript or `.get` call)
    table: str
    fn: ast.AST | None
    facts: KeyFacts
    row_column: bool = False  # hashed row, exact token column (`T[hash(ctx), y]`)


@dataclass
class TargetKeySite:
    read: TableRead
    evidence: list[tuple[SourceIndex, ast.AST, str]]
    how: str  # "by name" | "structural"


@dataclass
class UnnormSite:
    kind: str  # byte_spread | outcome_gate
    idx: SourceIndex
    node: ast.AST
    fn: ast.AST | None
    evidence: list[tuple[SourceIndex, ast.AST, str]]
    detail: str


def _base(node: ast.AST) -> str:
    """`self.full_tables[oi][k]` -> "full_tables"."""
    while isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Attribute):  # the last part of a dotted name, or of any other attribute chain
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _slices(node: ast.Subscript) -> list[ast.AST]:
    out = []
    cur: ast.AST = node
    while isinstance(cur, ast.Subscript):
        out.append(cur.slice)
        cur = cur.value
    return out


class NgramAnalysis:
    def __init__(self, program: Program):
        self.p = program
        self._defs: dict[ast.AST, dict[str, list[tuple[int, ast.AST, int | None]]]] = {}
        self._scored_memo: dict[tuple[int, int, int, int], tuple[ast.AST, ast.AST, bool]] = {}
        self._log_memo: dict = {}  # the logs' answers (first line of a family, a guard's proof), per log list
        self._appends: dict[ast.AST, dict[str, list[ast.AST]]] = {}
        self._memo: dict[tuple[int, int, int | None], KeyFacts] = {}
        self._target_only: list[UnnormSite] | None = None
        self._gates: list[UnnormSite] | None = None
        self._unnorm: list[UnnormSite] | None = None
        self._key_sites: list[TargetKeySite] | None = None
        self._reads: list[TableRead] | None = None
        self._byte_callers: dict[ast.AST, bool] = {}
        self._byte_scopes: dict[ast.AST, bool] = {}
        self.row_aliases: set[str] = set()
        self.tables = self._count_tables()

    # --- count tables ----------------------------------------------------------------------------
    def _count_tables(self) -> set[str]:
        tables: set[str] = set()
        # names bound from a container (read in the same pass over the assignments): `row = caches.setdefault(ctx,
        # {})` … `row[y] = row.get(y, 0) + 1` makes `caches` a container of count rows; another name bound from it
        # (`counts = caches[ctx]`) reads the same counts
        aliases: list[tuple[str, str]] = []
        for idx in self.p.indexes:
            for call in idx.calls_named("at"):  # `np.add.at(T, k, 1)`; a set: the order does not matter
                if call.args and (dotted(call.func) or "").endswith("add.at"):
                    tables.add(_base(call.args[0]))
            for call in idx.calls_named("index_add_", "scatter_add_", "index_put_"):
                if isinstance(call.func, ast.Attribute):
                    tables.add(_base(call.func.value))
            for aug in idx.nodes(ast.AugAssign):  # `T[k] += 1`; whole-table build: `T += np.bincount(keys, …)`
                if isinstance(aug.op, ast.Add) and (
                    isinstance(aug.target, ast.Subscript) or _calls(aug.value, "bincount")
                ):
                    tables.add(_base(aug.target))
            for asg in idx.nodes(ast.Assign):
                if len(asg.targets) == 1 and asg.targets[0].__class__ is ast.Name:
                    # `row = caches.setdefault(ctx, {})`, `counts = caches[ctx]`: a name bound from a container
                    v = asg.value
                    if isinstance(v, ast.Subscript):
                        aliases.append((asg.targets[0].id, _base(v)))
                    elif isinstance(v, ast.Call) and call_name(v) in ("get", "setdefault"):
                        if isinstance(v.func, ast.Attribute):
                            aliases.append((asg.targets[0].id, _base(v.func.value)))
                    continue  # a name target: no subscript below
                for t in asg.targets:
                    if not isinstance(t, ast.Subscript):
                        continue
                    b = _base(t)
                    # d[k] = d.get(k, 0) + 1  /  T[k] = T[k] + 1
                    if (
                        isinstance(asg.value, ast.BinOp)
                        and isinstance(asg.value.op, ast.Add)
                        and any(
                            (
                                isinstance(n, ast.Call)
                                and call_name(n) == "get"
                                and isinstance(n.func, ast.Attribute)
                                and _base(n.func.value) == b
                            )
                            or (isinstance(n, ast.Subscript) and _base(n) == b)
                            for n in walk(asg.value)
                        )
                    ):
                        tables.add(b)
        # helpers that increment a table handed to them: every argument in that position is a count table
        helpers = self._incrementing_helpers()
        for idx in self.p.indexes:
            for call in idx.calls_named(*helpers) if helpers else ():
                for pos, param in helpers[call_name(call)]:
                    arg = call.args[pos] if pos < len(call.args) else None
                    arg = arg or next((k.value for k in call.keywords if k.arg == param), None)
                    if arg is not None and not isinstance(arg, ast.Starred):
                        tables.add(_base(arg))
        containers = {base for name, base in aliases if name in tables}
        self.row_aliases = {name for name, base in aliases if base in containers} - tables - {""}
        tables.discard("")
        return tables

    def _incrementing_helpers(self) -> dict[str, list[tuple[int, str]]]:
        """Function name -> (argument position, parameter) of every parameter the function increments in place:
        `table[k] += 1`, `table += np.bincount(k)` (or counts derived from one), `np.add.at(table, k, 1)`,
        `table.index_add_(…)`. A method's `self` is not counted among the argument positions."""
        out: dict[str, list[tuple[int, str]]] = {}
        for idx in self.p.indexes:
            # the calls that add in place, by the scope whose walk holds them (no function between): few or none
            adders: dict[int, list[ast.Call]] = {}
            for call in idx.calls_named("at", "index_add_", "scatter_add_"):
                adders.setdefault(id(idx.enclosing(call, *SCOPE_CLASSES)), []).append(call)
            for fn in idx.nodes(*FUNCS):
                params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
                skip = 1 if params and params[0] in ("self", "cls") else 0
                hit: set[str] = set()
                for n in scope_nodes(fn, ast.AugAssign):
                    if isinstance(n.op, ast.Add):
                        b = _base(n.target)
                        if b in params and (isinstance(n.target, ast.Subscript) or self._counts(fn, n.value)):
                            hit.add(b)
                for n in adders.get(id(fn), ()):
                    if call_name(n) == "at":  # `np.add.at` is called "at": the dotted name only for those
                        if n.args and (dotted(n.func) or "").endswith("add.at"):
                            hit.add(_base(n.args[0]))
                    elif isinstance(n.func, ast.Attribute):  # `index_add_` / `scatter_add_`
                        hit.add(_base(n.func.value))
                slots = [(params.index(b) - skip, b) for b in hit if b in params and params.index(b) >= skip]
                if slots:
                    out.setdefault(fn.name, []).extend(slots)
        return out

    def _counts(self, scope: ast.AST, expr: ast.AST) -> bool:
        """`expr` is (or is bound from) a histogram of keys: `np.bincount(k)`, `counts[:B].astype(…)`."""
        if _calls(expr, "bincount"):
            return True
        defs = self._scope_defs(scope)
        for n in walk(expr):
            if isinstance(n, ast.Name):
                if any(_calls(value, "bincount") for _, value, _ in defs.get(n.id, [])):
                    return True
        return False

    # --- definitions -----------------------------------------------------------------------------
    # what binds a name (less `with … as`), and the calls (`xs.append(v)` defines an element of `xs`)
    _DEF_NODES = (*(c for c in BINDER_CLASSES if c is not ast.withitem), ast.Call)

    def _scope_defs(self, scope: ast.AST) -> dict[str, list[tuple[int, ast.AST, int | None]]]:
        if scope in self._defs:
            return self._defs[scope]
        defs: dict[str, list[tuple[int, ast.AST, int | None]]] = {}
        appends: dict[str, list[ast.AST]] = {}

        def add(target: ast.AST, value: ast.AST, line: int) -> None:
            if isinstance(target, ast.Name):
                defs.setdefault(target.id, []).append((line, value, None))
            elif isinstance(target, (ast.Tuple, ast.List)):
                for i, elt in enumerate(target.elts):
                    if isinstance(elt, ast.Name):
                        defs.setdefault(elt.id, []).append((line, value, i))

        for n in scope_nodes(scope, *self._DEF_NODES):  # in walk order, read from the scope's nodes by class
            line = getattr(n, "lineno", 0)
            if isinstance(n, ast.Assign):
                for t in n.targets:
                    add(t, n.value, line)
            elif isinstance(n, (ast.AnnAssign, ast.AugAssign)) and n.value is not None:
                add(n.target, n.value, line)
            elif isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)):
                add(n.target, n.iter, line)
            elif isinstance(n, ast.NamedExpr):
                add(n.target, n.value, line)
            elif isinstance(n, ast.Call) and call_name(n) == "append" and isinstance(n.func, ast.Attribute) and n.args:
                b = dotted(n.func.value)
                if b:
                    appends.setdefault(b, []).append(n.args[0])
        self._defs[scope] = defs
        self._appends[scope] = appends
        return defs

    def _scope_of(self, idx: SourceIndex, node: ast.AST) -> ast.AST:
        return idx.enclosing(node, *FUNCS) or idx.tree

    # --- key facts -------------------------------------------------------------------------------
    def key_facts(
        self, idx: SourceIndex, scope: ast.AST, expr: ast.AST, line: int, depth: int = 0, slot: int | None = None
    ) -> KeyFacts:
        key = (id(expr), line, slot)
        if key in self._memo:
            return self._memo[key]
        self._memo[key] = KeyFacts()  # cycle guard
        facts = self._key_facts(idx, scope, expr, line, depth, slot) if depth <= CALL_DEPTH else KeyFacts()
        self._memo[key] = facts
        return facts

    def _key_facts(self, idx, scope, expr, line, depth, slot) -> KeyFacts:
        facts = KeyFacts()
        defs = self._scope_defs(scope)
        # A tuple slot selected by unpacking: `ck, fk = hash_keys(...)` / `a, b = order_data[oi]`.
        if slot is not None:
            if isinstance(expr, (ast.Tuple, ast.List)) and slot < len(expr.elts):
                return self.key_facts(idx, scope, expr.elts[slot], line, depth + 1)
            if isinstance(expr, ast.Subscript):
                base = dotted(expr.value)
                for item in self._appends.get(scope, {}).get(base or "", []):
                    if isinstance(item, ast.Tuple) and slot < len(item.elts):
                        facts.merge(self.key_facts(idx, scope, item.elts[slot], item.lineno, depth + 1))
                return facts
            if isinstance(expr, ast.Call):
                facts.merge(self._callee_facts(expr, depth, slot))
                return facts
        stack = [expr]
        while stack:
            n = stack.pop()
            if isinstance(n, ast.Lambda):
                continue
            if isinstance(n, ast.BinOp) and isinstance(n.op, _HASH_OPS):
                if not isinstance(n.op, ast.Mult) or _has_int_constant(n):
                    facts.hashed = True
            elif isinstance(n, ast.Call):
                if call_name(n) in _HASH_CALLS:
                    facts.hashed = True
                facts.arange |= call_name(n) == "arange"
                facts.broadcast |= call_name(n) == "unsqueeze"
                facts.merge(self._callee_facts(n, depth, None))
            elif isinstance(n, ast.Subscript):
                base = _base(n)
                if TARGET_NAME.search(base) and not _NOT_TARGET.search(base):
                    facts.target.append((idx, n, f"`{base}` holds the predicted tokens"))
                facts.broadcast |= _broadcasts(n.slice)
                pos = self._position(scope, n.slice, line)
                if pos is not None:
                    k = (base, pos[0], pos[1])
                    facts.tokens.add(k)
                    facts.token_nodes.setdefault(k, (idx, n))
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                if TARGET_NAME.search(n.id) and not _NOT_TARGET.search(n.id):
                    facts.target.append((idx, n, f"`{n.id}` is the token being predicted"))
                    continue
                for dline, value, dslot in defs.get(n.id, []):
                    if dline < line or (dline == line and value is not expr and not _contains(value, n)):
                        facts.merge(self.key_facts(idx, scope, value, dline, depth + 1, dslot))
            stack.extend(children(n))
        return facts

    def _position(self, scope: ast.AST, sl: ast.AST, line: int) -> tuple[str, bool] | None:
        """Where in the token stream an index points, relative to a named position.

        `P` -> ("P", False); `P - k` / `P + k` -> ("P", True); a slice by its start, so the aligned slices of a
        vectorised hash compare like single positions (`tok[a:b]` -> ("a", False), `tok[a - k:b - k]` -> ("a",
        True)); a name bound to an offset from another position resolves to it (`off = a - (n - 1) + j`);
        a constant slice start `c` -> ("#c", False) (`tok[:-1]` next to `tok[1:]`); anything else -> None."""
        if isinstance(sl, ast.Slice):
            if sl.lower is None:
                return "#0", False
            if isinstance(sl.lower, ast.Constant) and isinstance(sl.lower.value, int):
                return f"#{sl.lower.value}", False
            sl = sl.lower
        if isinstance(sl, ast.Name):
            for dline, value, dslot in reversed(self._scope_defs(scope).get(sl.id, [])):
                if dline < line and dslot is None:
                    if isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Sub, ast.Add)):
                        start = _leftmost(value)
                        if start is not None and start != sl.id:
                            return start, True
                    break
            return sl.id, False
        if isinstance(sl, ast.BinOp) and isinstance(sl.op, (ast.Sub, ast.Add)):
            start = _leftmost(sl)
            if start is not None:
                return start, True
        return None

    def _callee_facts(self, call: ast.Call, depth: int, slot: int | None) -> KeyFacts:
        facts = KeyFacts()
        name = call_name(call)
        if depth >= CALL_DEPTH or name not in self.p.functions:
            return facts
        for cidx, fn in self.p.functions[name]:
            for ret in scope_nodes(fn, ast.Return):
                if ret.value is not None:
                    facts.merge(self.key_facts(cidx, fn, ret.value, ret.lineno, depth + 1, slot))
        return facts

    # --- reads -----------------------------------------------------------------------------------
    def reads(self) -> list[TableRead]:
        if self._reads is None:
            self._reads = self._table_reads()
        return self._reads

    def _table_reads(self, rows: bool = False) -> list[TableRead]:
        """Reads of the count tables; with `rows`, reads of the per-context rows bound from a table container
        instead (`counts = caches[ctx]; counts.get(y, 0)`): a token column of one row."""
        tables = self.row_aliases if rows else self.tables
        out: list[TableRead] = []
        for idx in self.p.indexes:
            for node in [*idx.nodes(ast.Subscript), *idx.calls_named("get")]:
                keys: list[ast.AST]
                if isinstance(node, ast.Subscript):
                    if (
                        not isinstance(node.ctx, ast.Load)
                        or isinstance(idx.parents.get(node), ast.Subscript)
                        and idx.parents[node].value is node
                    ):
                        continue  # only the outermost subscript of a chain
                    table = _base(node)
                    keys = _slices(node)
                else:
                    if call_name(node) != "get" or not isinstance(node.func, ast.Attribute) or not node.args:
                        continue
                    table = _base(node.func.value)
                    keys = [node.args[0]]
                if table not in tables or self._is_update(idx, node, table):
                    continue
                scope = self._scope_of(idx, node)
                facts = KeyFacts()
                axes = [e for k in keys for e in (k.elts if isinstance(k, ast.Tuple) else [k])]
                per_axis = [self.key_facts(idx, scope, k, node.lineno) for k in axes]
                for f in per_axis:
                    facts.merge(f)
                # `T[hash(ctx), y]`: the token is an exact column of a hashed row, so the row is a distribution
                # over tokens (its sum is the bucket's count); the token is not hashed into a key
                targeted = [f for f in per_axis if f.target or any(not t[2] for t in f.tokens)]
                row = bool(targeted) and any(f.hashed for f in per_axis) and not any(f.hashed for f in targeted)
                out.append(TableRead(idx, node, table, scope if isinstance(scope, FUNCS) else None, facts, row or rows))
        return out

    @staticmethod
    def _is_update(idx: SourceIndex, node: ast.AST, table: str) -> bool:
        """The read belongs to the count update itself (`d[k] = d.get(k, 0) + 1`, `np.add.at(T[o], k, 1)`)."""
        for anc in idx.ancestors(node):
            if isinstance(anc, ast.Call) and (dotted(anc.func) or "").endswith("add.at"):
                return True
            if isinstance(anc, (ast.Assign, ast.AugAssign)):
                targets = anc.targets if isinstance(anc, ast.Assign) else [anc.target]
                return any(isinstance(t, ast.Subscript) and _base(t) == table for t in targets)
            if isinstance(anc, ast.stmt):
                return False
        return False

    def target_key_sites(self) -> list[TargetKeySite]:
        if self._key_sites is None:
            self._key_sites = self._target_key_sites()
        return self._key_sites

    def _target_key_sites(self) -> list[TargetKeySite]:
        reads = self.reads()
        by_fn: dict[int, list[TableRead]] = {}
        for r in reads:
            by_fn.setdefault(id(r.fn), []).append(r)
        sites: list[TargetKeySite] = []
        for r in reads:
            f = r.facts
            if not f.hashed or r.row_column:
                continue  # an exact index (unigram counts, a per-context distribution) is a real distribution
            if f.target:
                t_idx, t_node, note = f.target[0]
                sites.append(TargetKeySite(r, [(t_idx, t_node, note)], "by name"))
                continue
            # structural: tokens[P] next to tokens[P - k] in this key (or the latest of several aligned slices
            # `tok[2:]`, `tok[1:-1]`, `tok[:-2]`), while a sibling read keys on the context only
            for target, context in _target_context_pairs(f.tokens):
                sibling = next(
                    (
                        s
                        for s in by_fn.get(id(r.fn), [])
                        if s is not r and context in s.facts.tokens and target not in s.facts.tokens
                    ),
                    None,
                )
                if sibling is None:
                    continue
                arr, pos = target[0], target[1]
                pos = f"{pos[1:]}:" if pos.startswith("#") else pos
                t_idx, t_node = f.token_nodes[target]
                c_idx, c_node = f.token_nodes[context]
                sites.append(
                    TargetKeySite(
                        r,
                        [
                            (t_idx, t_node, f"`{arr}[{pos}]`: the token at the scored position enters the key"),
                            (c_idx, c_node, "context tokens (shifted) enter the same key"),
                            (sibling.idx, sibling.node, "the context-only count read next to it"),
                        ],
                        "structural",
                    )
                )
                break
        return sites

    # --- unnormalised byte mixtures --------------------------------------------------------------
    def _names_in(
        self, idx: SourceIndex, scope: ast.AST, expr: ast.AST, line: int, depth: int = 2
    ) -> tuple[set[str], bool]:
        """Names in `expr` and (to `depth` levels) in their definitions; and whether a `len()` call appears."""
        names: set[str] = set()
        has_len = False
        defs = self._scope_defs(scope)
        todo = [(expr, line, 0)]
        while todo:
            e, ln, d = todo.pop()
            for n in walk(e):
                if isinstance(n, ast.Call) and call_name(n) == "len":
                    has_len = True
                if isinstance(n, ast.Name):
                    names.add(n.id)
                    if d < depth:
                        for dline, value, _ in defs.get(n.id, []):
                            if dline <= ln and value is not e:
                                todo.append((value, dline, d + 1))
                elif isinstance(n, ast.Attribute):
                    names.add(n.attr)
        return names, has_len

    def _byte_level(self, scope: ast.AST) -> bool:
        if scope not in self._byte_scopes:
            self._byte_scopes[scope] = _byte_level(scope)
        return self._byte_scopes[scope]

    def _called_from_byte_level(self, scope: ast.AST) -> bool:
        """A helper (`share(v, k)`) whose callers work on bytes."""
        if not isinstance(scope, FUNCS):
            return False
        if scope not in self._byte_callers:
            self._byte_callers[scope] = any(
                self._byte_level(self._scope_of(i, r))
                for i, r in self.p.refs.get(scope.name, [])
                if isinstance(i.parents.get(r), ast.Call) and i.parents[r].func is r
            )
        return self._byte_callers[scope]

    def _per_token_len(self, idx, scope, expr, line, depth: int = 0) -> bool:
        if isinstance(expr, ast.Name) and expr.id in _params(scope) and depth < 2:
            # a helper's parameter: what its callers pass
            if any(
                self._per_token_len(i, caller, arg, arg.lineno, depth + 1)
                for i, arg, caller in self._call_args(scope, expr.id)
            ):
                return True
        direct = [
            n.id if isinstance(n, ast.Name) else n.attr for n in walk(expr) if isinstance(n, (ast.Name, ast.Attribute))
        ]
        if any(_NOT_BYTE_LEN.search(x) for x in direct):
            return False
        if isinstance(expr, ast.Call) and call_name(expr) == "len":
            return True
        names, has_len = self._names_in(idx, scope, expr, line, depth=1)
        return any(_BYTE_LEN.search(x) and not _NOT_BYTE_LEN.search(x) for x in direct) or (
            has_len
            and (
                any(_BYTE_LEN.search(x) or "byte" in x.lower() for x in names)
                # `k = len(piece)`: the length of one token's bytes, whatever it is called
                or not any(_NOT_BYTE_LEN.search(x) for x in names)
            )
        )

    def _token_logp(self, idx, scope, expr, line, prob: bool = False) -> bool:
        direct = [
            n.id if isinstance(n, ast.Name) else n.attr for n in walk(expr) if isinstance(n, (ast.Name, ast.Attribute))
        ]
        if not direct or any(_AGGREGATE.search(x) for x in direct):
            return False
        pat = _PROB_NAME if prob else _LOGP_NAME
        return any(pat.search(x) for x in direct) or self._from_scored_target(idx, scope, expr, line)

    def _from_scored_target(self, idx: SourceIndex, scope: ast.AST, expr: ast.AST, line: int, depth: int = 0) -> bool:
        """`expr` holds one position's (log-)probability of its target, whatever the names: it is computed from
        `log_softmax(…).gather(-1, y)`, `softmax(…)[rows, y]` or `cross_entropy(…, reduction="none")`, through
        local definitions and, for a parameter, the arguments its callers pass."""
        if depth > 5:
            return False
        key = (id(scope), id(expr), line, depth)
        hit = self._scored_memo.get(key)
        if hit is not None and hit[0] is scope and hit[1] is expr:
            return hit[2]  # the same definitions are reached from every expression that uses them
        found = self._scored_target_in(idx, scope, expr, line, depth)
        self._scored_memo[key] = (scope, expr, found)  # the nodes are kept: their ids stay theirs
        return found

    def _scored_target_in(self, idx: SourceIndex, scope: ast.AST, expr: ast.AST, line: int, depth: int) -> bool:
        for n in walk(expr):
            if isinstance(n, ast.Call):
                name = call_name(n)
                if name in ("cross_entropy", "nll_loss") and any(
                    k.arg == "reduction" and isinstance(k.value, ast.Constant) and k.value.value == "none"
                    for k in n.keywords
                ):
                    return True
                if name in ("gather", "take_along_axis") and self._softmaxed(scope, n, line):
                    return True
            if (
                isinstance(n, ast.Subscript)
                and isinstance(n.slice, ast.Tuple)
                and self._softmaxed(scope, n.value, line)
            ):
                return True
        defs = self._scope_defs(scope)
        params = _params(scope)
        for n in _value_nodes(expr):
            if not isinstance(n, ast.Name) or not isinstance(n.ctx, ast.Load):
                continue
            earlier = [(d, v) for d, v, _ in defs.get(n.id, []) if d < line]
            if earlier:
                dline, value = earlier[-1]
                if self._from_scored_target(idx, scope, value, dline, depth + 1):
                    return True
            elif n.id in params and isinstance(scope, FUNCS) and depth < 3:
                for arg_idx, arg, caller in self._call_args(scope, n.id):
                    if self._from_scored_target(arg_idx, caller, arg, arg.lineno, depth + 2):
                        return True
        return False

    def _softmaxed(self, scope: ast.AST, expr: ast.AST, line: int) -> bool:
        """`expr` is (bound from) a softmax / log-softmax over the vocabulary."""
        names = {"log_softmax", "softmax"}
        if any(isinstance(n, ast.Call) and call_name(n) in names for n in walk(expr)):
            return True
        defs = self._scope_defs(scope)
        for n in walk(expr):
            if isinstance(n, ast.Name):
                for d, value, _ in defs.get(n.id, []):
                    if d <= line and any(isinstance(x, ast.Call) and call_name(x) in names for x in walk(value)):
                        return True
        return False

    def _call_args(self, fn: ast.AST, param: str) -> list[tuple[SourceIndex, ast.AST, ast.AST]]:
        """(index, argument, caller scope) for what every call of `fn` passes as `param`."""
        params = _params(fn)
        if param not in params:
            return []
        pos = params.index(param) - (1 if params and params[0] in ("self", "cls") else 0)
        out = []
        for i, ref in self.p.refs.get(fn.name, []):
            call = i.parents.get(ref)
            if not isinstance(call, ast.Call) or call.func is not ref:
                continue
            arg = next((k.value for k in call.keywords if k.arg == param), None)
            if arg is None and 0 <= pos < len(call.args) and not isinstance(call.args[pos], ast.Starred):
                arg = call.args[pos]
            if arg is not None:
                out.append((i, arg, self._scope_of(i, call)))
        return out

    def unnormalized_sites(self) -> list[UnnormSite]:
        if self._unnorm is None:
            self._unnorm = self._byte_spread_sites() + self.target_only_sites()
        return self._unnorm

    def _byte_spread_sites(self) -> list[UnnormSite]:
        sites: list[UnnormSite] = []
        for idx in self.p.indexes:
            for node in idx.nodes(ast.BinOp):
                if not isinstance(node.op, (ast.Div, ast.Pow)):
                    continue
                scope = self._scope_of(idx, node)
                if not (self._byte_level(scope) or self._called_from_byte_level(scope)):
                    continue
                # the byte length first: a few divisions hold one, and both tests are pure (memos keyed by depth),
                # while the log-probability test follows definitions and callers (six times the cost)
                if (
                    isinstance(node.op, ast.Div)
                    and self._per_token_len(idx, scope, node.right, node.lineno)
                    and self._token_logp(idx, scope, node.left, node.lineno)
                ):
                    detail = f"`{ast.unparse(node)}` spreads one token's log-probability evenly over its bytes (C2)"
                elif (
                    isinstance(node.op, ast.Pow)
                    and isinstance(node.right, ast.BinOp)
                    and isinstance(node.right.op, ast.Div)
                    and self._per_token_len(idx, scope, node.right.right, node.lineno)
                    and self._token_logp(idx, scope, node.left, node.lineno, prob=True)
                ):
                    detail = (
                        f"`{ast.unparse(node)}` gives every byte of the realised token the root of its probability (C2)"
                    )
                else:
                    continue
                ev = [(idx, node, "per-byte share of the token's log-probability")]
                ev += [
                    (idx, g, "mixing weight chosen from the realised symbol's probability")
                    for g in self._outcome_gates(scope)
                ]
                sites.append(
                    UnnormSite("byte_spread", idx, node, scope if isinstance(scope, FUNCS) else None, ev, detail)
                )
        return sites

    # --- target-only mixtures (C2) ---------------------------------------------------------------
    def target_only_sites(self) -> list[UnnormSite]:
        """Count ratios evaluated for the realised token only, which nothing sums over the vocabulary.

        - A hashed count read at a key that holds the target (a `target_key_sites` read): `count(ctx, y)` exists
          for `y` alone, so `(1-α)·p(y) + α·count(ctx, y)/count(ctx)` is not a distribution (collisions make
          the implied one sum past 1).
        - A hashed read of every candidate token (`ctx[:, None] * M + arange(V)[None, :]`) gathered at one
          token and divided by a separate context counter instead of the sum of the candidates' counts.
        Exact (unhashed) counts are not reported: `count(ctx, v) / count(ctx)` sums to one over `v`."""
        if self._target_only is not None:
            return self._target_only
        sites: list[UnnormSite] = []
        seen: set[int] = set()
        for site in self.target_key_sites():
            r = site.read
            if id(r.node) in seen:
                continue
            seen.add(id(r.node))
            scope = r.fn or r.idx.tree
            derived, start = self._derived(r.idx, scope, r.node)
            div = self._ratio(scope, start, derived, {r.node})
            if div is not None and _reduces(div.right, self._scope_defs(scope)):
                continue  # divided by a sum over the candidates: normalised
            what = f"`{_short(div)}`" if div is not None else f"the count `{_short(r.node)}`"
            den = f"; its denominator `{_short(div.right)}` is not a sum over the vocabulary" if div is not None else ""
            sites.append(
                UnnormSite(
                    "target_ratio",
                    r.idx,
                    div if div is not None else r.node,
                    r.fn,
                    [(r.idx, r.node, "count read at the (context, target) key: defined for the realised token only")]
                    + ([(r.idx, div, "the target-only ratio that scores the token")] if div is not None else [])
                    + site.evidence[:1],
                    f"{what} scores the realised token with a hashed count looked up at its own key{den} (C2)",
                )
            )
        for r in self.reads():
            if id(r.node) in seen or not (r.facts.hashed and r.facts.candidates):
                continue
            scope = r.fn or r.idx.tree
            derived, start = self._derived(r.idx, scope, r.node)
            defs = self._scope_defs(scope)
            if any(_reduces(d.right, defs) for d in self._divisions(scope, start, derived, {r.node})):
                continue  # the candidates' counts are normalised before one is picked
            pick = self._gather(r.idx, scope, start, derived, r.node)
            if pick is None:
                continue
            picked, pstart = self._derived(r.idx, scope, pick)
            div = self._ratio(scope, pstart, picked, {pick})
            if div is None or _reduces(div.right, defs):
                continue
            seen.add(id(r.node))
            sites.append(
                UnnormSite(
                    "target_ratio",
                    r.idx,
                    div,
                    r.fn,
                    [
                        (r.idx, r.node, "hashed counts of every candidate token"),
                        (r.idx, pick, "one candidate picked per position"),
                        (r.idx, div, "divided by a separate context counter"),
                    ],
                    f"`{_short(div)}` divides the picked token's hashed count by `{_short(div.right)}`, not by the "
                    "sum of the candidates' counts over the vocabulary (C2)",
                )
            )
        self._target_only = sites
        return sites

    def _derived(self, idx: SourceIndex, scope: ast.AST, node: ast.AST) -> tuple[set[str], int]:
        """Names that hold `node`'s value, or values computed from it, after its statement (flow-insensitive
        within the scope, two rounds so loop-carried values count); and the statement's line."""
        stmt = next((a for a in idx.ancestors(node) if isinstance(a, ast.stmt)), None)
        start = getattr(stmt, "lineno", getattr(node, "lineno", 0))
        names: set[str] = set()
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            for t in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
                names |= _stored(t)
        later = [
            n
            for n in scope_nodes(scope, ast.Assign, ast.AugAssign, ast.AnnAssign)
            if n.lineno > start and n.value is not None
        ]
        for _ in range(2):
            for n in later:
                if any(isinstance(x, ast.Name) and x.id in names for x in walk(n.value)):
                    for t in n.targets if isinstance(n, ast.Assign) else [n.target]:
                        names |= _stored(t)
        return names, start

    @staticmethod
    def _divisions(scope: ast.AST, start: int, names: set[str], nodes: set) -> list[ast.BinOp]:
        """Divisions at or after `start` whose numerator holds one of `names` or `nodes`."""
        out = []
        for n in scope_nodes(scope, ast.BinOp):
            if isinstance(n.op, ast.Div) and getattr(n, "lineno", 0) >= start:
                if any((isinstance(x, ast.Name) and x.id in names) or x in nodes for x in walk(n.left)):
                    out.append(n)
        return sorted(out, key=POSITION)

    def _ratio(self, scope: ast.AST, start: int, names: set[str], nodes: set) -> ast.BinOp | None:
        divs = self._divisions(scope, start, names, nodes)
        return divs[0] if divs else None

    def _gather(self, idx: SourceIndex, scope: ast.AST, start: int, names: set[str], read: ast.AST):
        """`counts.gather(1, y[:, None])`: the candidate axis evaluated at one token per position, not at a
        token chosen from the counts themselves (`argmax`/`topk`: a hint, not the scored token)."""
        defs = self._scope_defs(scope)
        for n in scope_nodes(scope, ast.Call):
            if call_name(n) not in ("gather", "take_along_axis"):
                continue
            if getattr(n, "lineno", 0) < start:
                continue
            src = n.func.value if isinstance(n.func, ast.Attribute) and call_name(n) == "gather" else None
            src = src if src is not None else (n.args[0] if n.args else None)
            if src is None or not any((isinstance(x, ast.Name) and x.id in names) or x is read for x in walk(src)):
                continue
            index = n.args[-1] if n.args else None
            if index is None:
                continue
            chosen = [index] + [v for x in walk(index) if isinstance(x, ast.Name) for _, v, _ in defs.get(x.id, [])]
            if any(_calls(e, c) for e in chosen for c in ("argmax", "topk", "argsort", "max")):
                continue
            return n
        return None

    # --- target-conditioned gates (C1) -----------------------------------------------------------
    def target_gate_sites(self) -> list[UnnormSite]:
        """Gates that read the token being predicted (C1), no hash needed:

        - a sequential hint builder that writes its output for position `i` only when the token *at* `i`
          passes a test (`if starts_new_word[tok]: hint[i] = best[ctx]`), and only afterwards adds that token
          to its state: the output at `i` is the forecast for that token, and whether it exists depends on it;
        - a mixing weight chosen from the realised symbol's own probability (`if nn_nll < thr: lam = 1.0`)
          outside a byte-spread mixture (where it is evidence of that finding)."""
        if self._gates is not None:
            return self._gates
        sites: list[UnnormSite] = []
        spread = {id(s.fn) for s in self.unnormalized_sites() if s.kind == "byte_spread"}
        for idx in self.p.indexes:
            for fn in idx.nodes(*FUNCS):
                for loop in scope_nodes(fn, ast.For):
                    site = self._realised_gate(idx, fn, loop)
                    if site is not None:
                        sites.append(site)
                sites.extend(self._target_where_gates(idx, fn))
                if id(fn) in spread:
                    continue
                for gate in self._outcome_gates(fn, idx):
                    sites.append(
                        UnnormSite(
                            "outcome_gate",
                            idx,
                            gate,
                            fn,
                            [(idx, gate, "mixing weight chosen from the realised symbol's probability")],
                            f"`{_short(gate.test)}` picks the mixing weight from the probability of the realised "
                            "symbol (C1)",
                        )
                    )
                for asg in self._outcome_weights(fn, idx):
                    sites.append(
                        UnnormSite(
                            "outcome_gate",
                            idx,
                            asg,
                            fn,
                            [(idx, asg, "mixing weight computed from the realised symbol's probability")],
                            f"`{_short(asg)}` computes the mixing weight from the probability of the realised "
                            "symbol (C1)",
                        )
                    )
        sites.extend(self._presence_gates())
        self._gates = sites
        return sites

    def _outcome_weights(self, fn: ast.AST, idx: SourceIndex) -> list[ast.Assign]:
        """`alpha = a0 * min(2, nll / thr)` then `(1 - alpha) * p + alpha * q`: a mixing weight that is a function
        of the realised token's NLL (found by name or by data flow), not of the context (entropy, confidence)."""
        out = []
        for n in scope_nodes(fn, ast.Assign):
            if not (len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)):
                continue
            w = n.targets[0].id
            if not _WEIGHT_NAME.match(w) or isinstance(n.value, (ast.Constant, ast.Name, ast.Attribute)):
                continue
            called = {id(c.func) for c in walk(n.value) if isinstance(c, ast.Call)}
            names = [x.id for x in _value_nodes(n.value) if isinstance(x, ast.Name) and id(x) not in called]
            if any(_NOT_OUTCOME.search(x) and not x.startswith(("thr", "inv_thr")) for x in names):
                continue  # entropy / confidence of the whole distribution: context only
            if any(
                isinstance(x, ast.Call) and call_name(x) in _AGGREGATE_CALLS - {"min", "max"} for x in walk(n.value)
            ):
                continue
            by_name = any(
                _LOGP_NAME.search(x) and not _AGGREGATE.search(x) and not _NOT_OUTCOME.search(x) for x in names
            )
            if not (by_name or self._from_scored_target(idx, fn, n.value, n.lineno)):
                continue
            mixes = any(
                isinstance(m, ast.BinOp)
                and isinstance(m.op, ast.Add)
                and m.lineno >= n.lineno
                and _mentions(m.left, {w})
                and _mentions(m.right, {w})
                for m in scope_nodes(fn, ast.BinOp)
            )
            if mixes:
                out.append(n)
        return out

    def _presence_gates(self) -> list[UnnormSite]:
        """`q = counts.get(y, 0) / total; if q > 0: p = (1 - a) * p_model + a * q`: an exact count read at the
        token being scored decides whether the mixture applies, so it applies exactly where the answer was seen
        before (C1). Hashed reads at the target are target-key sites already."""
        sites: list[UnnormSite] = []
        for r in self.reads() + self._table_reads(rows=True):
            if (r.facts.hashed and not r.row_column) or not r.facts.target or r.fn is None:
                continue
            derived, start = self._derived(r.idx, r.fn, r.node)
            for n in scope_nodes(r.fn, ast.If, ast.IfExp, ast.Call):
                test = n.test if isinstance(n, (ast.If, ast.IfExp)) else None
                if test is None and isinstance(n, ast.Call) and call_name(n) == "where" and len(n.args) == 3:
                    test = n.args[0]
                if test is None or getattr(n, "lineno", 0) < start:
                    continue
                compared = any(
                    isinstance(c, ast.Compare)
                    and not all(isinstance(op, (ast.Is, ast.IsNot)) for op in c.ops)
                    and any((isinstance(x, ast.Name) and x.id in derived) or x is r.node for x in walk(c))
                    for c in walk(test)
                )
                if not compared:
                    continue
                if isinstance(n, ast.If) and any(isinstance(x, ast.Break) for b in n.body for x in walk(b)):
                    continue  # a backoff search (PPM escape): stop at the first order that has the symbol
                branches = (
                    n.body + n.orelse
                    if isinstance(n, ast.If)
                    else [n.body, n.orelse]
                    if isinstance(n, ast.IfExp)
                    else n.args[1:]
                )
                uses = any(
                    isinstance(x, ast.BinOp)
                    and isinstance(x.op, (ast.Mult, ast.Add, ast.Div))
                    and _mentions(x, derived)
                    for b in branches
                    for x in walk(b)
                )
                if not uses:
                    continue
                t_idx, t_node, note = r.facts.target[0]
                sites.append(
                    UnnormSite(
                        "presence_gate",
                        r.idx,
                        n,
                        r.fn,
                        [
                            (r.idx, r.node, "count read at the token being scored"),
                            (t_idx, t_node, note),
                            (r.idx, n, "the mixture applies only where that count passes the test"),
                        ],
                        f"`{_short(test)}` decides from the realised token's own count whether the mixture "
                        "applies (C1)",
                    )
                )
                break
        return sites

    def _realised_gate(self, idx: SourceIndex, fn: ast.AST, loop: ast.For) -> UnnormSite | None:
        pos, elem = _loop_vars(loop)
        if pos is None or not any(_writes_at(a, pos) for a in idx.nodes_in_span(loop, ast.Assign)):
            return None  # no `out[pos] = …` anywhere in the loop: nothing is written per position
        body = [n for st in loop.body for n in walk(st)]
        if elem is None:  # `for i in range(n): tok = int(seq[i])`
            elem = next(
                (
                    st.targets[0].id
                    for st in loop.body
                    if isinstance(st, ast.Assign)
                    and len(st.targets) == 1
                    and isinstance(st.targets[0], ast.Name)
                    and any(
                        isinstance(x, ast.Subscript) and isinstance(x.slice, ast.Name) and x.slice.id == pos
                        for x in walk(st.value)
                    )
                ),
                None,
            )
            if elem is None:
                return None
        # names computed from the element (its word-start flag, its boundary flag, its pair key)
        assigns = sorted(
            (n for n in body if isinstance(n, (ast.Assign, ast.AnnAssign)) and n.value is not None),
            key=lambda n: n.lineno,
        )
        derived = {elem}
        for _ in range(2):
            for n in assigns:
                if _mentions(n.value, derived):
                    for t in n.targets if isinstance(n, ast.Assign) else [n.target]:
                        if isinstance(t, ast.Name):
                            derived.add(t.id)
        writes = [
            n
            for n in assigns
            if isinstance(n, ast.Assign)
            and _writes_at(n, pos)
            and not isinstance(n.value, ast.Constant)
            and not _mentions(n.value, derived)
        ]
        for w in writes:
            gate = None
            for a in idx.ancestors(w):
                if a is loop:
                    break
                if isinstance(a, ast.If) and _mentions(a.test, derived) and not _skips_padding(a.test, elem):
                    gate = a
                    break
            if gate is None:  # `if boundary[tok]: continue` before the write
                gate = next(
                    (
                        n
                        for n in body
                        if isinstance(n, ast.If)
                        and n.lineno < w.lineno
                        and _mentions(n.test, derived)
                        and not _skips_padding(n.test, elem)
                        and n.body
                        and isinstance(n.body[-1], ast.Continue)
                    ),
                    None,
                )
            if gate is None:
                continue
            absorbed = [n.lineno for n in body if _absorbs(n, derived, pos)]
            if not absorbed or min(absorbed) <= w.lineno:
                continue  # the state already holds the token: the output is the forecast for the next one
            return UnnormSite(
                "realised_gate",
                idx,
                gate,
                fn,
                [
                    (idx, w, f"output for position `{pos}` (a forecast of the token there)"),
                    (idx, gate, f"written only when `{_short(gate.test)}` holds for that very token"),
                    (
                        idx,
                        next(n for n in body if getattr(n, "lineno", 0) == min(absorbed)),
                        "the token is added to the state only after its forecast is written",
                    ),
                ],
                f"`{_short(w.targets[0])}` is written only when `{_short(gate.test)}`, a test on the token at that "
                f"position (`{elem}`), which the output forecasts (C1)",
            )
        return None

    def _outcome_gates(self, scope: ast.AST, idx: SourceIndex | None = None) -> list[ast.AST]:
        """`if nn_nll < thr: lam = 1.0` / `lam = 1.0 if p_y > thr else 0.9`: the weight depends on how well the
        model predicted the answer. The realised symbol's (log-)probability is recognised by name or, given
        `idx`, by data flow (a gather of the softmax at the target)."""
        out = []
        for n in scope_nodes(scope, ast.If, ast.Assign):
            if isinstance(n, ast.If):
                assigns = [(t, s.value) for s in n.body if isinstance(s, ast.Assign) for t in s.targets]
            elif isinstance(n, ast.Assign) and isinstance(n.value, ast.IfExp):
                assigns = [(t, n.value.body) for t in n.targets]
                n = n.value
            else:
                continue
            named = [t for t, _ in assigns if isinstance(t, ast.Name) and _WEIGHT_NAME.match(t.id)]
            # a constant weight in [0, 1] counts when the test is the realised symbol's probability by data flow
            weightlike = named or [t for t, v in assigns if isinstance(t, ast.Name) and _is_weight(v)]
            if not weightlike or not any(isinstance(x, ast.Compare) for x in walk(n.test)):
                continue
            if any(isinstance(x, ast.Call) and call_name(x) in _AGGREGATE_CALLS for x in walk(n.test)):
                continue  # a mean / best-so-far over many tokens is not the realised symbol's probability
            defs = self._scope_defs(scope)
            names = [
                x.id
                for x in walk(n.test)
                if isinstance(x, ast.Name)
                # a loop counter (`for lp in range(k)`) is not a log-probability, whatever it is called
                and not any(isinstance(v, ast.Call) and call_name(v) == "range" for _, v, _ in defs.get(x.id, []))
            ]
            if named and any(
                _LOGP_NAME.search(x) and not _NOT_OUTCOME.search(x) and not _AGGREGATE.search(x) for x in names
            ):
                out.append(n)
            elif idx is not None and self._from_scored_target(idx, scope, n.test, n.lineno):
                out.append(n)
        return out

    def _scored_targets(self, scope: ast.AST) -> set[str]:
        """Names that hold the scored targets, found by use: the index of a gather (or `[rows, y]` pick) of a
        softmax / log-softmax, the target argument of `cross_entropy`."""
        out: set[str] = set()
        for n in scope_nodes(scope, ast.Call, ast.Subscript):
            picked: ast.AST | None = None
            if isinstance(n, ast.Call):
                name = call_name(n)
                if name in ("cross_entropy", "nll_loss") and len(n.args) >= 2:
                    picked = n.args[1]
                elif name in ("gather", "take_along_axis") and n.args and self._softmaxed(scope, n, n.lineno):
                    picked = n.args[-1]
            elif isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Tuple) and n.slice.elts:
                if self._softmaxed(scope, n.value, n.lineno):
                    picked = n.slice.elts[-1]
            if picked is not None:
                called = {id(c.func) for c in walk(picked) if isinstance(c, ast.Call)}
                out |= {x.id for x in walk(picked) if isinstance(x, ast.Name) and id(x) not in called}
        return out

    def _target_where_gates(self, idx: SourceIndex, fn: ast.AST) -> list[UnnormSite]:
        """`torch.where(starts_new_word[y], tilted, nll)`: whether the tilt / mixture applies at a position is
        read from a table at the scored target (or from the model's probability of that target), and the
        branch it picks rescores that same target."""
        sites: list[UnnormSite] = []
        if not (fn.decorator_list or idx.calls_in_span(fn, "where")):
            return sites  # no `where(…)` in the function (its span, or its decorators above it)
        targets = None
        for n in scope_nodes(fn, ast.Call):
            if not (call_name(n) == "where" and len(n.args) == 3):
                continue
            if targets is None:
                targets = self._scored_targets(fn)
            if not targets:
                return sites
            cond, a, b = n.args
            looked_up = next(
                (
                    x
                    for x in walk(cond)
                    if isinstance(x, ast.Subscript) and _mentions(x.slice, targets) and not _mentions(x.value, targets)
                ),
                None,
            )
            if looked_up is None:
                continue
            rescored = [e for e in (a, b) if self._rescores(idx, fn, e, n.lineno)]
            base = [e for e in (a, b) if self._from_scored_target(idx, fn, e, n.lineno)]
            if not rescored or len(base) < 2:
                continue
            sites.append(
                UnnormSite(
                    "target_lookup_gate",
                    idx,
                    n,
                    fn,
                    [
                        (idx, looked_up, "a table read at the token being scored"),
                        (idx, n, "chooses which score that token gets"),
                    ],
                    f"`{_short(n)}` applies the tilt/mixture only where `{_short(looked_up)}`, a lookup at the "
                    "scored target, says so (C1)",
                )
            )
        return sites

    def _rescores(self, idx: SourceIndex, fn: ast.AST, e: ast.AST, line: int) -> bool:
        """`e` changes the target's score with something else (a tilt, a mixture), not a clamp or a constant."""
        if isinstance(e, ast.Name):
            earlier = [v for d, v, _ in self._scope_defs(fn).get(e.id, []) if d < line]
            if not earlier:
                return False
            e = earlier[-1]
        if isinstance(e, ast.Call) and call_name(e) in ("clamp", "clamp_", "clip", "maximum", "minimum", "float", "to"):
            return False
        return isinstance(e, (ast.BinOp, ast.Call)) and self._from_scored_target(idx, fn, e, line)

    # --- reachability ----------------------------------------------------------------------------
    def first_log(self, family: re.Pattern, log_events) -> tuple[str, int, str] | None:
        """The first log line the mechanism `family` names (every finding of an audit asks about the same logs)."""
        key = ("family", family.pattern, family.flags)
        hit = self._log_memo.get(key)
        if hit is None or hit[0] is not log_events:
            hit = self._log_memo[key] = (log_events, next((e for e in log_events if family.search(e[2])), None))
        return hit[1]

    def log_proof(self, why: str, log_events) -> tuple[str, int, str] | None:
        """`log_proof` for this audit's logs, once per guard."""
        low = self._log_memo.get("lowered")
        if low is None or low[0] is not log_events:
            low = self._log_memo["lowered"] = (log_events, _ascii_lowered(log_events))
        key = ("proof", why)
        hit = self._log_memo.get(key)
        if hit is None or hit[0] is not log_events:
            hit = self._log_memo[key] = (log_events, log_proof(why, log_events, low[1]))
        return hit[1]

    def local_guard(
        self, idx: SourceIndex, node: ast.AST, cfg: Config | None, _seen: frozenset = frozenset()
    ) -> tuple[bool, str]:
        """Fold the `if` guards around `node` and around every call of its function (callers, recursively),
        substituting local names bound from the environment and `world_size` = 8.
        (False, why) when every path is cut by a false guard; (True, "") otherwise."""
        cfg = self.p.config if cfg is None else cfg
        scope = self._scope_of(idx, node)
        child = node
        for anc in idx.ancestors(node):
            if isinstance(anc, FUNCS):
                break
            if isinstance(anc, (ast.If, ast.IfExp)) and child is not anc.test:
                want = child in anc.body if isinstance(anc.body, list) else child is anc.body
                v = self._fold_local(scope, anc.test, anc.lineno, cfg)
                if v is not UNKNOWN and bool(v) != want:
                    return False, f"`{_short(anc.test)}` is {bool(v)}"
            child = anc
        if not isinstance(scope, FUNCS) or scope in _seen or len(_seen) > 4 or scope.name.startswith("__"):
            return True, ""
        calls = [
            (i, r)
            for i, r in self.p.refs.get(scope.name, [])
            if isinstance(i.parents.get(r), ast.Call)
            and i.parents[r].func is r
            and not any(a is scope for a in i.ancestors(r))
        ]
        if not calls:
            return True, ""  # the shared reachability reports functions that are never called
        reasons = []
        for i, r in calls:
            ok, why = self.local_guard(i, r, cfg, _seen | {scope})
            if ok:
                return True, ""
            reasons.append(why)
        return False, f"every call of `{scope.name}()` is cut off ({reasons[0]})"

    def _fold_local(self, scope: ast.AST, expr: ast.AST, line: int, cfg: Config):
        defs = self._scope_defs(scope)
        params = {a.arg for a in scope.args.args + scope.args.kwonlyargs} if isinstance(scope, FUNCS) else set()

        class Sub(ast.NodeTransformer):
            def __init__(self, depth: int):
                self.depth = depth

            def visit_Name(self, n: ast.Name):  # noqa: N802 - NodeTransformer API
                if n.id == "world_size" or n.id.endswith("world_size"):
                    return ast.copy_location(ast.Constant(OFFICIAL_WORLD_SIZE), n)
                earlier = [d for d in defs.get(n.id, []) if d[0] < line and d[2] is None]
                if len(earlier) == 1 and n.id not in params and self.depth < 6:
                    return Sub(self.depth + 1).visit(_copy(earlier[0][1]))
                return n

            def visit_Attribute(self, n: ast.Attribute):  # noqa: N802
                if n.attr == "world_size":
                    return ast.copy_location(ast.Constant(OFFICIAL_WORLD_SIZE), n)
                return self.generic_visit(n)

        try:
            return self.p.fold(Sub(0).visit(_copy(expr)), cfg)
        except (RecursionError, ValueError, TypeError):
            return UNKNOWN


def _short(node: ast.AST) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= 80 else text[:77] + "..."


def _has_int_constant(n: ast.BinOp) -> bool:
    """`tok * 36313`-style multiplication (a hash), not `p * alpha`."""
    return any(isinstance(x, ast.Constant) and isinstance(x.value, int) and abs(x.value) > 255 for x in walk(n)) or any(
        isinstance(x, (ast.Name, ast.Attribute, ast.Subscript)) and re.search(r"prime|mult|hash", ast.unparse(x), re.I)
        for x in (n.left, n.right)
    )


def _target_context_pairs(tokens: set[tuple[str, str, bool]]) -> list[tuple[tuple, tuple]]:
    """(target position, a context position) candidates among the token positions of one key: `P` with `P - k`,
    or the latest constant slice start with an earlier one."""
    pairs = []
    for arr, pos, shifted in sorted(tokens):
        if pos.startswith("#"):
            continue
        if not shifted and (arr, pos, True) in tokens:
            pairs.append(((arr, pos, False), (arr, pos, True)))
    starts: dict[str, list[int]] = {}
    for arr, pos, _ in tokens:
        if pos.startswith("#"):
            starts.setdefault(arr, []).append(int(pos[1:]))
    for arr, cs in sorted(starts.items()):
        last = max(cs)
        for c in sorted(set(cs) - {last}):
            pairs.append(((arr, f"#{last}", False), (arr, f"#{c}", False)))
    return pairs


_AGGREGATE_CALLS = {"mean", "sum", "max", "min", "avg", "median", "nanmean", "std"}
_REDUCE = {"sum", "nansum", "logsumexp", "softmax", "log_softmax", "normalize"}
_ABSORB_CALLS = {"append", "appendleft", "add", "extend", "update", "push", "observe", "add_token"}


def _reduces(expr: ast.AST, defs: dict | None = None, depth: int = 0) -> bool:
    """A sum / softmax over some axis appears in `expr`, or (given the scope's `defs`) in the definitions of
    its names, two levels deep (`d = t + u`, `t = sum(row.values())`): what a normalising denominator needs."""
    if any(isinstance(n, ast.Call) and call_name(n) in _REDUCE for n in walk(expr)):
        return True
    if defs is None or depth >= 2:
        return False
    return any(
        _reduces(value, defs, depth + 1)
        for n in walk(expr)
        if isinstance(n, ast.Name)
        for _, value, _ in defs.get(n.id, [])
    )


def _stored(target: ast.AST) -> set[str]:
    """Names a store writes: `a`, `a, b`, `arr[i]` -> arr, `self.t` -> t."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return {x for e in target.elts for x in _stored(e)}
    if isinstance(target, (ast.Subscript, ast.Attribute)):
        return {_base(target)} - {""}
    return set()


def _mentions(expr: ast.AST, names: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in walk(expr))


def _loop_vars(loop: ast.For) -> tuple[str | None, str | None]:
    """`for i, tok in enumerate(seq)` -> ("i", "tok"); `for i in range(n)` -> ("i", None); else (None, None)."""
    it = loop.iter
    if not isinstance(it, ast.Call):
        return None, None
    if call_name(it) == "enumerate" and isinstance(loop.target, ast.Tuple) and len(loop.target.elts) == 2:
        i, e = loop.target.elts
        if isinstance(i, ast.Name) and isinstance(e, ast.Name):
            return i.id, e.id
    if call_name(it) == "range" and isinstance(loop.target, ast.Name):
        return loop.target.id, None
    return None, None


def _absorbs(n: ast.AST, derived: set[str], pos: str) -> bool:
    """`n` stores the element into state: `counts[(ctx, tok)] = …`, `self.words = [tok]`, `hist.append(tok)`."""
    if isinstance(n, (ast.Assign, ast.AugAssign)):
        targets = n.targets if isinstance(n, ast.Assign) else [n.target]
        for t in targets:
            if isinstance(t, ast.Attribute) and _mentions(n.value, derived):
                return True
            if isinstance(t, ast.Subscript) and not (isinstance(t.slice, ast.Name) and t.slice.id == pos):
                if _mentions(t.slice, derived) or _mentions(n.value, derived):
                    return True
        return False
    if isinstance(n, ast.Call) and call_name(n) in _ABSORB_CALLS and isinstance(n.func, ast.Attribute):
        return any(_mentions(a, derived) for a in n.args)
    return False


def _writes_at(n: ast.Assign, pos: str) -> bool:
    """`out[pos] = …`: one target, a subscript at the name `pos`."""
    return (
        len(n.targets) == 1
        and isinstance(n.targets[0], ast.Subscript)
        and (isinstance(n.targets[0].slice, ast.Name) and n.targets[0].slice.id == pos)
    )


def _params(scope: ast.AST) -> list[str]:
    if not isinstance(scope, FUNCS):
        return []
    a = scope.args
    return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]


def _value_nodes(expr: ast.AST):
    """The nodes whose values flow into `expr`'s value: not its indices (`p[i]`), sizes (`len(x)`, `x.shape`)."""
    stack = [expr]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, ast.Subscript):
            stack.append(n.value)
        elif isinstance(n, ast.Call) and call_name(n) in ("len", "size", "range", "numel"):
            continue
        elif isinstance(n, ast.Attribute) and n.attr in ("shape", "size", "ndim", "dtype", "device"):
            continue
        else:
            stack.extend(children(n))  # less the context/operator leaves, which no caller reads


def _skips_padding(test: ast.AST, elem: str) -> bool:
    """`tok == pad_id` / `tok < 0`: the element compared with a fixed value (ignored positions), not looked up."""
    if not isinstance(test, ast.Compare):
        return False
    operands = [test.left, *test.comparators]
    return any(isinstance(o, ast.Name) and o.id == elem for o in operands) and all(
        isinstance(o, (ast.Constant, ast.Name, ast.Attribute, ast.UnaryOp)) for o in operands
    )


def _is_weight(value: ast.AST) -> bool:
    """A mixing weight written as a constant in [0, 1]."""
    return isinstance(value, ast.Constant) and isinstance(value.value, float) and 0.0 <= value.value <= 1.0


def _calls(expr: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Call) and call_name(n) == name for n in walk(expr))


def _leftmost(e: ast.AST) -> str | None:
    """`P - (n - 1) + k` -> "P": the position an offset expression starts from."""
    while isinstance(e, ast.BinOp) and isinstance(e.op, (ast.Sub, ast.Add)):
        e = e.left
    return e.id if isinstance(e, ast.Name) else None


def _broadcasts(sl: ast.AST) -> bool:
    """`a[None, :]` / `a[:, None]`: a new axis, as when keys are built for every candidate token."""
    elts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
    return any(isinstance(e, ast.Constant) and e.value is None for e in elts)


def _contains(tree: ast.AST, node: ast.AST) -> bool:
    return any(n is node for n in walk(tree))


def _copy(node: ast.AST) -> ast.AST:
    return ast.parse(ast.unparse(node), mode="eval").body if isinstance(node, ast.expr) else node


def _byte_level(scope: ast.AST) -> bool:
    """The function works on bytes (byte streams, byte lengths, 256-way tables)."""
    if not isinstance(scope, ast.Module) and (  # any one node decides: each class is read on its own, unmerged
        any("byte" in n.id.lower() for n in scope_nodes(scope, ast.Name))
        or any("byte" in n.arg.lower() for n in scope_nodes(scope, ast.arg))
        or any(n.value in (256, 256.0) for n in scope_nodes(scope, ast.Constant))
    ):
        return True
    if isinstance(scope, FUNCS) and ("byte" in scope.name.lower() or "ppm" in scope.name.lower()):
        return True
    return False


def _decided_by_logged(program: Program, why: str) -> bool:
    """Was a guard quoted in `why` (`expr` is True/False) decided by a logged hyperparameter?"""
    for text in re.findall(r"`([^`]+)` is (?:True|False)", why):
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError:
            continue
        words = {n.id.lower() for n in walk(tree) if isinstance(n, ast.Name)}
        words |= {n.attr.lower() for n in walk(tree) if isinstance(n, ast.Attribute)}
        if words & set(program.config.logged):
            return True
    return False


_GENERIC = {
    "args",
    "self",
    "h",
    "hp",
    "hps",
    "config",
    "cfg",
    "os",
    "environ",
    "get",
    "int",
    "bool",
    "float",
    "str",
    "world_size",
    "rank",
    "true",
    "false",
    "none",
    "and",
    "or",
    "not",
}


def _guard_cores(why: str) -> list[str]:
    """Feature words of the guard expressions quoted in `why`: `args.use_phrase_cache` -> "phrase_cache"."""
    cores: list[str] = []
    for text in re.findall(r"`([^`]+)` is False", why):  # a guard that is true already excludes the site
        try:
            tree = ast.parse(text.rstrip("."), mode="eval")
        except SyntaxError:
            continue
        words = [n.id for n in walk(tree) if isinstance(n, ast.Name)]
        words += [n.attr for n in walk(tree) if isinstance(n, ast.Attribute)]
        words += [  # env var names: os.environ.get("PPM_ENABLED", "0")
            n.value
            for n in walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.isidentifier()
        ]
        for w in words:
            w = w.lower().strip("_")
            if w in _GENERIC:
                continue
            w = re.sub(r"^(use|enable|enabled|do|with|run)_", "", w)
            w = re.sub(r"_(enabled|enable|on|flag)$", "", w)
            if len(w) >= 3 and w not in cores:
                cores.append(w)
    return cores


def log_proof(why: str, log_events, lowered: list[str | None] | None = None) -> tuple[str, int, str] | None:
    """A log line showing that the feature behind a false guard ran: `dirichlet=True`, `phrase_cache:enabled`,
    or a progress/result line named after it (`ppm_mix bytes=…`). `lowered`: each event's text in lowercase
    where it is ASCII (else None), made once for all the guards of an audit."""
    if lowered is None:
        lowered = _ascii_lowered(log_events)
    for core in _guard_cores(why):
        last = core.split("_")[-1]
        on = re.compile(rf"\b\w*{re.escape(last)}\w*\s*[=:]\s*(true|1|on|yes|enabled)\b", re.I)
        named = re.compile(rf"^\[?{re.escape(core)}\w*[\s:\]][^\n]*\d", re.I)
        # `on` needs `last` in the line, in any case: an ASCII line without it is skipped at C speed (the
        # pattern's `\b\w*` retries from every word). A non-ASCII word or line goes to the pattern as before.
        word = last.lower() if last.isascii() else None
        for e, low in zip(log_events, lowered):
            if named.search(e[2]) or ((word is None or low is None or word in low) and on.search(e[2])):
                return e
    return None


def _ascii_lowered(log_events) -> list[str | None]:
    return [e[2].lower() if e[2].isascii() else None for e in log_events]


def refine_reachability(
    finding: Finding,
    program: Program,
    analysis: NgramAnalysis,
    idx: SourceIndex,
    node: ast.AST,
    family: re.Pattern,
    log_events,
    readme: str,
) -> Finding:
    """Combine the shared reachability with local env-bound guards (world_size = 8), the mechanism's log lines
    and each README run command taken on its own (the shared config merges them).

    A log line naming the feature behind a false guard (`dirichlet=True`, `ppm_mix bytes=…`) shows that the
    branch ran in the logged run, unless a logged hyperparameter itself decides the guard false.
    """
    live, why = analysis.local_guard(idx, node, None)
    shared_dead = finding.reachability is Reachability.DISABLED_BY_DEFAULT
    base_message = finding.message.split(" — present but not reached")[0]
    if live is False or shared_dead:
        why = why if live is False else finding.reachability_reason
        proof = (
            None if "never called" in why or _decided_by_logged(program, why) else analysis.log_proof(why, log_events)
        )
        if proof is not None:
            return finding.with_(
                severity=Severity.ERROR,
                confidence=Confidence.HIGH,
                reachability=Reachability.ENABLED_BY_RUN_COMMAND,
                reachability_reason=f"off by default ({why}); log {proof[0]}:{proof[1]} `{proof[2][:80]}` shows it ran",
                message=base_message,
            )
        for cmd in run_commands(readme):
            if not re.search(r"train\w*\.py|torchrun", cmd.text):
                continue
            cfg = Config(env=cmd.env, logged=program.config.logged)
            if (
                program._live(idx, node, cfg, set())[0] is not False
                and analysis.local_guard(idx, node, cfg)[0] is not False
            ):
                return finding.with_(
                    severity=Severity.ERROR,
                    confidence=Confidence.MEDIUM,
                    reachability=Reachability.ENABLED_BY_RUN_COMMAND,
                    reachability_reason=f"live under the README run command at line {cmd.lineno} (`{cmd.text[:60]}`), "
                    f"evaluated with world_size = {OFFICIAL_WORLD_SIZE}",
                    message=base_message,
                )
        if live is False and not shared_dead:
            return finding.with_(
                severity=Severity.INFO,
                reachability=Reachability.DISABLED_BY_DEFAULT,
                reachability_reason=why,
                message=f"{finding.message} — present but not reached under the effective config ({why})",
            )
        return finding
    live_default, why_default = analysis.local_guard(idx, node, Config())
    if live_default is False and finding.reachability is Reachability.REACHABLE:
        finding = finding.with_(
            reachability=Reachability.ENABLED_BY_RUN_COMMAND,
            reachability_reason=f"off by default ({why_default}); enabled by the README run command",
        )
    e = analysis.first_log(family, log_events)
    if e is not None:
        finding = finding.with_(extra=finding.extra + (("log_evidence", f"{e[0]}:{e[1]} {e[2][:100]}"),))
        if finding.severity is Severity.WARNING and finding.reachability is Reachability.UNKNOWN:
            finding = finding.with_(severity=Severity.ERROR, confidence=Confidence.MEDIUM)
    return finding
