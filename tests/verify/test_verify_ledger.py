"""Ledger: atomic state, resume, adoption of results written after the verifier died, plan mismatch."""

from __future__ import annotations

import json

import pytest

from audit.errors import InputError
from tests.verify.test_verify_fixtures import make_record
from verify.launch import RunResult, write_json_atomic
from verify.ledger import Ledger
from verify.plan import make_plan


@pytest.fixture
def plan(tmp_path):
    return make_plan(str(make_record(tmp_path)), str(tmp_path / "out"), nproc=2)


def _result(job, status="ok") -> RunResult:
    return RunResult(seed=job.seed, fingerprint=job.fingerprint, status=status, exit_code=0 if status == "ok" else 1)


def test_every_state_change_is_on_disk(plan):
    led = Ledger.open(plan)
    job = plan.jobs[0]
    led.mark_running(job)
    on_disk = json.loads(led.path.read_text())
    assert on_disk["seeds"][str(job.seed)]["state"] == "running"
    led.record(_result(job))
    on_disk = json.loads(led.path.read_text())
    assert on_disk["seeds"][str(job.seed)]["state"] == "done"
    assert on_disk["seeds"][str(job.seed)]["result"]["status"] == "ok"
    led.close()


def test_resume_skips_finished_and_keeps_failed_unless_asked(plan):
    led = Ledger.open(plan)
    a, b, c = plan.jobs
    led.record(_result(a))
    led.record(_result(b, "crashed"))
    led.close()
    led = Ledger.open(plan)
    assert [j.seed for j in led.pending(plan.jobs)] == [c.seed]
    assert [j.seed for j in led.pending(plan.jobs, retry_failed=True)] == [b.seed, c.seed]
    assert led.result(a.seed).status == "ok"
    led.close()


def test_a_result_written_after_the_verifier_died_is_adopted(plan):
    led = Ledger.open(plan)
    job = plan.jobs[1]
    led.mark_running(job)
    led.close()  # the verifier dies here; the run finishes and writes its result.json
    from pathlib import Path

    Path(job.seed_dir).mkdir(parents=True)
    write_json_atomic(Path(job.seed_dir) / "result.json", _result(job).to_dict())
    led = Ledger.open(plan)
    todo = led.pending(plan.jobs)
    assert job.seed not in [j.seed for j in todo]
    assert led.entry(job.seed)["state"] == "done"
    led.close()


def test_finished_seed_of_another_plan_is_never_overwritten(plan, tmp_path):
    led = Ledger.open(plan)
    led.record(_result(plan.jobs[0]))
    led.close()
    other = make_plan(plan.folder, plan.out, nproc=2, env_overrides={"CHANGED": "1"})
    with pytest.raises(InputError, match="different plan"):
        Ledger.open(other)
    assert (
        json.loads((tmp_path / "out" / "ledger.json").read_text())["seeds"][str(plan.jobs[0].seed)]["state"] == "done"
    )


def test_two_verifiers_cannot_share_an_out_folder(plan):
    led = Ledger.open(plan)
    with pytest.raises(InputError, match="another pgolf-verify"):
        Ledger.open(plan)
    led.close()


def test_stale_result_of_an_older_plan_is_ignored(plan):
    led = Ledger.open(plan)
    job = plan.jobs[0]
    led.record(RunResult(seed=job.seed, fingerprint="old", status="ok"))
    assert led.entry(job.seed)["state"] == "planned"
    led.close()
