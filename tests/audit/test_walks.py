"""The tree walks the analyses share visit exactly what `ast` visits, less the shared context/operator leaves,
in the same order: the child fields are read from the grammar once per class (see `audit.load.parse`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from audit.analysis.astutil import call_name, clear_caches, walk_scope
from audit.analysis.source import index_source
from audit.load import parse as pyparse
from audit.load.resolve import ResolvedSource

ROOT = Path(__file__).resolve().parents[2]
_LEAVES = (ast.expr_context, ast.operator, ast.unaryop, ast.boolop, ast.cmpop)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)

EVERY_SHAPE = """
import os, sys as system
from .pkg import (a as b, c)
global_table: dict[str, int] = {**os.environ, "k": 1, None: 2}
def f(a, /, b=1, *args, c, d=2, e, **kw) -> int:
    global global_table
    nonlocal_free = lambda x, *, y=3, z: x + y
    x = [i async for i in g() if i] if False else {k: v for k, v in kw.items()}
    y = f"{a!r:>{b}} and {c=}" + rf"\\d{d}"
    del x[0], y
    assert a, "msg"
    with open("p") as fh, open("q"):
        pass
    try:
        pass
    except* ValueError as e:
        raise RuntimeError() from e
    else:
        pass
    finally:
        pass
    match a:
        case {"k": 1, **rest} if rest:
            pass
        case [1, *others] | Point(x=0, y=_) as p:
            pass
        case None:
            pass
    return (yield from g()) if not a < b <= c else -a @ b
@decorator(arg)
class C(Base, metaclass=Meta):
    attr: int = 0
    async def m(self):
        async with ctx() as (u, v):
            await u
        async for w in v:
            print(w, sep="")
        while True:
            break
        for i in range(3):
            continue
        else:
            pass
"""


def _sources() -> list[str]:
    texts = [EVERY_SHAPE]
    for pattern in ("audit/**/*.py", "reference_trainer/*.py", "examples/**/*.py"):
        texts += [p.read_text() for p in sorted(ROOT.glob(pattern))][:40]
    return texts


def _reference_walk(node: ast.AST) -> list[ast.AST]:
    return [n for n in ast.walk(node) if not isinstance(n, _LEAVES)]


def _reference_scope(scope: ast.AST) -> list[ast.AST]:
    out: list[ast.AST] = []
    stack = [c for c in ast.iter_child_nodes(scope) if not isinstance(c, _LEAVES)]
    while stack:
        n = stack.pop()
        out.append(n)
        if not isinstance(n, _SCOPES):
            stack.extend(c for c in ast.iter_child_nodes(n) if not isinstance(c, _LEAVES))
    return out


def _same(a: list[ast.AST], b: list[ast.AST]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


@pytest.mark.parametrize("text", _sources()[:12], ids=lambda t: str(len(t)))
def test_walks_visit_what_ast_visits_in_its_order(text):
    clear_caches()
    pyparse.clear()
    tree = ast.parse(text)
    assert _same(pyparse.walk(tree), _reference_walk(tree))
    for node in ast.walk(tree):
        if isinstance(node, _LEAVES):
            continue
        kids = [c for c in ast.iter_child_nodes(node) if not isinstance(c, _LEAVES)]
        assert _same(pyparse.children(node), kids)
        if isinstance(node, (ast.Module, *_SCOPES, ast.stmt)):
            assert _same(walk_scope(node), _reference_scope(node))


def test_the_index_holds_every_node_and_its_parent():
    for text in _sources():
        tree = ast.parse(text)
        idx = index_source(ResolvedSource(path="x.py", text=text))
        nodes = _reference_walk(idx.tree)
        assert sum(len(v) for v in idx.by_type.values()) == len(nodes)
        for node in nodes:
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, _LEAVES):
                    assert idx.parents[child] is node
        assert len(idx.parents) == len(nodes) - 1
        assert tree is not None


def test_holes_in_lists_are_not_nodes():
    tree = ast.parse("d = {**a, 'k': 1}\ndef f(*, x, y=1): pass")
    assert all(isinstance(n, ast.AST) for n in pyparse.walk(tree))


def test_a_class_the_grammar_does_not_describe_is_read_value_by_value():
    class Odd(ast.AST):  # no grammar docstring: every field is checked for nodes
        _fields = ("a", "b", "c")

    odd = Odd(a=ast.Name(id="x"), b=[ast.Constant(1), "text", None], c="not a node")
    assert [type(n).__name__ for n in pyparse.walk(odd)] == ["Odd", "Name", "Constant"]


def test_nodes_at_one_position_are_indexed_outer_first_then_in_source_order():
    text = 'x = f"{a}one{b}two"\ny = p.q.r\n'
    idx = index_source(ResolvedSource(path="x.py", text=text))
    pieces = [n.value for n in idx.nodes(ast.Constant) if n.lineno == 1]
    assert pieces == ["one", "two"]  # Python 3.11 gives the f-string's pieces the string's own position
    chain = [ast.unparse(n) for n in idx.nodes(ast.Attribute)]
    assert chain == ["p.q.r", "p.q"]
    assert idx.parents is pyparse.parents(idx.tree)  # one parent map per module, shared with its walk


def test_calls_named_are_the_calls_of_those_names_in_index_order():
    text = "loss.backward()\ng = torch.autograd.grad(y, x)\nf(x)(y)\nloss.backward()\nopt.step()\nf(1)\n"
    idx = index_source(ResolvedSource(path="x.py", text=text))
    for names in [("backward",), ("backward", "grad"), ("grad", "backward"), ("f", "", "step"), ("absent",)]:
        expected = [c for c in idx.nodes(ast.Call) if call_name(c) in names]
        assert idx.calls_named(*names) == expected


NESTED = """
@register(make_hook())
def outer(x=default_value(), *, y=lambda: inner_default()) -> annotate():
    first()
    @functools.wraps(first)
    def inner():
        while budget():
            for _ in batches():
                step(f"{fmt()}")
    return [comp(i) for i in it()]
