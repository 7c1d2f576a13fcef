"""benchmarks/trainer_vs_baseline.py: argument handling, log parsing, and the CPU dry mode end to end."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.support import ROOT

spec = importlib.util.spec_from_file_location("trainer_vs_baseline", ROOT / "benchmarks" / "trainer_vs_baseline.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--steps", "0", "--cpu"], "--steps"),
        (["--nproc", "3", "--cpu"], "--nproc must divide 8"),
        (["--cpu", "--data-path", "x"], "go together"),
        (["--cpu", "--env", "lower=1"], "KEY=VALUE"),
        ([], "--baseline PATH or --mirror"),
        (["--baseline", "/nonexistent/train_gpt.py"], "no such file"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_parse_result_reads_the_baseline_line_shapes():
    text = "\n".join(
        [
            "step:0/20 val_loss:6.9 val_bpb:4.1 train_time:0ms step_avg:0.01ms",
            "step:10/20 train_loss:5.0000 train_time:400ms step_avg:40.00ms",
            "step:20/20 train_loss:4.0000 train_time:1000ms step_avg:50.00ms",
            "step:20/20 val_loss:3.9000 val_bpb:2.3456 train_time:1000ms step_avg:50.00ms",
            "final_int8_zlib_roundtrip_exact val_loss:3.91000000 val_bpb:2.35000000",
        ]
    )
    r = bench.parse_result(text, batch_tokens=1000, steps=20)
    assert r == {
        "steps": 20,
        "ms_per_step": 50.0,
        "tokens_per_s": 20000.0,
        "val_bpb_at_steps": 2.3456,
        "roundtrip_val_bpb": 2.35,
    }
    with pytest.raises(ValueError):
        bench.parse_result("nothing here", 1000, 20)


def test_dry_run_prints_identical_configs_for_both_trainers(tmp_path, capsys):
    baseline = tmp_path / "train_gpt.py"
    baseline.write_text("# stand-in for the challenge's script\n")
    assert (
        bench.main(
            [
                "--dry-run",
                "--baseline",
                str(baseline),
                "--steps",
                "7",
                "--out",
                str(tmp_path / "o"),
                "--env",
                "TRAIN_BATCH_TOKENS=65536",
                "--nproc",
                "8",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and str(baseline) in lines[0] and "reference_trainer/train_gpt.py" in lines[1]
    envs = [ln.split(" /")[0].replace("bench_baseline", "X").replace("bench_ours", "X") for ln in lines]
    assert envs[0] == envs[1] and "ITERATIONS=7" in envs[0] and "TRAIN_BATCH_TOKENS=65536" in envs[0]
    assert "--nproc_per_node=8" in lines[0]


@pytest.mark.slow
def test_cpu_dry_mode_runs_our_trainer_end_to_end(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    assert bench.main(["--cpu", "--steps", "4", "--out", str(tmp_path / "o"), "--json", str(out_json)]) == 0
    rows = json.loads(out_json.read_text())["rows"]
    assert rows[0]["name"] == "baseline" and "requires CUDA" in rows[0]["skipped"]
    ours = rows[1]
    assert ours["name"] == "ours" and ours["steps"] == 4 and ours["ms_per_step"] > 0 and ours["tokens_per_s"] > 0
    assert 0 < ours["roundtrip_val_bpb"] < 10 and ours["val_bpb_at_steps"] is not None
    assert "| ours | 4 |" in capsys.readouterr().out
