"""Smoke test without a GPU: import the entry script and run a tiny CPU forward pass, the way reviewers'
smoke tests do, and report "import OK in N s" or the exact failure (a BOM, a path bug, a CUDA-only call).

The submission's code runs only here and only in a child process, inside a bubblewrap sandbox: new user,
mount, pid, network, ipc, uts and cgroup namespaces; a read-only view of the system and the Python install;
no home directory; a clean environment; the scratch copy of the folder and a private /tmp as the only
writable places; every process it starts dies with it. Address space, CPU time, file size and process
count are limited, its output goes to a capped file, and its result comes back on a private pipe checked
against a per-run nonce, so nothing it prints can pass for a result. Where bubblewrap cannot run,
`smoke_test` refuses (`SandboxUnavailableError`) unless `unsafe=True`: then only the rlimits, the socket guard and
(where `unshare` works) a network namespace stand between the submission and the machine.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import resource
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .environment import PythonNeed, probe, version_problem
from .standins import UNAVAILABLE, write_standins

DEFAULT_TIMEOUT_S = 180.0
DEFAULT_MEMORY_MB = 4096
FILE_LIMIT_BYTES = 512 * 1024 * 1024
OUTPUT_CAP_BYTES = 1024 * 1024  # the child's stdout + stderr kept on disk; the rest is counted and dropped
RESULT_CAP_BYTES = 1024 * 1024  # the result pipe: a few JSON lines, tracebacks cut at 4000 characters
TMPFS_BYTES = 256 * 1024 * 1024  # the sandbox's /tmp and /dev/shm live in memory
EXTRA_PROCESSES = 256  # RLIMIT_NPROC: this user's tasks now plus this many (the kernel exempts root)
BWRAP_ENV = "PGOLF_BWRAP"  # path to bwrap, instead of the one on PATH (tests point it at a missing file)
SANDBOX_BWRAP = "bubblewrap"
SANDBOX_UNSAFE = "unsafe: rlimits + socket guard"
WORK_IN = "/submission"  # where the scratch copy appears inside the sandbox
BOOT_IN = "/pgolf/boot.py"
STANDINS_IN = "/pgolf/standins"  # the CPU stand-ins for GPU-only modules (verify/standins.py), read-only
ENVIRONMENT, SUBMISSION = "environment", "submission"  # what a failure says: the machine lacks something / the code
_SKIP = ("__pycache__", ".git")
# /etc inside the sandbox: what the dynamic loader and name lookups need, nothing else (passwd and group are
# written fresh, naming only the sandbox user)
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "localtime", "alternatives", "hosts")
_TAIL_BYTES = 16 * 1024
_GRACE_S = 2.0  # after the child exits: how long to wait for the pipes to drain
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
    "FUSED_CE_ENABLED": "0",  # the records' Triton cross-entropy switch: a GPU-only kernel
}

# Runs inside the child. It must stand alone: it cannot import pgolf (isolated mode, scratch cwd). Its
# results go to the file descriptor named in argv, one JSON object a line, each carrying the nonce read from
# the second descriptor. Code running in the same interpreter could still reach both; the channel's job is
# that printed lines, child processes and stray writes cannot pass for a result.
_BOOTSTRAP = r"""
import json, math, os, runpy, socket, sys, time, traceback
ENTRY, RESULT_FD, NONCE_FD = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
STANDINS = sys.argv[4] if len(sys.argv) > 4 else ""


def _channel():
    # The nonce comes on a pipe closed before the submission runs: it is in no argv, environment or file.
    with os.fdopen(NONCE_FD, "rb") as fh:
        nonce = fh.read(256).decode().strip()
    os.set_inheritable(RESULT_FD, False)  # the submission's own subprocesses never get the result pipe
    write, dumps = os.write, json.dumps  # bound now: the submission patching json or os later does not reach them

    def emit(**kw):
        data = (dumps(dict(kw, nonce=nonce)) + "\n").encode()
        while data:
            data = data[write(RESULT_FD, data):]

    return emit


emit = _channel()
del _channel
sys.argv = [ENTRY]


