"""pgolf-verify: re-run a submission's seeds, check the caps, confirm the claimed scores.

Exit codes: 0 verified (or a dry run), 1 a check failed or the result is inconclusive (a seed crashed, timed
out, or the verifier was interrupted), 2 usage or unreadable input, a sandbox that cannot run, an environment
that cannot run the record (no Slurm for --backend slurm, a Python too old for its code, unmet requirements),
or an internal error (always one line on stderr, never a traceback), 130 interrupted before a result.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from audit.clirun import VERSION, run_click
from audit.errors import InputError
from audit.load.folder import load_folder
from audit.load.resolve import resolve

from .backends import Backend
from .backends.local import LocalBackend
from .backends.slurm import SlurmBackend, parse_time
from .environment import (
    install_requirements,
    probe,
    python_for,
    required_python,
    requirements_problems,
    torch_warning,
    version_problem,
)
from .launch import write_json_atomic
from .ledger import Ledger
from .plan import make_plan, with_python
from .report import (
    VerifyReport,
    build_report,
    logs_evidence,
    print_console,
    rerun_evidence,
)
from .smoke import SandboxUnavailableError, smoke_test


def _parse_seeds(text: str | None) -> tuple[int | None, list[int] | None]:
    """`3` is a count; `42,314,1234` (or `7,`) is an explicit list."""
    if text is None:
        return None, None
    t = text.strip()
    try:
        if "," in t:
            seeds = [int(x) for x in t.split(",") if x.strip()]
            if not seeds:
                raise ValueError
            return None, seeds
        n = int(t)
    except ValueError:
        raise click.BadParameter(f"{text!r}: give a count (3) or a comma-separated list (42,314,1234)") from None
    if n < 1:
        raise click.BadParameter("the seed count must be at least 1")
    return n, None


def _parse_floats(text: str | None, what: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{what}: {text!r} is not a comma-separated list of numbers") from None


def _kv(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not eq or not k:
            raise click.BadParameter(f"{what} {item!r}: expected KEY=VALUE")
        out[k] = v
    return out


def _ignore_selectors(text: str | None) -> set[str] | None:
    """--ignore as the audit reads it (codes, prefixes, names or categories); an unknown one is a usage error."""
    if not text:
        return None
    from audit.codes import select_codes
    from audit.rules import CODES

    selectors = {c.strip() for c in text.split(",") if c.strip()}
    select_codes(selectors, CODES)  # raises InputError with a suggestion for a typo
    return selectors


def _audit_summary(path: str, ignore: set[str] | None = None) -> dict:
    try:
        from audit.api import audit_folder

        rep = audit_folder(path, ignore=ignore) if ignore else audit_folder(path)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - the audit gates GPU time; a bug in it must not stop verification
        return {"verdict": "unknown", "reason": f"audit failed inside pgolf: {type(e).__name__}: {e}", "categories": []}
    out = {"verdict": rep.verdict, "reason": rep.reason, "categories": list(rep.categories)}
    if ignore:
        out["ignored"] = sorted(ignore)
    return out


def _emit(rep: VerifyReport, fmt: str, output: str | None, quiet: bool) -> None:
    if not quiet:
        print_console(rep)
    if fmt == "text" and not output:
        return
    text = rep.to_markdown() if fmt == "markdown" else json.dumps(rep.to_dict(), indent=2) + "\n"
    if fmt == "text":  # --output with the default format: write JSON there
        text = json.dumps(rep.to_dict(), indent=2) + "\n"
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)


def _save(rep: VerifyReport, out: str) -> None:
    """The report next to the ledger, so a crash after this point loses nothing."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    write_json_atomic(d / "report.json", rep.to_dict())
    (d / "report.md").write_text(rep.to_markdown())


def _raise_on_term(signum, frame):  # SIGTERM (a scheduler, `kill`) cleans up like Ctrl-C
    raise KeyboardInterrupt


