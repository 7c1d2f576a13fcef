"""Smoke test without a GPU: import the entry script and run a tiny CPU forward pass, the way reviewers'
smoke tests do, and report "import OK in N s" or the exact failure (a BOM, a path bug, a CUDA-only call).

The submission's code runs only here and only in a child process: in a scratch copy of the folder, with
no network (a fresh network namespace when `unshare` allows it, and a socket guard either way), an
address-space, CPU-time and file-size limit, and a wall-clock timeout that kills its process group.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_TIMEOUT_S = 180.0
DEFAULT_MEMORY_MB = 4096
FILE_LIMIT_BYTES = 512 * 1024 * 1024
MARKER = "PGOLF_SMOKE "
# A tiny model through the baseline's env var names; scripts that read other names keep their defaults.
TINY_ENV = {
    "VOCAB_SIZE": "64",
    "NUM_LAYERS": "2",
    "MODEL_DIM": "64",
    "NUM_HEADS": "2",
    "NUM_KV_HEADS": "1",
    "MLP_MULT": "2",
    "TRAIN_SEQ_LEN": "32",
    "EVAL_SEQ_LEN": "32",
    "ITERATIONS": "1",
    "WARMUP_STEPS": "0",
    "MAX_WALLCLOCK_SECONDS": "10",
    "SEED": "1",
    "RUN_ID": "pgolf_smoke",
}

# Runs inside the child. It must stand alone: it cannot import pgolf (isolated mode, scratch cwd).
_BOOTSTRAP = r"""
import json, math, os, runpy, socket, sys, time, traceback
MARK = "PGOLF_SMOKE "
ENTRY = sys.argv[1]

def emit(**kw):
    sys.stdout.flush()
    print(MARK + json.dumps(kw), flush=True)

class _NoNetwork(OSError):
    pass

def _blocked(*a, **k):
    raise _NoNetwork("network access is blocked in the smoke test")
socket.socket.connect = _blocked
socket.socket.connect_ex = _blocked
socket.create_connection = _blocked
socket.getaddrinfo = _blocked

def where(tb):
    frames = [f for f in traceback.extract_tb(tb) if os.path.abspath(f.filename).startswith(os.getcwd())]
    f = (frames or traceback.extract_tb(tb) or [None])[-1]
    return "" if f is None else f"{os.path.relpath(f.filename)}:{f.lineno}: {(f.line or '').strip()[:160]}"

def fail(stage, t0, e):
    emit(stage=stage, ok=False, seconds=time.perf_counter() - t0, error=f"{type(e).__name__}: {e}",
         where=where(e.__traceback__), trace=traceback.format_exc()[-4000:])

t0 = time.perf_counter()
sys.path.insert(0, os.getcwd())
try:
    ns = runpy.run_path(ENTRY, run_name="__pgolf_smoke__")
except BaseException as e:
    fail("import", t0, e)
    sys.exit(0)
emit(stage="import", ok=True, seconds=time.perf_counter() - t0)

t1 = time.perf_counter()
try:
    import inspect
    import torch
    nn = torch.nn
    models = [v for k, v in ns.items() if inspect.isclass(v) and issubclass(v, nn.Module)
              and v.__module__ == "__pgolf_smoke__" and ("gpt" in k.lower() or "model" in k.lower())]
    if not models:
        emit(stage="forward", ok=None, seconds=0.0, error="no GPT/Model class found; forward skipped")
        sys.exit(0)
    order = {v: i for i, v in enumerate(ns.values()) if inspect.isclass(v)}
    # the top-level model: named GPT, else a *GPT* class, else the last model class defined
    cls = max(models, key=lambda c: (c.__name__ == "GPT", "gpt" in c.__name__.lower(), order.get(c, 0)))
    hp = ns.get("Hyperparameters")
    args = hp() if inspect.isclass(hp) else None
    aliases = {"dim": "model_dim", "n_layer": "num_layers", "n_head": "num_heads", "n_embd": "model_dim",
               "num_kv": "num_kv_heads", "vocab": "vocab_size", "seq_len": "train_seq_len"}
    kwargs, missing = {}, []
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if args is not None and name in ("args", "h", "hp", "hparams", "config", "cfg", "hyperparameters"):
            kwargs[name] = args  # the model takes the Hyperparameters object itself
            continue
        for cand in (name, aliases.get(name, "")):
            if cand and args is not None and hasattr(args, cand):
                kwargs[name] = getattr(args, cand)
                break
        else:
            if p.default is p.empty:
                missing.append(name)
    if missing:
        emit(stage="forward", ok=None, seconds=time.perf_counter() - t1,
             error=f"cannot build {cls.__name__}: no value for {', '.join(missing)}; forward skipped")
        sys.exit(0)
    torch.manual_seed(0)
    model = cls(**kwargs).float()
    vocab = int(kwargs.get("vocab_size", getattr(args, "vocab_size", 64) or 64))
    seq = int(getattr(args, "train_seq_len", 32) or 32)
    x = torch.randint(0, vocab, (2, min(seq, 32)))
    y = torch.randint(0, vocab, (2, min(seq, 32)))
    with torch.no_grad():
        try:
            out = model(x, y)
        except TypeError:
            out = model(x)
    loss = out[0] if isinstance(out, (tuple, list)) else out
    val = float(loss.float().mean()) if hasattr(loss, "float") else float("nan")
    params = sum(p.numel() for p in model.parameters())
    emit(stage="forward", ok=math.isfinite(val), seconds=time.perf_counter() - t1, model=cls.__name__,
         params=params, loss=val, error=None if math.isfinite(val) else f"loss is {val}")