def _install_standins(root):
    # CPU stand-ins for GPU-only modules (verify/standins.py): a finder in front of the import system for the
    # attention kernels (never usable on CPU), one behind it for the rest (only where the real one is missing)
    import importlib.abc, importlib.machinery, importlib.util
    with open(os.path.join(root, "manifest.json")) as fh:
        man = json.load(fh)
    prefer, fallback, stubs = set(man["prefer"]) | {"_pgolf_standin"}, set(man["fallback"]), set(man["stubs"])
    common = {}

    def unavailable(name):
        if "mod" not in common:
            common["mod"] = importlib.import_module("_pgolf_standin")  # the Front finder loads it from root
        return common["mod"].unavailable(name)

    class StubLoader(importlib.abc.Loader):
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            module.__path__ = []
            module.__pgolf_standin__ = True
            name = module.__name__

            def __getattr__(attr):
                if attr.startswith("__"):
                    raise AttributeError(attr)
                return unavailable(f"{name}.{attr}")
            module.__getattr__ = __getattr__

    class Front(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in prefer:
                return importlib.machinery.PathFinder.find_spec(name, [root])
            return None

    class Back(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top not in prefer | fallback | stubs:
                return None
            if top in fallback | prefer:
                spec = importlib.machinery.PathFinder.find_spec(name, [root] if name == top else path)
                if spec is not None:
                    return spec
            return importlib.util.spec_from_loader(name, StubLoader(), is_package=True)

    sys.meta_path.insert(0, Front())
    sys.meta_path.append(Back())


def standins_used():
    return sorted(n for n, m in list(sys.modules.items())
                  if "." not in n and not n.startswith("_") and getattr(m, "__pgolf_standin__", False) is True)


if STANDINS:
    _install_standins(STANDINS)

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
    emit(stage=stage, ok=False, seconds=time.perf_counter() - t0, error=f"{type(e).__name__}: {e}"[:2000],
         where=where(e.__traceback__), trace=traceback.format_exc()[-4000:], standins=standins_used())

t0 = time.perf_counter()
sys.path.insert(0, os.getcwd())
try:
    ns = runpy.run_path(ENTRY, run_name="__pgolf_smoke__")
except BaseException as e:
    fail("import", t0, e)
    sys.exit(0)
emit(stage="import", ok=True, seconds=time.perf_counter() - t0, standins=standins_used())

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
    model = cls(**kwargs).float().eval()  # eval: the CPU paths (fused training kernels are GPU-only)
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


class SandboxUnavailableError(RuntimeError):
    """bubblewrap is missing or cannot create its namespaces here; `unsafe=True` runs the weaker guard."""


@dataclass
class SmokeResult:
    ok: bool
    summary: str
    entry: str = ""
    import_s: float | None = None
    forward_s: float | None = None
    stage: str = ""  # where it stopped: python | import | forward | timeout | limits | result
    category: str = ""  # a failure's cause: "environment" (the machine lacks something) or "submission"
    why: str = ""  # how the category was decided
    standins: list[str] = field(default_factory=list)  # the CPU stand-ins the code imported
    error: str = ""
    where: str = ""
    detail: str = ""  # traceback or the output's tail
    sandbox: str = ""  # SANDBOX_BWRAP or SANDBOX_UNSAFE
    isolation: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    log_path: str = ""  # the child's stdout + stderr, capped ("" when not kept)
    output_bytes: int = 0  # how much the child printed, kept or not
    output_truncated: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# --- limits -----------------------------------------------------------------------------------------
def _user_tasks() -> int:
    """Tasks (processes and threads) this user runs now: RLIMIT_NPROC counts them all."""
    uid, n = os.getuid(), 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                n += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return n


def _rlimits(memory_mb: int, cpu_s: int) -> list[tuple[int, tuple[int, int]]]:
    """The limits to set, each clamped to the current hard limit so that setting it cannot fail."""
    mem = memory_mb * 1024 * 1024
    nproc = _user_tasks() + EXTRA_PROCESSES
    want = [
        (resource.RLIMIT_AS, mem, mem),
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 5),
        (resource.RLIMIT_FSIZE, FILE_LIMIT_BYTES, FILE_LIMIT_BYTES),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NPROC, nproc, nproc),
    ]
    out = []
    for res, soft, hard in want:
        try:
            _, cur_hard = resource.getrlimit(res)
        except (OSError, ValueError):
            continue
        if cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        out.append((res, (soft, hard)))
    return out


