"""Plan: what to re-run, with which seeds, env and command — decided before anything is launched.

A plan is pure data. Every backend runs the same `SeedJob` (one seed, one node, one torchrun), so what
`--dry-run` prints is exactly what runs.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from audit.checks.claims import check_claims, value_matches
from audit.checks.size import shipped_code
from audit.errors import InputError
from audit.load.folder import Folder, load_folder
from audit.load.resolve import Sources, resolve
from audit.load.runcmd import effective_env

from .checks import LogFacts, claimed_stage, log_facts
from .environment import PythonNeed, required_python
from .runs import ShippedRun, order_runs

DEFAULT_SEEDS = (42, 314, 1234)  # the official re-run's seeds
DEFAULT_NPROC = 8
DEFAULT_TIMEOUT_S = 40 * 60  # the official re-run's per-seed limit
# Variables the verifier owns for every seed: the README's values for these are replaced.
OWNED_ENV = ("SEED", "RUN_ID")
# Launcher variables inherited from an outer job (submitit, Slurm) that would confuse torchrun --standalone.
LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


@dataclass(frozen=True)
class SeedJob:
    """Everything one seed's launch needs; picklable, so submitit can ship it to a node."""

    seed: int
    run_id: str
    source_dir: str  # the submission folder (read only)
    seed_dir: str  # <out>/seeds/seed_<seed>: console log, artifacts, result.json
    entry: str  # entry script, relative to the folder
    argv: tuple[str, ...]  # exact command, run with cwd = work_dir
    env: tuple[tuple[str, str], ...]  # variables set on top of the inherited environment
    timeout_s: float
    code_files: tuple[str, ...]
    fingerprint: str  # what the ledger compares on resume

    @property
    def work_dir(self) -> str:
        return str(Path(self.seed_dir) / "work")

    def shell(self) -> str:
        """The command as one shell line (for --dry-run and the report)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        return f"cd {shlex.quote(self.work_dir)} && {env} timeout -s TERM {int(self.timeout_s)} " + shlex.join(
            self.argv
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["env"] = dict(self.env)
        d["argv"] = list(self.argv)
        d["work_dir"] = self.work_dir
        d["shell"] = self.shell()
        return d


@dataclass
class ClaimedScores:
    """What the submission says it scored, per seed and overall: the numbers the re-runs are checked
    against (the auditor's `audit.checks.claims.Claims` keeps every claimed value with where it was written)."""

    per_seed: dict[int, float] = field(default_factory=dict)  # seed -> val_bpb
    mean_bpb: float | None = None
    source: str = ""  # where the per-seed values came from

    def to_dict(self) -> dict:
        return {
            "per_seed": {str(k): v for k, v in self.per_seed.items()},
            "mean_bpb": self.mean_bpb,
            "source": self.source,
        }


@dataclass
class Plan:
    folder: str
    out: str
    entry: str
    nproc: int
    seeds: list[int]
    seeds_source: str  # explicit | logs | default | logs+default
    env: dict[str, str]  # from the README run command, plus --data-path/--env overrides
    env_source: str  # the README line the env came from
    timeout_s: float
    code_files: list[str]
    code_sha256: dict[str, str]
    code_bytes: int
    claims: ClaimedScores
    jobs: list[SeedJob]
    shipped_logs: dict[str, str] = field(default_factory=dict)  # path -> text (for --logs-only)
    logged_scores: dict[int, float] = field(default_factory=dict)  # seed -> val_bpb the shipped logs print
    runs: list[ShippedRun] = field(default_factory=list)  # the shipped runs, which count (latest per seed)
    claimed_logs: list[str] = field(default_factory=list)  # the logs the claims point at (all when none match)
    python: str = sys.executable  # the interpreter the seeds run under
    python_need: PythonNeed | None = None  # what the record's code needs beyond Python 3.11
    requirements: str = ""  # requirements.txt as shipped ("" when none)
    code_data: bytes = field(default=b"", repr=False)  # the code files as shipped, concatenated
    claimed_tags: dict[int, str] = field(default_factory=dict)  # seed -> the stage the claim names, when not the last

    def to_dict(self) -> dict:
        return {
            "folder": self.folder,
            "out": self.out,
            "entry": self.entry,
            "nproc": self.nproc,
            "seeds": self.seeds,
            "seeds_source": self.seeds_source,
            "env": self.env,
            "env_source": self.env_source,
            "timeout_s": self.timeout_s,
            "code_files": self.code_files,
            "code_sha256": self.code_sha256,
            "code_bytes": self.code_bytes,
            "claims": self.claims.to_dict(),
            "logged_scores": {str(k): v for k, v in self.logged_scores.items()},
            "replaced_runs": {r.path: {"by": r.replaced_by, "why": r.why} for r in self.runs if not r.counts},
            "claimed_logs": self.claimed_logs,
            "python": self.python,
            "python_need": self.python_need.describe() if self.python_need else None,
            "requirements": bool(self.requirements),
            "jobs": [j.to_dict() for j in self.jobs],
        }


def with_python(plan: Plan, python: str) -> Plan:
    """The same plan run under another interpreter (fingerprints unchanged: they leave the interpreter out)."""
    jobs = [replace(j, argv=(python, *j.argv[1:])) for j in plan.jobs]
    return replace(plan, python=python, jobs=jobs)


# --- pieces of the plan --------------------------------------------------------------------------
def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def readme_env(sub: Folder) -> tuple[dict[str, str], str]:
    """Env vars of the README's record run command (audit.runcmd decides which command that is)."""
    env, cmd = effective_env(sub.readme_text)
    return dict(env), (f"README.md:{cmd.lineno}: {cmd.text}" if cmd else "")


def shipped_logs(sub: Folder) -> dict[str, str]:
    return {p: sub.text(p) for p in sub.log_files}


def shipped_runs(logs: dict[str, str], code_bytes: int) -> list[ShippedRun]:
    """The last run of each shipped log, and which of them count (a re-run replaces the earlier run of its seed)."""
    return order_runs({p: log_facts(text) for p, text in logs.items()}, code_bytes)


def logged_scores(runs: list[ShippedRun], claimed: dict[int, float] | None = None) -> dict[int, float | None]:
    """Seed -> scored val_bpb of the run that counts for each seed (None when it printed no score), at the stage
    the claim names when the log prints it (`checks.claimed_stage`)."""
    out: dict[int, float | None] = {}
    for r in runs:
        if r.counts and r.seed is not None and out.get(r.seed) is None:
            out[r.seed] = claimed_stage(r.facts, (claimed or {}).get(r.seed)).val_bpb
    return dict(sorted(out.items()))


def claimed_logs(claims, facts: dict[str, LogFacts]) -> list[str]:
    """The logs whose run prints a claimed score (the auditor's `relevant` runs); every log when none does."""
    if claims is None:
        return list(facts)
    wanted = [c for c in (claims.headline_bpb, claims.readme_bpb) if c]
    wanted += [v for vals in claims.per_seed_bpb.values() for v in vals]
    hit = [
        p
        for p, f in facts.items()
        if f.run_log is not None and any(value_matches(c, m.val_bpb) for c in wanted for m in f.run_log.metrics)
    ]
    return hit or list(facts)


def choose_seeds(count: int | None, explicit: list[int] | None, from_logs: list[int]) -> tuple[list[int], str]:
    if explicit:
        if len(set(explicit)) != len(explicit):
            raise InputError(f"--seeds lists a seed twice: {explicit}")
        return list(explicit), "explicit"
    n = count if count is not None else max(len(from_logs), len(DEFAULT_SEEDS))
    seeds = from_logs[:n]
    source = "logs"
    for s in DEFAULT_SEEDS:
        if len(seeds) >= n:
            break
        if s not in seeds:
            seeds.append(s)
            source = "logs+default" if from_logs else "default"
    k = 1
    while len(seeds) < n:  # more seeds asked for than logs + defaults provide
        if k not in seeds:
            seeds.append(k)
        k += 1
    return seeds, source


def claimed_scores(sub: Folder, sources: Sources, logs: dict[str, str], rep=None) -> ClaimedScores:
    """Per-seed claims as written (README tables, submission.json), else the values the shipped logs print.

    The auditor's claim checker reads the written claims and the per-seed scores of the logs;
    submission.json's `seed_results` and our own log reading are the fallbacks when it finds none.
    `source` says which, because a claim read from a log cannot be checked against that same log."""
    claims = ClaimedScores()
    rep = rep if rep is not None else check_claims(sub, sources)
    written = rep.claims.per_seed_bpb if rep.claims is not None else {}
    for seed, vals in written.items():
        if vals and _is_num(vals[0].value):
            claims.per_seed[int(seed)] = float(vals[0].value)
    if claims.per_seed:
        claims.source = "written claims (README / submission.json)"
    from_logs: dict[int, float] = {}
    summary = rep.summary
    if summary is not None:
        if _is_num(summary.claimed_bpb):
            claims.mean_bpb = float(summary.claimed_bpb)
        from_logs = {int(k): float(v) for k, v in (summary.per_seed or {}).items() if _is_num(v)}
    meta = sub.submission_json or {}
    if claims.mean_bpb is None and _is_num(meta.get("val_bpb")):
        claims.mean_bpb = float(meta["val_bpb"])
    if not claims.per_seed and isinstance(meta.get("seed_results"), dict):
        for k, v in meta["seed_results"].items():
            bpb = v.get("val_bpb") if isinstance(v, dict) else v
            if _is_num(bpb) and str(k).strip().lstrip("-").isdigit():
                claims.per_seed[int(str(k).strip())] = float(bpb)
        if claims.per_seed:
            claims.source = "submission.json seed_results"
    if not claims.per_seed:
        if not from_logs:
            for text in logs.values():
                f = log_facts(text)
                if f.seed is not None and f.val_bpb is not None:
                    from_logs[f.seed] = f.val_bpb
        claims.per_seed = dict(sorted(from_logs.items()))
        if claims.per_seed:
            claims.source = "shipped logs"
    return claims


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def job_fingerprint(
    seed: int, entry: str, argv: tuple[str, ...], env: dict[str, str], code_sha256: dict[str, str]
) -> str:
    """Changes when anything that decides a seed's outcome changes (timeout excluded: it only bounds it)."""
    stable_argv = list(argv[1:])  # the interpreter's path is not the command: --python/--venv change where, not what
    blob = json.dumps([seed, entry, stable_argv, sorted(env.items()), sorted(code_sha256.items())])
    return sha256(blob.encode())[:16]


def make_plan(
    folder: str,
    out: str,
    *,
    seed_count: int | None = None,
    seeds: list[int] | None = None,
    nproc: int = DEFAULT_NPROC,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    data_path: str | None = None,
    tokenizer_path: str | None = None,
    env_overrides: dict[str, str] | None = None,
    python: str = sys.executable,
    sub: Folder | None = None,
    need_entry: bool = True,
) -> Plan:
    """The plan for the record folder `folder` (read from disk, or given as `sub`: a folder read from git).
    Without `need_entry` (--logs-only) a folder with no entry script plans no jobs: its logs are still checked."""
    sub = sub if sub is not None else load_folder(folder)
    src = resolve(sub)
    if not src.entry and (need_entry or not sub.log_files):
        raise InputError(f"{folder}: no Python entry script found" + ("" if need_entry else " and no logs to check"))
    env, env_source = readme_env(sub)
    for k in OWNED_ENV:
        env.pop(k, None)
    if data_path:
        env["DATA_PATH"] = str(Path(data_path).resolve())
    if tokenizer_path:
        env["TOKENIZER_PATH"] = str(Path(tokenizer_path).resolve())
    env.update(env_overrides or {})
    logs = shipped_logs(sub)
    runs = shipped_runs(logs, src.code_bytes)
    logged = logged_scores(runs)
    chosen, seeds_source = choose_seeds(seed_count, seeds, list(logged))
    code_sha = {p: sha256(sub.files[p]) for p in src.code_files if p in sub.files}
    argv = (python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", src.entry or "")
    claims_rep = check_claims(sub, src)
    claims = claimed_scores(sub, src, logs, claims_rep)
    logged = logged_scores(runs, claims.per_seed)
    tags = {}
    for r in runs:
        if r.counts and r.seed is not None and r.seed in claims.per_seed:
            f = claimed_stage(r.facts, claims.per_seed[r.seed])
            if f.stage_note:
                tags[r.seed] = f.scored_tag
    req = sub.find("requirements.txt")
    out_abs = str(Path(out).resolve())
    jobs = []
    for s in chosen if src.entry else []:
        run_id = f"pgolf_verify_seed{s}"
        job_env = {**env, "SEED": str(s), "RUN_ID": run_id}
        jobs.append(
            SeedJob(
                seed=s,
                run_id=run_id,
                source_dir=str(Path(folder).resolve()),
                seed_dir=str(Path(out_abs) / "seeds" / f"seed_{s}"),
                entry=src.entry,
                argv=argv,
                env=tuple(sorted(job_env.items())),
                timeout_s=float(timeout_s),
                code_files=tuple(src.code_files),
                fingerprint=job_fingerprint(s, src.entry, argv, job_env, code_sha),
            )
        )
    return Plan(
        folder=sub.name,
        out=out_abs,
        entry=src.entry or "",
        nproc=nproc,
        seeds=chosen,
        seeds_source=seeds_source,
        env=env,
        env_source=env_source,
        timeout_s=float(timeout_s),
        code_files=list(src.code_files),
        code_sha256=code_sha,
        code_bytes=src.code_bytes,
        claims=claims,
        jobs=jobs,
        shipped_logs=logs,
        logged_scores={k: v for k, v in logged.items() if v is not None},
        runs=runs,
        claimed_logs=claimed_logs(claims_rep.claims, {r.path: r.facts for r in runs}),
        python=python,
        python_need=required_python(src.sources),
        requirements=sub.text(req) if req else "",
        code_data=shipped_code(sub.files, src.code_files),
        claimed_tags=tags,
    )
