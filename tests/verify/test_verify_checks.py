"""Per-seed and package checks over synthetic evidence (no processes)."""

from __future__ import annotations

import pytest

from tests.verify.test_verify_fixtures import fake_log
from verify.checks import (
    SeedEvidence,
    Status,
    crash_reason,
    default_tolerance,
    hardware_class,
    log_facts,
    package_checks,
    seed_checks,
    worst,
)


def _ev(seed=42, *, run=None, claimed=1.2002, code=2_000, **log_kw) -> SeedEvidence:
    return SeedEvidence(
        seed=seed, facts=log_facts(fake_log(seed, **log_kw)), run=run, claimed_bpb=claimed, code_bytes_on_disk=code
    )


def _run(status="ok", wall=700.0, outputs=None, gpus=None, **kw) -> dict:
    return {
        "status": status,
        "exit_code": 0 if status == "ok" else 1,
        "wall_s": wall,
        "timeout_s": 2400.0,
        "outputs": outputs
        if outputs is not None
        else [{"path": "final_model.int8.ptz", "bytes": 1_000_000, "sha256": "x"}],
        "env_info": {"gpus": gpus or ["NVIDIA H100 80GB HBM3"] * 8},
        **kw,
    }


def by_name(checks):
    return {c.name: c for c in checks}


def test_clean_seed_passes_everything():
    checks = by_name(seed_checks(_ev(run=_run()), 0.001))
    assert {n: c.status for n, c in checks.items()} == {n: Status.PASS for n in checks}
    assert checks["size"].measured == 1_002_000


@pytest.mark.parametrize(
    ("train_ms", "expected"),
    [(599_999, Status.PASS), (600_000, Status.PASS), (600_038, Status.WARN), (612_345, Status.FAIL)],
)
def test_train_time_cap_allows_one_step_of_overshoot(train_ms, expected):
    # 13,780 steps in ~600 s: one step is ~44 ms, so 600,038 ms is inside one step of overshoot
    ev = _ev(run=_run(), train_ms=train_ms)
    assert by_name(seed_checks(ev, 0.001))["train_time"].status == expected


def test_timer_beyond_outside_wall_clock_fails():
    checks = by_name(seed_checks(_ev(run=_run(wall=30.0)), 0.001))
    assert checks["train_time_vs_wall_clock"].status == Status.FAIL


def test_artifact_is_the_file_whose_size_the_log_reports():
    outputs = [
        {"path": "final_model.pt", "bytes": 67_000_000, "sha256": "a"},
        {"path": "final_model.int8.ptz", "bytes": 1_000_000, "sha256": "b"},
    ]
    checks = by_name(seed_checks(_ev(run=_run(outputs=outputs)), 0.001))
    assert checks["size"].status == Status.PASS and "final_model.int8.ptz" in checks["size"].message


def test_oversize_artifact_on_disk_fails_even_if_the_log_says_otherwise():
    outputs = [{"path": "model.ptz", "bytes": 15_999_500, "sha256": "a"}]
    checks = by_name(seed_checks(_ev(run=_run(outputs=outputs), model_bytes=15_999_500 - 1), 0.001))
    assert checks["size"].status == Status.FAIL
    assert checks["size"].measured == 15_999_500 + 2_000


def test_score_outside_tolerance_fails_inside_passes():
    assert by_name(seed_checks(_ev(run=_run(), claimed=1.2002 + 0.0004), 0.0005))["score"].status == Status.PASS
    assert by_name(seed_checks(_ev(run=_run(), claimed=1.2002 + 0.0006), 0.0005))["score"].status == Status.FAIL


def test_wrong_seed_in_log_fails():
    ev = SeedEvidence(seed=7, facts=log_facts(fake_log(42)), run=_run(), claimed_bpb=1.2002)
    assert by_name(seed_checks(ev, 0.001))["seed"].status == Status.FAIL


def test_crashed_run_is_inconclusive_and_unreached_checks_are_skipped():
    ev = SeedEvidence(
        seed=42, facts=log_facts("seed:42\n"), run=_run(status="crashed", outputs=[], log_tail="RuntimeError: boom")
    )
    checks = by_name(seed_checks(ev, 0.001))
    assert checks["run"].status == Status.INCONCLUSIVE and "RuntimeError: boom" in checks["run"].message
    assert checks["seed"].status == Status.PASS
    assert checks["score"].status == Status.SKIP
    assert worst([c.status for c in checks.values()]) == "inconclusive"


def test_timed_out_run_still_fails_a_logged_train_time_over_the_cap():
    ev = SeedEvidence(
        seed=42, facts=log_facts(fake_log(42, train_ms=700_000)), run=_run(status="timed_out", wall=2400.0)
    )
    checks = by_name(seed_checks(ev, 0.001))
    assert checks["run"].status == Status.INCONCLUSIVE
    assert checks["train_time"].status == Status.FAIL
    assert worst([c.status for c in checks.values()]) == "failed"


def test_hardware_classes():
    assert hardware_class(["NVIDIA H100 80GB HBM3"] * 8) == "8x H100 SXM"
    assert hardware_class(["NVIDIA H100 PCIe"] * 8) == "8x H100 PCIe"
    assert hardware_class([]) == "unknown"
    ev = _ev(run=_run(gpus=["NVIDIA H100 PCIe"] * 8))
    assert by_name(seed_checks(ev, 0.001))["hardware"].status == Status.WARN


def test_tolerance_follows_the_observed_spread_within_bounds():
    tol, why = default_tolerance([1.100, 1.102, 1.104])
    assert tol == pytest.approx(0.004) and "std" in why
    assert default_tolerance([1.1000, 1.1000001])[0] == 0.0005  # floor: run-to-run noise of one seed
    assert default_tolerance([1.0, 1.2, 1.4])[0] == 0.01  # cap
    assert default_tolerance([1.1])[0] == 0.002  # fallback


def test_package_checks_catch_reused_seeds_and_too_few_runs():
    evs = [_ev(42), _ev(42)]
    checks = by_name(package_checks(evs, min_seeds=3, claimed_mean=1.2002, tolerance=0.001))
    assert checks["seeds_unique"].status == Status.FAIL
    assert checks["seed_count"].status == Status.INCONCLUSIVE
    assert checks["mean_score"].status == Status.PASS


def test_crash_reason_skips_torchrun_banner():
    tail = (
        "Traceback (most recent call last):\nValueError: bad shape\n"
        + "=" * 40
        + "\ntorch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
        + "=" * 40
    )
    assert crash_reason(tail) == "ValueError: bad shape"


def test_log_facts_reads_the_baseline_lines_through_the_log_parser():
    f = log_facts(fake_log(1234, train_ms=600_038, model_bytes=15_000_000))
    assert (f.seed, f.train_time_ms, f.stop_reason, f.world_size, f.runs) == (1234, 600_038.0, "wallclock_cap", 8, 1)
    assert f.step_avg_ms == pytest.approx(600_038 / 13780)  # the last train step's time per step
    assert (f.val_bpb, f.val_loss) == (1.2004, 2.02699544)  # the `_exact` line, not the 4-decimal one
    assert (f.eval_time_ms, f.eval_times_ms) == (12_345.0, [12_345.0])
    assert (f.total_bytes, f.model_bytes, f.code_bytes) == (15_002_000, 15_000_000, 2_000)


def test_log_facts_takes_the_last_run_of_a_log():
    f = log_facts(fake_log(1234) + fake_log(42, bpb=1.3))
    assert (f.runs, f.seed, f.val_bpb) == (2, 42, 1.3)