except SystemExit:
    raise  # our own early exits after a "skipped" line are not failures
except BaseException as e:
    fail("forward", t1, e)
"""


@dataclass
class SmokeResult:
    ok: bool
    summary: str
    entry: str = ""
    import_s: float | None = None
    forward_s: float | None = None
    stage: str = ""  # where it stopped: import | forward | timeout | limits
    error: str = ""
    where: str = ""
    detail: str = ""  # traceback or stderr tail
    isolation: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _limits(memory_mb: int, cpu_s: int):
    def apply() -> None:
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT_BYTES, FILE_LIMIT_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _can_unshare() -> bool:
    exe = shutil.which("unshare")
    if not exe:
        return False
    try:
        return subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (subprocess.SubprocessError, OSError):
        return False


def source_notes(folder: Path, files: list[str]) -> list[str]:
    """Byte-level problems worth naming even when the import happens to survive them."""
    notes = []
    for rel in files:
        try:
            data = (folder / rel).read_bytes()
        except OSError:
            continue
        if data.startswith(b"\xef\xbb\xbf"):
            notes.append(f"{rel} starts with a UTF-8 BOM (breaks exec(open(...).read()) and byte counts)")
        elif b"\xef\xbb\xbf" in data:
            notes.append(f"{rel} holds a UTF-8 BOM after the first byte (a SyntaxError where it lands in code)")
        if b"\r\n" in data:
            notes.append(f"{rel} has CRLF line endings")
    return notes


def smoke_test(
    folder: str | os.PathLike,
    entry: str,
    *,
    code_files: list[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    python: str = sys.executable,
) -> SmokeResult:
    src = Path(folder)
    res = SmokeResult(ok=False, summary="", entry=entry)
    res.notes = source_notes(src, code_files or [entry])
    with tempfile.TemporaryDirectory(prefix="pgolf-smoke-") as scratch:
        work = Path(scratch) / "submission"
        shutil.copytree(src, work, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", ".git"))
        boot = Path(scratch) / "pgolf_smoke_boot.py"
        boot.write_text(_BOOTSTRAP)
        argv = [python, "-I", str(boot), entry]
        res.isolation = ["scratch copy", f"address space {memory_mb} MiB", f"cpu {int(timeout_s)} s", "socket guard"]
        if _can_unshare():
            argv = ["unshare", "-rn", *argv]
            res.isolation.append("no network namespace")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": scratch,
            "TMPDIR": scratch,
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1",
            "DATA_PATH": str(Path(scratch) / "no_data"),
            **TINY_ENV,
        }
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_limits(memory_mb, int(timeout_s)),
        )
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            res.stage = "timeout"
        wall = time.monotonic() - t0
    events = []
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(MARKER):
            try:
                events.append(json.loads(line[len(MARKER) :]))
            except ValueError:
                pass
    stderr_tail = "\n".join(err.decode(errors="replace").splitlines()[-15:])
    return _interpret(res, events, proc.returncode, wall, timeout_s, stderr_tail)


def _interpret(
    res: SmokeResult, events: list[dict], rc: int | None, wall: float, timeout_s: float, stderr_tail: str
) -> SmokeResult:
    by_stage = {e["stage"]: e for e in events}
    imp, fwd = by_stage.get("import"), by_stage.get("forward")
    if imp is None:
        res.stage = res.stage or "limits"
        if res.stage == "timeout":
            res.summary = f"import did not finish within {timeout_s:.0f} s; killed"
        else:
            why = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
            res.summary = f"import FAILED: the process died before reporting ({why}; memory or CPU limit?)"
        res.detail = stderr_tail
        return res
    res.import_s = imp["seconds"]
    if not imp["ok"]:
        res.stage, res.error, res.where = "import", imp["error"], imp.get("where", "")
        res.summary = f"import FAILED after {imp['seconds']:.1f} s: {imp['error']}" + (
            f" at {res.where}" if res.where else ""
        )
        res.detail = imp.get("trace", "")
        return res
    head = f"import OK in {imp['seconds']:.1f} s"
    if fwd is None:
        res.stage = res.stage or "forward"
        res.summary = head + (
            f"; forward did not finish within {timeout_s:.0f} s"
            if res.stage == "timeout"
            else "; forward died before reporting"
        )
        res.detail = stderr_tail
        return res
    res.forward_s = fwd.get("seconds")
    if fwd["ok"] is None:  # no model we know how to build: the import alone is the smoke test
        res.ok, res.stage = True, "import"
        res.summary = f"{head}; {fwd['error']}"
        return res
    if not fwd["ok"]:
        res.stage, res.error, res.where = "forward", fwd["error"], fwd.get("where", "")
        res.summary = f"{head}; CPU forward FAILED: {fwd['error']}" + (f" at {res.where}" if res.where else "")
        res.detail = fwd.get("trace", "")
        return res
    res.ok, res.stage = True, "forward"
    res.summary = f"{head}; CPU forward OK in {fwd['seconds']:.1f} s ({fwd['model']}, {fwd['params']:,} params, loss {fwd['loss']:.4f})"
    return res
