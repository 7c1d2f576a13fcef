"""benchmarks/gpu_check.sh off the GPU: it parses, refuses a machine without a GPU in one line, and --dry-run
prints the commands it would run (the GPU run itself is taken on a GPU machine)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")


def check(*args: str, path: str | None = None, cwd: Path | None = None, env_extra: dict | None = None):
    env = {**os.environ, **(env_extra or {})}
    env.pop("BASELINE_TRAIN_GPT", None)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [BASH, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd or ROOT
    )


def test_script_parses():
    r = subprocess.run([BASH, "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_no_gpu_is_refused_in_one_line(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()  # a PATH with no nvidia-smi on it (the script needs nothing from PATH before this check)
    r = check("--baseline", str(tmp_path / "train_gpt.py"), path=str(empty))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "gpu_check: error: no GPU here: nvidia-smi not found (this check needs one NVIDIA GPU; --dry-run prints "
        "its commands)"
    ]
    assert r.stdout == ""


def test_nvidia_smi_without_a_gpu_is_refused(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver'\nexit 9\n")
    smi.chmod(0o755)
    r = check("--baseline", "x.py", path=f"{fake}:{os.environ['PATH']}")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "gpu_check: error: nvidia-smi lists no GPU: NVIDIA-SMI has failed because it could not communicate with "
        "the driver"
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--bogus"], "unknown argument '--bogus'"),
        (["--data-path", "d"], "go together"),
        (["--dry-run"], "give the baseline train_gpt.py"),
    ],
)
def test_bad_arguments(args, message):
    r = check(*args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_dry_run_prints_every_command(tmp_path):
    baseline = tmp_path / "baseline_train_gpt.py"
    r = check("--dry-run", "--baseline", str(baseline), "--out", str(tmp_path / "o"), path="/usr/bin:/bin")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    steps = [ln.split("]")[0].lstrip("[") for ln in lines]
    assert steps == ["data", "compare_sdpa", "compare_fa3", "pack", "eval", "package", "verify", "table"]
    by = dict(zip(steps, lines))
    assert "synth-data" in by["data"]
    for step in ("compare_sdpa", "compare_fa3"):  # both trainers at the same config and seed, 200 steps
        assert f"--baseline {baseline}" in by[step] and "--steps 200" in by[step] and "--seed 1337" in by[step]
    assert "benchmarks/trainer_vs_baseline.py" in by["compare_sdpa"] and "ATTN_BACKEND=sdpa" in by["compare_sdpa"]
    assert "ATTN_BACKEND=fa3" in by["compare_fa3"]
    assert "EVAL_STRIDE=64" in by["eval"] and "TTT_ENABLED=1" in by["eval"] and "--nproc_per_node=1" in by["eval"]
    assert "reference_trainer.cli pack" in by["pack"] and "--pack" in by["package"]
    assert "verify.cli" in by["verify"] and "--nproc 1" in by["verify"]
    assert not (tmp_path / "o").exists()  # a dry run writes nothing
