"""Run one audit: resolve sources, build the shared facts once, run every rule, package and claims checks,
and decide the verdict. Each stage is isolated: a crash in one rule becomes a finding, not a lost audit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import __version__, codes
from .analysis.astutil import UNKNOWN
from .analysis.config import Config
from .analysis.context import Analyses
from .analysis.program import Program
from .checks.folder import package_findings
from .checks.suppressions import suppression_findings
from .findings import Confidence, Finding, Location
from .load.folder import Submission
from .load.resolve import resolve
from .load.runcmd import effective_env
from .load.scripts import add_scripts_that_ran, message_lines
from .logs.model import LoggedLine
from .rules import RULES
from .rules.base import RuleContext
from .verdict import decide

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
    claims: dict = field(default_factory=dict)
    head_sha: str | None = None
    repo_url: str | None = None
    pr: int | None = None
    rules_run: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        from .report.jsonout import report_dict

        return report_dict(self)


def _log_context(sub: Submission) -> tuple[dict[str, str], list[tuple[str, int, str, str]]]:
    """Logged hyperparameters (of the last run of each log) and the non-source log lines with their kind."""
    try:
        from .logs import parsed_logs
    except ImportError:  # parser not available: the audit still runs on code alone
        return {}, []
    params: dict[str, str] = {}
    events: list[tuple[str, int, str, str]] = []
    for path, result in parsed_logs(sub).items():
        # runs appended to one file: a later run's dump wins, but a run printed without one keeps the earlier dump
        for run in result.runs:
            for k, v in (run.hyperparams or {}).items():
                params[str(k).lower()] = str(v)
        events.extend((path, e.lineno, e.text, e.kind) for e in result.events)
    return params, events


def _claims(sub: Submission) -> tuple[list[Finding], dict]:
    try:
        from .checks.claims import check_claims
    except ImportError:
        return [], {}
    rep = check_claims(sub)
    return list(rep.findings), rep.summary.to_dict() if rep.summary is not None else {}


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


def audit_submission(sub: Submission, select: set[str] | None = None, ignore: set[str] | None = None) -> AuditReport:
    t0 = time.perf_counter()
    findings: list[Finding] = []
    resolve(sub)
    findings.extend(sub.load_findings)
    launchers = {p.rsplit("/", 1)[-1]: sub.text(p) for p in sub.files if p.endswith(".sh") and "/" not in p}
    env, _cmd = effective_env(sub.readme_text, launchers)
    try:
        logged, events = _log_context(sub)
    except Exception as e:  # noqa: BLE001 - a parser bug must not lose the audit
        logged, events = {}, []
        findings.append(_internal_error("log parsing", e))
    messages = message_lines(events)
    findings.extend(add_scripts_that_ran(sub, messages))
    program = Program.build(sub.sources, Config(env=env, logged=logged), logs=messages)
    analyses = Analyses(program, [LoggedLine(path, line, text) for path, line, text, _ in events])
    ctx = RuleContext(analyses=analyses, readme=sub.readme_text, files=sub.files)
    rules_run = []
    for rule_cls in RULES:
        rid = f"{rule_cls.CODE}/{rule_cls.NAME}"
        if select and not ({rule_cls.CODE, rid, rule_cls.NAME} & select):
            continue
        if ignore and ({rule_cls.CODE, rid, rule_cls.NAME} & ignore):
            continue
        rules_run.append(rid)
        try:
            findings.extend(rule_cls(ctx).check())
        except Exception as e:  # noqa: BLE001
            findings.append(_internal_error(f"rule {rid}", e))
    findings.extend(package_findings(sub))
    for src in sub.sources:
        findings.extend(suppression_findings(src))
    claims: dict = {}
    try:
        claim_findings, claims = _claims(sub)
        findings.extend(claim_findings)
    except Exception as e:  # noqa: BLE001
        findings.append(_internal_error("claims check", e))
    findings = [f for f in _dedupe(findings) if _wanted(f, select, ignore)]
    v = decide(findings)
    return AuditReport(
        folder=sub.name,
        verdict=v.verdict,
        categories=list(v.categories),
        reason=v.reason,
        findings=sorted(findings, key=lambda f: (-f.severity.rank, f.rule, f.location.path, f.location.start_line)),
        entry=sub.entry,
        code_bytes=sub.code_bytes,
        code_files=list(sub.code_files),
        decode_chain={s.path: list(s.chain) for s in sub.sources if s.chain},
        model_shape=model_shape(program),
        claims=claims,
        head_sha=sub.head_sha,
        repo_url=sub.repo_url,
        rules_run=rules_run,
        seconds=time.perf_counter() - t0,
    )


def _wanted(f: Finding, select: set[str] | None, ignore: set[str] | None) -> bool:
    """Reviewer-side selection (`--select` / `--ignore`) by code (`PG230`), rule id or kebab name."""
    keys = {f.code, f.rule, f.rule.split("/", 1)[-1]}
    if select and not (keys & select):
        return False
    return not (ignore and keys & ignore)


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
