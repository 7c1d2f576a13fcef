"""Run one audit as a pipeline of stages, each a function from frozen values to a value:
Folder (load/) → Sources (load/resolve.py, load/scripts.py) → Logs (logs/) → Program and its Analyses
(analysis/) → findings (rules/, checks/) → verdict (verdict.py). Each stage is isolated: a crash in one
becomes a `PG000` finding, not a lost audit."""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import __version__, codes
from .analysis.astutil import UNKNOWN, clear_caches
from .analysis.config import Config
from .analysis.context import Analyses
from .analysis.program import Program
from .checks.claims import ClaimsSummary, check_claims
from .checks.facts import Facts, gather_facts
from .checks.folder import package_findings
from .checks.logsource import log_source_findings, provenance
from .checks.record import load_statistics, record_findings
from .checks.suppressions import suppression_findings
from .codes import select_codes
from .findings import Confidence, Finding, Location, report_order
from .load import parse as pyparse
from .load.folder import Folder, decode_text
from .load.messages import LogProvenance, message_lines
from .load.resolve import Sources, resolve
from .load.runcmd import RecordRun, code_defaults, record_run
from .load.scripts import scripts_that_ran
from .logs import LogResult, parse_log
from .logs.model import LoggedLine
from .rules import CODES, RULES
from .rules.base import RuleContext
from .verdict import Verdict, decide

RULESET = "pgolf-rules-2026.11"

# Names of the model-shape hyperparameters across the baseline and its descendants.
SHAPE_KEYS = {
    "layers": ("num_layers", "n_layer", "n_layers", "NUM_LAYERS"),
    "dim": ("model_dim", "n_embd", "d_model", "MODEL_DIM"),
    "heads": ("num_heads", "n_head", "n_heads", "NUM_HEADS"),
    "kv_heads": ("num_kv_heads", "n_kv_head", "kv_heads", "NUM_KV_HEADS"),
    "vocab": ("vocab_size", "VOCAB_SIZE"),
    "seq_len": ("train_seq_len", "seq_len", "block_size", "TRAIN_SEQ_LEN"),
}


@dataclass
class AuditReport:
    folder: str
    verdict: str
    categories: list[str]
    reason: str
    findings: list[Finding]
    entry: str | None = None
    code_bytes: int = 0
    code_files: list[str] = field(default_factory=list)
    decode_chain: dict[str, list[str]] = field(default_factory=dict)
    model_shape: dict[str, object] = field(default_factory=dict)
    claims: ClaimsSummary | None = None  # what the logs show against the claims (typed until the JSON writer)
    head_sha: str | None = None
    repo_url: str | None = None
    pr: int | None = None
    rules_run: list[str] = field(default_factory=list)
    seconds: float = 0.0
    fixes: list = field(default_factory=list)  # mechanical fixes (audit/fix.py), found when the CLI asks
    facts: Facts | None = None  # track and per-seed runs (audit/checks/facts.py)

    def to_dict(self) -> dict:
        from .report.jsonout import report_dict

        return report_dict(self)


def preload() -> None:
    """Import what an audit otherwise loads on its first use (the statistics, the JSON report). A batch calls it
    before forking its workers: each would pay the imports on its first folder (a second of scipy), and the
    forked workers share the loaded modules."""
    from .report.jsonout import report_dict  # noqa: F401 - imported for its side effect: the module is loaded

    load_statistics()


@dataclass(frozen=True)
class Logs:
    """The third stage: every log parsed once, the logged hyperparameters and the non-source log lines."""

    results: dict[str, LogResult]
    hyperparams: dict[str, str]  # attribute name (lowercase) -> value, from the runs' hyperparameter dumps
    lines: tuple[tuple[str, int, str, str], ...]  # (path, line, text, kind) of every non-source line


def read_logs(folder: Folder) -> Logs:
    results = {path: parse_log(folder.text(path), path) for path in folder.log_files}
    params: dict[str, str] = {}
    lines: list[tuple[str, int, str, str]] = []
    for path, result in results.items():
        # runs appended to one file: a later run's dump wins, but a run printed without one keeps the earlier dump
        for run in result.runs:
            for k, v in (run.hyperparams or {}).items():
                params[str(k).lower()] = str(v)
        lines.extend((path, e.lineno, e.text, e.kind) for e in result.events)
    return Logs(results, params, tuple(lines))


def _internal_error(stage: str, exc: BaseException) -> Finding:
    return codes.INTERNAL_ERROR.finding(
        f"{stage} failed inside pgolf ({type(exc).__name__}: {exc}); that part of the audit is missing",
        Location(path="."),
        confidence=Confidence.LOW,
    )


