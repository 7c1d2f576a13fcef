"""Assemble a record folder from reference-trainer runs: README.md (run command with every non-default env
var, results per seed), submission.json (baseline keys + per-seed results, all taken from the logs), the
logs, and the exact train_gpt.py that produced them (its byte count must match the logs' `Code size`).

With `pack=True` the script ships as a packed wrapper: the readable script, lzma-compressed and base85-encoded
inside a five-line Python file that decodes and executes it. The runs must have been made with that wrapper
(`pgolf-train pack`), so that the `Code size` their logs count is the wrapper's bytes."""

from __future__ import annotations

import base64
import json
import lzma
import re
import shlex
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
# The trainer's data defaults (the challenge's layout, relative to the folder the run starts in).
DEFAULT_DATA_PATH = "./data/datasets/fineweb10B_sp1024"
DEFAULT_TOKENIZER_PATH = "./data/tokenizers/fineweb_1024_bpe.model"
TRACK_HARDWARE = "8×H100"
LOG_RULE = "\n" + "=" * 100 + "\n"  # closes the source the trainer echoes at the top of its log

# The packed wrapper, byte for byte; `unpack_source` accepts exactly this shape and nothing else. The blob has a
# line of its own, so a traceback through the wrapper quotes the short `exec` line, not the blob.
PACK_HEAD = (
    b"# train_gpt.py packed by pgolf-train: the readable script, lzma-compressed and base85-encoded.\n"
    b"# Read it with `pgolf-train unpack train_gpt.py`.\n"
    b"import base64, lzma\n"
    b'PGOLF_PACKED_SOURCE = "'
)
PACK_TAIL = b'"\nexec(compile(lzma.decompress(base64.b85decode(PGOLF_PACKED_SOURCE)), __file__, "exec"))\n'
B85 = rb"[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]*"
PACKED_RE = re.compile(re.escape(PACK_HEAD) + b"(" + B85 + b")" + re.escape(PACK_TAIL) + rb"\Z")


class PackageError(Exception):
    """Bad input to the packager (reported by the CLI as a one-line error, exit code 2)."""


def pack_source(source: bytes) -> bytes:
    """The packed wrapper for `source` (deterministic for a given liblzma)."""
    return PACK_HEAD + base64.b85encode(lzma.compress(source, preset=9 | lzma.PRESET_EXTREME)) + PACK_TAIL


def unpack_source(data: bytes) -> bytes | None:
    """The script a packed wrapper runs, decoded without executing anything; None when `data` is not exactly
    a wrapper that `pack_source` writes (so nothing else can hide in it)."""
    m = PACKED_RE.match(data)
    if m is None:
        return None
    try:
        return lzma.decompress(base64.b85decode(m[1]))
    except (ValueError, lzma.LZMAError):
        return None


def readable_source(data: bytes) -> bytes:
    """The script itself, or the one a packed wrapper carries."""
    inner = unpack_source(data)
    return data if inner is None else inner


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
    world_size: int | None = None
    device: str | None = None  # cuda | cpu, from the trainer's `hardware` event
    gpu: str | None = None
    echoed_source: str | None = None  # the script source the log starts with (None in a console capture)


def _events(text: str) -> dict[str, object]:
    """The trainer's `:::PGOLF {json}` lines, last value per key."""
    out: dict[str, object] = {}
    for line in text.splitlines():
        if line.startswith(":::PGOLF "):
            try:
                ev = json.loads(line[len(":::PGOLF ") :])
            except json.JSONDecodeError:
                continue
            if isinstance(ev, dict) and "key" in ev:
                out[ev["key"]] = ev.get("value")
    return out


def _echoed_source(text: str) -> str | None:
    """The trainer writes its own source first, closed by a rule of 100 '='; a console capture has none."""
    head, rule, _ = text.partition(LOG_RULE)
    return head if rule and head.startswith(('"""', "#", "from ", "import ")) else None


def read_run(path: str | Path) -> SeedRun:
    from audit.logs import parse_log  # lazy: the auditor is optional for the trainer itself

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
    events = _events(text)
    env = events.get("nondefault_env")
    hardware = events.get("hardware") if isinstance(events.get("hardware"), dict) else {}
    return SeedRun(
        path=p,
        seed=run.seed,
        val_bpb=run.scored.val_bpb,
        val_loss=run.scored.val_loss,
        tag=run.scored.tag,
        artifact_bytes=run.artifact_bytes,
        code_bytes=run.code_bytes,
        steps=last.step if last else None,
        step_avg_ms=(run.train_time_ms / last.step) if (last and last.step and run.train_time_ms) else None,
        train_time_s=run.train_seconds,
        eval_time_s=eval_s,
        env=dict(env) if isinstance(env, dict) else {},
        world_size=run.world_size,
        device=hardware.get("device"),
        gpu=hardware.get("gpu"),
        echoed_source=_echoed_source(text),
    )