class K:
    @staticmethod
    def m(): return helper()
for epoch in range(n()):
    while clock():
        opt.step()
"""


def _program(text: str):
    from audit.analysis.program import Program

    clear_caches()
    pyparse.clear()
    return Program.build([ResolvedSource(path="x.py", text=text)])


@pytest.mark.parametrize("text", [NESTED, EVERY_SHAPE, *_sources()[-3:]], ids=lambda t: str(len(t)))
def test_calls_by_function_and_loop_are_the_calls_under_them(text):
    """The calibration index reads a function's calls from its source span (plus its decorators) and a loop's
    from its span: the same names as every call under the node in the tree."""
    from audit.analysis.calibration import CalibrationAnalysis

    prog = _program(text)
    cal = CalibrationAnalysis(prog)
    idx = prog.indexes[0]
    under = lambda node: {call_name(n) for n in pyparse.walk(node) if isinstance(n, ast.Call) and n is not node}  # noqa: E731
    for fn in idx.nodes(ast.FunctionDef, ast.AsyncFunctionDef):
        assert cal._fn_calls[fn] == under(fn), fn.name
    for loop in idx.nodes(ast.For, ast.While):
        assert cal._loop_calls(idx, loop) == under(loop)


def test_reaching_definitions_skip_only_statements_that_never_name_the_variable(monkeypatch):
    """A statement that never names the traced variable passes the reaching definitions on unchanged: the
    flow that skips such statements finds what the flow that reads every statement finds."""
    from audit.analysis import calibration

    text = (ROOT / "reference_trainer" / "train_gpt.py").read_text() + NESTED
    uses = []
    for skip in (True, False):
        prog = _program(text)
        cal = calibration.CalibrationAnalysis(prog)
        idx = prog.indexes[0]
        if not skip:
            monkeypatch.setattr(calibration._Flow, "_mentions", lambda self, st: True)
        found = []
        for fn in idx.nodes(ast.FunctionDef):
            for name in [n for n in pyparse.walk(fn) if isinstance(n, ast.Name)][:60]:
                reach = cal._reaching(idx, fn, name)
                found.append(
                    None
                    if reach is None
                    else [(ast.dump(v) if isinstance(v, ast.AST) else v, c is not False) for v, c in reach]
                )
        uses.append(found)
    assert uses[0] == uses[1]
    assert sum(r is not None and r != [] for r in uses[0]) > 100  # the comparison saw real definitions


@pytest.mark.parametrize("text", [NESTED, EVERY_SHAPE, *_sources()[-3:]], ids=lambda t: str(len(t)))
def test_a_call_in_a_span_is_a_call_under_the_node(text):
    """`calls_in_span` never misses a call under the node (functions and classes, whose decorators sit above
    their span, are not asked); for a statement it is exactly what a walk of the statement answers."""
    idx = index_source(ResolvedSource(path="x.py", text=text))
    names = sorted({call_name(c) for c in idx.nodes(ast.Call)})
    asked = [names[::3], names[1::5], ["step", "fmt", "inner_default"], ["absent"]]
    for node in pyparse.walk(idx.tree):
        if not hasattr(node, "end_lineno") or isinstance(node, _SCOPES):
            continue
        for group in asked:
            under = any(isinstance(c, ast.Call) and call_name(c) in group for c in pyparse.walk(node))
            answer = idx.calls_in_span(node, *group)
            assert answer == under if isinstance(node, ast.stmt) else answer >= under, (ast.dump(node)[:80], group)


@pytest.mark.parametrize("text", [NESTED, EVERY_SHAPE, *_sources()[-3:]], ids=lambda t: str(len(t)))
def test_the_nodes_in_a_span_are_the_nodes_under_a_statement(text):
    idx = index_source(ResolvedSource(path="x.py", text=text))
    for node in pyparse.walk(idx.tree):
        if not isinstance(node, ast.stmt) or isinstance(node, _SCOPES):
            continue
        for cls in (ast.Assign, ast.Call, ast.Name):
            under = [n for n in pyparse.walk(node) if isinstance(n, cls)]
            spanned = idx.nodes_in_span(node, cls)
            assert {id(n) for n in spanned} == {id(n) for n in under}
            assert spanned == sorted(spanned, key=lambda n: (n.lineno, n.col_offset))


@pytest.mark.parametrize("text", [NESTED, EVERY_SHAPE, *_sources()[-3:]], ids=lambda t: str(len(t)))
def test_a_filtered_class_comes_in_the_order_of_the_whole_class(text):
    """`nodes_where` sorts only what its filter keeps, asked before or after the class was put in order."""
    for first in (False, True):
        idx = index_source(ResolvedSource(path="x.py", text=text))
        for cls in (ast.Name, ast.Attribute, ast.Constant, ast.arguments):
            keep = lambda n: hash(ast.dump(n)) % 3 == 0  # noqa: E731 - any filter
            if first:
                idx.nodes(cls)
            got = idx.nodes_where(cls, keep)
            assert got == [n for n in idx.nodes(cls) if keep(n)]
            assert {id(n) for n in idx.unordered(cls)} == {id(n) for n in idx.nodes(cls)}
        idx = index_source(ResolvedSource(path="x.py", text=text))
        if first:
            idx.nodes(ast.Name)
        some = {n.id for n in idx.unordered(ast.Name)[::4]}
        got = idx.nodes_with(ast.Name, "id", some)
        by_name = {name: idx.named(ast.Name, name) for name in sorted(some)[:20]}
        by_attr = {a.attr: idx.named(ast.Attribute, a.attr) for a in idx.unordered(ast.Attribute)[:20]}
        assert got == [n for n in idx.nodes(ast.Name) if n.id in some]
        for name, nodes in by_name.items():
            assert nodes == [n for n in idx.nodes(ast.Name) if n.id == name]
        for attr, nodes in by_attr.items():
            assert nodes == [n for n in idx.nodes(ast.Attribute) if n.attr == attr]
        assert set(idx.identifiers(ast.Name)) == {n.id for n in idx.nodes(ast.Name)}
        assert set(idx.identifiers(ast.Attribute)) == {n.attr for n in idx.nodes(ast.Attribute)}
        idx = index_source(ResolvedSource(path="x.py", text=text))
        if first:
            idx.nodes(ast.Constant)
        for longer_than in (-1, 0, 60):
            strings = [n for n in idx.nodes(ast.Constant) if isinstance(n.value, str) and len(n.value) > longer_than]
            assert idx.strings(longer_than) == strings


@pytest.mark.parametrize("text", [NESTED, EVERY_SHAPE, *_sources()[-3:]], ids=lambda t: str(len(t)))
def test_function_refs_are_the_loaded_names_and_attributes_of_each_function(text):
    """`Program.refs` is made per name on first ask: what an eager table of every function name held."""
    prog = _program(text)
    idx = prog.indexes[0]
    for name in [*prog.functions, "not_a_function"]:
        eager = [(idx, n) for n in idx.nodes(ast.Name) if n.id == name and isinstance(n.ctx, ast.Load)]
        eager += [(idx, n) for n in idx.nodes(ast.Attribute) if n.attr == name and isinstance(n.ctx, ast.Load)]
        if name not in prog.functions:
            eager = []
        assert prog.refs.get(name, []) == eager
        assert prog.refs.get(name) == (eager or None)


def test_imports_bind_names_as_python_does():
    text = (
        "import os.path\n"
        "import numpy as np\n"
        "import torch.distributed as dist\n"
        "import x as requests\n"
        "import requests.adapters\n"  # rebinds `requests` to the package
        "from urllib import request as rq\n"
        "from . import local\n"  # relative: not a qualified name
    )
    idx = index_source(ResolvedSource(path="x.py", text=text))
    names = {k: v for k, (v, _) in idx.imports().items()}
    assert names == {
        "os": "os",
        "np": "numpy",
        "dist": "torch.distributed",
        "requests": "requests",
        "rq": "urllib.request",
    }
    call = ast.parse("rq.urlopen(u)").body[0].value
    full, node = idx.qualified(call.func)
    assert full == "urllib.request.urlopen" and isinstance(node, ast.ImportFrom)
    assert idx.qualified(ast.parse("open(u)").body[0].value.func) == ("open", None)


_HEADS = ["requests", "os", "subprocess", "torch", "ffi", "rq", "hub", "F", "x", "http"]
_IMPORTS = [
    "import requests",
    "import os",
    "import x as requests",
    "import torch.utils.cpp_extension as ext",
    "from urllib import request as rq",
    "from huggingface_hub import hf_hub_download as hub",
    "from subprocess import run as sh",
    "from ctypes import CDLL as load_c",
    "import torch.nn.functional as F",
    "import http.client",
    "from . import requests as r2",
]
_CALLEES = [
    "{h}(a)",
    "{h}.get(a)",
    "{h}.client.HTTPConnection(a)",
    "{h}.utils.cpp_extension.load(a)",
    "{h}.request.urlopen(a)",
    "{h}().run(a)",
    "{h}.run(a)(b)",
    "{h}.run(a).system(b)",
    "{h}[0].system(a)",
    "{h}.hub.load(a)",
    "ext.load(a)",
    "load_c(a)",
    "sh(a)",
    "r2.get(a)",
    "f({h}.popen(a))",
]


def _wanted(full: str, names, prefixes, lasts) -> bool:
    return full in names or full.startswith(prefixes) or (bool(full) and full.rpartition(".")[2] in lasts)


def _brute_calls_to(idx, names, prefixes, lasts=()):
    """What `calls_to` must keep: every call whose qualified callee is one of `names`, under a prefix or ends in
    one of `lasts`, found by qualifying every call."""
    return [
        (id(c), *idx.qualified(c.func))
        for c in idx.nodes(ast.Call)
        if _wanted(idx.qualified(c.func)[0], names, prefixes, lasts)
    ]


def _kept_calls_to(idx, names, prefixes, lasts=()):
    """What `calls_to` returns, filtered as its callers filter it."""
    return [
        (id(c), full, bound)
        for c, full, bound in idx.calls_to(names, prefixes, lasts)
        if _wanted(full, names, prefixes, lasts)
    ]


_NAMES = ["requests.get", "ctypes.CDLL", "http.client.HTTPConnection", "torch.hub.load", "ffi", "subprocess.run"]
_PREFIXES = ["requests.", "os.", "subprocess.", "ffi.", "huggingface_hub.", "torch.", "torch.hub.", "http.client."]


@given(
    imports=st.lists(st.sampled_from(_IMPORTS), max_size=5),
    calls=st.lists(st.tuples(st.sampled_from(_CALLEES), st.sampled_from(_HEADS)), min_size=1, max_size=8),
    names=st.sets(st.sampled_from(_NAMES), max_size=3),
    prefixes=st.sets(st.sampled_from(_PREFIXES), max_size=3),
    lasts=st.sets(st.sampled_from(["run", "load", "CDLL", "system", "popen", "get", "HTTPConnection"]), max_size=3),
)
@settings(max_examples=200, deadline=None)
@example(
    imports=["from ctypes import CDLL as load_c"],
    calls=[("load_c(a)", "x")],
    names={"ctypes.CDLL"},
    prefixes=set(),
    lasts=set(),
)
@example(
    imports=["from subprocess import run as sh"], calls=[("sh(a)", "x")], names=set(), prefixes=set(), lasts={"run"}
)
@example(
    imports=["import x as requests"],
    calls=[("{h}.get(a)", "requests")],
    names={"requests.get"},
    prefixes={"requests."},
    lasts=set(),
)
@example(imports=[], calls=[("{h}.hub.load(a)", "torch")], names=set(), prefixes={"torch.hub."}, lasts=set())
@example(
    imports=[], calls=[("{h}.run(a)(b)", "x"), ("{h}.run(a)", "subprocess")], names=set(), prefixes=set(), lasts={"run"}
)
@example(
    imports=[], calls=[("{h}.run(a).system(b)", "subprocess")], names=set(), prefixes={"subprocess."}, lasts={"system"}
)
def test_calls_to_keeps_every_call_that_qualifies_to_an_api(imports, calls, names, prefixes, lasts):
    """`calls_to` reads only the calls named as an API ends (or imported under another name) and those whose
    callee starts at a head that can reach a prefix; filtered as its callers filter, it returns what qualifying
    every call gives, in the same order."""
    text = "\n".join(imports + [c.format(h=h) for c, h in calls]) + "\n"
    idx = index_source(ResolvedSource(path="x.py", text=text))
    prefixes = tuple(sorted(prefixes))
    assert _kept_calls_to(idx, names, prefixes, lasts) == _brute_calls_to(idx, names, prefixes, lasts)


def test_calls_to_on_real_sources_reads_fewer_calls_and_misses_none():
    """On this repository's own sources: the same calls as qualifying every call, from a fraction of them."""
    names, prefixes, lasts = {"subprocess.run", "os.environ.get", "ctypes.CDLL"}, ("json.",), {"system", "popen"}
    read = total = 0
    for text in _sources():
        idx = index_source(ResolvedSource(path="x.py", text=text))
        assert _kept_calls_to(idx, names, prefixes, lasts) == _brute_calls_to(idx, names, prefixes, lasts)
        read, total = read + len(idx.calls_to(names, prefixes, lasts)), total + len(idx.nodes(ast.Call))
    assert 0 < read < total / 4