def model_shape(program: Program) -> dict[str, object]:
    shape: dict[str, object] = {}
    for key, names in SHAPE_KEYS.items():
        for n in names:
            if n in program.attrs or n in program.consts:
                _, expr = program.attrs.get(n) or program.consts[n]
                v = program.fold(expr)
                if v is not UNKNOWN and isinstance(v, (int, float)) and not isinstance(v, bool):
                    shape[key] = v
                    break
    return shape


AUDIT_BUDGET_S = 120.0  # wall clock for one folder; stages not started by then are reported, not run
PR_TIMEOUT_S = 120.0  # wall clock for one PR in a batch (all its folders); past it the worker is killed


class _Stages:
    """Runs each stage of one audit; an exception in a stage becomes a `PG000` finding and the rest still runs;
    once the audit's wall-clock budget is spent, the stages left are skipped and reported (never `clean`)."""

    def __init__(self, budget_s: float | None = None) -> None:
        self.findings: list[Finding] = []
        self.deadline = time.perf_counter() + (AUDIT_BUDGET_S if budget_s is None else budget_s)
        self.skipped: list[str] = []

    def run(self, name: str, stage, *args, default=None, budgeted: bool = True):
        """`budgeted=False`: a closing step (the findings, the verdict) that runs however late it is."""
        if budgeted and time.perf_counter() > self.deadline:
            if not self.skipped:
                self.findings.append(
                    codes.INTERNAL_ERROR.finding(
                        f"the audit's {AUDIT_BUDGET_S:.0f} s budget was spent before {name}; it and the stages after it "
                        "were not run",
                        Location(path="."),
                        confidence=Confidence.LOW,
                    )
                )
            self.skipped.append(name)
            return default
        try:
            return stage(*args)
        except Exception as e:  # noqa: BLE001 - a pgolf bug must not lose the audit
            self.findings.append(_internal_error(name, e))
            return default


def _rules(analyses: Analyses, folder: Folder, select, ignore, stages: _Stages) -> list[str]:
    ctx = RuleContext(analyses=analyses, readme=folder.readme_text, files=folder.files)
    rules_run = []
    for rule_cls in RULES:
        rid = f"{rule_cls.CODE}/{rule_cls.NAME}"
        if (select and rule_cls.CODE not in select) or (ignore and rule_cls.CODE in ignore):
            continue
        rules_run.append(rid)
        stages.findings.extend(stages.run(f"rule {rid}", lambda c=rule_cls: list(c(ctx).check()), default=[]))
    return rules_run


def record_config(folder: Folder, sources: Sources) -> RecordRun:
    """The record run's env: README commands, the folder's launchers, launchers the PR adds outside it; the
    code's own defaults tell a switch (`TTT_ENABLED=1`) from a limit (`VAL_MAX_TOKENS=0`)."""
    launchers = {p.rsplit("/", 1)[-1]: folder.text(p) for p in folder.files if p.endswith(".sh") and "/" not in p}
    outside = {p: decode_text(b) for p, b in folder.outside_launchers.items()}
    defaults = code_defaults(s.text for s in sources.sources)
    return record_run(folder.readme_text, launchers, outside, folder.name, sources.entry, defaults)


def audit_submission(folder: Folder, select: set[str] | None = None, ignore: set[str] | None = None) -> AuditReport:
    """Folder → Sources → Logs → Program → findings → verdict. Each stage reads frozen values and returns one."""
    with _no_cycle_collection():
        try:
            return _audit(folder, select, ignore)
        finally:
            # the audit's trees and node caches go now, while the collector is still off: re-enabled, its first
            # pass would otherwise trace every node they hold (all still in its youngest generation)
            clear_caches()
            pyparse.clear()