def _recipe_env(run: SeedRun) -> dict[str, str]:
    return {k: v for k, v in run.env.items() if k not in PER_RUN_ENV}


def check_runs(runs: list[SeedRun], shipped: bytes) -> None:
    """`shipped` is the train_gpt.py that goes into the folder (the packed wrapper with --pack)."""
    if not runs:
        raise PackageError("no logs given")
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise PackageError(f"duplicate seeds in the logs: {sorted(seeds)}")
    source = readable_source(shipped).decode("utf-8", errors="replace")
    packed = unpack_source(shipped) is not None
    for r in runs:
        if r.code_bytes is not None and r.code_bytes != len(shipped):
            hint = (
                " (run the packed wrapper, `pgolf-train pack`, so that the log counts the bytes that ship)"
                if packed
                else " (the log was not produced by this script)"
            )
            what = "the packed train_gpt.py" if packed else "the script"
            raise PackageError(
                f"{r.path}: logged Code size {r.code_bytes} bytes, but {what} is {len(shipped)} bytes{hint}"
            )
        if r.echoed_source is not None and r.echoed_source != source:
            raise PackageError(f"{r.path}: the source echoed at the top of the log is not the packaged script")
    first = _recipe_env(runs[0])
    for r in runs[1:]:
        if _recipe_env(r) != first:
            diff = sorted(set(first.items()) ^ set(_recipe_env(r).items()))
            raise PackageError(f"{r.path}: settings differ from {runs[0].path}: {diff}")
    for attr, what in (("world_size", "world_size"), ("device", "device"), ("gpu", "GPU")):
        values = {getattr(r, attr) for r in runs}
        if len(values) > 1:
            listed = ", ".join(f"{r.path.name}: {getattr(r, attr)}" for r in runs)
            raise PackageError(f"the logs disagree on the {what} ({listed}): package runs of one setup")


def resolve_nproc(runs: list[SeedRun], nproc: int | None) -> int:
    """The README's `--nproc_per_node` is the logs' world size. An explicit --nproc must agree with it."""
    logged = runs[0].world_size
    if nproc is None:
        return logged or 8
    if logged is not None and nproc != logged:
        raise PackageError(
            f"--nproc {nproc} but the logs say world_size:{logged}: the README's command must be the one that "
            f"produced them (leave out --nproc to take it from the logs, or re-run with {nproc} processes)"
        )
    return nproc


def hardware_text(run: SeedRun, nproc: int) -> str:
    if run.device == "cpu":
        return f"CPU ({nproc} process{'es' if nproc > 1 else ''}, DEVICE=cpu): a functional run, not {TRACK_HARDWARE}"
    if run.device == "cuda":
        text = f"{nproc}×{run.gpu or 'GPU'}"
        track = nproc == 8 and "H100" in (run.gpu or "")
        return text if track else f"{text} (the track's timed runs are {TRACK_HARDWARE})"
    return f"{nproc} process(es), hardware not in the logs"


def reproduction_env(env: dict[str, str], device: str | None) -> tuple[dict[str, str], list[str]]:
    """The logged recipe as a command for the track's machines: CPU-only settings are left out (`DEVICE=cpu`,
    and `COMPILE` of a CPU run, whose default compiles on CUDA), and data paths are rewritten to the challenge's
    layout (`./data/datasets/<name>`, `./data/tokenizers/<name>`; left out when that is the default). Returns
    the env and one note per change."""
    out, notes = {}, []
    for key, value in sorted(env.items()):
        if (key == "DEVICE" and value == "cpu") or (key == "COMPILE" and device == "cpu"):
            notes.append(f"`{key}={value}` left out (CPU-only)")
            continue
        if key in ("DATA_PATH", "TOKENIZER_PATH"):
            folder = "datasets" if key == "DATA_PATH" else "tokenizers"
            layout = f"./data/{folder}/{Path(value).name}"
            default = DEFAULT_DATA_PATH if key == "DATA_PATH" else DEFAULT_TOKENIZER_PATH
            if value != layout:
                notes.append(
                    f"`{key}={value}` (machine-local) "
                    + ("left out: the default layout" if layout == default else f"written as `{layout}`")
                )
            if layout == default:
                continue
            value = layout
        out[key] = value
    return out, notes


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def run_command(env: dict[str, str], seed: int, nproc: int) -> str:
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    prefix = f"{assigns} " if assigns else ""
    return f"{prefix}SEED={seed} torchrun --standalone --nproc_per_node={nproc} train_gpt.py"


