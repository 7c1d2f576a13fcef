"""Network access in the submission's code: which calls open a connection, download, or `pip install`,
and whether each runs during evaluation (inside an evaluation function, called from one, or after the
training loop) or only at start-up."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from ..load.parse import walk
from ..logs.patterns import may_contain
from .astutil import SHELL_CALLS, SHELL_MODULES, call_name
from .program import Program, SourceIndex

# Fully qualified callables that open a connection (prefix match on the resolved dotted name).
NETWORK_APIS = (
    "requests.",
    "urllib.request.urlopen",
    "urllib.request.urlretrieve",
    "urllib.request.build_opener",
    "urllib3.",
    "http.client.HTTPConnection",
    "http.client.HTTPSConnection",
    "socket.socket",
    "socket.create_connection",
    "socket.getaddrinfo",
    "huggingface_hub.",
    "datasets.load_dataset",
    "torch.hub.load",
    "torch.hub.load_state_dict_from_url",
    "torch.hub.download_url_to_file",
    "wget.download",
    "aiohttp.",
    "httpx.",
)
# a call reaches an API above only through its own dotted name or an import, both in the source's text: one of
# these words (lowercase, for `may_contain`) is in it
_API_WORDS = ("requests", "urllib", "http", "socket", "huggingface_hub", "datasets", "hub", "wget", "aiohttp")
_NOT_CALLS = {"exceptions", "utils", "RequestException", "HTTPError", "EntryNotFoundError"}
_DOWNLOAD_CMD = re.compile(r"\b(wget|curl|aria2c|git\s+clone|huggingface-cli|hf\s+download|gsutil|aws\s+s3)\b")
_PIP_CMD = re.compile(r"\bpip3?\b.*\binstall\b|\binstall\b.*\bpip\b")
# Functions whose name says they evaluate or score (their callees are on the evaluation path too).
_EVAL_FN = re.compile(r"(^|_)(eval|evaluate|evaluation|score|scoring|bpb|ttt|sliding|roundtrip)(_|$|\d)", re.I)


@dataclass
class NetCall:
    idx: SourceIndex
    call: ast.Call
    what: str  # resolved API or the command
    kind: str  # "download" | "pip"
    bound_at: ast.AST | None  # the import that binds the name


def _command_text(call: ast.Call) -> str:
    """The literal parts of a shell command: `["wget", url]`, `"curl -O …"`, f-strings."""
    parts: list[str] = []
    for arg in call.args[:1]:
        for n in walk(arg):
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                parts.append(n.value)
            elif isinstance(n, ast.Attribute) and n.attr == "executable":  # sys.executable -m pip
                parts.append("python")
    return " ".join(parts)


_API_NAMES = frozenset(api for api in NETWORK_APIS if not api.endswith("."))  # the API itself
_API_PREFIXES = tuple(api for api in NETWORK_APIS if api.endswith("."))  # anything in the package


def network_calls(program: Program) -> list[NetCall]:
    out: list[NetCall] = []
    for idx in program.indexes:
        if may_contain(idx.src.text, _API_WORDS):  # the calls that can reach an API, and the shell calls
            calls = idx.calls_to(_API_NAMES, _API_PREFIXES, lasts=SHELL_CALLS)
        else:  # no API can be named: only a shell command can download (its calls, in index order)
            calls = [(c, *idx.qualified(c.func)) for c in idx.calls_named(*SHELL_CALLS)]
        for call, full, bound in calls:
            if full in _API_NAMES or full.startswith(_API_PREFIXES):
                if full.split(".")[-1] in _NOT_CALLS:
                    continue  # exception classes and submodules named in `except` clauses or helpers
                out.append(NetCall(idx, call, full, "download", bound))
                continue
            if call_name(call) in SHELL_CALLS and full.startswith(SHELL_MODULES):
                cmd = _command_text(call)
                if _DOWNLOAD_CMD.search(cmd):
                    out.append(NetCall(idx, call, " ".join(cmd.split())[:80], "download", None))
                elif _PIP_CMD.search(cmd):
                    out.append(NetCall(idx, call, " ".join(cmd.split())[:80], "pip", None))
    return out


# --- which phase runs the call ----------------------------------------------------------------------
def _fn(idx: SourceIndex, node: ast.AST):
    return idx.enclosing(node, ast.FunctionDef, ast.AsyncFunctionDef)


def _training_loop_before(idx: SourceIndex, scope: ast.AST, line: int) -> ast.AST | None:
    """A loop in `scope` that runs backward passes and ends before `line`: we are after training."""
    for loop in idx.nodes(ast.For, ast.While):
        if (loop.end_lineno or 0) >= line or loop.lineno < getattr(scope, "lineno", 0):
            continue
        if scope is not idx.tree and (loop.end_lineno or 0) > (scope.end_lineno or 0):
            continue
        if (_fn(idx, loop) or idx.tree) is not scope:
            continue
        if any(isinstance(n, ast.Call) and call_name(n) == "backward" for n in walk(loop)):
            return loop
    return None


def eval_phase(program: Program, idx: SourceIndex, node: ast.AST, depth: int = 0, seen=None):
    """(where, why) when `node` runs during evaluation — inside an evaluation function, called from one, or
    after the training loop — else None (start-up or setup code)."""
    seen = seen or set()
    fn = _fn(idx, node)
    scope = fn or idx.tree
    loop = _training_loop_before(idx, scope, getattr(node, "lineno", 0))
    if loop is not None:
        return loop, idx, "runs after the training loop"
    if fn is None:
        return None
    if _EVAL_FN.search(fn.name):
        return fn, idx, f"runs inside the evaluation function `{fn.name}()`"
    if depth >= 4 or fn in seen:
        return None
    seen.add(fn)
    for cidx, ref in program.refs.get(fn.name, []):
        if any(a is fn for a in cidx.ancestors(ref)):
            continue
        hit = eval_phase(program, cidx, ref, depth + 1, seen)
        if hit is not None:
            return hit
    return None


def has_training(program: Program) -> bool:
    """Does any source run a backward pass (is there a training loop at all)?"""
    return any(idx.calls_named("backward") for idx in program.indexes)