@contextmanager
def _no_cycle_collection():
    """An audit builds hundreds of thousands of AST nodes and analysis objects that live until it ends; Python's
    cycle collector rescanned them again and again (a fifth of the audit's time, measured). Reference counting
    still frees what the audit drops; cycles are collected once, after it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _audit(folder: Folder, select: set[str] | None, ignore: set[str] | None) -> AuditReport:
    clear_caches()  # trees parsed outside an audit (an audit drops its own when it ends)
    pyparse.clear()
    t0 = time.perf_counter()
    select, ignore = select_codes(select, CODES), select_codes(ignore, CODES)
    st = _Stages()
    # every step is a stage: an exception anywhere is a PG000 finding and the steps after it still run
    sources = st.run("source resolution", resolve, folder, default=Sources())
    run = st.run("run commands", record_config, folder, sources, default=RecordRun())
    logs = st.run("log parsing", read_logs, folder, default=Logs({}, {}, ()))
    messages = st.run("log messages", message_lines, list(logs.lines), default=[])
    sources = st.run("scripts that ran", scripts_that_ran, folder, sources, messages, default=sources)
    st.findings.extend(sources.findings)
    config = Config(env=run.env, logged=logs.hyperparams, source=run.source)
    program = st.run("program model", Program.build, list(sources.sources), config, messages)
    if program is None:
        program = Program(indexes=[], config=config)
    log_provenance = st.run(
        "log provenance", provenance, folder, sources, logs.results, program.indexes, default=LogProvenance()
    )
    st.findings.extend(st.run("log provenance findings", log_source_findings, log_provenance, default=[]))
    analyses = st.run("analysis context", _analyses, program, logs, log_provenance, folder)
    rules_run = _rules(analyses, folder, select, ignore, st) if analyses is not None else []
    st.findings.extend(st.run("folder checks", package_findings, folder, sources, default=[]))
    for src in sources.sources:
        st.findings.extend(st.run("suppression comments", suppression_findings, src, default=[]))
    report = st.run("claims check", check_claims, folder, sources, logs.results)
    if report is not None:
        st.findings.extend(report.findings)
    facts = st.run("facts", gather_facts, folder.name, logs.results, default=Facts(track=None))
    claimed = report.summary.claimed_bpb if report is not None and report.summary is not None else None
    sj = folder.submission_json_path
    st.findings.extend(
        st.run(
            "record checks",
            record_findings,
            folder.name,
            folder.readme_text,
            folder.text(sj) if sj else "",
            facts,
            claimed,
            folder.base_readme,
            default=[],
        )
    )
    shape = st.run("model shape", model_shape, program, default={})
    findings = st.run("findings", _final, st.findings, select, ignore, budgeted=False)
    if findings is None:  # the PG000 that says so is the last finding
        findings = [f for f in st.findings if _wanted(f, select, ignore)]
    v = st.run("verdict", decide, findings, budgeted=False)
    if v is None:
        findings.append(st.findings[-1])
        v = Verdict("needs-human", (), "the verdict could not be decided (an internal error); a reviewer decides")
    return AuditReport(
        folder=folder.name,
        verdict=v.verdict,
        categories=list(v.categories),
        reason=v.reason,
        findings=sorted(findings, key=report_order),
        entry=sources.entry,
        code_bytes=sources.code_bytes,
        code_files=list(sources.code_files),
        decode_chain={s.path: list(s.chain) for s in sources.sources if s.chain},
        model_shape=shape,
        claims=report.summary if report is not None else None,
        head_sha=folder.head_sha,
        repo_url=folder.repo_url,
        rules_run=rules_run,
        seconds=time.perf_counter() - t0,
        facts=facts,
    )


def _analyses(program: Program, logs: Logs, log_provenance: LogProvenance, folder: Folder) -> Analyses:
    lines = [LoggedLine(path, line, text) for path, line, text, _ in logs.lines]
    return Analyses(program, lines, log_provenance, folder.files)


def _final(findings: list[Finding], select: set[str] | None, ignore: set[str] | None) -> list[Finding]:
    return _collapse([f for f in _dedupe(findings) if _wanted(f, select, ignore)])


def _wanted(f: Finding, select: set[str] | None, ignore: set[str] | None) -> bool:
    """Reviewer-side selection (`--select` / `--ignore`), already expanded to codes by `select_codes`."""
    if select and f.code not in select:
        return False
    return not (ignore and f.code in ignore)


COLLAPSE_ABOVE = 20  # more findings of one code than this …
COLLAPSE_KEEP = 10  # … keep this many and count the rest in one finding


def _collapse(findings: list[Finding]) -> list[Finding]:
    """Repeated findings of one code collapse into the first few and one `PG007` that counts the rest, so a
    folder of 100,000 skipped files gives a readable report and a bounded JSON / SARIF file."""
    by_code: dict[str, list[Finding]] = {}
    for f in findings:
        by_code.setdefault(f.code, []).append(f)
    out: list[Finding] = []
    for group in by_code.values():
        if len(group) <= COLLAPSE_ABOVE:
            out.extend(group)
            continue
        ranked = sorted(group, key=lambda f: -f.severity.rank)
        kept, rest = ranked[:COLLAPSE_KEEP], ranked[COLLAPSE_KEEP:]
        out.extend(kept)
        examples = ", ".join(sorted({f.location.path for f in rest})[:3])
        out.append(
            codes.COLLAPSED.finding(
                f"{len(rest):,} more {rest[0].rule} findings (e.g. {examples})",
                Location(path="."),
                severity=max((f.severity for f in rest), key=lambda s: s.rank),
                category=rest[0].category,
            )
        )
    return out


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple] = set()
    out = []
    for f in findings:
        key = (f.rule, f.location.path, f.location.start_line, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


__all__ = ["AuditReport", "audit_submission", "RULESET", "__version__"]
