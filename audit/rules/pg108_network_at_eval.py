from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from ..analysis.program import Program, SourceIndex, call_name, dotted
from ..findings import Confidence, Severity
from .base import Invalid, Rule, Valid

RULING = "challenge README on main: no network access during evaluation; issue #1017 (a self-contained artifact)"

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
_NOT_CALLS = {"exceptions", "utils", "RequestException", "HTTPError", "EntryNotFoundError"}
_SHELL_CALLS = {"run", "call", "check_call", "check_output", "Popen", "system", "popen", "getoutput", "getstatusoutput"}
_SHELL_MODULES = ("subprocess.", "os.")
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


def _aliases(idx: SourceIndex) -> dict[str, tuple[str, ast.AST]]:
    """Local name -> (fully qualified name, import node), from every import in the file."""
    out: dict[str, tuple[str, ast.AST]] = {}
    for node in idx.nodes(ast.Import):
        for a in node.names:
            if a.asname:
                out[a.asname] = (a.name, node)
            else:
                top = a.name.split(".")[0]
                out.setdefault(top, (top, node))
    for node in idx.nodes(ast.ImportFrom):
        if node.module and node.level == 0:
            for a in node.names:
                out[a.asname or a.name] = (f"{node.module}.{a.name}", node)
    return out


def _qualified(call: ast.Call, aliases: dict[str, tuple[str, ast.AST]]) -> tuple[str, ast.AST | None]:
    name = dotted(call.func) or ""
    head, _, rest = name.partition(".")
    if head in aliases:
        full, node = aliases[head]
        return (f"{full}.{rest}" if rest else full), node
    return name, None


def _command_text(call: ast.Call) -> str:
    """The literal parts of a shell command: `["wget", url]`, `"curl -O …"`, f-strings."""
    parts: list[str] = []
    for arg in call.args[:1]:
        for n in ast.walk(arg):
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                parts.append(n.value)
            elif isinstance(n, ast.Attribute) and n.attr == "executable":  # sys.executable -m pip
                parts.append("python")
    return " ".join(parts)


def network_calls(program: Program) -> list[NetCall]:
    out: list[NetCall] = []
    for idx in program.indexes:
        aliases = _aliases(idx)
        for call in idx.nodes(ast.Call):
            full, bound = _qualified(call, aliases)
            if any(full == api or (api.endswith(".") and full.startswith(api)) for api in NETWORK_APIS):
                if full.split(".")[-1] in _NOT_CALLS:
                    continue  # exception classes and submodules named in `except` clauses or helpers
                out.append(NetCall(idx, call, full, "download", bound))
                continue
            if call_name(call) in _SHELL_CALLS and full.startswith(_SHELL_MODULES):
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
        if any(isinstance(n, ast.Call) and call_name(n) == "backward" for n in ast.walk(loop)):
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


def _has_training(program: Program) -> bool:
    return any(
        isinstance(n, ast.Call) and call_name(n) == "backward" for idx in program.indexes for n in idx.nodes(ast.Call)
    )