def _apply(limits: list[tuple[int, tuple[int, int]]]):
    def apply() -> None:
        for res, lim in limits:
            resource.setrlimit(res, lim)

    return apply


def _can_unshare() -> bool:
    exe = shutil.which("unshare")
    if not exe:
        return False
    try:
        return subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (subprocess.SubprocessError, OSError):
        return False


# --- the bubblewrap sandbox -------------------------------------------------------------------------
def bwrap_executable() -> tuple[str | None, str]:
    """(path, "") or (None, why): $PGOLF_BWRAP when set, else `bwrap` on PATH."""
    override = os.environ.get(BWRAP_ENV)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override, ""
        return None, f"{BWRAP_ENV}={override} is not an executable file"
    found = shutil.which("bwrap")
    return (found, "") if found else (None, "bubblewrap (bwrap) is not installed")


@functools.lru_cache(maxsize=8)
def _bwrap_features(bwrap: str) -> frozenset[str]:
    """Options newer than Debian oldstable's bwrap, used only where this one has them."""
    try:
        p = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    except (subprocess.SubprocessError, OSError):
        return frozenset()
    return frozenset(o for o in ("--disable-userns", "--size") if o in p.stdout + p.stderr)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@functools.lru_cache(maxsize=8)
def _python_roots(python: str) -> tuple[str, ...]:
    """The folders the interpreter needs, read-only: its install, the venv, site-packages. Never $HOME itself."""
    code = (
        "import json, site, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, "
        "sys.base_exec_prefix, *site.getsitepackages()]))"
    )
    out = subprocess.run(
        [python, "-I", "-c", code], capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}
    )
    if out.returncode != 0:
        raise OSError(f"{python} -I failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    paths = json.loads(out.stdout) + [os.path.dirname(os.path.abspath(python))]
    paths += [os.path.realpath(p) for p in paths] + [os.path.dirname(os.path.realpath(python))]
    home = os.path.realpath(os.path.expanduser("~"))
    roots: list[str] = []
    for p in sorted({os.path.abspath(p) for p in paths}):
        if not os.path.isdir(p) or _inside(p, "/usr") or _inside(home, p):  # "/" and $HOME's ancestors too
            continue
        if not any(_inside(p, r) for r in roots):
            roots.append(p)
    return tuple(roots)


def _passwd_files(etc: Path) -> None:
    uid, gid = os.getuid(), os.getgid()
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(f"pgolf:x:{uid}:{gid}:pgolf smoke:/tmp:/usr/sbin/nologin\n")
    (etc / "group").write_text(f"pgolf:x:{gid}:\n")


def _bwrap_argv(
    bwrap: str,
    python: str,
    *,
    work: Path,
    boot: Path,
    etc: Path,
    env: dict[str, str],
    cmd: list[str],
    info_fd: int | None = None,
    standins: Path | None = None,
) -> list[str]:
    feats = _bwrap_features(bwrap)
    a = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    a += ["--info-fd", str(info_fd)] if info_fd is not None else []
    a += ["--hostname", "pgolf-smoke"] + (["--disable-userns"] if "--disable-userns" in feats else [])
    a += ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            a += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            a += ["--ro-bind", d, d]
    for name in _ETC:
        if os.path.exists(f"/etc/{name}"):
            a += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    a += ["--ro-bind", str(etc / "passwd"), "/etc/passwd", "--ro-bind", str(etc / "group"), "/etc/group"]
    a += ["--proc", "/proc", "--dev", "/dev"]
    size = ["--size", str(TMPFS_BYTES)] if "--size" in feats else []
    a += [*size, "--tmpfs", "/tmp", *size, "--tmpfs", "/dev/shm"]
    for root in _python_roots(python):  # after /tmp: a venv under /tmp must not be hidden by the tmpfs
        a += ["--ro-bind", root, root]
    a += ["--ro-bind", str(standins), STANDINS_IN] if standins is not None else []
    a += ["--bind", str(work), WORK_IN, "--ro-bind", str(boot), BOOT_IN, "--chdir", WORK_IN, "--clearenv"]
    for k, v in env.items():
        a += ["--setenv", k, v]
    return [*a, "--", *cmd]


@functools.lru_cache(maxsize=8)
def _probe(bwrap: str, python: str) -> str:
    """Start the interpreter once in the very sandbox the smoke uses: "" when it works, else why not."""
    try:
        with tempfile.TemporaryDirectory(prefix="pgolf-smoke-probe-") as d:
            work, boot = Path(d) / "submission", Path(d) / "boot.py"
            work.mkdir()
            boot.write_text("")
            _passwd_files(Path(d) / "etc")
            argv = _bwrap_argv(
                bwrap, python, work=work, boot=boot, etc=Path(d) / "etc", env={}, cmd=[python, "-I", "-c", "pass"]
            )
            p = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin"},
            )
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        return f"{bwrap} could not be tried: {e}"
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[-1]
        return f"{bwrap} cannot create the sandbox here ({why})"
    return ""