def _backend(name: str, o: dict) -> Backend:
    if name == "local":
        return LocalBackend(pause_s=o["pause"])
    cluster = None if o["slurm_cluster"] == "auto" else o["slurm_cluster"]
    time_min = None
    if o["time"]:
        try:
            time_min = parse_time(o["time"])
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--time") from None
        if time_min * 60 < o["timeout_min"] * 60:
            raise click.BadParameter(
                f"{o['time']} ({time_min} min) is shorter than --timeout-min {o['timeout_min']:g}: Slurm would kill "
                "a seed before the verifier's own limit (leave it out: timeout + 10 min)",
                param_hint="--time",
            )
    return SlurmBackend(
        folder=str(Path(o["out"]).resolve() / "submitit"),
        cluster=cluster,
        gpus_per_node=o["gpus_per_node"] if o["gpus_per_node"] is not None else o["nproc"],
        cpus_per_task=o["cpus_per_task"],
        mem=o["mem"],
        time_min=time_min,
        partition=o["partition"],
        parallelism=o["slurm_parallelism"],
        poll_s=o["poll"],
        additional=_kv(o["slurm_param"], "--slurm-param"),
    )


def _environment(plan, o: dict, *, strict: bool) -> list[str]:
    """The record's environment against the seeds' interpreter, before anything is launched: a Python too old
    for the code, requirements.txt not met (errors when `strict`, else notes), a CPU-only torch (a warning)."""
    notes: list[str] = []
    p = probe(plan.python)
    if p.error and p.version == (0, 0, 0):
        raise InputError(f"the seeds' Python cannot run: {p.error}")
    notes.append(f"python: {plan.python} ({p.version_text}, torch {p.torch or 'none'}, CUDA {p.torch_cuda or 'none'})")
    problem = version_problem(plan.python_need, p)
    if problem:
        if strict:
            raise InputError(problem)
        notes.append(f"error before launch: {problem}")
    if plan.requirements:
        unmet = requirements_problems(plan.requirements, p)
        if unmet:
            msg = f"requirements.txt not met by {plan.python}: " + "; ".join(unmet)
            if strict and not o["ignore_requirements"]:
                raise InputError(
                    msg + " (--install-requirements builds a per-record venv from it; --venv/--python pick another "
                    "interpreter; --ignore-requirements runs anyway)"
                )
            notes.append(("warning: " if o["ignore_requirements"] else "error before launch: ") + msg)
        else:
            notes.append("requirements.txt: met")
    warn = torch_warning(p)
    if warn:
        notes.append(f"warning: {warn}")
    return notes


def _requirements_file(path: str, o: dict) -> Path | None:
    """requirements.txt for --install-requirements (checked before any work), else None."""
    if not o["install_requirements"]:
        return None
    req = Path(path) / "requirements.txt"
    if not req.is_file():
        raise InputError(f"--install-requirements: {path} ships no requirements.txt")
    return req


def _install(plan, req: Path, o: dict):
    """The plan under a per-record venv built from requirements.txt (after the audit gate: no venv for a flagged
    record). The interpreter is not part of a seed's fingerprint, so a ledger stays valid."""
    venv = Path(o["out"]).resolve() / "venv"
    if not o["quiet"]:
        click.echo(
            f"pgolf-verify: installing {req.name} into {venv} (log: {venv.parent / 'venv-install.log'})", err=True
        )
    return with_python(plan, install_requirements(plan.python, req, venv))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="pgolf-verify")
