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


# --- a real Slurm code path with fake sbatch / srun / sacct / sinfo on PATH ---------------------------------------
FAKE_SBATCH = """#!/bin/sh
# pgolf test stand-in for sbatch: keep the script, answer like Slurm
cp "$1" "$FAKE_SLURM_DIR/submitted.sh"
echo "Submitted batch job 4242"
"""
FAKE_SACCT = """#!/bin/sh
# every task of job 4242 failed on the cluster (the verifier must record it, not hang)
echo "JobID|State|NodeList"
echo "4242|FAILED|gpu-node-1"
for i in 0 1 2 3 4 5; do echo "4242_$i|FAILED|gpu-node-1"; done
"""
FAKE_SINFO_OK = "#!/bin/sh\necho gpu\n"
FAKE_SINFO_DOWN = (
    "#!/bin/sh\necho 'slurm_load_partitions: Unable to contact slurm controller (connect failure)' >&2\nexit 1\n"
)


def fake_slurm(tmp_path, monkeypatch, *, sinfo: str | None = FAKE_SINFO_OK, tools=("sbatch", "srun", "sacct")):
    import os

    import submitit.core.core
    import submitit.slurm.slurm

    # the fake jobs never write a result: do not wait for one; and a fresh job-state watcher per test (submitit
    # keeps one per process, which would poll a reused job id only every 600 s)
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 0)
    monkeypatch.setattr(submitit.slurm.slurm.SlurmJob, "watcher", submitit.slurm.slurm.SlurmInfoWatcher(delay_s=600))

    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    scripts = {"sbatch": FAKE_SBATCH, "srun": "#!/bin/sh\nexit 0\n", "sacct": FAKE_SACCT}
    for name in tools:
        (bin_dir / name).write_text(scripts[name])
    if sinfo is not None:
        (bin_dir / "sinfo").write_text(sinfo)
    for p in bin_dir.iterdir():
        p.chmod(0o755)
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def _main(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        verify_cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_sbatch_script_asks_for_a_whole_8_gpu_node(tmp_path, capsys, monkeypatch):
    fake_slurm(tmp_path, monkeypatch)
    folder = make_record(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = _main(
        capsys, folder, "--backend", "slurm", "--out", out, "--poll", "0.1", "--format", "json", "-q", "--no-audit"
    )
    rep = json.loads(stdout)
    assert code == 1 and rep["verdict"] == "inconclusive", err  # every job failed on the (fake) cluster: recorded
    assert {s["run"]["status"] for s in rep["seeds"]} == {"launch_error"}
    script = (tmp_path / "submitted.sh").read_text()
    for line in (
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --cpus-per-task=64",
        "#SBATCH --mem=0",
        "#SBATCH --time=50",
        "#SBATCH --exclusive",
        "#SBATCH --array=0-2%3",
    ):
        assert line in script.splitlines(), (line, script)
    assert "\nsrun " in script and "submitit.core._submit" in script
    assert str(out.resolve() / "submitit") in script  # job logs on the shared --out
    ledger = json.loads((out / "ledger.json").read_text())
    assert {e.get("job_id") for e in ledger["seeds"].values()} == {"4242_0", "4242_1", "4242_2"}
    assert "64 CPUs, all node memory" in rep["backend"]


def test_slurm_resources_from_the_options(tmp_path, capsys, monkeypatch):
    fake_slurm(tmp_path, monkeypatch)
    folder = make_record(tmp_path)
    args = [folder, "--backend", "slurm", "--out", tmp_path / "out", "--poll", "0.1", "-q", "--no-audit"]
    args += ["--seeds", "42,", "--nproc", "4", "--cpus-per-task", "32", "--mem", "512G", "--time", "1:30:00"]
    args += ["--partition", "h100", "--slurm-param", "account=golf"]
    code, _out, err = _main(capsys, *args)
    assert code == 1, err
    script = (tmp_path / "submitted.sh").read_text().splitlines()
    for line in (
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=32",
        "#SBATCH --mem=512G",
        "#SBATCH --time=90",
        "#SBATCH --partition=h100",
        "#SBATCH --account=golf",
    ):
        assert line in script, (line, script)


def test_dry_run_prints_the_sbatch_resources(tmp_path, capsys):
    folder = make_record(tmp_path)
    code, _out, err = _main(capsys, folder, "--backend", "slurm", "--dry-run", "--no-audit", "--mem", "900G")
    assert code == 0
    assert "sbatch (per seed): --nodes=1 --ntasks-per-node=1 --gpus-per-node=8 --cpus-per-task=64 --mem=900G" in err


@pytest.mark.parametrize(
    "setup, words",
    [
        ({"tools": ()}, "sbatch, srun, sacct not found on PATH"),
        ({"tools": ("sbatch", "sacct")}, "srun not found on PATH"),
        ({"sinfo": FAKE_SINFO_DOWN}, "Unable to contact slurm controller"),
    ],
)
def test_no_reachable_slurm_is_an_error_never_a_local_run(tmp_path, capsys, monkeypatch, setup, words):
    import os

    bin_dir = fake_slurm(tmp_path, monkeypatch, **setup)
    if not setup.get("tools", True):  # no Slurm at all: nothing of it on PATH, not even the system's
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.path.dirname(os.__file__)}")
    folder = make_record(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = _main(capsys, folder, "--backend", "slurm", "--out", out, "--no-audit")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("pgolf-verify: error: --backend slurm: no Slurm here") and words in lines[0]
    assert not (out / "seeds").exists() and not (tmp_path / "submitted.sh").exists()  # nothing ran anywhere


def test_a_time_limit_shorter_than_the_seed_timeout_is_a_usage_error(tmp_path, capsys):
    code, _out, err = _main(capsys, make_record(tmp_path), "--backend", "slurm", "--time", "30", "--dry-run")
    assert code == 2 and "--time" in err and "shorter than --timeout-min" in err and len(err.strip().splitlines()) == 1
