"""One parsed source and its single-traversal index (parents, nodes by type, lines)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from operator import attrgetter

from ..load import parse as pyparse
from ..load.parse import CHILD_SPECS, MANY, ONE, nodes_in
from ..load.resolve import ResolvedSource


@dataclass
class SourceIndex:
    """One parsed source and its single-traversal index."""

    src: ResolvedSource
    tree: ast.Module
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)
    by_type: dict[type, list[ast.AST]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.src.path

    def nodes(self, *types: type) -> list[ast.AST]:
        out: list[ast.AST] = []
        for t in types:
            out.extend(self.by_type.get(t, ()))
        return out

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
    idx = SourceIndex(src=src, tree=tree, lines=src.text.splitlines())
    parents = idx.parents
    by_type = idx.by_type
    stack = [tree]
    specs = CHILD_SPECS
    while stack:  # one traversal: parents and a by-type index (ast's generators cost twice as much)
        node = stack.pop()
        kind = node.__class__
        bucket = by_type.get(kind)
        if bucket is None:
            by_type[kind] = [node]
        else:
            bucket.append(node)
        for name, how in specs[kind]:  # children(node), inlined
            v = getattr(node, name, None)
            if how is ONE:
                if v is not None:
                    parents[v] = node
                    stack.append(v)
                continue
            kids = v if how is MANY else nodes_in(v, how)
            parents.update(dict.fromkeys(kids, node))
            stack.extend(kids)
    for nodes in by_type.values():
        # by position; a class without positions (arguments, withitem …) keeps its traversal order. The parser
        # gives every node of a positioned class its line and column.
        if hasattr(nodes[0], "lineno"):
            nodes.sort(key=_LINE_COL)
    return idx


_LINE_COL = attrgetter("lineno", "col_offset")
