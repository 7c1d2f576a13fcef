"""The slurm backend's submit/collect path through submitit's LocalExecutor (no mock: real submitit jobs,
each running launch.run_seed, which runs torchrun)."""

from __future__ import annotations

import json

import pytest

from tests.verify.test_verify_fixtures import SEEDS, fast_env, make_record

pytest.importorskip("submitit")

from verify import cli as verify_cli  # noqa: E402
from verify.backends.slurm import SlurmBackend  # noqa: E402
from verify.ledger import Ledger  # noqa: E402
from verify.plan import make_plan  # noqa: E402


@pytest.mark.slow
def test_three_seeds_through_submitit_local_executor(tmp_path, capsys, monkeypatch):
    fast_env(monkeypatch)
    folder = make_record(tmp_path, env="FAKE_CRASH_SEEDS=314")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        verify_cli.main(
            [
                str(folder),
                "--backend",
                "slurm",
                "--slurm-cluster",
                "local",
                "--nproc",
                "2",
                "--out",
                str(out),
                "--poll",
                "0.5",
                "--format",
                "json",
                "-q",
                "--no-audit",
            ]
        )
    rep = json.loads(capsys.readouterr().out)
    assert exc.value.code == 1 and rep["verdict"] == "inconclusive"  # the crash is reported, not raised
    status = {s["seed"]: s["run"]["status"] for s in rep["seeds"]}
    assert status == {42: "ok", 314: "crashed", 1234: "ok"}
    ledger = json.loads((out / "ledger.json").read_text())
    assert all(e.get("job_id") for e in ledger["seeds"].values())  # submitit job ids recorded for re-attach
    assert (out / "submitit").is_dir()
    assert "slurm via submitit (cluster=local" in rep["backend"]
    assert sorted(SEEDS) == sorted(status)


def test_job_failing_outside_run_seed_is_a_launch_error(tmp_path):
    """A job that dies in submitit (here: a Slurm-side limit) still ends as a recorded result."""
    folder = make_record(tmp_path)
    plan = make_plan(str(folder), str(tmp_path / "out"), seeds=[42], nproc=2)
    led = Ledger.open(plan)

    class DeadJob:
        job_id = "123"

        def done(self):
            return True

        def result(self):
            raise RuntimeError(
                "Job 123 (task: 0) failed\nslurmstepd: error: *** JOB 123 CANCELLED DUE TO TIME LIMIT ***"
            )

    res = SlurmBackend._collect(plan.jobs[0], DeadJob())
    led.record(res)
    assert res.status == "launch_error" and "TIME LIMIT" in res.error
    assert led.entry(42)["state"] == "done"
    led.close()
