"""Plan: seeds, env from the README, exact commands, fingerprints."""

from __future__ import annotations

import pytest

from audit.errors import InputError
from tests.verify.test_verify_fixtures import SEEDS, make_record
from verify.plan import DEFAULT_SEEDS, choose_seeds, make_plan


def test_seeds_from_logs_then_defaults_then_counting():
    assert choose_seeds(None, None, [7, 8]) == ([7, 8, 42], "logs+default")
    assert choose_seeds(2, None, [7, 8, 9]) == ([7, 8], "logs")
    assert choose_seeds(3, None, []) == (list(DEFAULT_SEEDS), "default")
    assert choose_seeds(5, None, [42]) == ([42, 314, 1234, 1, 2], "logs+default")
    assert choose_seeds(9, [5, 6], [1]) == ([5, 6], "explicit")
    with pytest.raises(InputError):
        choose_seeds(None, [5, 5], [])


def test_plan_takes_env_from_readme_and_owns_seed_and_run_id(tmp_path):
    folder = make_record(tmp_path, env="NUM_LAYERS=11 SEED=999 RUN_ID=theirs")
    plan = make_plan(
        str(folder), str(tmp_path / "out"), nproc=2, data_path=str(tmp_path / "data"), env_overrides={"EXTRA": "1"}
    )
    assert plan.seeds == sorted(SEEDS) and plan.seeds_source == "logs"
    assert plan.env["NUM_LAYERS"] == "11" and plan.env["EXTRA"] == "1"
    assert plan.env["DATA_PATH"] == str((tmp_path / "data").resolve())
    assert "SEED" not in plan.env and "RUN_ID" not in plan.env
    job = plan.jobs[0]
    env = dict(job.env)
    assert env["SEED"] == str(job.seed) and env["RUN_ID"] == f"pgolf_verify_seed{job.seed}"
    assert job.argv[-3:] == ("--standalone", "--nproc_per_node=2", "train_gpt.py")
    assert "torch.distributed.run" in job.argv
    assert job.shell().startswith(f"cd {job.work_dir} && ")
    assert plan.claims.source.startswith(("written claims", "submission.json")) and len(plan.claims.per_seed) == 3
    assert list(plan.code_sha256) == ["train_gpt.py"]


def test_fingerprint_changes_with_code_and_env_not_with_timeout(tmp_path):
    folder = make_record(tmp_path)
    a = make_plan(str(folder), str(tmp_path / "o"), timeout_s=60)
    b = make_plan(str(folder), str(tmp_path / "o"), timeout_s=600)
    c = make_plan(str(folder), str(tmp_path / "o"), env_overrides={"X": "1"})
    assert a.jobs[0].fingerprint == b.jobs[0].fingerprint != c.jobs[0].fingerprint
    (folder / "train_gpt.py").write_text((folder / "train_gpt.py").read_text() + "\n# edited\n")
    assert make_plan(str(folder), str(tmp_path / "o")).jobs[0].fingerprint != a.jobs[0].fingerprint


def test_claims_fall_back_to_the_shipped_logs(tmp_path):
    folder = make_record(tmp_path, claimed={})
    plan = make_plan(str(folder), str(tmp_path / "o"))
    assert plan.claims.source == "shipped logs" and set(plan.claims.per_seed) == set(SEEDS)


def test_folder_without_python_is_a_usage_error(tmp_path):
    (tmp_path / "README.md").write_text("nothing to run")
    with pytest.raises(InputError):
        make_plan(str(tmp_path), str(tmp_path / "o"))
