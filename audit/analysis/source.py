"""One parsed source and its single-traversal index (parents, nodes by type, lines)."""

from __future__ import annotations

import ast
import bisect
import heapq
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import attrgetter

from ..load import parse as pyparse
from ..load.resolve import ResolvedSource
from .astutil import call_name, dotted


@dataclass
class SourceIndex:
    """One parsed source and its single-traversal index."""

    src: ResolvedSource
    tree: ast.Module
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)
    by_type: dict[type, list[ast.AST]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    _calls_by_name: dict[str, list[tuple[int, ast.Call]]] | None = field(default=None, repr=False)
    _call_names: list[str] | None = field(default=None, repr=False)
    _call_starts: dict[tuple[str, ...], list[tuple[int, int]]] = field(default_factory=dict, repr=False)
    _class_starts: dict[type, list[tuple[int, int]]] = field(default_factory=dict, repr=False)
    _unsorted: set[type] = field(default_factory=set, repr=False)  # buckets not yet put in position order
    _named: dict[type, dict[str, list[ast.AST]]] = field(default_factory=dict, repr=False)
    _named_sorted: dict[type, set[str]] = field(default_factory=dict, repr=False)
    _imports: dict[str, tuple[str, ast.AST]] | None = field(default=None, repr=False)
    _name_starts: dict[str, list[tuple[int, int]]] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> str:
        return self.src.path

    def nodes(self, *types: type) -> list[ast.AST]:
        """The nodes of these classes, each class's in position order (nodes at the same position: the outer
        first, then in source order)."""
        out: list[ast.AST] = []
        for t in types:
            out.extend(self._bucket(t))
        return out

    def nodes_where(self, cls: type, keep) -> list[ast.AST]:
        """`[n for n in nodes(cls) if keep(n)]`, without putting the whole class in order: only what `keep`
        accepts is sorted (a filter keeps a few of the tens of thousands of names). The sort is stable, so the
        nodes come in the order `nodes(cls)` gives them."""
        return self._in_order(cls, [n for n in self.by_type.get(cls, ()) if keep(n)])

    def nodes_with(self, cls: type, name: str, values) -> list[ast.AST]:
        """`nodes_where(cls, lambda n: getattr(n, name) in values)`, at comprehension speed (no call per node)."""
        get = attrgetter(name)
        return self._in_order(cls, [n for n in self.by_type.get(cls, ()) if get(n) in values])

    def strings(self, longer_than: int = -1) -> list[ast.Constant]:
        """The string constants of more than `longer_than` characters, in position order (as `nodes_where`, at
        comprehension speed)."""
        kept = [
            n for n in self.by_type.get(ast.Constant, ()) if isinstance(n.value, str) and len(n.value) > longer_than
        ]
        return self._in_order(ast.Constant, kept)

    def _in_order(self, cls: type, kept: list[ast.AST]) -> list[ast.AST]:
        """Nodes kept from the bucket of `cls`, in position order: sorted unless the bucket is already. The sort
        is stable, so they come in the order `nodes(cls)` gives them."""
        return position_sorted(kept) if cls in self._unsorted else kept

    def named(self, cls: type, name: str) -> list[ast.AST]:
        """The `Name` nodes (`cls` ast.Name, by `id`) or attributes (ast.Attribute, by `attr`) called `name`, in
        position order. The class is grouped by name in one pass, the first time any name is asked for."""
        nodes = self._groups(cls).get(name, [])
        if name not in self._named_sorted[cls]:  # the bucket's order was the walk's or already positional
            self._named_sorted[cls].add(name)
            sort_by_position(nodes)
        return nodes

    def named_starts(self, name: str) -> list[tuple[int, int]]:
        """Where each `Name` node called `name` starts, (line, column) in order: for bisecting into spans."""
        starts = self._name_starts.get(name)
        if starts is None:
            starts = self._name_starts[name] = list(map(POSITION, self.named(ast.Name, name)))
        return starts

    def identifiers(self, cls: type):
        """The distinct names of the `Name` nodes (`cls` ast.Name) or attributes (ast.Attribute): a set-like view."""
        return self._groups(cls).keys()

    def _groups(self, cls: type) -> dict[str, list[ast.AST]]:
        groups = self._named.get(cls)
        if groups is None:  # one pass over the class, shared by every name asked for
            field_of = attrgetter("id" if cls is ast.Name else "attr")
            grouping: defaultdict[str, list[ast.AST]] = defaultdict(list)
            for n in self.by_type.get(cls, ()):
                grouping[field_of(n)].append(n)
            groups = self._named[cls] = dict(grouping)
            self._named_sorted[cls] = set()
        return groups

    def unordered(self, cls: type) -> list[ast.AST]:
        """The nodes of `cls` in no promised order, for a reader that makes a set of them."""
        return self.by_type.get(cls, [])

    def _bucket(self, t: type) -> list[ast.AST]:
        nodes = self.by_type.get(t, [])
        if t in self._unsorted:
            # sorted on first use (a seventh of the nodes are of classes no analysis asks for); the walk is
            # breadth first and the sort stable, so nodes at one position stay outer first. The parser positions
            # every node of a positioned class; a class without positions keeps the walk's order.
            self._unsorted.discard(t)
            sort_by_position(nodes)
        return nodes

    def calls_named(self, *names: str) -> list[ast.Call]:
        """The calls whose called name (`call_name`: `opt.step()` -> "step") is one of `names`, in the order of
        `nodes(ast.Call)`. Analyses that look for a few names read them here instead of scanning every call."""
        return [call for _, call in self._ranked_calls_named(names)]

    def _ranked_calls_named(self, names: Iterable[str]) -> list[tuple[int, ast.Call]]:
        """(rank in `nodes(ast.Call)`, call) of the calls named one of `names`, by rank."""
        if self._calls_by_name is None:
            table: dict[str, list[tuple[int, ast.Call]]] = {}
            for rank, (call, name) in enumerate(zip(self._bucket(ast.Call), self.call_names())):
                table.setdefault(name, []).append((rank, call))
            self._calls_by_name = table
        found = [self._calls_by_name.get(n, []) for n in dict.fromkeys(names)]
        if len(found) == 1:
            return found[0]
        return list(heapq.merge(*found))  # ranks are distinct: calls are never compared

    def calls_in_span(self, node: ast.AST, *names: str) -> bool:
        """Whether a call of one of `names` starts inside `node`'s source span: a prefilter for a walk. Every
        node under an expression or a statement lies in its span (a function's decorators do not: this is not
        for functions), so a subtree with such a call answers True. True may also be a call that `node` is the
        leftmost part of (`f` in `f(x)`); a statement starts with its keyword or its own expression."""
        key = names
        starts = self._call_starts.get(key)
        if starts is None:
            starts = self._call_starts[key] = [(c.lineno, c.col_offset) for c in self.calls_named(*names)]
        return starts_within(starts, node)

    def nodes_in_span(self, node: ast.AST, cls: type) -> list[ast.AST]:
        """The nodes of class `cls` (a positioned class) that start inside `node`'s source span, in position
        order: every such node under `node` (as `calls_in_span`, not for functions), and maybe nodes that
        `node` is the leftmost part of. A prefilter for a walk."""
        return self._bucket(cls)[self.span(cls, node)]

    def span(self, cls: type, node: ast.AST) -> slice:
        """Which entries of `nodes(cls)` (and of lists parallel to it, such as `call_names()`) start inside
        `node`'s source span (see `nodes_in_span`)."""
        return span_slice(self._starts(cls), node)

    def _starts(self, cls: type) -> list[tuple[int, int]]:
        """The (line, column) of each of `nodes(cls)`."""
        starts = self._class_starts.get(cls)
        if starts is None:
            starts = self._class_starts[cls] = list(map(POSITION, self._bucket(cls)))
        return starts

    def calls_to(
        self, names: Iterable[str], prefixes: tuple[str, ...] = (), lasts: Iterable[str] = ()
    ) -> list[tuple[ast.Call, str, ast.AST | None]]:
        """(call, qualified callee, the import that bound its head) of every call whose `qualified` callee is one
        of `names`, starts with one of `prefixes` (each ending in ".") or ends in one of `lasts` (`a.b.load` ->
        "load"), in the order of `nodes(ast.Call)`; maybe a few more calls, which the caller's own test drops.
        The analyses that look for a few APIs (network, native code) qualify only these:
        - a callee ends in its called name (`call_name`), or, called by a bare imported name, in its import's
          last part (`from ctypes import CDLL as load_c`): the calls of those names (`calls_named`);
        - a callee `head.a.b` qualifies to `bound(head).a.b`, so only a head bound to (or named) an ancestor or a
          descendant of a prefix can reach it: the calls whose callee starts at a `Name` of such a head."""
        names = frozenset(names)
        imports = self.imports()
        ends = {n.rpartition(".")[2] for n in names} | set(lasts)
        aliases = [h for h, (bound, _) in imports.items() if bound.rpartition(".")[2] in ends]
        ranked = dict(self._ranked_calls_named([*ends, *aliases]))
        heads = {h for h, (bound, _) in imports.items() if _under_prefix(bound, prefixes)}
        heads.update(first for first in (p.partition(".")[0] for p in prefixes) if first not in imports)
        groups = self._groups(ast.Name)
        parents = self.parents
        for head in heads:
            for name in groups.get(head, ()):
                cur, up = name, parents.get(name)
                while up.__class__ is ast.Attribute and up.value is cur:  # up the callee's attribute chain
                    cur, up = up, parents.get(up)
                if up.__class__ is ast.Call and up.func is cur:
                    ranked[self._rank(ast.Call, up)] = up
        qualified = self.qualified
        return [(c, *qualified(c.func)) for _, c in sorted(ranked.items())]

    def _rank(self, cls: type, node: ast.AST) -> int:
        """`node`'s index in `nodes(cls)` (a positioned class): found among the nodes that start where it does."""
        nodes = self._bucket(cls)
        i = bisect.bisect_left(self._starts(cls), (node.lineno, node.col_offset))
        while nodes[i] is not node:
            i += 1
        return i

    def call_names(self) -> list[str]:
        """The called name (`call_name`) of each call of `nodes(ast.Call)`, in that order."""
        if self._call_names is None:
            self._call_names = [call_name(c) for c in self._bucket(ast.Call)]
        return self._call_names

    def imports(self) -> dict[str, tuple[str, ast.AST]]:
        """Local name -> (the qualified name it is bound to, the import statement), from every absolute import of
        the file: `import a.b` binds `a`, `import a.b as c` binds `c` to `a.b`, `from a import b as c` binds `c`
        to `a.b`. A later import of the same name wins (imports before from-imports)."""
        if self._imports is None:
            out: dict[str, tuple[str, ast.AST]] = {}
            for node in self.nodes(ast.Import):
                for a in node.names:
                    top = a.name.split(".")[0]
                    out[a.asname or top] = (a.name if a.asname else top, node)
            for node in self.nodes(ast.ImportFrom):
                if node.module and node.level == 0:
                    for a in node.names:
                        out[a.asname or a.name] = (f"{node.module}.{a.name}", node)
            self._imports = out
        return self._imports

    def qualified(self, func: ast.AST, name: str | None = None) -> tuple[str, ast.AST | None]:
        """(`func`'s dotted name with its imported head spelled out, the import that bound the head or None);
        `name`: the dotted name, when the caller has it already."""
        name = (dotted(func) or "") if name is None else name
        head, _, rest = name.partition(".")
        bound = self.imports().get(head)
        if bound is None:
            return name, None
        return (f"{bound[0]}.{rest}" if rest else bound[0]), bound[1]

    def snippet(self, node: ast.AST, max_lines: int = 3) -> str:
        start = getattr(node, "lineno", 0)
        end = min(getattr(node, "end_lineno", start) or start, start + max_lines - 1)
        return "\n".join(self.lines[start - 1 : end]) if start else ""

    def enclosing(self, node: ast.AST, *types: type) -> ast.AST | None:
        cur = self.parents.get(node)
        while cur is not None and not isinstance(cur, types):
            cur = self.parents.get(cur)
        return cur

    def ancestors(self, node: ast.AST):
        cur = self.parents.get(node)
        while cur is not None:
            yield cur
            cur = self.parents.get(cur)


def index_source(src: ResolvedSource) -> SourceIndex | None:
    if src.parse_error:
        return None
    tree, _ = pyparse.parse(src.text)
    if tree is None:
        return None
    # the module's walk and parent map (one traversal, shared with every other walk of the module), bucketed
    idx = SourceIndex(src=src, tree=tree, parents=pyparse.parents(tree), lines=src.text.splitlines())
    by_type: defaultdict[type, list[ast.AST]] = defaultdict(list)
    for node in pyparse.walk(tree):
        by_type[type(node)].append(node)  # the fastest of the bucketing loops measured: a hundred thousand nodes
    idx.by_type = dict(by_type)
    idx._unsorted.update(t for t, nodes in by_type.items() if hasattr(nodes[0], "lineno"))
    return idx


def _under_prefix(bound: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a callee whose head is bound to `bound` can qualify to a name under one of `prefixes`: `bound`
    lies under it, or is an ancestor of it (`torch` of `torch.hub.`)."""
    below = bound + "."
    return any(below.startswith(p) or p.startswith(below) for p in prefixes)


POSITION = attrgetter("lineno", "col_offset")  # the sort key of the index's position order
_LINE, _COLUMN = attrgetter("lineno"), attrgetter("col_offset")


def sort_by_position(nodes: list[ast.AST]) -> None:
    """`nodes.sort(key=POSITION)`, as two stable sorts on one int each (column, then line): a fifth faster
    than comparing (line, column) tuples, and the same order, ties included."""
    nodes.sort(key=_COLUMN)
    nodes.sort(key=_LINE)


def position_sorted(nodes: list[ast.AST]) -> list[ast.AST]:
    out = list(nodes)
    sort_by_position(out)
    return out


def span_slice(starts: list[tuple[int, int]], node: ast.AST) -> slice:
    """The entries of sorted (line, column) `starts` that lie in `node`'s source span."""
    lo = bisect.bisect_left(starts, (node.lineno, node.col_offset))
    return slice(lo, bisect.bisect_left(starts, (node.end_lineno, node.end_col_offset), lo))


def starts_within(starts: list[tuple[int, int]], node: ast.AST) -> bool:
    """Whether one of the sorted (line, column) `starts` lies in `node`'s source span."""
    i = bisect.bisect_left(starts, (node.lineno, node.col_offset))
    return i < len(starts) and starts[i] < (node.end_lineno, node.end_col_offset)
