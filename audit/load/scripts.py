"""Scripts that ran: a script of the folder that is not the entry (a nested copy of the record, a separate eval
script) but whose own log messages appear in the logs produced (some of) the results, and is audited too."""

from __future__ import annotations

import ast

from .. import codes
from ..findings import Location
from . import parse as pyparse
from .folder import Folder
from .messages import LogCall, LogText, log_calls, printed_by
from .resolve import Sources, resolve_file

KEEP_TREE_BYTES = 1_000_000  # other scripts' source text whose trees stay (about 90 bytes of tree a byte)


def scripts_that_ran(folder: Folder, sources: Sources, lines: list[tuple[str, int, str]]) -> Sources:
    """Audit a script of the folder that is not the entry (a nested copy of the record, an eval script) when
    the logs print at least two messages that only it prints: that script produced (some of) the results.

    Ablation folders hold many near-copies that print the same messages: a message any other candidate also
    prints does not count, so a script is added only when the evidence points at it alone."""
    if not lines or not sources.sources:
        return sources
    logs = LogText(lines)
    audited = {s.path for s in sources.sources} | set(sources.code_files)
    paths = [p for p in sorted(folder.files) if p.endswith(".py") and p not in audited]
    paths = [p for p in paths if p.rsplit("/", 1)[-1] not in _NOT_SCRIPTS]
    if not paths:
        return sources
    # The trees of the first KEEP_TREE_BYTES of candidates stay for the audit: the log provenance reads their
    # templates when a log line is printed by none of the program's sources, and the one that ran is audited.
    # Past that only each candidate's log calls are kept: an ablation folder holds megabytes of near-copies
    # (their trees were most of a worker's memory), and such a tree is parsed again if a later stage needs it.
    candidates = []
    keep = {s.text for s in sources.sources}  # a copy of an audited source: its tree stays for the later stages
    kept = 0
    for path in paths:
        src, _, _ = resolve_file(folder, path, "ran")  # a file that did not run is not worth a loader finding
        tree, _ = pyparse.parse(src.text) if not src.parse_error else (None, None)
        if tree is not None:
            candidates.append((path, src, log_calls(tree)))
        if src.text not in keep:
            kept += len(src.text)
            if kept > KEEP_TREE_BYTES:
                pyparse.forget(src.text)
    if not candidates or len(candidates) > MAX_CANDIDATES:
        return sources
    # messages compared as printed (implicitly concatenated literals joined), and as raw text
    audited = [s.text for s in sources.sources] + [_printed_text(log_calls(t)) for t in _trees(sources.sources)]
    ran = []
    printed = {path: _printed_text(calls) for path, _, calls in candidates}
    findings = []
    for path, src, calls in candidates:
        others = "\n".join(audited + [s.text + "\n" + printed[p] for p, s, _ in candidates if p != path])
        hits = printed_by(calls, others, logs)
        if len({hit[1] for hit in hits}) < 2:
            continue  # one matching line may be chance
        chunk, (log_path, line, text) = hits[0]
        ran.append(src)
        proof = tuple(
            Location(
                path=lp, start_line=ln, end_line=ln, snippet=t.strip()[:200], note="log line only this script prints"
            )
            for _, (lp, ln, t) in hits[:3]
        )
        findings.append(
            codes.SCRIPT_THAT_RAN.finding(
                f"{path} is not the entry script, but the logs print {len(hits)} messages only it prints "
                f"(e.g. {log_path}:{line} `{chunk}`): it produced (some of) the results and is audited too",
                Location(path=path),
                evidence=proof,
            )
        )
    return sources.adding(ran, findings)


def _printed_text(calls: list[LogCall]) -> str:
    return "\0".join(ch for lc in calls for ch in lc.chunks)


def _trees(sources) -> list[ast.AST]:
    trees = (pyparse.parse(s.text)[0] for s in sources if not s.parse_error)
    return [t for t in trees if t is not None]


_NOT_SCRIPTS = {"setup.py", "__init__.py", "conftest.py"}
MAX_CANDIDATES = 40  # a vendored package is a library, not a script that ran
