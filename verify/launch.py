"""Launch: run one seed in a fresh copy of the folder and collect what it left behind.

`run_seed` is the one shell step every backend executes (locally, or on a Slurm node through submitit):
copy the folder, start torchrun in its own process group under a timeout, and on timeout or Ctrl-C kill the
whole tree (torchrun starts its workers in sessions of their own, so a process-group kill alone would
orphan them). Then record the exit code, log, outputs, outside wall clock and the software/hardware.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .checks import gpu_names
from .plan import LAUNCHER_ENV, SeedJob, sha256

KILL_GRACE_S = 10.0  # SIGTERM first so torchrun can stop its workers, then SIGKILL what is left
LOG_TAIL_LINES = 60
CONSOLE_LOG = "console.log"
RESULT_FILE = "result.json"


@dataclass
class RunResult:
    seed: int
    fingerprint: str
    status: str  # ok | crashed | timed_out | launch_error | interrupted
    exit_code: int | None = None
    wall_s: float | None = None
    timeout_s: float | None = None
    started_at: str = ""
    finished_at: str = ""
    log_path: str = ""  # the console log (torchrun stdout + stderr)
    script_logs: list[str] = field(default_factory=list)  # logs/<RUN_ID>.txt and friends, copied out
    log_tail: str = ""
    outputs: list[dict] = field(default_factory=list)  # files the run created: path, bytes, sha256
    code_sha256: dict[str, str] = field(default_factory=dict)  # of the copy that ran
    code_bytes: int = 0
    env_info: dict = field(default_factory=dict)
    hostname: str = ""
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunResult":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: dict) -> None:
    """Write-then-rename: a reader (or a resumed verifier) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --- process tree ----------------------------------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name may hold spaces or parentheses: fields start after the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    if not Path("/proc").is_dir():
        return []
    kids = _children_map()
    out, stack = [], [pid]
    while stack:
        for c in kids.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def kill_tree(proc: subprocess.Popen, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM the group (torchrun forwards it to its workers), then SIGKILL every process still alive."""
    tree = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    tree += [p for p in descendants(proc.pid) if p not in tree]
    for pid in [proc.pid, *tree]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


# --- environment ------------------------------------------------------------------------------------
_VERSIONS = r"""
import json, importlib.metadata as md
out = {}
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda"] = torch.version.cuda
    out["cuda_available"] = torch.cuda.is_available()
    out["device_count"] = torch.cuda.device_count() if out["cuda_available"] else 0
except Exception as e:
    out["torch"] = None; out["torch_error"] = repr(e)
for dist in ("flash_attn", "flash-attn", "flash_attn_3", "flash-attn-3"):
    try:
        out["flash_attn"] = md.version(dist); break
    except Exception:
        out.setdefault("flash_attn", None)
print(json.dumps(out))
"""


@functools.lru_cache(maxsize=4)
def _versions(python: str, host: str) -> tuple[tuple[str, object], ...]:
    """torch/CUDA/flash-attn of `python` on `host`: probed once per process (importing torch takes seconds)."""
    try:
        proc = subprocess.run([python, "-c", _VERSIONS], capture_output=True, text=True, timeout=120)
        return tuple(json.loads(proc.stdout.strip().splitlines()[-1]).items())
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as e:
        return (("versions_error", repr(e)),)


def environment_info(python: str = sys.executable) -> dict:
    """nvidia-smi, torch/CUDA/flash-attn versions and the GPU list of the machine the seed ran on."""
    info: dict = {"python": platform.python_version(), "platform": platform.platform()}
    info.update(dict(_versions(python, platform.node())))
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            q = subprocess.run(
                [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            full = subprocess.run([smi], capture_output=True, text=True, timeout=60)
            info["nvidia_smi"] = full.stdout
            info["gpus"] = [line.split(",")[0].strip() for line in q.stdout.splitlines() if line.strip()]
        except (subprocess.SubprocessError, OSError) as e:
            info["nvidia_smi_error"] = repr(e)
    else:
        info["nvidia_smi"] = None
        info["gpus"] = []
    info["gpu_names_seen"] = gpu_names("\n".join(info.get("gpus") or []))
    return info


# --- files ------------------------------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    snap = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts:
            st = p.stat()
            snap[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return snap


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 16384))
            return "\n".join(fh.read().decode("utf-8", "replace").splitlines()[-n:])
    except OSError:
        return ""


def fresh_copy(job: SeedJob) -> Path:
    work = Path(job.work_dir)
    if work.exists():
        shutil.rmtree(work)
    # the folder as submitted, without byte-code or earlier outputs that could stand in for this run's
    shutil.copytree(job.source_dir, work, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", ".git"))
    return work


def child_env(job: SeedJob) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    env.update(dict(job.env))
    env["PYTHONUNBUFFERED"] = "1"  # a crash must not swallow the last lines
    return env


# --- the shell step ---------------------------------------------------------------------------------
PID_FILE = "launcher.pid"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def reap_orphan(seed_dir: Path) -> int | None:
    """Kill a launcher left running by a verifier that was SIGKILLed, before its work folder is replaced.
    Only a process on this host whose command line is still our torchrun launch is touched."""
    try:
        info = json.loads((seed_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid = info.get("pid")
    if info.get("host") != platform.node() or not isinstance(pid, int) or "torch.distributed.run" not in _cmdline(pid):
        return None
    for p in [pid, *descendants(pid)]:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    (seed_dir / PID_FILE).unlink(missing_ok=True)
    return pid


def run_seed(job: SeedJob) -> RunResult:
    """Run one seed to completion (or timeout) and return its result; also written to result.json."""
    seed_dir = Path(job.seed_dir)
    seed_dir.mkdir(parents=True, exist_ok=True)
    reap_orphan(seed_dir)
    (seed_dir / RESULT_FILE).unlink(missing_ok=True)
    res = RunResult(seed=job.seed, fingerprint=job.fingerprint, status="launch_error", timeout_s=job.timeout_s)
    res.hostname = platform.node()
    res.started_at = _now()
    log_path = seed_dir / CONSOLE_LOG
    res.log_path = str(log_path)
    try:
        work = fresh_copy(job)
    except OSError as e:
        res.error = f"cannot copy {job.source_dir}: {e}"
        return _finish(res, seed_dir)
    for rel in job.code_files:
        p = work / rel
        if p.is_file():
            data = p.read_bytes()
            res.code_sha256[rel] = sha256(data)
            res.code_bytes += len(data)
    before = _snapshot(work)
    res.env_info = environment_info(job.argv[0] if "python" in Path(job.argv[0]).name else sys.executable)
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(
                list(job.argv),
                cwd=work,
                env=child_env(job),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            res.error = f"cannot start {job.argv[0]}: {e}"
            return _finish(res, seed_dir)
        write_json_atomic(seed_dir / PID_FILE, {"pid": proc.pid, "host": platform.node()})
        try:
            res.exit_code = proc.wait(timeout=job.timeout_s)
            res.status = "ok" if res.exit_code == 0 else "crashed"
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            res.exit_code, res.status = proc.returncode, "timed_out"
        except KeyboardInterrupt:
            kill_tree(proc, grace_s=2.0)
            res.exit_code, res.status, res.error = proc.returncode, "interrupted", "verifier interrupted"
            res.wall_s = time.monotonic() - t0
            _collect(res, job, work, before, seed_dir)
            _finish(res, seed_dir)
            raise
        res.wall_s = time.monotonic() - t0
    _collect(res, job, work, before, seed_dir)
    return _finish(res, seed_dir)


def _collect(res: RunResult, job: SeedJob, work: Path, before: dict, seed_dir: Path) -> None:
    res.log_tail = _tail(Path(res.log_path))
    after = _snapshot(work)
    logs_out = seed_dir / "script_logs"
    for rel, meta in sorted(after.items()):
        if before.get(rel) == meta:
            continue
        p = work / rel
        if rel.endswith((".log", ".txt")):
            logs_out.mkdir(exist_ok=True)
            dest = logs_out / rel.replace("/", "__")
            shutil.copy2(p, dest)
            res.script_logs.append(str(dest))
        res.outputs.append({"path": rel, "bytes": meta[0], "sha256": _file_sha(p)})


def _finish(res: RunResult, seed_dir: Path) -> RunResult:
    res.finished_at = _now()
    (seed_dir / PID_FILE).unlink(missing_ok=True)
    write_json_atomic(seed_dir / RESULT_FILE, res.to_dict())
    return res


def read_result(seed_dir: str | Path) -> RunResult | None:
    """A result a run wrote itself (e.g. a Slurm job that finished after the verifier died)."""
    p = Path(seed_dir) / RESULT_FILE
    try:
        return RunResult.from_dict(json.loads(p.read_text()))
    except (OSError, ValueError, TypeError):
        return None