def sandbox_problem(python: str = sys.executable) -> str:
    """ "" when `smoke_test` can use bubblewrap with this interpreter, else one line saying why not."""
    bwrap, why = bwrap_executable()
    return why if bwrap is None else _probe(bwrap, python)


# --- the scratch copy -------------------------------------------------------------------------------
def _copy_file(path: Path, dest: Path) -> bool:
    """A regular file, opened without following links and without blocking on a fifo swapped in meanwhile."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        with open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
    os.chmod(dest, stat.S_IMODE(st.st_mode) | stat.S_IRUSR | stat.S_IWUSR)
    return True


def scratch_copy(src: Path, dest: Path) -> list[str]:
    """Copy the folder for the child: regular files, folders, and symlinks that stay inside it (as relative
    links). Fifos, devices and sockets are skipped, and so are links that leave the folder: never followed."""
    root = src.resolve()
    notes: list[str] = []
    dest.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(root):
        here, rel = Path(dirpath), Path(dirpath).relative_to(root)
        keep = []
        for name in sorted(dirnames + filenames):
            if name in _SKIP:
                continue
            path, target, shown = here / name, dest / rel / name, (rel / name).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                resolved = path.resolve()
                if _inside(str(resolved), str(root)) and resolved.exists():
                    os.symlink(os.path.relpath(resolved, here), target)
                else:
                    notes.append(f"scratch copy: skipped {shown}, a symlink leaving the folder")
            elif stat.S_ISDIR(mode):
                target.mkdir()
                keep.append(name)
            elif not stat.S_ISREG(mode) or not _copy_file(path, target):
                notes.append(f"scratch copy: skipped {shown}, not a regular file")
        dirnames[:] = keep  # never descend through a link
    return notes


# --- running the child ------------------------------------------------------------------------------
class _CappedOutput:
    """The child's stdout + stderr into a file of at most `cap` bytes, with a note where it was cut; the
    last few KiB are kept in memory for the report whatever the size."""

    def __init__(self, path: Path, cap: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.cap, self.fh = path, cap, open(path, "wb")
        self.kept = self.total = 0
        self.tail = b""

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - self.kept
        if room > 0:
            self.fh.write(data[:room])
            self.kept += min(room, len(data))
        self.tail = (self.tail + data)[-_TAIL_BYTES:]

    def close(self) -> None:
        if self.total > self.kept:
            note = f"\n[pgolf-verify: output truncated: {self.total:,} bytes printed, the first ones kept]\n".encode()
            self.kept = max(0, self.cap - len(note))
            self.fh.truncate(self.kept)
            self.fh.seek(self.kept)
            self.fh.write(note)
        self.fh.close()

    @property
    def truncated(self) -> bool:
        return self.total > self.kept

    def tail_lines(self, n: int = 15) -> str:
        return "\n".join(self.tail.decode(errors="replace").splitlines()[-n:])


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pump(proc: subprocess.Popen, readers: dict[int, Callable[[bytes], None]], timeout_s: float, unsafe: bool):
    """Drain the pipes until the child is gone, killing it at the deadline. Returns whether it timed out."""
    deadline = time.monotonic() + timeout_s
    open_fds, timed_out, exited_at = set(readers), False, None
    while True:
        now = time.monotonic()
        if exited_at is None and proc.poll() is not None:
            exited_at = now
            if unsafe:  # no pid namespace: take what is left of its process group with it
                _kill_group(proc.pid)
        if exited_at is None and now >= deadline and not timed_out:
            timed_out = True
            _kill_group(proc.pid)  # bwrap dies; --die-with-parent takes the sandbox's pid 1 and its namespace
        if exited_at is not None and (not open_fds or now - exited_at > _GRACE_S):
            break  # past the grace, a process outside our reach holds a pipe open (unsafe mode only)
        if not open_fds:  # it closed its pipes but lives on: keep the clock running
            time.sleep(0.05)
            continue
        ready, _, _ = select.select(list(open_fds), [], [], 0.1)
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                readers[fd](data)
            else:
                open_fds.discard(fd)
    proc.wait()
    return timed_out


def _collect(buf: bytearray, cap: int) -> Callable[[bytes], None]:
    def add(data: bytes) -> None:
        if len(buf) <= cap:
            buf.extend(data[: cap + 1 - len(buf)])

    return add


def _end_namespace(info: bytes, wait_s: float = 5.0) -> None:
    """bwrap can exit a moment before its pid 1 has taken the namespace down: kill that pid 1 (found by the
    --info-fd report and checked against its pid namespace) and wait until it has, so that nothing the
    submission started is still running when smoke_test returns."""
    try:
        data = json.loads(info)
        pid, ns = int(data["child-pid"]), int(data["pid-namespace"])
    except (ValueError, KeyError, TypeError):
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") != f"pid:[{ns}]":
                return  # gone, and the number taken by another process
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return  # a zombie pid 1 has already killed and reaped its namespace
            os.kill(pid, signal.SIGKILL)
        except (OSError, IndexError):
            return
        time.sleep(0.01)


_NUM = (int, float)


def _number(v) -> bool:
    return isinstance(v, _NUM) and not isinstance(v, bool) and math.isfinite(v)


def _check_event(e, nonce: str) -> str:
    """ "" when `e` is a result line our bootstrap could have written, else what is wrong with it."""
    if not isinstance(e, dict):
        return "a line is not a JSON object"
    if not isinstance(e.get("nonce"), str) or not secrets.compare_digest(e["nonce"], nonce):
        return "a line carries the wrong nonce"
    stage, ok = e.get("stage"), e.get("ok")
    if stage not in ("import", "forward"):
        return f"unknown stage {stage!r}"
    if not (ok is True or ok is False or (ok is None and stage == "forward")):
        return f"{stage}: 'ok' is {ok!r}"
    if not _number(e.get("seconds")) or e["seconds"] < 0:
        return f"{stage}: 'seconds' is not a duration"
    for key in ("where", "trace", "model"):
        if key in e and not isinstance(e[key], str):
            return f"{stage}: {key!r} is not a string"
    if "standins" in e and not (isinstance(e["standins"], list) and all(isinstance(x, str) for x in e["standins"])):
        return f"{stage}: 'standins' is not a list of names"
    if ok is not True and not isinstance(e.get("error"), str):
        return f"{stage}: no error message"
    if stage == "forward" and ok is True:
        params = e.get("params")
        if not isinstance(e.get("model"), str) or not isinstance(params, int) or isinstance(params, bool):
            return "forward: no model or parameter count"
        if not _number(e.get("loss")):
            return "forward: the loss is not a finite number"
    return ""


def read_results(raw: bytes, nonce: str) -> tuple[list[dict], str]:
    """The bootstrap's result lines, validated: (events, "") or (events so far, why the channel is rejected).
    A last line without its newline was cut by a kill and is dropped; any other bad line rejects it all."""
    if len(raw) > RESULT_CAP_BYTES:
        return [], f"more than {RESULT_CAP_BYTES} bytes on the result pipe"
    events: list[dict] = []
    for line in raw.split(b"\n")[:-1]:
        if not line.strip():
            continue
        try:
            e = json.loads(line)
        except ValueError:
            return events, "a line is not JSON"
        why = _check_event(e, nonce)
        if not why and any(x["stage"] == e["stage"] for x in events):
            why = f"a second {e['stage']} result"
        if not why and e["stage"] == "forward" and not events:
            why = "a forward result before the import result"
        if why:
            return events, why
        events.append({k: v for k, v in e.items() if k != "nonce"})
    return events, ""


def _command(
    res: SmokeResult, python: str, entry: str, scratch: Path, fds: list[int], use_bwrap: bool
) -> tuple[list[str], dict[str, str], Path]:
    """argv, environment and cwd for Popen; fills in `res.isolation`."""
    env = {
        "HOME": "/tmp" if use_bwrap else str(scratch),
        "TMPDIR": "/tmp" if use_bwrap else str(scratch),
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "DATA_PATH": "/tmp/no_data" if use_bwrap else str(scratch / "no_data"),
        **TINY_ENV,
    }
    work, boot, args = scratch / "submission", scratch / "pgolf_smoke_boot.py", [entry, str(fds[0]), str(fds[1])]
    standins = write_standins(scratch / "standins")
    args.append(STANDINS_IN if use_bwrap else str(standins))
    if not use_bwrap:
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        argv = [python, "-I", "-B", str(boot), *args]
        res.isolation = ["scratch copy", "clean environment"]
        if _can_unshare():
            argv = ["unshare", "-rn", *argv]
            res.isolation.append("no network namespace")
        return argv, env, work
    bwrap, _ = bwrap_executable()
    env["PATH"] = f"{os.path.dirname(os.path.abspath(python))}:/usr/local/bin:/usr/bin:/bin"
    _passwd_files(scratch / "etc")
    cmd = [python, "-I", "-B", BOOT_IN, *args]
    argv = _bwrap_argv(
        bwrap, python, work=work, boot=boot, etc=scratch / "etc", env=env, cmd=cmd, info_fd=fds[2], standins=standins
    )
    res.isolation = [
        "bubblewrap: new user, mount, pid, network, ipc, uts and cgroup namespaces",
        "read-only system and Python install; no home directory",
        "writable: the scratch copy and a private /tmp only",
        "clean environment",
        "every process dies with the sandbox",
        "CPU stand-ins for GPU-only modules (sandbox only)",
    ]
    return argv, {"PATH": "/usr/bin:/bin"}, scratch  # bwrap itself gets no secrets either


def smoke_test(
    folder: str | os.PathLike,
    entry: str,
    *,
    code_files: list[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    python: str = sys.executable,
    unsafe: bool = False,
    log_path: str | os.PathLike | None = None,
    output_cap: int = OUTPUT_CAP_BYTES,
    python_need: PythonNeed | None = None,
    requirements: str = "",
) -> SmokeResult:
    """Run the smoke test in the bubblewrap sandbox. Raises SandboxUnavailableError where bubblewrap cannot run,
    unless `unsafe`: then the weaker guard runs and `SmokeResult.sandbox` says so. `log_path` keeps the child's
    output (capped at `output_cap` bytes); without it the output is dropped with the scratch folder.
    `python_need` (what the code needs, `environment.required_python`) is checked against `python` before
    anything runs; `requirements` (requirements.txt) tells a missing package from an undeclared one."""
    problem = sandbox_problem(python)
    if problem and not unsafe:
        raise SandboxUnavailableError(problem)
    use_bwrap = not problem
    src = Path(folder)
    res = SmokeResult(ok=False, summary="", entry=entry, sandbox=SANDBOX_BWRAP if use_bwrap else SANDBOX_UNSAFE)
    res.notes = source_notes(src, code_files or [entry])
    too_old = version_problem(python_need, probe(python, torch=False), "the smoke test's Python")
    if too_old:
        res.stage, res.category = "python", ENVIRONMENT
        res.why = "checked before the import"
        res.summary = f"smoke NOT RUN (environment): {too_old}"
        return res
    limits = _rlimits(memory_mb, int(timeout_s))
    with tempfile.TemporaryDirectory(prefix="pgolf-smoke-") as scratch_dir:
        scratch = Path(scratch_dir)
        work = scratch / "submission"
        res.notes += scratch_copy(src, work)
        boot = scratch / "pgolf_smoke_boot.py"
        boot.write_text(_BOOTSTRAP)
        nonce = secrets.token_hex(16)
        (out_r, out_w), (res_r, res_w), (nonce_r, nonce_w), (info_r, info_w) = (os.pipe() for _ in range(4))
        os.write(nonce_w, nonce.encode())
        os.close(nonce_w)
        child_fds = [res_w, nonce_r] + ([info_w] if use_bwrap else [])
        argv, popen_env, cwd = _command(res, python, entry, scratch, child_fds, use_bwrap)
        res.isolation += [
            f"address space {memory_mb} MiB",
            f"cpu {int(timeout_s)} s",
            f"file size {FILE_LIMIT_BYTES // 2**20} MiB",
            f"processes {dict(limits).get(resource.RLIMIT_NPROC, ('?',))[0]}"
            + (" (not enforced: the kernel exempts root)" if os.getuid() == 0 else ""),
            f"output capped at {output_cap:,} bytes",
            "socket guard",
        ]
        sink = _CappedOutput(Path(log_path) if log_path else scratch / "output.log", output_cap)
        raw, info = bytearray(), bytearray()
        readers = {out_r: sink.write, res_r: _collect(raw, RESULT_CAP_BYTES), info_r: _collect(info, 4096)}
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=popen_env,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=out_w,
                pass_fds=child_fds,
                start_new_session=True,
                preexec_fn=_apply(limits),
            )
        except BaseException:
            for fd in (out_r, out_w, res_r, res_w, nonce_r, info_r, info_w):
                os.close(fd)
            sink.close()
            raise
        for fd in (out_w, res_w, nonce_r, info_w):
            os.close(fd)
        try:
            timed_out = _pump(proc, readers, timeout_s, unsafe=not use_bwrap)
        finally:
            _kill_group(proc.pid)
            if proc.poll() is None:
                proc.wait()
            if use_bwrap:
                _end_namespace(bytes(info))
            for fd in (out_r, res_r, info_r):
                os.close(fd)
            sink.close()
        wall = time.monotonic() - t0
    res.output_bytes, res.output_truncated = sink.total, sink.truncated
    res.log_path = str(log_path) if log_path else ""
    if sink.truncated:
        res.notes.append(f"the submission printed {sink.total:,} bytes; the log keeps the first {output_cap:,}")
    if timed_out:
        res.stage = "timeout"
    events, rejected = read_results(bytes(raw), nonce)
    if rejected:
        res.stage, res.category, res.why = "result", SUBMISSION, "the code wrote to the verifier's result channel"
        res.summary = f"smoke FAILED: the result channel was tampered with ({rejected}); no result is trusted"
        res.detail = sink.tail_lines()
        return classify(res, src, requirements)
    rc = proc.returncode
    if use_bwrap and rc is not None and rc > 128:  # bwrap reports a child killed by a signal as 128 + signal
        rc = 128 - rc
    res = _interpret(res, events, rc, wall, timeout_s, sink.tail_lines())
    return classify(res, src, requirements)


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


def _interpret(
    res: SmokeResult, events: list[dict], rc: int | None, wall: float, timeout_s: float, stderr_tail: str
) -> SmokeResult:
    by_stage = {e["stage"]: e for e in events}
    imp, fwd = by_stage.get("import"), by_stage.get("forward")
    for e in (imp, fwd):
        if e is not None and e.get("standins"):
            res.standins = sorted(set(res.standins) | set(e["standins"]))
    if imp is None:
        res.stage = res.stage or "limits"
        if res.stage == "timeout":
            res.summary = f"import did not finish within {timeout_s:.0f} s; killed"
        else:
            why = f"killed by signal {-rc}; memory or CPU limit?" if rc is not None and rc < 0 else f"exit code {rc}"
            res.summary = f"import FAILED: the process died before reporting ({why})"
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


# --- what a failure means ---------------------------------------------------------------------------
_CUDA = re.compile(
    r"CUDA|cuda\b|cuDNN|NCCL|nvidia|NVIDIA|\bGPU\b|no kernel image|is_cuda|requires? (a )?GPU|triton|Triton", re.I
)
_MISSING = re.compile(r"No module named '([\w.]+)'")
_TOO_NEW = re.compile(r"f-string|PEP 701")
# Packages the records import that a Python install may lack: a missing one is the machine's gap.
KNOWN_PACKAGES = frozenset(
    "torch numpy sentencepiece zstandard zstd brotli lz4 triton flash_attn flash_attn_interface flash_attn_3 "
    "mamba_ssm causal_conv1d fla liger_kernel apex transformer_engine xformers flashinfer einops tiktoken datasets "
    "huggingface_hub transformers safetensors scipy tqdm python_minifier bitsandbytes kernels".split()
)
_BLOB_RUN = re.compile(r"[A-Za-z0-9!#$%&()*+\-;<=>?@^_`{|}~/]{120,}")  # base85/base64 runs: an encoded payload
MAX_LINE = 240


def scrub(text: str) -> str:
    """The text without encoded code blobs: long base85/base64 runs are replaced by their length, and any line
    still over MAX_LINE characters is cut, so a wrapper's payload never reaches the report."""
    if not text:
        return text
    out = []
    for line in text.splitlines():
        line = _BLOB_RUN.sub(lambda m: f"<{len(m.group(0)):,}-character blob>", line)
        if len(line) > MAX_LINE:
            line = line[: MAX_LINE - 40] + f" … [{len(line) - MAX_LINE + 40:,} characters cut]"
        out.append(line)
    return "\n".join(out)


