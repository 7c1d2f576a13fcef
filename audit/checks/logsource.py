"""Could the shipped code have printed the logs?

Every log call of every shipped source (Python, decoded wrappers, shell `echo`s) is rebuilt as whole-line
templates (load/messages.py). A log line is printed by other code when no template matches it and it holds a word
that appears in no shipped source (a renamed tag of an edited script still uses the script's own words). Such a
line counts when it carries the run's numbers (a metric line) or describes a mechanism (TTT, caches and count
tables, mixtures, calibration); library chatter never counts, nor what a launcher prints before the script's first
own line. A log that echoes mostly lines of no shipped file ran another program. Either way the shipped code did not produce the claimed number: a human must
look (needs-human), and the rules that read log evidence judge the mechanism those lines show
(`Analyses.log_provenance`).
"""

from __future__ import annotations

import ast
import re

from .. import codes
from ..analysis.source import SourceIndex, index_source
from ..findings import Confidence, Finding, Location
from ..load import parse as pyparse
from ..load.folder import Folder
from ..load.messages import (
    EchoDiff,
    LogProvenance,
    Template,
    explained,
    indexed_log_templates,
    is_log_name,
    shell_templates,
)
from ..load.resolve import Sources, resolve_file
from ..logs import LogResult
from ..logs.echo import echo_blocks, source_spans
from ..logs.patterns import unprefixed

MAX_SOURCES = 40  # a vendored package is read as far as this many files …
MAX_SOURCE_BYTES = 2_000_000  # … and this many bytes (shell scripts: each)
# configuration dumps and tables of other tools: their values are not words of the code
_NOT_MESSAGES = {"nvidia-smi", "rule", "header", "kv_line", "hparam_kv_line", "hparam_kv", "json_kv", "noise"}
# Kinds of metric lines: the numbers a claim can rest on.
_METRIC_KINDS = {
    "metric",
    "metric_bpb_only",
    "bracket_metric",
    "kv_metric",
    "ttt_sliding_done",
    "pretty_bpb",
    "summary_val_bpb",
}
# What a mechanism message talks about: adaptation at eval, caches and count tables, mixtures, calibration data.
MECHANISM = re.compile(
    r"(?i)(?:\bttt|lora|\bslot\b|gram\b|cache|oracle|prefill|\bmix(?:er|ing|ture)|\bppm\b|calib|gptq|"
    r"hessian|rescor|\btilt|\bhash|backoff|expert|train(?:ing)?[ _](?:shards?|data|tokens|files)|\bfrom train)"
)
# library and launcher chatter: glog prefixes, tracebacks, `warnings` output (`file.py:12: UserWarning`), NCCL
_LIBRARY = re.compile(
    r"^(?:[WIEF]\d{4} |Traceback|File \"|\S*(?:Error|Warning|Exception)\b|NCCL|\[?rank\d+\]?:|torch\.|wandb:)"
    r"|\.py:\d+|\bNCCL (?:INFO|WARN)\b|\b(?:Warning|UserWarning|FutureWarning|DeprecationWarning):"
)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_VOCAB_WORD = re.compile(r"[A-Za-z]{3,}")
_DIGITS = re.compile(r"\d+")
QUOTE_LINES = 4  # log lines quoted in the finding


class ShippedTemplates:
    """Templates of every source the folder ships: the program's sources (`indexes`, decoded), the `echo` lines of
    its shell scripts, and every other `.py` file of the folder (decoded the same way). Those other files are
    parsed only when a line is explained by none of the rest: most logs are printed by the program itself."""

    def __init__(self, folder: Folder, sources: Sources, indexes: list[SourceIndex]) -> None:
        self._folder, self._sources = folder, sources
        self._first: list[Template] = [t for idx in indexes for t in _templates(idx)]
        for path in sorted(folder.files):
            if path.endswith(".sh") and len(folder.files[path]) <= MAX_SOURCE_BYTES:
                self._first.extend(shell_templates(folder.text(path), path))
        self._others: list[Template] | None = None

    def explain(self, line: str) -> bool:
        """Whether some shipped template can have printed `line`."""
        if explained(line, self._first) is not None:
            return True
        if self._others is None:
            self._others = _other_py_templates(self._folder, self._sources)
        return explained(line, self._others) is not None


def _other_py_templates(folder: Folder, sources: Sources) -> list[Template]:
    """Templates of the folder's `.py` files that are not program sources, bounded in count and bytes."""
    out: list[Template] = []
    seen = {s.path for s in sources.sources}
    extra = [p for p in sorted(folder.files) if p.endswith(".py") and p not in seen][:MAX_SOURCES]
    keep = {s.text for s in sources.sources}
    budget = MAX_SOURCE_BYTES
    for path in extra:  # one at a time: each file's tree is dropped once its templates are made
        budget -= len(folder.files[path])
        if budget >= 0:
            src = resolve_file(folder, path, "ran")[0]
            idx = index_source(src)
            if idx is not None:
                out.extend(_templates(idx))
            if src.text not in keep:
                pyparse.forget(src.text)
    return out


def _templates(idx: SourceIndex) -> list[Template]:
    # only a call with a logger's name makes templates: each distinct called name is tested once
    names = idx.call_names()
    loggers = {name for name in set(names) if is_log_name(name)}
    return indexed_log_templates(
        [call for call, name in zip(idx.nodes(ast.Call), names) if name in loggers],
        idx.nodes(ast.Assign, ast.AugAssign),
        lambda n: idx.enclosing(n, *_SCOPES) or idx.tree,
        idx.path,
        idx.src.text,
    )


