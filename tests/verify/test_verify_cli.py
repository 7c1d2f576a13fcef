"""pgolf-verify end to end through the `local` backend: verdicts, fault runs, resume after a kill, modes
and usage errors. Every re-run goes through real torchrun (2 processes, CPU) on the synthetic record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.verify.test_verify_fixtures import SEEDS, fast_env, make_record
from verify import cli as verify_cli


def run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def checks_of(report: dict, seed: int) -> dict[str, str]:
    s = next(s for s in report["seeds"] if s["seed"] == seed)
    return {c["name"]: c["status"] for c in s["checks"]}


@pytest.mark.slow
def test_three_clean_seeds_verify(tmp_path, capsys, monkeypatch):
    fast_env(monkeypatch)
    folder = make_record(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = run(
        capsys, folder, "--seeds", "3", "--nproc", "2", "--out", out, "--pause", "0", "--format", "json"
    )
    rep = json.loads(stdout)
    assert code == 0, err
    assert rep["verdict"] == "verified" and rep["mode"] == "rerun"
    assert sorted(s["seed"] for s in rep["seeds"]) == sorted(SEEDS)
    assert all(s["run"]["status"] == "ok" for s in rep["seeds"])
    assert rep["audit"]["verdict"] in ("clean", "needs-human")
    ledger = json.loads((out / "ledger.json").read_text())
    assert {e["state"] for e in ledger["seeds"].values()} == {"done"}
    assert json.loads((out / "report.json").read_text())["verdict"] == "verified"
    assert "<!-- pgolf-verify v1 mode=rerun verdict=verified -->" in (out / "report.md").read_text()
    assert "VERIFIED" in err


@pytest.mark.slow
def test_fault_run_reports_each_fault_and_loses_nothing(tmp_path, capsys, monkeypatch):
    """42 trains past the cap, 314 crashes, 1234 writes an artifact over 16,000,000 bytes."""
    fast_env(monkeypatch)
    folder = make_record(tmp_path, env="FAKE_SLOW_SEEDS=42 FAKE_CRASH_SEEDS=314 FAKE_OVERSIZE_SEEDS=1234")
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, folder, "--nproc", "2", "--out", out, "--pause", "0", "--format", "json", "-q")
    rep = json.loads(stdout)
    assert code == 1 and rep["verdict"] == "failed"
    assert checks_of(rep, 42)["train_time"] == "fail"
    assert checks_of(rep, 314)["run"] == "inconclusive"
    crashed = next(s for s in rep["seeds"] if s["seed"] == 314)
    assert "synthetic crash" in next(c["message"] for c in crashed["checks"] if c["name"] == "run")
    assert checks_of(rep, 1234)["size"] == "fail"
    assert checks_of(rep, 1234)["score"] == "pass"
    # a second invocation re-runs nothing: every seed, the crashed one included, is a recorded result
    before = json.loads((out / "ledger.json").read_text())
    code2, stdout2, err2 = run(capsys, folder, "--nproc", "2", "--out", out, "--pause", "0", "--format", "json")
    assert code2 == 1 and "3 seed(s) already finished, 0 to run" in err2
    after = json.loads((out / "ledger.json").read_text())
    assert [e["attempts"] for e in after["seeds"].values()] == [e["attempts"] for e in before["seeds"].values()]


def _wait_for(pred, timeout=90.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.2)
    return False


def _ledger(out: Path) -> dict:
    try:
        return json.loads((out / "ledger.json").read_text())
    except (OSError, ValueError):
        return {}


def _states(out: Path) -> dict[str, str]:
    return {k: v["state"] for k, v in _ledger(out).get("seeds", {}).items()}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_verifier_resumes_from_its_ledger(tmp_path, sig):
    folder = make_record(tmp_path, env="FAKE_SLEEP=4")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "verify.cli",
        str(folder),
        "--nproc",
        "2",
        "--out",
        str(out),
        "--pause",
        "0",
        "--no-audit",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert _wait_for(lambda: list(_states(out).values()).count("done") == 1 and "running" in _states(out).values())
        finished = next(k for k, v in _states(out).items() if v == "done")
        first_result = _ledger(out)["seeds"][finished]["result"]
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    if sig == signal.SIGINT:
        assert proc.returncode == 1
        assert b"ledger" in err and b"resume" in err and b"Traceback" not in err
        assert "interrupted" in _states(out).values()
    ledger = _ledger(out)
    assert ledger["seeds"][finished]["result"] == first_result  # consistent and nothing lost
    res = subprocess.run(cmd, env=env, capture_output=True, timeout=240)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert b"already finished" in res.stderr
    ledger = _ledger(out)
    assert set(_states(out).values()) == {"done"}
    assert ledger["seeds"][finished]["attempts"] == 1
    assert ledger["seeds"][finished]["result"] == first_result


def test_dry_run_prints_exact_commands_and_runs_nothing(tmp_path, capsys):
    folder = make_record(tmp_path, env="NUM_LAYERS=11")
    out = tmp_path / "out"
    code, stdout, err = run(
        capsys, folder, "--seeds", "7,8", "--nproc", "8", "--out", out, "--dry-run", "--data-path", tmp_path / "data"
    )
    assert code == 0
    assert err.count("torch.distributed.run --standalone --nproc_per_node=8 train_gpt.py") == 2
    assert "SEED=7" in err and "SEED=8" in err and "NUM_LAYERS=11" in err and "DATA_PATH=" in err
    assert not out.exists()


def test_logs_only_rechecks_shipped_logs(tmp_path, capsys):
    folder = make_record(tmp_path)
    (folder / "train_seed314.log").write_text(
        (folder / "train_seed314.log").read_text().replace("train_time:599876ms", "train_time:650000ms")
    )
    code, stdout, _ = run(capsys, folder, "--logs-only", "--format", "json", "-q", "--out", tmp_path / "o")
    rep = json.loads(stdout)
    assert code == 1 and rep["mode"] == "logs-only"
    assert checks_of(rep, 314)["train_time"] == "fail"
    assert checks_of(rep, 42)["train_time"] == "pass"
    assert checks_of(rep, 42)["score"] == "pass"  # claims from submission.json against the log


def test_logs_only_catches_a_claim_the_log_does_not_support(tmp_path, capsys):
    folder = make_record(tmp_path, claimed={42: 1.1500, 314: 1.2004, 1234: 1.2004})
    code, stdout, _ = run(capsys, folder, "--logs-only", "--format", "markdown", "-q", "--out", tmp_path / "o")
    assert code == 1
    assert "verdict=failed" in stdout and "**score** (fail)" in stdout


def test_flagged_submission_is_not_rerun_unless_forced(tmp_path, capsys, monkeypatch):
    folder = make_record(tmp_path)
    monkeypatch.setattr(
        verify_cli,
        "_audit_summary",
        lambda p, ignore=None: {"verdict": "flag", "reason": "prequant TTT", "categories": ["prequant_ttt"]},
    )
    code, stdout, _ = run(capsys, folder, "--out", tmp_path / "o", "--format", "json", "-q")
    rep = json.loads(stdout)
    assert code == 1 and rep["verdict"] == "not-run" and "--force" in rep["reason"]
    assert not (tmp_path / "o" / "ledger.json").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["{missing}"], "not a directory"),
        (["{folder}", "--seeds", "three"], "give a count"),
        (["{folder}", "--seeds", "0"], "at least 1"),
        (["{folder}", "--dry-run", "--smoke"], "exclude each other"),
        (["{folder}", "--env", "NOEQUALS"], "expected KEY=VALUE"),
        (["{folder}", "--baseline", "1.2,x"], "not a comma-separated list"),
        (["{folder}", "--seeds", "5,5", "--dry-run"], "twice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, capsys, args, needle):
    folder = make_record(tmp_path)
    args = [a.format(folder=folder, missing=tmp_path / "nope") for a in args]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert needle in err and "Traceback" not in err


def test_resume_with_a_changed_plan_is_a_usage_error(tmp_path, capsys, monkeypatch):
    fast_env(monkeypatch)
    folder = make_record(tmp_path)
    out = tmp_path / "out"
    code, _, _ = run(
        capsys, folder, "--seeds", "42,", "--min-seeds", "1", "--nproc", "2", "--out", out, "--no-audit", "-q"
    )
    assert code == 0
    code, _, err = run(capsys, folder, "--seeds", "42,", "--nproc", "2", "--out", out, "--env", "X=1", "-q")
    assert code == 2 and "different plan" in err