@click.argument("path", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--seeds", "seeds_text", help="Seed count (3: the logs' seeds, else 42, 314, 1234) or a list (42,314,1234)."
)
@click.option("--out", help="Working folder: ledger.json, per-seed logs and artifacts, report. Re-use it to resume.")
@click.option("--backend", type=click.Choice(["local", "slurm"]), default="local", show_default=True)
@click.option("--nproc", type=click.IntRange(1), default=8, show_default=True, help="torchrun --nproc_per_node.")
@click.option(
    "--timeout-min",
    type=click.FloatRange(min=0, min_open=True),
    default=40.0,
    show_default=True,
    help="Per-seed limit; the whole process tree is killed past it.",
)
@click.option("--data-path", help="DATA_PATH for the runs (the FineWeb shards on this machine).")
@click.option("--tokenizer-path", help="TOKENIZER_PATH for the runs.")
@click.option(
    "--env", "env_items", multiple=True, metavar="NAME=VALUE", help="Extra env var for every seed (repeatable)."
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    help="Allowed |re-run − claimed| BPB per seed (default: from the claimed seeds' spread).",
)
@click.option("--min-seeds", type=click.IntRange(1), default=3, show_default=True)
@click.option("--sota", type=float, help="SOTA BPB for the one-sample test.")
@click.option("--baseline", "baseline_text", help="Per-seed BPB of the record to beat, comma-separated (Welch test).")
@click.option("--margin-nats", type=float, help="Improvement margin in nats (stats default when omitted).")
@click.option("--dry-run", is_flag=True, help="Print the plan and the exact commands; run nothing.")
@click.option("--logs-only", is_flag=True, help="No GPU: re-check the shipped logs and claims.")
@click.option(
    "--smoke", is_flag=True, help="No GPU: import the entry script and run a tiny CPU forward in a bubblewrap sandbox."
)
@click.option(
    "--unsafe-smoke",
    is_flag=True,
    help="--smoke, falling back to the weaker guard (rlimits + socket guard) where bubblewrap cannot run.",
)
@click.option("--force", is_flag=True, help="Re-run even when the audit flags the submission.")
@click.option("--no-audit", is_flag=True, help="Skip the static audit before the re-run.")
@click.option(
    "--ignore",
    "ignore_text",
    metavar="SELECTORS",
    help="Drop these audit codes before the gate (comma-separated codes, prefixes, names or categories, as "
    "pgolf-audit --ignore), e.g. PG230 for a record on synthetic data.",
)
@click.option("--python", help="Interpreter the seeds (and the smoke test) run under (default: this one).")
@click.option("--venv", help="Virtual environment the seeds run under (its bin/python).")
@click.option(
    "--install-requirements",
    is_flag=True,
    help="Build <out>/venv from the record's requirements.txt (from --python/--venv's interpreter) and run there.",
)
@click.option(
    "--ignore-requirements", is_flag=True, help="Launch even when the interpreter does not meet requirements.txt."
)
@click.option("--retry-failed", is_flag=True, help="On resume, run crashed or timed-out seeds again.")
@click.option(
    "--pause",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Local backend: seconds between seeds.",
)
@click.option(
    "--slurm-cluster",
    type=click.Choice(["auto", "slurm", "local"]),
    default="auto",
    show_default=True,
    help="auto/slurm: Slurm, which must be reachable (else exit 2); `local` runs the Slurm code path on this "
    "machine, every seed at once (tests only).",
)
@click.option("--partition")
@click.option("--gpus-per-node", type=click.IntRange(0), help="Slurm GPUs per node (default: --nproc).")
@click.option(
    "--cpus-per-task",
    type=click.IntRange(1),
    help="Slurm CPUs for a seed's task (default: 8 per GPU, 64 on an 8-GPU node).",
)
@click.option("--mem", default="0", show_default=True, help="Slurm memory per node (0: all of it; or 512G, 1T …).")
@click.option("--time", help="Slurm time limit per seed: minutes or [D-]HH:MM:SS (default: --timeout-min + 10 min).")
@click.option("--slurm-parallelism", type=click.IntRange(0), default=0, help="Most seeds at once (0: all).")
@click.option("--slurm-param", multiple=True, metavar="KEY=VALUE", help="Extra sbatch parameter (account=…, qos=…).")
@click.option(
    "--poll", type=click.FloatRange(min=0.1), default=5.0, show_default=True, help="Slurm polling interval, seconds."
)
@click.option("--smoke-timeout", type=click.FloatRange(min=1), default=180.0, show_default=True)
@click.option("--smoke-memory-mb", type=click.IntRange(256), default=4096, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
@click.option(
    "--output", type=click.Path(dir_okay=False), help="Write the json/markdown report here instead of stdout."
)
@click.option("--quiet", "-q", is_flag=True, help="No console report on stderr.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 whatever the verdict (usage errors still exit 2).")
def cli(path: str, seeds_text, out, backend, fmt, output, quiet, exit_zero, **o) -> None:
    """Re-run the seeds of the record folder PATH and check caps and claimed scores."""
    count, explicit = _parse_seeds(seeds_text)
    o["quiet"] = quiet
    o["smoke"] = o["smoke"] or o["unsafe_smoke"]
    modes = [m for m in ("dry_run", "logs_only", "smoke") if o[m]]
    if len(modes) > 1:
        raise click.UsageError("--dry-run, --logs-only and --smoke exclude each other")
    if not Path(path).is_dir():
        raise InputError(f"{path}: not a directory (give a record folder)")
    o["smoke_log"] = str(Path(out) / "smoke.log") if out else None  # the smoke writes files only where asked
    out = out or str(Path("pgolf-verify-out") / (Path(path).resolve().name or "submission"))
    o["out"] = out
    baseline = _parse_floats(o["baseline_text"], "--baseline")
    env_overrides = _kv(o["env_items"], "--env")
    ignore = _ignore_selectors(o["ignore_text"])
    if backend == "slurm" and not o["logs_only"] and not o["smoke"]:
        be = _backend(backend, o)  # --time and friends are checked, and Slurm is there, before any work
        if not o["dry_run"]:
            be.check()

    if o["smoke"]:
        rep = _smoke(path, o)
        _emit(rep, fmt, output, quiet)
        sys.exit(0 if exit_zero else rep.exit_code)

    requirements = None if o["logs_only"] or o["dry_run"] else _requirements_file(path, o)
    python = python_for(o["python"], o["venv"])
    plan = make_plan(
        path,
        out,
        seed_count=count,
        seeds=explicit,
        nproc=o["nproc"],
        timeout_s=o["timeout_min"] * 60,
        data_path=o["data_path"],
        tokenizer_path=o["tokenizer_path"],
        env_overrides=env_overrides,
        python=python,
        need_entry=not o["logs_only"],
    )
    audit = {} if o["no_audit"] else _audit_summary(path, ignore)
    report_kw = dict(
        audit=audit,
        tolerance=o["tolerance"],
        min_seeds=o["min_seeds"],
        sota=o["sota"],
        baseline=baseline,
        margin_nats=o["margin_nats"],
    )

    if o["dry_run"]:
        be = _backend(backend, o)
        rep = VerifyReport(
            mode="dry-run",
            folder=plan.folder,
            verdict="planned",
            reason=f"{len(plan.jobs)} seed(s) planned",
            plan=plan.to_dict(),
            backend=be.description,
            audit=audit,
            notes=_environment(plan, o, strict=False),
        )
        if not quiet:
            _print_plan(plan, rep, be)
        if fmt != "text" or output:
            _emit(rep, fmt, output, quiet=True)
        sys.exit(0)

    if o["logs_only"]:
        rep = build_report("logs-only", plan, logs_evidence(plan), **report_kw)
        _emit(rep, fmt, output, quiet)
        sys.exit(0 if exit_zero else rep.exit_code)

    if audit.get("verdict") == "flag" and not o["force"]:
        rep = VerifyReport(
            mode="rerun",
            folder=plan.folder,
            verdict="not-run",
            plan=plan.to_dict(),
            audit=audit,
            reason="the audit flags this submission; not worth GPU time (use --force to re-run anyway)",
        )
        _emit(rep, fmt, output, quiet)
        sys.exit(0 if exit_zero else 1)

    if requirements is not None:
        plan = _install(plan, requirements, o)
    env_notes = _environment(plan, o, strict=True)
    rep = _rerun(plan, backend, o, report_kw, [n for n in env_notes if n.startswith("warning: ")])
    if rep is not None:
        rep.notes[:0] = env_notes
    if rep is None:
        sys.exit(0 if exit_zero else 1)
    _save(rep, out)
    _emit(rep, fmt, output, quiet)
    sys.exit(0 if exit_zero else rep.exit_code)


def _rerun(plan, backend_name: str, o: dict, report_kw: dict, warnings: list[str] = ()) -> VerifyReport | None:
    be = _backend(backend_name, o)
    ledger = Ledger.open(plan)
    for w in warnings:  # after the last one-line error could have stopped us: the run is starting
        click.echo(f"pgolf-verify: {w}", err=True)
    previous = signal.signal(signal.SIGTERM, _raise_on_term)
    try:
        todo = ledger.pending(plan.jobs, retry_failed=o["retry_failed"])
        skipped = len(plan.jobs) - len(todo)
        if skipped:
            click.echo(f"resuming {ledger.path}: {skipped} seed(s) already finished, {len(todo)} to run", err=True)
        be.run(todo, ledger)
    except KeyboardInterrupt:
        ledger.save()
        click.echo(
            f"interrupted: the ledger {ledger.path} is consistent; run the same command again to resume", err=True
        )
        return None
    finally:
        signal.signal(signal.SIGTERM, previous)
        ledger.close()
    results = ledger.results(plan.jobs)
    missing = [j.seed for j in plan.jobs if j.seed not in results]
    rep = build_report(
        "rerun", plan, rerun_evidence(plan, results), backend=be.description, missing=missing, **report_kw
    )
    return rep


def _smoke(path: str, o: dict) -> VerifyReport:
    sub = load_folder(path)
    src = resolve(sub)
    if not src.entry:
        raise InputError(f"{path}: no Python entry script found")
    if o["smoke_log"]:
        try:
            Path(o["smoke_log"]).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{Path(o['smoke_log']).parent}: cannot use it as --out ({e.strerror or e})") from None
    req = sub.find("requirements.txt")
    try:
        res = smoke_test(
            path,
            src.entry,
            code_files=list(src.code_files),
            timeout_s=o["smoke_timeout"],
            memory_mb=o["smoke_memory_mb"],
            python=python_for(o["python"], o["venv"]),
            unsafe=o["unsafe_smoke"],
            log_path=o["smoke_log"],
            python_need=required_python(src.sources),
            requirements=sub.text(req) if req else "",
        )
    except SandboxUnavailableError as e:
        raise InputError(
            f"--smoke runs the submission only inside a bubblewrap sandbox, and there is none here: "
            f"{str(e).rstrip('.')}. Install it (apt-get install bubblewrap; it needs user namespaces), or pass "
            "--unsafe-smoke to run the submission under the weaker guard (rlimits + socket guard: no filesystem, "
            "process or environment isolation)"
        ) from None
    notes = res.notes + ([f"output: {res.log_path}"] if res.log_path else [])
    if res.standins:
        notes.append("CPU stand-ins used (sandbox only): " + ", ".join(res.standins))
    if res.category:
        notes.append(f"failure class: {res.category} — {res.why}")
    detail = "\n".join(notes + ([res.detail] if res.detail else []))
    verdict = "verified" if res.ok else ("inconclusive" if res.category == "environment" else "failed")
    return VerifyReport(
        mode="smoke",
        folder=sub.name,
        verdict=verdict,
        reason=res.summary,
        smoke={**res.to_dict(), "summary": f"{res.summary} (sandbox: {res.sandbox})", "detail": detail},
    )


def _print_plan(plan, rep: VerifyReport, be: Backend | None = None) -> None:
    from rich.console import Console

    c = Console(stderr=True, highlight=False)
    c.print(
        f"plan for {plan.folder}: entry {plan.entry}, {len(plan.jobs)} seed(s) ({plan.seeds_source}), "
        f"{plan.nproc} processes each, timeout {plan.timeout_s:.0f} s, backend {rep.backend}",
        markup=False,
    )
    c.print(f"env from: {plan.env_source or 'no README run command'}", markup=False)
    if rep.audit:
        c.print(f"audit: {rep.audit.get('verdict')} — {rep.audit.get('reason', '')}", markup=False)
    claims = plan.claims
    if claims.per_seed:
        c.print(
            f"claimed ({claims.source}): " + ", ".join(f"{s}: {v:.8f}" for s, v in claims.per_seed.items()),
            markup=False,
        )
    for p, h in plan.code_sha256.items():
        c.print(f"code {p} sha256 {h}", markup=False)
    for note in rep.notes:
        c.print(note, markup=False)
    if be is not None and isinstance(be, SlurmBackend):
        c.print("sbatch (per seed): " + " ".join(be.sbatch_flags(plan.timeout_s)), markup=False, soft_wrap=True)
    for job in plan.jobs:
        c.print(job.shell(), markup=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Whatever happens, one line on stderr and an exit code: never a traceback."""
    run_click(cli, "pgolf-verify", argv, (InputError,))


if __name__ == "__main__":
    main()
