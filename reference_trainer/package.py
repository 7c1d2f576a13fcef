"""Assemble a record folder from reference-trainer runs: README.md (run command with every non-default env
var, results per seed), submission.json (baseline keys + per-seed results, all taken from the logs), the
logs, and the exact train_gpt.py that produced them (its byte count must match the logs' `Code size`)."""

from __future__ import annotations

import json
import re
import shutil
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ARTIFACT_CAP_BYTES = 16_000_000
TIME_CAP_S = 600.0
REFERENCE_SCRIPT = Path(__file__).with_name("train_gpt.py")
# Set per run, not per recipe: they may differ between the seeds of one record.
PER_RUN_ENV = ("SEED", "RUN_ID", "ARTIFACT_DIR")
REQUIREMENTS = "torch\nnumpy\nsentencepiece\nzstandard\n"


class PackageError(Exception):
    """Bad input to the packager (reported by the CLI as a one-line error, exit code 2)."""


@dataclass
class SeedRun:
    path: Path
    seed: int
    val_bpb: float
    val_loss: float | None
    tag: str
    artifact_bytes: int | None
    code_bytes: int | None
    steps: int | None
    step_avg_ms: float | None
    train_time_s: float | None
    eval_time_s: float | None
    env: dict[str, str] = field(default_factory=dict)


def _events(text: str) -> dict[str, object]:
    """The trainer's `:::PGOLF {json}` lines, last value per key."""
    out: dict[str, object] = {}
    for line in text.splitlines():
        if line.startswith(":::PGOLF "):
            try:
                ev = json.loads(line[len(":::PGOLF "):])
            except json.JSONDecodeError:
                continue
            if isinstance(ev, dict) and "key" in ev:
                out[ev["key"]] = ev.get("value")
    return out


def read_run(path: str | Path) -> SeedRun:
    from audit.logs import (
        parse_log,  # lazy: the auditor is optional for the trainer itself
    )

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise PackageError(f"cannot read log {p}: {e.strerror}") from None
    run = parse_log(text, str(p)).last
    if run is None or run.scored is None:
        raise PackageError(f"{p}: no scored val_bpb line (is this a finished train_gpt.py log?)")
    if run.seed is None:
        raise PackageError(f"{p}: no seed:N line")
    last = run.last_step
    eval_s, _ = run.eval_seconds()
    env = _events(text).get("nondefault_env")
    tag = run.scored.tag
    source = re.findall(r"^final_score source:(\S+)$", text, re.M)  # the compat copy names its source
    if tag == "final_int8_zlib_roundtrip_exact" and source:
        tag = source[-1]
    return SeedRun(
        path=p,
        seed=run.seed,
        val_bpb=run.scored.val_bpb,
        val_loss=run.scored.val_loss,
        tag=tag,
        artifact_bytes=run.artifact_bytes,
        code_bytes=run.code_bytes,
        steps=last.step if last else None,
        step_avg_ms=(run.train_time_ms / last.step) if (last and last.step and run.train_time_ms) else None,
        train_time_s=run.train_seconds,
        eval_time_s=eval_s,
        env=dict(env) if isinstance(env, dict) else {},
    )


def _recipe_env(run: SeedRun) -> dict[str, str]:
    return {k: v for k, v in run.env.items() if k not in PER_RUN_ENV}


def check_runs(runs: list[SeedRun], script: Path) -> None:
    if not runs:
        raise PackageError("no logs given")
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise PackageError(f"duplicate seeds in the logs: {sorted(seeds)}")
    code_bytes = len(script.read_bytes())
    for r in runs:
        if r.code_bytes is not None and r.code_bytes != code_bytes:
            raise PackageError(f"{r.path}: logged Code size {r.code_bytes} bytes, but {script} is {code_bytes} bytes "
                               "(the log was not produced by this script)")
    first = _recipe_env(runs[0])
    for r in runs[1:]:
        if _recipe_env(r) != first:
            diff = sorted(set(first.items()) ^ set(_recipe_env(r).items()))
            raise PackageError(f"{r.path}: settings differ from {runs[0].path}: {diff}")


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def run_command(env: dict[str, str], seed: int, nproc: int) -> str:
    assigns = " ".join(f"{k}={_shell_quote(v)}" for k, v in sorted(env.items()))
    prefix = f"{assigns} " if assigns else ""
    return f"{prefix}SEED={seed} torchrun --standalone --nproc_per_node={nproc} train_gpt.py"


def _shell_quote(v: str) -> str:
    import shlex

    return shlex.quote(v)


def submission_json(runs: list[SeedRun], *, name: str, author: str, github_id: str, blurb: str, date: str,
                    code_bytes: int) -> dict:
    bpb_mean, bpb_std = _mean_std([r.val_bpb for r in runs])
    losses = [r.val_loss for r in runs if r.val_loss is not None]
    sizes = [r.artifact_bytes for r in runs if r.artifact_bytes is not None]
    env = _recipe_env(runs[0])
    data: dict = {
        "author": author,
        "github_id": github_id,
        "name": name,
        "blurb": blurb,
        "date": date,
        "val_loss": round(statistics.fmean(losses), 8) if losses else None,
        "val_bpb": round(bpb_mean, 8),
        "bytes_total": max(sizes) if sizes else None,
        "bytes_code": code_bytes,
        "track": "10min_16mb",
        "seeds": [r.seed for r in runs],
        "seed_results": {
            str(r.seed): {
                "val_bpb": r.val_bpb,
                "val_loss": r.val_loss,
                "artifact_bytes": r.artifact_bytes,
                "steps": r.steps,
                "step_avg_ms": round(r.step_avg_ms, 2) if r.step_avg_ms else None,
                "train_time_s": round(r.train_time_s, 3) if r.train_time_s is not None else None,
                "eval_time_s": round(r.eval_time_s, 3) if r.eval_time_s is not None else None,
                "scored_line": r.tag,
            }
            for r in runs
        },
        "compliance": {
            "artifact_under_16mb": bool(sizes) and max(sizes) <= ARTIFACT_CAP_BYTES,
            "train_under_600s": all(r.train_time_s is not None and r.train_time_s <= TIME_CAP_S for r in runs),
            "eval_under_600s": all(r.eval_time_s is not None and r.eval_time_s <= TIME_CAP_S for r in runs),
            "score_first_ttt": env.get("TTT_ENABLED") == "1",
            "three_seeds": len(runs) >= 3,
        },
    }
    if bpb_std is not None:
        data["val_bpb_std"] = round(bpb_std, 8)
    return data


