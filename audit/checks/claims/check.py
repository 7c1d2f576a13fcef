"""Run every claims check on one submission and summarise what the logs show."""

from __future__ import annotations

from ...load.folder import Folder
from ...load.resolve import Sources
from ...logs import LogResult, parse_log
from .caps import CapChecks
from .extract import extract_claims
from .integrity import IntegrityChecks
from .model import ClaimsReport, ClaimsSummary
from .seeds import SeedChecks


class ClaimsChecker(SeedChecks, CapChecks, IntegrityChecks):
    """All claims checks over one submission's logs and claims."""


def check_claims(sub: Folder, sources: Sources, logs: dict[str, LogResult] | None = None) -> ClaimsReport:
    """Claims of `sub` against its logs (parsed here unless given): findings (PG2xx) and the summary for the
    review comment."""
    if logs is None:
        logs = {path: parse_log(sub.text(path), path) for path in sub.log_files}
    claims = extract_claims(sub)
    ch = ClaimsChecker(sub, sources, logs, claims)
    tag, claimed = ch.check_headline()
    per_seed = ch.check_per_seed()
    ch.check_seed_labels()
    ch.check_duplicates()
    ch.check_seed_coverage()
    ch.check_size()
    ch.check_time()
    bpt, family, tokens = ch.integrity()
    ch.check_runs()
    final = [r for _, r in ch.final]
    arts = [r.artifact_bytes for r in final if r.artifact_bytes is not None]
    codes = [r.code_bytes for r in final if r.code_bytes is not None]
    trains = [r.train_seconds for r in final if r.train_seconds is not None and not r.eval_only]
    evals = [s for s in (r.eval_seconds()[0] for r in final) if s is not None]
    summary = ClaimsSummary(
        claimed_bpb=claimed,
        matched_tag=tag,
        seeds=sorted({r.seed for r in final if r.seed is not None}),
        per_seed=per_seed,
        n_logs=len(logs),
        artifact_bytes=max(arts) if arts else None,
        code_bytes=max(codes) if codes else None,
        train_seconds=max(trains) if trains else None,
        eval_seconds=max(evals) if evals else None,
        bytes_per_token=round(bpt, 5) if bpt is not None else None,
        tokenizer=family,
        val_tokens=tokens,
    )
    return ClaimsReport(findings=ch.findings, summary=summary, claims=claims)