def submission_json(
    runs: list[SeedRun],
    *,
    name: str,
    author: str,
    github_id: str,
    blurb: str,
    date: str,
    code_bytes: int,
    hardware: str,
) -> dict:
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
        "hardware": hardware,
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


def readme(runs: list[SeedRun], data: dict, nproc: int, packed: bool) -> str:
    env = _recipe_env(runs[0])
    command_env, notes = reproduction_env(env, runs[0].device)
    ttt = env.get("TTT_ENABLED") == "1"
    stride = env.get("EVAL_STRIDE")
    mode = (
        "legal score-first chunked TTT (each chunk scored under no_grad before training on it)"
        if ttt
        else (f"sliding window, stride {stride}" if stride and stride != "0" else "plain non-overlapping windows")
    )
    lines = [
        f"# {data['name']}",
        "",
        data["blurb"],
        "",
        "Trained and packaged with pgolf's reference trainer (`pgolf-train package`).",
        "",
        "## Results",
        "",
        f"Hardware (from the logs): {data['hardware']}.",
        "",
        "| seed | val_bpb | val_loss | artifact bytes | steps | train time (s) | eval time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.seed} | {r.val_bpb:.8f} | {r.val_loss if r.val_loss is not None else '-'} | "
            f"{r.artifact_bytes if r.artifact_bytes is not None else '-'} | {r.steps} | "
            f"{_fmt(r.train_time_s)} | {_fmt(r.eval_time_s)} |"
        )
    std = f" (std {data['val_bpb_std']:.8f})" if "val_bpb_std" in data else ""
    lines += [
        "",
        f"Mean val_bpb over {len(runs)} seed(s): **{data['val_bpb']:.8f}**{std}.",
        "",
        "## Run command",
        "",
        "```bash",
    ]
    lines += [run_command(command_env, r.seed, nproc) for r in runs]
    lines += ["```", ""]
    if notes:
        lines += ["Changed from the logged settings for the command above: " + "; ".join(notes) + ".", ""]
    lines += ["## Non-default settings (as logged)", ""]
    if env:
        lines += ["| env var | value |", "|---|---|"] + [f"| `{k}` | `{v}` |" for k, v in sorted(env.items())]
    else:
        lines.append("None: the script's defaults (the challenge baseline recipe).")
    lines += [
        "",
        "## Compliance",
        "",
        f"- Score: the round-tripped artifact (written, read back, dequantised into a fresh model); "
        f"scored line `{runs[0].tag}`.",
        f"- Evaluation: {mode}.",
        f"- Artifact: largest total {data['bytes_total']} bytes (code {data['bytes_code']} + model) "
        f"against the {ARTIFACT_CAP_BYTES:,}-byte cap.",
    ]
    if packed:
        lines.append(
            "- Code: `train_gpt.py` is a packed wrapper (the readable script, lzma-compressed and base85-encoded; "
            "`pgolf-train unpack train_gpt.py` prints it). The runs executed this wrapper, and the logs count its "
            "bytes as the code bytes."
        )
    lines += [
        "- No validation data is used for training or calibration; the training clock excludes compile "
        "warm-up and periodic validation, as in the baseline.",
        "",
    ]
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def build_record(
    out_dir: str | Path,
    logs: list[str | Path],
    *,
    script: str | Path | None = None,
    name: str = "pgolf reference trainer run",
    author: str = "",
    github_id: str = "",
    blurb: str = "",
    nproc: int | None = None,
    pack: bool = False,
    date: str | None = None,
) -> Path:
    out = Path(out_dir)
    src = Path(script) if script else (out / "train_gpt.py" if (out / "train_gpt.py").is_file() else REFERENCE_SCRIPT)
    if not src.is_file():
        raise PackageError(f"script not found: {src}")
    shipped = src.read_bytes()
    if pack and unpack_source(shipped) is None:
        shipped = pack_source(shipped)
    packed = unpack_source(shipped) is not None
    runs = sorted((read_run(p) for p in logs), key=lambda r: r.seed)
    check_runs(runs, shipped)
    nproc = resolve_nproc(runs, nproc)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_gpt.py").write_bytes(shipped)
    for r in runs:
        dest = out / f"train_seed{r.seed}.log"
        if r.path.resolve() != dest.resolve():
            shutil.copyfile(r.path, dest)
    date = date or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = submission_json(
        runs,
        name=name,
        author=author,
        github_id=github_id,
        blurb=blurb or f"{name}: reference trainer, {len(runs)} seed(s).",
        date=date,
        code_bytes=len(shipped),
        hardware=hardware_text(runs[0], nproc),
    )
    (out / "submission.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(readme(runs, data, nproc, packed), encoding="utf-8")
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