class NetworkAtEval(Rule):
    """
    ## What it does
    Finds calls that reach the network — `requests`, `urllib.request.urlopen`, `http.client`, `socket`,
    `huggingface_hub` (`hf_hub_download`, `snapshot_download`), `datasets.load_dataset`, `torch.hub`, and
    `wget`/`curl`/`pip install` run through `subprocess`/`os.system` — resolving import aliases, and decides
    when they run: inside an evaluation/scoring function (or a helper it calls), or after the training loop,
    is the evaluation path; module import and set-up before training is start-up.

    ## Why it breaks the rules
    The artifact must be self-contained: evaluation may not fetch anything (challenge README). A download
    during scoring can bring in data or weights that are not counted in the 16 MB.

    ## Example
    ```python
    def eval_val(model, val_tokens):
        stats = requests.get("https://example.org/unigram.json").json()
        ...
    ```

    ## Compliant alternative
    Ship everything inside the artifact. Data and tokenizer downloads belong in the documented preparation
    step (`data/cached_challenge_fineweb.py`), not in the scored run.

    ## Known false positives
    Start-up downloads before training (fetching the tokenizer or the data shards) are reported as
    `warning` for a human to judge, `pip install` at start-up as `info`, and data-preparation scripts with no
    training loop as `info`. Strings in error messages ("pip install …") are not calls and are ignored.
    """

    CODE = "PG108"
    NAME = "network-at-eval"
    CATEGORY = "other"
    SEVERITY = Severity.ERROR
    RULING = RULING
    SUMMARY = "network access (downloads, HTTP, sockets) on the evaluation path"
    FIX_HINT = "Remove network calls from the scored run; ship what evaluation needs inside the artifact."

    VALID = [
        Valid(
            """
            import subprocess, sys
            try:
                import brotli
            except ImportError:
                raise SystemExit("brotli missing: pip install brotli")
            def eval_val(model, val_tokens):
                return model(val_tokens)
            print(eval_val(None, None))
            """,
            note="a pip hint inside an error message is a string, not a call",
        ),
        Valid(
            """
            import os
            from huggingface_hub import hf_hub_download
            def fetch(name):
                hf_hub_download(repo_id="some/dataset", filename=name, local_dir="./data")
            for i in range(int(os.environ.get("N_SHARDS", "10"))):
                fetch(f"fineweb_train_{i:06d}.bin")
            """,
            note="a data preparation script (no training, no evaluation): info",
        ),
        Valid(
            """
            import os, requests
            REMOTE = int(os.environ.get("REMOTE_EVAL", "0"))
            def eval_val(model, val_tokens):
                if REMOTE:
                    requests.post("http://localhost:8000/score", json={})
                return model(val_tokens)
            def main(model, opt, loader, val_tokens):
                for step in range(100):
                    model(loader.next()).backward(); opt.step()
                print(eval_val(model, val_tokens))
            main(None, None, None, None)
            """,
            note="network in the eval function but disabled by default: info",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import urllib.request as ur
            def eval_val(model, val_tokens):
                prior = ur.urlopen("https://example.org/prior.bin").read()
                return model(val_tokens, prior)
            def main(model, val_tokens):
                print(eval_val(model, val_tokens))
            main(None, None)
            """,
            note="a download inside the evaluation function",
        ),
        Invalid(
            """
            import subprocess
            def load_cache():
                subprocess.run(["wget", "-q", "https://example.org/ngram.bin"])
                return open("ngram.bin", "rb").read()
            def main(model, opt, loader, val_tokens):
                for step in range(100):
                    model(loader.next()).backward(); opt.step()
                cache = load_cache()
                print(model(val_tokens, cache))
            main(None, None, None, None)
            """,
            note="a helper called after the training loop fetches data with wget",
        ),
        Invalid(
            """
            from huggingface_hub import snapshot_download
            def setup_data():
                snapshot_download(repo_id="someone/custom_tokenized", repo_type="dataset", local_dir="./data")
            setup_data()
            def main(model, opt, loader):
                for step in range(100):
                    model(loader.next()).backward(); opt.step()
            main(None, None, None)
            """,
            severity=Severity.WARNING,
            note="a start-up data download before training: needs a human",
        ),
    ]

    def check(self):
        calls = self.program.shared("network_calls", lambda: network_calls(self.program))
        if not calls:
            return
        training = _has_training(self.program)
        for nc in calls:
            ev = [self.location(nc.idx, nc.call, f"network call: {nc.what}")]
            if nc.bound_at is not None:
                ev.append(self.location(nc.idx, nc.bound_at, "import that binds the name"))
            phase = eval_phase(self.program, nc.idx, nc.call)
            if phase is not None:
                where, widx, why = phase
                ev.append(self.location(widx, where, why))
                yield self.finding(
                    nc.idx, nc.call,
                    f"Network access on the evaluation path ({nc.what}): it {why}",
                    evidence=ev, confidence=Confidence.HIGH if nc.kind == "download" else Confidence.MEDIUM,
                )
            elif nc.kind == "download" and training:
                yield self.finding(
                    nc.idx, nc.call,
                    f"Download at start-up before training ({nc.what}): data or tokenizer fetched by the scored run "
                    "itself, not by the documented preparation step",
                    evidence=ev, severity=Severity.WARNING, confidence=Confidence.MEDIUM,
                )
            else:
                what = "package install" if nc.kind == "pip" else "download in a script with no training loop"
                yield self.finding(
                    nc.idx, nc.call,
                    f"Network use at set-up ({what}: {nc.what}); not on the evaluation path",
                    evidence=ev, severity=Severity.INFO, confidence=Confidence.MEDIUM, category=None,
                )
