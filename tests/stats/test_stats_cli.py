"""pgolf-stats: formats, exit codes, claim checks, case files, seeds from a record folder."""

from __future__ import annotations

import json

import pytest

from verify.checks import log_facts
from verify.stats.cli import main, scores_from_folder

NEW = ["1.05679341", "1.05662016", "1.05610947"]
OLD = ["1.05807084", "1.05730104", "1.05740567"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_json_report_welch(capsys):
    code, out, err = run(
        capsys, "--new", *NEW, "--baseline-seeds", *OLD, "--tokenizer", "sp8192-caseops", "--format", "json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema_version"] == 1
    prog = doc["verdicts"]["progression"]
    assert prog["passed"] is True and prog["test"]["label"] == "Welch two-sample"
    assert round(prog["test"]["p"], 4) == 0.0138 and round(prog["test"]["df"], 2) == 3.90
    assert doc["verdicts"]["written"]["passed"] is False
    assert doc["tests"][0]["margin_text"] == "0.005 nats (=0.00228 bpb)"


def test_written_rule_decides_exit_code_when_asked(capsys):
    code, _, _ = run(
        capsys,
        "--new",
        *NEW,
        "--baseline-seeds",
        *OLD,
        "--tokenizer",
        "sp8192-caseops",
        "--rule",
        "written",
        "--format",
        "json",
    )
    assert code == 1
    code, _, _ = run(
        capsys,
        "--new",
        *NEW,
        "--baseline-seeds",
        *OLD,
        "--tokenizer",
        "sp8192-caseops",
        "--rule",
        "written",
        "--format",
        "json",
        "--exit-zero",
    )
    assert code == 0


def test_text_table_and_false_claim(capsys):
    code, out, err = run(
        capsys,
        "--new",
        "1.14534973",
        "1.14976191",
        "1.14896214",
        "--sota",
        "1.1748",
        "--ratio",
        "1.688458",
        "--check-claim",
        "t=16.04 df=2 p<0.001",
    )
    assert code == 1  # the claim does not agree
    assert "T" in out and "p-val" in out and "cohen-d" in out
    assert "DOES NOT AGREE" in out and "p<0.001 is false" in out
    assert "margin=0.005 bpb" in out.replace("\n", " ")


def test_markdown_summary_baseline_and_output_file(capsys, tmp_path):
    target = tmp_path / "stats.md"
    code, out, err = run(
        capsys,
        "--new",
        "1.05886205,1.05903968,1.05764263",
        "--baseline-summary",
        "1.060755,0.000933,6",
        "--format",
        "markdown",
        "--output",
        str(target),
        "--check-claim",
        "Welch t=3.850 df=5.00 one-sided p~0.0060",
    )
    assert code == 0, err
    md = target.read_text()
    assert out == ""
    assert "Welch two-sample from summary stats" in md and "3.854" in md and "agrees" in md
    # without r the written rule cannot be decided; the progression rule still is
    assert "UNDECIDED" in md and "**PASS** — progression rule" in md


def test_nats_values_need_no_ratio_for_the_written_rule(capsys):
    code, out, _ = run(
        capsys,
        "--new",
        "1.87802",
        "1.87821",
        "1.8791",
        "--baseline-seeds",
        "1.88976776",
        "1.8891919",
        "1.89110239",
        "--unit",
        "nats",
        "--rule",
        "both",
        "--format",
        "json",
    )
    doc = json.loads(out)
    assert doc["verdicts"]["written"]["passed"] is True and code == 0
    assert doc["tests"][0]["margin"] == 0.005


@pytest.mark.parametrize(
    "args,message",
    [
        (["--new", "1.1", "--sota", "1.2"], "fewer than 2"),
        (["--new", "1.1", "x", "--sota", "1.2"], "not a list of numbers"),
        (["--new", "1.1", "1.2"], "nothing to compare with"),
        (["--new", "1.1", "1.2", "--baseline-summary", "1,2"], "mean,sd,n"),
        (["--new", "1.1", "1.2", "--sota", "1.3", "--tokenizer", "sp9999"], "unknown tokenizer"),
        (
            [
                "--new",
                "1.1",
                "1.2",
                "--sota",
                "1.3",
                "--unit",
                "nats",
                "--tokenizer",
                "sp8192",
                "--baseline-tokenizer",
                "sp1024",
            ],
            "across tokenizers",
        ),
        (["--new", "1.1", "1.2", "--sota", "1.3", "--check-claim", "great result"], "no t, df, p"),
        (["--new", "1.1", "1.2", "--sota", "1.3", "--format", "yaml"], "yaml"),
        (["/no/such/folder"], "no such file"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cases_file(capsys, tmp_path):
    header = "case\tnew_seed_values\tunit\tbaseline\tmargin\tclaimed_stat\treproduced_by\tour_value\tagrees\n"
    good = "A\t" + ";".join(NEW) + "\tbpb\tseeds:" + ";".join(OLD) + "\t0\tp=0.014\t\t\tyes\n"
    wrong = "B\t1.14534973;1.14976191;1.14896214\tbpb\t1.1748\t0.005 bpb\tt=16.04 df=2 p<0.001\t\t\tyes\n"
    f = tmp_path / "cases.tsv"
    f.write_text(header + good)
    code, out, _ = run(capsys, "--cases", str(f), "--format", "json")
    rows = json.loads(out)["cases"]
    assert code == 0 and rows[0]["agrees"] == "yes" and rows[0]["our_value"] == "t=3.426 df=3.90 p=0.0138"
    f.write_text(header + good + wrong)  # B's expected "yes" is wrong: p is 0.00193
    code, out, _ = run(capsys, "--cases", str(f), "--format", "markdown")
    assert code == 1 and "| B | no | no |" in out
    f.write_text("a\tb\n1\t2\n")
    code, _, err = run(capsys, "--cases", str(f))
    assert code == 2 and "columns" in err


# --- seeds from a record folder --------------------------------------------------------------------
def _log(seed: int, val_loss: float, val_bpb: float) -> str:
    # Baseline-format lines, synthetic numbers.
    return (
        f"seed:{seed}\n"
        "step:1/20000 train_loss:6.9370 train_time:43ms step_avg:43.12ms\n"
        f"final_int8_zlib_roundtrip val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:1401ms\n"
        f"final_int8_zlib_roundtrip_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}\n"
    )


R = 1.688458


def _folder(tmp_path, name, scores, seeds=(42, 1337, 2024), ratio=R):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "train_gpt.py").write_text("print('synthetic')\n")
    for seed, bpb in zip(seeds, scores):
        (folder / f"train_seed{seed}.log").write_text(_log(seed, bpb * ratio, bpb))
    return folder


def test_scores_from_folder(tmp_path):
    folder = _folder(tmp_path, "rec", [1.14597222, 1.14656085, 1.1449177])
    got = scores_from_folder(str(folder))
    assert sorted(got.values) == sorted([1.14597222, 1.14656085, 1.1449177])
    assert set(got.seeds) == {42, 1337, 2024}
    assert got.ratio == pytest.approx(R, abs=1e-7) and not got.warnings
    assert set(got.decimals) == {8}


def test_folder_warnings_for_seed_reuse_and_ratio_drift(tmp_path):
    folder = _folder(tmp_path, "rec", [1.1460, 1.1466], seeds=(42, 7))
    (folder / "train_seed7b.log").write_text(_log(7, 1.1449 * 1.7944, 1.1449))
    got = scores_from_folder(str(folder))
    assert any("seed 7 appears" in w for w in got.warnings)
    assert any("r = val_loss/val_bpb differs" in w for w in got.warnings)


def test_cli_reads_folder_and_baseline_folder(capsys, tmp_path):
    new = _folder(tmp_path, "new", [1.14597222, 1.14656085, 1.1449177])
    old = _folder(tmp_path, "old", [1.17558517, 1.17423973, 1.17443456])
    code, out, err = run(capsys, str(new), "--baseline-folder", str(old), "--rule", "both", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ratio"] == pytest.approx(R, abs=1e-7)  # r taken from the logs
    written = doc["verdicts"]["written"]["test"]
    assert f"{written['t']:.4g}" == "40.7" and round(written["df"], 2) == 3.93


def test_folder_without_scored_lines(capsys, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "train.log").write_text("step:1/20000 train_loss:6.9 train_time:43ms step_avg:43ms\n")
    code, _, err = run(capsys, str(folder), "--sota", "1.2")
    assert code == 2 and "no log with a scored val_bpb" in err


def test_folder_scores_are_the_last_runs_the_verifier_reads_too(tmp_path):
    folder = _folder(tmp_path, "rec", [1.1460, 1.1466], seeds=(42, 7))
    restarted = _log(42, 1.30 * R, 1.30) + _log(42, 1.14597222 * R, 1.14597222)  # an earlier run, then the record
    (folder / "train_seed42.log").write_text(restarted)
    got = scores_from_folder(str(folder))
    assert sorted(got.values) == [1.14597222, 1.1466] and not got.warnings
    # one log parser (audit.logs) for pgolf-stats and pgolf-verify: both take the same score from a log
    for name, value in zip(got.files, got.values):
        assert log_facts((folder / name).read_text()).val_bpb == value


def test_new_summary_is_the_exact_test_on_the_stated_moments(capsys):
    """A record stated as mean, sd, n gives the same t, df and p as its seeds (all tests read the moments)."""
    common = ["--baseline-seeds", *OLD, "--tokenizer", "sp8192-caseops", "--format", "json"]
    _, seeds_out, _ = run(capsys, "--new", *NEW, *common)
    vals = [float(v) for v in NEW]
    mean = sum(vals) / 3
    sd = (sum((v - mean) ** 2 for v in vals) / 2) ** 0.5
    code, summary_out, err = run(capsys, "--new-summary", f"{mean!r},{sd!r},3", *common)
    assert code == 0, err
    a, b = json.loads(seeds_out), json.loads(summary_out)
    for role in ("written", "progression"):
        ta, tb = a["verdicts"][role]["test"], b["verdicts"][role]["test"]
        assert (tb["t"], tb["df"], tb["p"]) == pytest.approx((ta["t"], ta["df"], ta["p"]), rel=1e-9)
    assert not b["warnings"] and b["inputs"] == [
        f"new record as summary statistics: mean {mean!r}, sd {sd!r}, n 3 (the tests read only these)"
    ]


@pytest.mark.parametrize("bad", ["1.05,0.001", "1.05,0.001,1", "a,b,c"])
def test_new_summary_refuses_what_is_not_mean_sd_n(capsys, bad):
    code, _, err = run(capsys, "--new-summary", bad, "--sota", "1.2")
    assert code == 2 and err.startswith("pgolf-stats: error: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    "claim",
    ['"t_stat": 3.43, "p_value": 0.0138', "t-stat 3.43 p_value 0.0138", "t=3.43, p=1.38e-2", "p-value: 0.0138"],
)
def test_claims_written_the_way_records_state_them(capsys, claim):
    code, out, err = run(
        capsys, "--new", *NEW, "--baseline-seeds", *OLD, "--tokenizer", "sp8192-caseops", "--check-claim", claim
    )
    assert code == 0, out + err
    assert "AGREES" in out and "DOES NOT AGREE" not in out


def test_per_seed_lines_read_from_a_folder_are_inputs_not_warnings(capsys, tmp_path):
    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / "train_gpt.py").write_text("print('hi')\n")
    for seed, bpb in zip((1, 2, 3), NEW):
        (folder / f"train_seed{seed}.log").write_text(
            f"seed:{seed}\nfinal_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:{bpb}\n"
        )
    code, out, err = run(capsys, str(folder), "--sota", "1.2", "--format", "json")
    doc = json.loads(out)
    assert len(doc["inputs"]) == 3 and all("val_bpb" in line for line in doc["inputs"])
    assert not any("val_bpb 1.0" in w for w in doc["warnings"])