def readme(runs: list[SeedRun], data: dict, nproc: int) -> str:
    env = _recipe_env(runs[0])
    ttt = env.get("TTT_ENABLED") == "1"
    stride = env.get("EVAL_STRIDE")
    mode = "legal score-first chunked TTT (each chunk scored under no_grad before training on it)" if ttt else (
        f"sliding window, stride {stride}" if stride and stride != "0" else "plain non-overlapping windows")
    lines = [f"# {data['name']}", "", data["blurb"], "",
             "Trained and packaged with pgolf's reference trainer (`pgolf-train package`).", "", "## Results", "",
             "| seed | val_bpb | val_loss | artifact bytes | steps | train time (s) | eval time (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r.seed} | {r.val_bpb:.8f} | {r.val_loss if r.val_loss is not None else '-'} | "
                     f"{r.artifact_bytes if r.artifact_bytes is not None else '-'} | {r.steps} | "
                     f"{_fmt(r.train_time_s)} | {_fmt(r.eval_time_s)} |")
    std = f" (std {data['val_bpb_std']:.8f})" if "val_bpb_std" in data else ""
    lines += ["", f"Mean val_bpb over {len(runs)} seed(s): **{data['val_bpb']:.8f}**{std}.", "",
              "## Run command", "", "```bash"]
    lines += [run_command(env, r.seed, nproc) for r in runs]
    lines += ["```", "", "## Non-default settings", ""]
    if env:
        lines += ["| env var | value |", "|---|---|"] + [f"| `{k}` | `{v}` |" for k, v in sorted(env.items())]
    else:
        lines.append("None: the script's defaults (the challenge baseline recipe).")
    lines += ["", "## Compliance", "",
              f"- Score: the round-tripped artifact (written, read back, dequantised into a fresh model); "
              f"scored line `{runs[0].tag}`.",
              f"- Evaluation: {mode}.",
              f"- Artifact: largest total {data['bytes_total']} bytes (code {data['bytes_code']} + model) "
              f"against the {ARTIFACT_CAP_BYTES:,}-byte cap.",
              "- No validation data is used for training or calibration; the training clock excludes compile "
              "warm-up and periodic validation, as in the baseline.", ""]
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def build_record(out_dir: str | Path, logs: list[str | Path], *, script: str | Path | None = None,
                 name: str = "pgolf reference trainer run", author: str = "", github_id: str = "",
                 blurb: str = "", nproc: int = 8, date: str | None = None) -> Path:
    out = Path(out_dir)
    src = Path(script) if script else (out / "train_gpt.py" if (out / "train_gpt.py").is_file() else REFERENCE_SCRIPT)
    if not src.is_file():
        raise PackageError(f"script not found: {src}")
    runs = sorted((read_run(p) for p in logs), key=lambda r: r.seed)
    check_runs(runs, src)
    out.mkdir(parents=True, exist_ok=True)
    if src.resolve() != (out / "train_gpt.py").resolve():
        shutil.copyfile(src, out / "train_gpt.py")
    for r in runs:
        dest = out / f"train_seed{r.seed}.log"
        if r.path.resolve() != dest.resolve():
            shutil.copyfile(r.path, dest)
    date = date or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = submission_json(runs, name=name, author=author, github_id=github_id,
                           blurb=blurb or f"{name}: reference trainer, {len(runs)} seed(s).", date=date,
                           code_bytes=len((out / "train_gpt.py").read_bytes()))
    (out / "submission.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(readme(runs, data, nproc), encoding="utf-8")
    (out / "requirements.txt").write_text(REQUIREMENTS, encoding="utf-8")
    return out


def new_record(out_dir: str | Path, *, name: str, author: str = "", github_id: str = "", blurb: str = "") -> Path:
    """A record folder skeleton: the reference train_gpt.py, requirements.txt, a README outline and a
    submission.json with the identity keys (scores are filled in by `build_record`)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PackageError(f"{out} exists and is not an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REFERENCE_SCRIPT, out / "train_gpt.py")
    (out / "requirements.txt").write_text(REQUIREMENTS, encoding="utf-8")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = {"author": author, "github_id": github_id, "name": name, "blurb": blurb, "date": date}
    (out / "submission.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(
        f"# {name}\n\n{blurb}\n\n## Method\n\nDescribe what changed relative to the baseline.\n\n"
        "## Run command\n\n```bash\ntorchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n\n"
        "Run the seeds, then `pgolf-train package . --logs logs/<run>.txt ...` fills in results, the exact "
        "run command and submission.json from the logs.\n",
        encoding="utf-8",
    )
    return out
