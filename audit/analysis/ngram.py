"""N-gram cache and byte-mixture analysis, shared by the `ngram_target_key` and `ngram_unnormalized` rules.

Two questions are answered once per submission:

- **Target-keyed reads.** A *count table* is anything the code increments (`np.add.at(T, k, 1)`,
  `T[k] += 1`, `d[k] = d.get(k, 0) + 1`, `T.index_add_`). A read of such a table whose key is a *hash*
  (xor / multiply / mask / modulo / shift) that contains the token being predicted is the disallowed
  pattern. The target is recognised either by name (`tgt`, `target`, `y_batch[i, t]` …) or structurally: the
  key holds `tokens[P]` next to shifted `tokens[P - k]` while a sibling read of a count table in the same
  function uses only the shifted context (the ctx-count / full-count pair of every hashed backoff cache).
  Writes at a target-bearing key after scoring are the legal cache update and are ignored.
- **Unnormalised byte mixtures.** A token's log-probability divided by that token's byte length (or
  `p ** (1 / L)`), i.e. the token's NLL spread over its bytes, which is not a distribution over 256 bytes;
  and mixing weights chosen from the NLL of the realised symbol.

Reachability adds two things the shared guard folding cannot see: guards on *local* variables bound from the
environment (`use_ngram = bool(int(os.environ.get("NGRAM_CACHE", d)))`), folded with `world_size = 8` (the
official 8xH100 evaluation), and log lines printed by the mechanism, which prove that a branch ran.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from ..findings import Confidence, Finding, Reachability, Severity
from ..load.runcmd import run_commands
from .astutil import FUNCS, UNKNOWN, call_name, dotted, walk_scope
from .config import Config
from .program import Program, SourceIndex

CALL_DEPTH = 6  # helper calls followed into when reading a hash key or a table update
OFFICIAL_WORLD_SIZE = 8

# Names that hold the token being predicted (or a batch of them).
TARGET_NAME = re.compile(
    r"^(tgt|tgts|target|targets|y|ys|y_batch|yb|labels?|true_(byte|tok|token|sym|id)s?|next_(tok|token)s?)$"
    r"|^(tgt|target|targets|true)_|_(tgt|tgts|target|targets)$",
    re.I,
)
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

    def merge(self, other: "KeyFacts") -> None:
        self.hashed |= other.hashed
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
    name = dotted(node)
    if name:
        return name.split(".")[-1]
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


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
        self._appends: dict[ast.AST, dict[str, list[ast.AST]]] = {}
        self._memo: dict[tuple[int, int, int | None], KeyFacts] = {}
        self.tables = self._count_tables()

    # --- count tables ----------------------------------------------------------------------------
    def _count_tables(self) -> set[str]:
        tables: set[str] = set()
        for idx in self.p.indexes:
            for call in idx.nodes(ast.Call):
                name = dotted(call.func) or ""
                if name.endswith("add.at") and call.args:
                    tables.add(_base(call.args[0]))
                elif call_name(call) in ("index_add_", "scatter_add_", "index_put_") and isinstance(
                    call.func, ast.Attribute
                ):
                    tables.add(_base(call.func.value))
            for aug in idx.nodes(ast.AugAssign):
                if isinstance(aug.target, ast.Subscript) and isinstance(aug.op, ast.Add):
                    tables.add(_base(aug.target))
            for asg in idx.nodes(ast.Assign):
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
                            for n in ast.walk(asg.value)
                        )
                    ):
                        tables.add(b)
        tables.discard("")
        return tables

    # --- definitions -----------------------------------------------------------------------------
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

        for n in walk_scope(scope):
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
                facts.merge(self._callee_facts(n, depth, None))
            elif isinstance(n, ast.Subscript):
                base = _base(n)
                if TARGET_NAME.search(base):
                    facts.target.append((idx, n, f"`{base}` holds the predicted tokens"))
                pos = _position(n.slice)
                if pos is not None:
                    k = (base, pos[0], pos[1])
                    facts.tokens.add(k)
                    facts.token_nodes.setdefault(k, (idx, n))
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                if TARGET_NAME.search(n.id):
                    facts.target.append((idx, n, f"`{n.id}` is the token being predicted"))
                    continue
                for dline, value, dslot in defs.get(n.id, []):
                    if dline < line or (dline == line and value is not expr and not _contains(value, n)):
                        facts.merge(self.key_facts(idx, scope, value, dline, depth + 1, dslot))
            stack.extend(ast.iter_child_nodes(n))
        return facts

    def _callee_facts(self, call: ast.Call, depth: int, slot: int | None) -> KeyFacts:
        facts = KeyFacts()
        name = call_name(call)
        if depth >= CALL_DEPTH or name not in self.p.functions:
            return facts
        for cidx, fn in self.p.functions[name]:
            for ret in walk_scope(fn):
                if isinstance(ret, ast.Return) and ret.value is not None:
                    facts.merge(self.key_facts(cidx, fn, ret.value, ret.lineno, depth + 1, slot))
        return facts

    # --- reads -----------------------------------------------------------------------------------
    def reads(self) -> list[TableRead]:
        out: list[TableRead] = []
        for idx in self.p.indexes:
            for node in idx.nodes(ast.Subscript, ast.Call):
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
                if table not in self.tables or self._is_update(idx, node, table):
                    continue
                scope = self._scope_of(idx, node)
                facts = KeyFacts()
                for k in keys:
                    facts.merge(self.key_facts(idx, scope, k, node.lineno))
                out.append(TableRead(idx, node, table, scope if isinstance(scope, FUNCS) else None, facts))
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
        reads = self.reads()
        by_fn: dict[int, list[TableRead]] = {}
        for r in reads:
            by_fn.setdefault(id(r.fn), []).append(r)
        sites: list[TargetKeySite] = []
        for r in reads:
            f = r.facts
            if not f.hashed:
                continue  # an exact index (unigram counts, a per-context distribution) is a real distribution
            if f.target:
                t_idx, t_node, note = f.target[0]
                sites.append(TargetKeySite(r, [(t_idx, t_node, note)], "by name"))
                continue
            # structural: tokens[P] next to tokens[P - k] in this key, while a sibling read keys on the context only
            for arr, pos, shifted in sorted(f.tokens):
                if shifted or (arr, pos, True) not in f.tokens:
                    continue
                sibling = next(
                    (
                        s
                        for s in by_fn.get(id(r.fn), [])
                        if s is not r and (arr, pos, True) in s.facts.tokens and (arr, pos, False) not in s.facts.tokens
                    ),
                    None,
                )
                if sibling is None:
                    continue
                t_idx, t_node = f.token_nodes[(arr, pos, False)]
                c_idx, c_node = f.token_nodes[(arr, pos, True)]
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
            for n in ast.walk(e):
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

    def _per_token_len(self, idx, scope, expr, line) -> bool:
        direct = [
            n.id if isinstance(n, ast.Name) else n.attr
            for n in ast.walk(expr)
            if isinstance(n, (ast.Name, ast.Attribute))
        ]
        if any(_NOT_BYTE_LEN.search(x) for x in direct):
            return False
        if isinstance(expr, ast.Call) and call_name(expr) == "len":
            return True
        names, has_len = self._names_in(idx, scope, expr, line, depth=1)
        return any(_BYTE_LEN.search(x) and not _NOT_BYTE_LEN.search(x) for x in direct) or (
            has_len and any(_BYTE_LEN.search(x) or "byte" in x.lower() for x in names)
        )

    def _token_logp(self, idx, scope, expr, line, prob: bool = False) -> bool:
        direct = [
            n.id if isinstance(n, ast.Name) else n.attr
            for n in ast.walk(expr)
            if isinstance(n, (ast.Name, ast.Attribute))
        ]
        if not direct or any(_AGGREGATE.search(x) for x in direct):
            return False
        pat = _PROB_NAME if prob else _LOGP_NAME
        return any(pat.search(x) for x in direct)

    def unnormalized_sites(self) -> list[UnnormSite]:
        sites: list[UnnormSite] = []
        for idx in self.p.indexes:
            for node in idx.nodes(ast.BinOp):
                scope = self._scope_of(idx, node)
                if not _byte_level(scope):
                    continue
                if (
                    isinstance(node.op, ast.Div)
                    and self._token_logp(idx, scope, node.left, node.lineno)
                    and self._per_token_len(idx, scope, node.right, node.lineno)
                ):
                    detail = f"`{ast.unparse(node)}` spreads one token's log-probability evenly over its bytes"
                elif (
                    isinstance(node.op, ast.Pow)
                    and isinstance(node.right, ast.BinOp)
                    and isinstance(node.right.op, ast.Div)
                    and self._token_logp(idx, scope, node.left, node.lineno, prob=True)
                    and self._per_token_len(idx, scope, node.right.right, node.lineno)
                ):
                    detail = f"`{ast.unparse(node)}` gives every byte of the realised token the root of its probability"
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
            spread_fns = {id(s.fn) for s in sites if s.idx is idx}
            for fn in idx.nodes(*FUNCS):
                if id(fn) in spread_fns:
                    continue
                for gate in self._outcome_gates(fn):
                    sites.append(
                        UnnormSite(
                            "outcome_gate",
                            idx,
                            gate,
                            fn,
                            [(idx, gate, "mixing weight chosen from the realised symbol's probability")],
                            f"`{ast.unparse(gate.test)}` picks the mixing weight from the probability of the realised symbol",
                        )
                    )
        return sites

    def _outcome_gates(self, scope: ast.AST) -> list[ast.If]:
        """`if nn_nll < thr: lam = 1.0`: the weight depends on how well the model predicted the answer."""
        out = []
        for n in walk_scope(scope):
            if not isinstance(n, ast.If) or not isinstance(n.test, ast.Compare):
                continue
            names = [x.id for x in ast.walk(n.test) if isinstance(x, ast.Name)]
            if not any(_LOGP_NAME.search(x) and not _NOT_OUTCOME.search(x) and not _AGGREGATE.search(x) for x in names):
                continue
            if any(
                isinstance(s, ast.Assign)
                and any(isinstance(t, ast.Name) and _WEIGHT_NAME.match(t.id) for t in s.targets)
                for s in n.body
            ):
                out.append(n)
        return out

    # --- reachability ----------------------------------------------------------------------------
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
    return any(
        isinstance(x, ast.Constant) and isinstance(x.value, int) and abs(x.value) > 255 for x in ast.walk(n)
    ) or any(
        isinstance(x, (ast.Name, ast.Attribute, ast.Subscript)) and re.search(r"prime|mult|hash", ast.unparse(x), re.I)
        for x in (n.left, n.right)
    )


def _position(sl: ast.AST) -> tuple[str, bool] | None:
    """`P` -> ("P", False); `P - k` / `P + k` -> ("P", True); anything else -> None."""
    if isinstance(sl, ast.Name):
        return sl.id, False
    if isinstance(sl, ast.BinOp) and isinstance(sl.op, (ast.Sub, ast.Add)) and isinstance(sl.left, ast.Name):
        return sl.left.id, True
    return None


def _contains(tree: ast.AST, node: ast.AST) -> bool:
    return any(n is node for n in ast.walk(tree))


def _copy(node: ast.AST) -> ast.AST:
    return ast.parse(ast.unparse(node), mode="eval").body if isinstance(node, ast.expr) else node


def _byte_level(scope: ast.AST) -> bool:
    """The function works on bytes (byte streams, byte lengths, 256-way tables)."""
    for n in walk_scope(scope) if not isinstance(scope, ast.Module) else ():
        if isinstance(n, ast.Name) and "byte" in n.id.lower():
            return True
        if isinstance(n, ast.arg) and "byte" in n.arg.lower():
            return True
        if isinstance(n, ast.Constant) and n.value in (256, 256.0):
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
        words = {n.id.lower() for n in ast.walk(tree) if isinstance(n, ast.Name)}
        words |= {n.attr.lower() for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
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
        words = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
        words += [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
        words += [  # env var names: os.environ.get("PPM_ENABLED", "0")
            n.value
            for n in ast.walk(tree)
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


def log_proof(why: str, log_events) -> tuple[str, int, str] | None:
    """A log line showing that the feature behind a false guard ran: `dirichlet=True`, `phrase_cache:enabled`,
    or a progress/result line named after it (`ppm_mix bytes=…`)."""
    for core in _guard_cores(why):
        last = core.split("_")[-1]
        on = re.compile(rf"\b\w*{re.escape(last)}\w*\s*[=:]\s*(true|1|on|yes|enabled)\b", re.I)
        named = re.compile(rf"^\[?{re.escape(core)}\w*[\s:\]][^\n]*\d", re.I)
        for e in log_events:
            if on.search(e[2]) or named.search(e[2]):
                return e
    return None


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
    family_logs = [e for e in log_events if family.search(e[2])]
    live, why = analysis.local_guard(idx, node, None)
    shared_dead = finding.reachability is Reachability.DISABLED_BY_DEFAULT
    base_message = finding.message.split(" — present but not reached")[0]
    if live is False or shared_dead:
        why = why if live is False else finding.reachability_reason
        proof = None if "never called" in why or _decided_by_logged(program, why) else log_proof(why, log_events)
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
    if family_logs:
        e = family_logs[0]
        finding = finding.with_(extra=finding.extra + (("log_evidence", f"{e[0]}:{e[1]} {e[2][:100]}"),))
        if finding.severity is Severity.WARNING and finding.reachability is Reachability.UNKNOWN:
            finding = finding.with_(severity=Severity.ERROR, confidence=Confidence.MEDIUM)
    return finding