def _shipped_texts(folder: Folder, sources: Sources) -> dict[str, str]:
    texts = {src.path + ("#decoded" if src.virtual else ""): src.text for src in sources.sources}
    for p in folder.files:
        if p.endswith((".py", ".sh")) and len(folder.files[p]) <= MAX_SOURCE_BYTES:
            texts.setdefault(p, folder.text(p))
    return texts


def foreign_words(text: str, vocab: str) -> list[str]:
    """Words of a log line that appear nowhere in the shipped sources (`vocab`, lowercased)."""
    return [w for w in dict.fromkeys(_VOCAB_WORD.findall(text)) if w.lower() not in vocab]


def provenance(
    folder: Folder, sources: Sources, logs: dict[str, LogResult], indexes: list[SourceIndex]
) -> LogProvenance:
    if not logs or not sources.sources:
        return LogProvenance()
    templates = ShippedTemplates(folder, sources, indexes)
    texts = _shipped_texts(folder, sources)
    vocab = "\n".join(texts.values()).lower()
    looks: dict[str, tuple[bool, bool]] = {}  # line shape (digits folded) -> (about a mechanism, library chatter)
    explains: dict[str, bool] = {}  # line shape -> some shipped template prints it
    foreign: dict[str, bool] = {}  # line shape -> printed by other code
    scored: list[tuple[str, int, str]] = []
    mechanism: list[tuple[str, int, str]] = []
    for path, res in logs.items():
        claimed = {r.scored.lineno for r in res.runs if r.scored is not None}
        started = False  # a launcher may print anything before the script's first own line
        preamble: list[tuple[str, int, str]] = []
        for e in res.events:
            if started and e.kind in _NOT_MESSAGES:
                continue  # not a message, and past the preamble: nothing below reads it (and most lines are these)
            shape = _DIGITS.sub("0", e.text.strip())
            if shape not in looks:  # logs repeat a few shapes thousands of times
                looks[shape] = (MECHANISM.search(shape) is not None, _LIBRARY.search(shape) is not None)
            about_mechanism, library = looks[shape]
            metric = e.kind in _METRIC_KINDS or e.lineno in claimed
            message = e.kind not in _NOT_MESSAGES and (metric or about_mechanism)
            if library or not (message or not started):
                continue
            if shape not in explains:
                explains[shape] = templates.explain(e.text)
            started = started or explains[shape]
            if not message or shape in foreign:
                continue
            foreign[shape] = not explains[shape] and bool(foreign_words(e.text, vocab))
            if not foreign[shape]:
                continue
            line = (path, e.lineno, e.text.strip())
            if metric:
                scored.insert(0 if e.lineno in claimed else len(scored), line)  # the claimed number first
            else:
                (mechanism if started else preamble).append(line)
        if not started:  # no line of the shipped script at all: the preamble is the run
            mechanism.extend(preamble)
    return LogProvenance(
        scored=tuple(scored),
        mechanism=tuple(mechanism),
        echoes=tuple(_echo_diffs(folder, texts, logs)),
        checked=len(explains),
    )


def _echo_diffs(folder: Folder, texts: dict[str, str], logs: dict[str, LogResult]) -> list[EchoDiff]:
    if not any(res.source_echo_lines for res in logs.values()):
        return []  # no log echoes a source: nothing to compare (the line sets below cost a pass over every source)
    shipped = {p: {ln.strip() for ln in t.splitlines()} for p, t in texts.items()}
    if not shipped:
        return []
    out = []
    for path, res in logs.items():
        if not res.source_echo_lines:
            continue
        blocks = res.echo_blocks
        if blocks is None:  # a line of the log was cut for matching: its echoes are read from the text as written
            lines = unprefixed(folder.text(path).splitlines())
            blocks = echo_blocks(lines, source_spans(lines))
        for start, echo in blocks:
            if not echo:
                continue
            closest, missing = min(
                ((p, [(n, t) for n, t in echo if t not in have]) for p, have in shipped.items()),
                key=lambda pm: len(pm[1]),
            )
            if missing:
                out.append(EchoDiff(path, start, closest.split("#", 1)[0], tuple(missing), len(echo)))
    return out


def log_source_findings(prov: LogProvenance) -> list[Finding]:
    """One needs-human finding when the logs were printed by code that is not shipped, quoting the lines."""
    if not prov.other_code_ran:
        return []
    lines = list(prov.scored) + list(prov.mechanism)
    evidence = [
        Location(path=p, start_line=n, end_line=n, snippet=t[:200], note="no shipped source can print this line")
        for p, n, t in lines[:QUOTE_LINES]
    ]
    others = [e for e in prov.echoes if e.other_program]
    for e in others[:1]:
        n, t = e.only_in_echo[0]
        evidence.append(
            Location(
                path=e.path,
                start_line=n,
                end_line=n,
                snippet=t[:200],
                note=f"the log echoes a source {len(e.only_in_echo)} of whose {e.echo_lines} lines are in no "
                f"shipped file (closest: {e.closest})",
            )
        )
    what = []
    if prov.scored:
        what.append(f"the scored line `{prov.scored[0][2][:120]}`")
    if prov.mechanism:
        what.append(f"{len(prov.mechanism)} mechanism message(s) such as `{prov.mechanism[0][2][:120]}`")
    if others:
        what.append(f"an echo of another program ({others[0].path})")
    where = evidence[0]
    return [
        codes.LOGS_FROM_OTHER_CODE.finding(
            "The logs were printed by code that is not shipped: "
            + "; ".join(what)
            + ". The shipped code did not produce the claimed number; the mechanism the logs show is judged "
            "from the logs",
            Location(path=where.path, start_line=where.start_line, end_line=where.end_line, snippet=where.snippet),
            confidence=Confidence.MEDIUM,
            evidence=evidence[1:],
        )
    ]
