"""Report: turn the collected runs (or shipped logs) into per-seed checks, package checks, stats and a
verdict, and render it as console text, JSON (schema_version) and a markdown section that extends the
auditor's review comment."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from audit import __version__

from .checks import (
    Check,
    LogFacts,
    SeedEvidence,
    Status,
    at_stage,
    claimed_stage,
    default_tolerance,
    hardware_class,
    log_facts,
    package_checks,
    seed_checks,
    worst,
)
from .launch import RunResult
from .plan import Plan

SCHEMA_VERSION = 1
EXIT = {"verified": 0, "failed": 1, "inconclusive": 1, "not-run": 1, "planned": 0}
MARK = {Status.PASS: "✅", Status.WARN: "⚠️", Status.FAIL: "❌", Status.INCONCLUSIVE: "❔", Status.SKIP: "–"}


@dataclass
class SeedReport:
    seed: int
    source: str  # console log of the re-run, or the shipped log
    facts: LogFacts
    checks: list[Check]
    claimed_bpb: float | None = None
    run: dict | None = None

    @property
    def status(self) -> str:
        return worst([c.status for c in self.checks])

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict:
        run = dict(self.run) if self.run else None
        if run and run.get("env_info"):
            run["env_info"] = {k: v for k, v in run["env_info"].items() if k != "nvidia_smi"}
        return {
            "seed": self.seed,
            "status": self.status,
            "source": self.source,
            "claimed_bpb": self.claimed_bpb,
            "log": self.facts.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "run": run,
        }


@dataclass
class StatsSection:
    n: int
    mean_bpb: float | None
    std_bpb: float | None
    detail: dict | None = None  # StatsReport.to_dict() when the stats module ran
    markdown: str = ""
    note: str = ""
    written_passed: bool | None = None
    written_reason: str = ""

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "mean_bpb": self.mean_bpb,
            "std_bpb": self.std_bpb,
            "tests": self.detail,
            "note": self.note,
        }


@dataclass
class VerifyReport:
    mode: str  # rerun | logs-only | smoke | dry-run
    folder: str
    verdict: str  # verified | failed | inconclusive | not-run | planned
    reason: str
    plan: dict = field(default_factory=dict)
    backend: str = ""
    audit: dict = field(default_factory=dict)  # verdict, reason, categories of pgolf-audit
    tolerance: float | None = None
    tolerance_reason: str = ""
    seeds: list[SeedReport] = field(default_factory=list)
    package: list[Check] = field(default_factory=list)
    stats: StatsSection | None = None
    smoke: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT[self.verdict]

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "pgolf-verify", "version": __version__},
            "mode": self.mode,
            "folder": self.folder,
            "verdict": self.verdict,
            "reason": self.reason,
            "backend": self.backend,
            "audit": self.audit,
            "tolerance_bpb": self.tolerance,
            "tolerance_reason": self.tolerance_reason,
            "plan": self.plan,
            "seeds": [s.to_dict() for s in self.seeds],
            "package_checks": [c.to_dict() for c in self.package],
            "stats": self.stats.to_dict() if self.stats else None,
            "smoke": self.smoke,
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        return render_markdown(self)


# --- check stage ------------------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def rerun_evidence(plan: Plan, results: dict[int, RunResult]) -> list[SeedEvidence]:
    out = []
    for job in plan.jobs:
        res = results.get(job.seed)
        if res is None:
            continue
        facts = log_facts(_read(res.log_path))
        if job.seed in plan.claimed_tags:  # the claim scores an earlier stage: compare the re-run's same stage
            facts = at_stage(facts, plan.claimed_tags[job.seed])
        out.append(
            SeedEvidence(
                seed=job.seed,
                facts=facts,
                run=res.to_dict(),
                source=res.log_path,
                claimed_bpb=plan.claims.per_seed.get(job.seed),
                code_bytes_on_disk=res.code_bytes or plan.code_bytes,
                code=plan.code_data,
            )
        )
    return out


def logs_evidence(plan: Plan) -> list[SeedEvidence]:
    """One piece of evidence per shipped run that counts (the --logs-only mode): the latest run of each seed (a
    re-run replaces the original), of the runs the claims point at by score or by seed (every run when the
    claims point at none)."""
    out = []
    from_logs = plan.claims.source == "shipped logs"
    claimed = set(plan.claimed_logs)
    for r in plan.runs:
        facts = r.facts
        if facts.runs == 0 or (facts.val_bpb is None and facts.train_time_ms is None):
            continue  # not a training log (a README excerpt, a summary without runs)
        if not r.counts or (claimed and r.path not in claimed and facts.seed not in plan.claims.per_seed):
            continue  # replaced by a later run; or an exploratory run: no claim names its score or its seed
        seed = facts.seed if facts.seed is not None else -1
        facts = claimed_stage(facts, plan.claims.per_seed.get(seed))
        out.append(
            SeedEvidence(
                seed=seed,
                facts=facts,
                source=r.path,
                claimed_bpb=plan.claims.per_seed.get(seed),
                claims_from_this_log=from_logs,
                code_bytes_on_disk=plan.code_bytes,
                code=plan.code_data,
                superseded=list(r.superseded),
            )
        )
    return out


def replaced_runs(plan: Plan) -> list[tuple[str, str, str]]:
    """(earlier log, the log that replaces it, why) for the shipped runs that do not count."""
    return [(r.path, r.replaced_by, r.why) for r in plan.runs if not r.counts]


def stats_section(
    scores: list[float],
    *,
    sota: float | None,
    baseline: list[float] | None,
    margin_nats: float | None,
    ratio: float | None,
) -> StatsSection:
    sec = StatsSection(
        n=len(scores),
        mean_bpb=statistics.fmean(scores) if scores else None,
        std_bpb=statistics.stdev(scores) if len(scores) > 1 else None,
    )
    if sota is None and not baseline:
        sec.note = "no --sota or --baseline given: mean only, no significance test"
        return sec
    from .stats import compare  # here, not at the top: scipy takes a second to import, most modes never test

    kwargs = {"sota": sota, "baseline": baseline, "ratio": ratio}
    if margin_nats is not None:
        kwargs["margin_nats"] = margin_nats
    try:
        rep = compare(scores, **kwargs)
    except (ValueError, TypeError) as e:
        sec.note = f"stats not computed: {e}"
        return sec
    sec.detail = rep.to_dict()
    sec.markdown = rep.to_markdown()
    sec.written_passed = rep.written.passed
    sec.written_reason = rep.written.reason
    return sec


def record_bar_check(st: StatsSection) -> Check | None:
    """The written record rule on the re-run seeds. Informative: a non-record run can verify too."""
    if st.detail is None:
        return None
    if st.written_passed:
        return Check("record_bar", Status.PASS, f"the seeds clear the record bar: {st.written_reason}")
    return Check("record_bar", Status.WARN, f"the seeds do not clear the record bar: {st.written_reason}")


def _ratio(seeds: list[SeedEvidence]) -> float | None:
    """nats per BPB (= ln2 · bytes/token) from the runs' own loss and bpb, for the stats' unit conversion."""
    r = [e.facts.val_loss / e.facts.val_bpb for e in seeds if e.facts.val_loss and e.facts.val_bpb]
    return statistics.fmean(r) if r else None


def build_report(
    mode: str,
    plan: Plan,
    evidence: list[SeedEvidence],
    *,
    backend: str = "",
    audit: dict | None = None,
    tolerance: float | None = None,
    min_seeds: int = 3,
    sota: float | None = None,
    baseline: list[float] | None = None,
    margin_nats: float | None = None,
    missing: list[int] | None = None,
) -> VerifyReport:
    if tolerance is None:
        observed = list(plan.logged_scores.values())
        source = "shipped logs"
        if len(observed) < 2:
            observed = [e.facts.val_bpb for e in evidence if e.facts.val_bpb is not None]
            source = "re-runs"
        tol, why = default_tolerance(observed)
        why = f"{why}, from the {source}"
    else:
        tol, why = tolerance, "given with --tolerance"
    seeds = [SeedReport(e.seed, e.source, e.facts, seed_checks(e, tol), e.claimed_bpb, e.run) for e in evidence]
    replaced = replaced_runs(plan) if mode == "logs-only" else []
    pkg = package_checks(
        evidence, min_seeds=min_seeds, claimed_mean=plan.claims.mean_bpb, tolerance=tol, replaced=replaced
    )
    for s in missing or []:
        pkg.append(Check(f"seed_{s}_result", Status.INCONCLUSIVE, f"seed {s} has no result (not run or interrupted)"))
    scores = [e.facts.val_bpb for e in evidence if e.facts.val_bpb is not None]
    st = stats_section(scores, sota=sota, baseline=baseline, margin_nats=margin_nats, ratio=_ratio(evidence))
    if (bar := record_bar_check(st)) is not None:
        pkg.append(bar)
    statuses = [c.status for s in seeds for c in s.checks] + [c.status for c in pkg]
    verdict = worst(statuses) if evidence else "inconclusive"
    rep = VerifyReport(
        mode=mode,
        folder=plan.folder,
        verdict=verdict,
        reason=_reason(verdict, seeds, pkg),
        plan=plan.to_dict(),
        backend=backend,
        audit=audit or {},
        tolerance=tol,
        tolerance_reason=why,
        seeds=seeds,
        package=pkg,
        stats=st,
    )
    hw = {hardware_class(list((s.run or {}).get("env_info", {}).get("gpus") or []) or s.facts.gpus) for s in seeds}
    rep.notes.append(f"hardware: {', '.join(sorted(hw)) or 'unknown'}")
    return rep


def _reason(verdict: str, seeds: list[SeedReport], pkg: list[Check]) -> str:
    if verdict == "verified":
        return f"{len(seeds)} seed(s) pass every check"
    want = Status.FAIL if verdict == "failed" else Status.INCONCLUSIVE
    bad = [f"seed {s.seed}: {c.name} — {c.message}" for s in seeds for c in s.checks if c.status == want]
    bad += [f"{c.name} — {c.message}" for c in pkg if c.status == want]
    return bad[0] + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else "") if bad else verdict


# --- rendering --------------------------------------------------------------------------------------
def _fmt_s(ms: float | None) -> str:
    return "?" if ms is None else f"{ms / 1000:.1f}"


def _size(s: SeedReport) -> str:
    c = s.check("size")
    return f"{int(c.measured):,}" if c and isinstance(c.measured, (int, float)) else "?"


def render_markdown(rep: VerifyReport) -> str:
    title = {
        "rerun": "Re-run verification",
        "logs-only": "Shipped-log verification",
        "smoke": "Smoke test",
        "dry-run": "Re-run plan",
    }[rep.mode]
    lines = [f"<!-- pgolf-verify v1 mode={rep.mode} verdict={rep.verdict} -->", f"### {title} — `{rep.folder}`", ""]
    lines.append(f"**Verdict: {rep.verdict.upper()}** — {rep.reason}")
    lines.append("")
    if rep.audit:
        lines.append(f"Audit verdict before the re-run: **{rep.audit.get('verdict')}** — {rep.audit.get('reason', '')}")
        lines.append("")
    if rep.smoke:
        lines.append(f"- {rep.smoke.get('summary')}")
        if rep.smoke.get("detail"):
            lines += ["", "```", rep.smoke["detail"].rstrip(), "```"]
        return "\n".join(lines) + "\n"
    if rep.seeds:
        lines.append("| seed | result | train s | eval s | bytes (artifact+code) | val_bpb | claimed | Δ |")
        lines.append("|---:|---|---:|---:|---:|---:|---:|---:|")
        for s in rep.seeds:
            bpb = s.facts.val_bpb
            d = f"{bpb - s.claimed_bpb:+.6f}" if bpb is not None and s.claimed_bpb is not None else ""
            lines.append(
                f"| {s.seed} | {s.status} | {_fmt_s(s.facts.train_time_ms)} | {_fmt_s(s.facts.eval_time_ms)} | {_size(s)} "
                f"| {'' if bpb is None else f'{bpb:.8f}'} | {'' if s.claimed_bpb is None else f'{s.claimed_bpb:.8f}'} | {d} |"
            )
        lines.append("")
    problems = [
        (s.seed, c) for s in rep.seeds for c in s.checks if c.status in (Status.FAIL, Status.INCONCLUSIVE, Status.WARN)
    ]
    problems += [(None, c) for c in rep.package if c.status != Status.PASS]
    if problems:
        lines.append("<details open><summary>Checks that did not pass</summary>\n")
        for seed, c in problems:
            who = f"seed {seed} " if seed is not None else ""
            lines.append(f"- {MARK[c.status]} {who}**{c.name}** ({c.status.value}): {c.message}")
        lines.append("\n</details>\n")
    if rep.tolerance is not None:
        lines.append(f"Score tolerance: ±{rep.tolerance:.6f} BPB ({rep.tolerance_reason}).")
    if rep.stats:
        st = rep.stats
        if st.mean_bpb is not None:
            sd = f" ± {st.std_bpb:.6f}" if st.std_bpb is not None else ""
            lines.append(f"Re-run mean: {st.mean_bpb:.8f}{sd} BPB over {st.n} seed(s).")
        if st.markdown:
            lines += ["", st.markdown.rstrip()]
        elif st.note:
            lines.append(f"Statistics: {st.note}.")
    lines.append("")
    if rep.mode == "rerun" or rep.mode == "dry-run":
        plan = rep.plan
        lines.append("<details><summary>Conditions</summary>\n")
        lines.append(
            f"- backend: {rep.backend}; {plan.get('nproc')} processes per seed; timeout {plan.get('timeout_s'):.0f} s"
        )
        lines.append(f"- env from {plan.get('env_source') or 'no README run command'}")
        for note in rep.notes:
            lines.append(f"- {note}")
        vers = {(s.run or {}).get("env_info", {}).get(k) for s in rep.seeds for k in ("torch",)} - {None}
        if vers:
            lines.append(f"- torch {', '.join(sorted(vers))}")
        for job in plan.get("jobs", []):
            lines.append(f"- seed {job['seed']}: `{job['shell']}`")
        lines.append("\n</details>\n")
    lines.append("_Automated re-run aid; a failed or inconclusive check is a hypothesis for a human reviewer._")
    return "\n".join(lines) + "\n"


def print_console(rep: VerifyReport, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(stderr=True, highlight=False)
    style = {"verified": "bold green", "failed": "bold red"}.get(rep.verdict, "bold yellow")
    console.print(f"pgolf-verify [{rep.mode}] {rep.folder}", markup=False, highlight=False)
    if rep.audit:
        console.print(f"audit: {rep.audit.get('verdict')} — {rep.audit.get('reason', '')}", markup=False)
    if rep.smoke:
        console.print(rep.smoke.get("summary", ""), markup=False)
        if rep.smoke.get("detail"):
            console.print(rep.smoke["detail"], markup=False)
    if rep.seeds:
        t = Table(show_header=True, header_style="bold")
        for col in ("seed", "result", "train s", "eval s", "bytes", "val_bpb", "claimed"):
            t.add_column(col, justify="right")
        for s in rep.seeds:
            t.add_row(
                str(s.seed),
                s.status,
                _fmt_s(s.facts.train_time_ms),
                _fmt_s(s.facts.eval_time_ms),
                _size(s),
                "" if s.facts.val_bpb is None else f"{s.facts.val_bpb:.6f}",
                "" if s.claimed_bpb is None else f"{s.claimed_bpb:.6f}",
            )
        console.print(t)
        for s in rep.seeds:
            for c in s.checks:
                if c.status in (Status.FAIL, Status.INCONCLUSIVE, Status.WARN):
                    console.print(f"  seed {s.seed} {c.status.value:<12} {c.name}: {c.message}", markup=False)
    for c in rep.package:
        if c.status != Status.PASS:
            console.print(f"  {c.status.value:<12} {c.name}: {c.message}", markup=False)
    if rep.stats and rep.stats.mean_bpb is not None:
        console.print(f"mean val_bpb {rep.stats.mean_bpb:.8f} over {rep.stats.n} seed(s)")
    for n in rep.notes:
        console.print(n, markup=False)
    console.print(f"[{style}]{rep.verdict.upper()}[/] — {escape(rep.reason)}", highlight=False)
