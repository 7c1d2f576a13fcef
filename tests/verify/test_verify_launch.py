"""The shell step for real: torchrun (2 processes, no GPU) in a fresh copy, timeout, tree kill, collect."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.verify.test_verify_fixtures import fast_env, make_record
from verify.launch import RESULT_FILE, run_seed
from verify.plan import make_plan


def _job(tmp_path, seed, timeout_s=120.0, **env):
    folder = make_record(tmp_path)
    plan = make_plan(str(folder), str(tmp_path / "out"), seeds=[seed], nproc=2, timeout_s=timeout_s, env_overrides=env)
    return plan.jobs[0]


def _procs_in(path: Path) -> list[int]:
    """Live processes whose working directory is inside `path`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(path)):
            out.append(int(pid))
    return out


def test_ok_run_collects_log_artifact_hashes_and_versions(tmp_path, monkeypatch):
    fast_env(monkeypatch)
    job = _job(tmp_path, 42)
    res = run_seed(job)
    assert res.status == "ok" and res.exit_code == 0, res.log_tail
    assert res.wall_s > 0
    text = Path(res.log_path).read_text()
    assert "seed:42" in text and "final_int8_zlib_roundtrip_exact" in text
    arts = {o["path"]: o["bytes"] for o in res.outputs}
    assert arts["final_model.int8.ptz"] == 1_000_000
    assert res.code_sha256["train_gpt.py"] == json.loads(json.dumps(res.code_sha256))["train_gpt.py"]
    assert len(res.code_sha256["train_gpt.py"]) == 64
    assert res.env_info["torch"].startswith("2.")
    assert any(p.endswith("pgolf_verify_seed42.txt") for p in res.script_logs)
    on_disk = json.loads((Path(job.seed_dir) / RESULT_FILE).read_text())
    assert on_disk["status"] == "ok" and on_disk["fingerprint"] == job.fingerprint
    # the submission folder itself is untouched: the run happened in a copy
    assert not (Path(job.source_dir) / "final_model.int8.ptz").exists()


def test_crash_is_a_result_with_the_exception_in_the_tail(tmp_path, monkeypatch):
    fast_env(monkeypatch)
    res = run_seed(_job(tmp_path, 314, FAKE_CRASH_SEEDS="314"))
    assert res.status == "crashed" and res.exit_code != 0
    assert "RuntimeError: CUDA error: out of memory (synthetic crash)" in res.log_tail


@pytest.mark.slow
def test_timeout_kills_torchrun_and_every_worker(tmp_path, monkeypatch):
    fast_env(monkeypatch)
    job = _job(tmp_path, 1234, timeout_s=8.0, FAKE_HANG_SEEDS="1234")
    res = run_seed(job)
    assert res.status == "timed_out"
    assert 8.0 <= res.wall_s < 40.0
    assert _procs_in(Path(job.work_dir)) == []  # no orphaned worker keeps the node busy
    assert "seed:1234" in Path(res.log_path).read_text()


def test_fresh_copy_replaces_a_previous_attempt(tmp_path, monkeypatch):
    fast_env(monkeypatch)
    job = _job(tmp_path, 42)
    Path(job.work_dir).mkdir(parents=True)
    (Path(job.work_dir) / "final_model.int8.ptz").write_bytes(b"stale artifact of an earlier attempt")
    res = run_seed(job)
    assert {o["path"]: o["bytes"] for o in res.outputs}["final_model.int8.ptz"] == 1_000_000