def _requirement_names(requirements: str) -> set[str]:
    names = set()
    for line in requirements.splitlines():
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#", 1)[0])
        if m:
            names.add(re.sub(r"[-.]+", "_", m.group(1)).lower())
    return names


def _shipped(folder: Path, module: str) -> bool:
    top = module.split(".")[0]
    return (folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file()


def classify(res: SmokeResult, folder: Path, requirements: str = "") -> SmokeResult:
    """`res.category` for a failure: `environment` when the machine lacks what the code needs (a package, a
    GPU, a newer Python, the sandbox's limits), else `submission`; and every text field scrubbed of blobs."""
    for attr in ("summary", "error", "where", "detail"):
        setattr(res, attr, scrub(getattr(res, attr)))
    if res.ok or res.category:
        return res
    text = f"{res.error}\n{res.detail}"
    missing = _MISSING.search(res.error)
    if res.stage == "timeout" or (res.stage == "limits" and "killed by signal" in res.summary):
        res.category, res.why = ENVIRONMENT, "the sandbox's time or memory limit stopped it, not an error in the code"
    elif res.stage == "limits":
        res.category, res.why = SUBMISSION, "the code ended the process itself before the smoke test could report"
    elif UNAVAILABLE in text:
        res.category, res.why = ENVIRONMENT, "a GPU-only feature the CPU stand-ins cannot run"
    elif missing and not _shipped(folder, missing.group(1)):
        mod = missing.group(1).split(".")[0]
        declared = mod.lower() in _requirement_names(requirements)
        res.category = ENVIRONMENT
        res.why = f"{mod} is not installed in the smoke test's Python" + (
            " (requirements.txt lists it)"
            if declared
            else ""
            if mod in KNOWN_PACKAGES
            else " (requirements.txt does not list it: an undeclared dependency?)"
        )
    elif res.error.startswith("SyntaxError") and _TOO_NEW.search(res.error):
        res.category, res.why = ENVIRONMENT, "Python syntax newer than the smoke test's Python"
    elif _CUDA.search(res.error):
        res.category, res.why = ENVIRONMENT, "the code needs a GPU (CUDA) here; the smoke test runs on CPU"
    else:
        res.category, res.why = SUBMISSION, "an error in the submission's code, not a missing package or GPU"
    res.summary = f"{res.summary} [{res.category}]"
    return res
