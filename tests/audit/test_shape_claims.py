"""Claims that pick the record's run (issue 14 item 4), on small synthetic folders written here.

submission.json above README prose; a log configured for more than 600 s is an exploratory run unless it backs
the headline; every subset mean of the logged runs is tried before a claim is called unsupported; the caps are
read on the record's runs (adaptation timed apart from the scored stage, runs on fewer than 8 GPUs)."""

from __future__ import annotations

import json
import textwrap

from audit.checks.claims import check_claims as _check_claims
from audit.checks.claims import extract_claims
from audit.findings import Severity
from audit.load.folder import Folder
from audit.load.resolve import resolve
from tests.support import make_submission


def log(
    seed: int,
    bpb: str,
    *,
    train_ms: int = 599_500,
    wallclock: str = "600.000",
    world: int = 8,
    stop: bool = True,
    eval_ms: int = 70_000,
    before_score: str = "",
) -> str:
    """One run: config line, training, packing, a roundtrip eval, then the scored sliding-window line."""
    stop_line = f"stopping_early: wallclock_cap train_time:{train_ms}ms step:13000/20000" if stop else ""
    return (
        textwrap.dedent(
            f"""\
        train_batch_tokens:524288 train_seq_len:1024 iterations:20000 warmup_steps:20 max_wallclock_seconds:{wallclock}
        val_loader:shards pattern=./data/fineweb_val_*.bin tokens:62021632
        world_size:{world} grad_accum_steps:{8 // world}
        seed:{seed}
        step:13000/20000 train_loss:2.1000 train_time:{train_ms}ms step_avg:46.00ms
        {stop_line}
        """
        )
        + before_score
        + textwrap.dedent(
            f"""\
        Serialized model int8+zlib: 15850000 bytes (payload:1 raw_torch:1 payload_ratio:1.00x)
        Code size: 50000 bytes
        Total submission size int8+zlib: 15900000 bytes
        final_int8_roundtrip val_loss:2.0700 val_bpb:1.2000 eval_time:9000ms
        final_sliding_window val_loss:2.0600 val_bpb:{bpb[:6]} stride:64 eval_time:{eval_ms}ms
        final_sliding_window_exact val_loss:2.06000000 val_bpb:{bpb}
        """
        )
    )


def sub(logs: dict[str, str], sub_json: dict | None = None, readme: str = "", record: bool = True) -> Folder:
    files: dict[str, str | bytes] = {**logs, "train_gpt.py": b"print('hi')\n"}
    if sub_json is not None:
        files["submission.json"] = json.dumps(sub_json, indent=2)
    if readme:
        files["README.md"] = readme
    track = "track_10min_16mb" if record else "track_non_record_16mb"
    return make_submission(files, name=f"records/{track}/x")


def findings(folder: Folder, rule: str) -> list:
    return [f for f in _check_claims(folder, resolve(folder)).findings if f.rule.startswith(rule)]


# --- exploratory long runs ------------------------------------------------------------------------------------
def test_long_budget_run_that_no_claim_points_at_is_not_the_records_run():
    logs = {"train.log": log(1337, "1.15000000"), "explore_1200s.log": log(1337, "1.14000000", train_ms=1_199_800)}
    logs["explore_1200s.log"] = logs["explore_1200s.log"].replace(
        "max_wallclock_seconds:600.000", "max_wallclock_seconds:1200.000"
    )
    assert findings(sub(logs, {"val_bpb": 1.15}), "PG220") == []
    # no claim at all: the runs of the record's budget are the record's, the long one is still set aside
    assert findings(sub(logs), "PG220") == []


def test_wall_clock_cap_echoed_by_a_launcher_is_read():
    # a README seed row points at the long run, but its own echoed budget says it is not a 600 s run
    long = "MAX_WALLCLOCK_SECONDS=1200 torchrun --nproc_per_node=8 train_gpt.py\n" + log(7, "1.14000000").replace(
        "max_wallclock_seconds:600.000", "max_wallclock_seconds:"
    ).replace("train_time:599500ms", "train_time:1199800ms")
    logs = {"train_seed1337.log": log(1337, "1.15000000"), "train_seed7.log": long}
    readme = "# x\n\n| Seed | val_bpb |\n|---|---|\n| 1337 | 1.1500 |\n| 7 | 1.1400 |\n"
    assert findings(sub(logs, {"val_bpb": 1.15, "seeds": [1337]}, readme), "PG220") == []
    # the same log without the echo is a 600 s run that overran: the record's, and over the cap
    plain = long.split("\n", 1)[1]
    f = findings(sub({**logs, "train_seed7.log": plain}, {"val_bpb": 1.15, "seeds": [1337]}, readme), "PG220")
    assert [x.location.path for x in f] == ["train_seed7.log"]


def test_long_budget_run_that_prints_the_headline_is_the_records_run():
    logs = {"train.log": log(1337, "1.14000000", train_ms=1_199_800, wallclock="1200.000")}
    f = findings(sub(logs, {"val_bpb": 1.14}), "PG220")
    assert len(f) == 1 and f[0].severity is Severity.ERROR and f[0].category == "time_over_cap"


def test_long_budget_runs_whose_mean_is_the_headline_are_the_records_runs():
    logs = {
        f"train_seed{s}.log": log(s, v, train_ms=1_199_800, wallclock="1200.000")
        for s, v in ((1, "1.14000000"), (2, "1.14200000"))
    }
    logs["short.log"] = log(3, "1.16000000")
    f = findings(sub(logs, {"val_bpb": 1.141}), "PG220")
    assert {x.location.path for x in f} == {"train_seed1.log", "train_seed2.log"}


def test_run_by_steps_far_past_the_cap_is_exploratory_unless_claimed():
    long = log(1337, "1.13000000", train_ms=1_400_000, wallclock="0", stop=False)
    logs = {"train.log": log(1337, "1.15000000"), "steps_run.log": long}
    assert findings(sub(logs, {"val_bpb": 1.15}), "PG220") == []
    assert len(findings(sub(logs, {"val_bpb": 1.13}), "PG220")) == 1


def test_long_run_that_trained_the_model_an_evaluation_log_scores_is_the_records_run():
    # the only training in the folder is the long run; the headline comes from an evaluation-only log of its model
    long = log(1337, "1.16000000", train_ms=3_000_000, wallclock="0", stop=False)
    evaluation = textwrap.dedent(
        """\
        world_size:8 grad_accum_steps:1
        step:0/20000 val_loss:2.0500 val_bpb:1.1500 train_time:54ms step_avg:0.01ms
        final_sliding_window val_loss:2.0500 val_bpb:1.1500 stride:64 eval_time:90000ms
        final_sliding_window_exact val_loss:2.05000000 val_bpb:1.15000000
        """
    )
    f = findings(sub({"train.log": long, "eval.log": evaluation}, {"val_bpb": 1.15}), "PG220")
    assert [x.location.path for x in f] == ["train.log"]


def test_a_few_steps_over_without_a_printed_cap_is_not_exploratory():
    # legal neighbour of the long run: the cap's own overshoot of a 600 s run, budget not printed
    logs = {"train.log": log(1337, "1.15000000", train_ms=600_100, wallclock="0", stop=False)}
    assert findings(sub(logs, {"val_bpb": 1.2}), "PG220") == []


# --- submission.json above README prose -------------------------------------------------------------------
def test_readme_prose_number_does_not_pick_a_run_when_submission_json_has_the_score():
    long = log(7, "1.12000000", train_ms=1_199_800, wallclock="1200.000")
    logs = {"train.log": log(1337, "1.15000000"), "long.log": long}
    readme = "# x\n\nEarlier 20-minute run: val_bpb 1.1200.\n"
    assert findings(sub(logs, {"val_bpb": 1.15}, readme), "PG220") == []
    # with no submission.json score, the README's number is the headline and the run that prints it counts
    assert len(findings(sub(logs, None, readme), "PG220")) == 1


def test_submission_json_seeds_decide_which_readme_seed_rows_are_claimed():
    logs = {f"train_seed{s}.log": log(s, v) for s, v in ((1337, "1.15000000"), (42, "1.15300000"))}
    readme = "# x\n\n| Seed | val_bpb |\n|---|---|\n| 1337 | 1.1500 |\n| 42 | 1.1530 |\n| 7 | 1.1490 |\n"
    claims = extract_claims(sub(logs, {"val_bpb": 1.1515, "seeds": [1337, 42]}, readme))
    assert claims.seeds == [1337, 42] and set(claims.per_seed_bpb) == {1337, 42, 7}
    assert findings(sub(logs, {"val_bpb": 1.1515, "seeds": [1337, 42]}, readme), "PG205") == []
    # no seeds in submission.json: the README table's seeds are the claim, and seed 7 has no log
    assert len(findings(sub(logs, {"val_bpb": 1.1515}, readme), "PG205")) == 1


# --- subset means ---------------------------------------------------------------------------------------------
FIVE = {1: "1.15000000", 2: "1.15100000", 3: "1.15600000", 4: "1.17000000", 5: "1.19000000"}


def test_mean_of_three_of_five_logged_seeds_supports_the_claim():
    logs = {f"train_seed{s}.log": log(s, v) for s, v in FIVE.items()}
    folder = sub(logs, {"val_bpb": 1.1523})  # (1.150 + 1.151 + 1.156) / 3
    rep = _check_claims(folder, resolve(folder))
    assert [f for f in rep.findings if f.rule.startswith("PG201")] == []
    assert rep.summary.matched_tag.startswith("mean of 3 logged runs (seeds 1, 2, 3)")


def test_a_seed_run_shipped_again_without_its_seed_counts_once():
    logs = {f"train_seed{s}.log": log(s, v) for s, v in FIVE.items()}
    logs["train.log"] = logs["train_seed1.log"].replace("seed:1\n", "")
    folder = sub(logs, {"val_bpb": 1.1523})
    assert _check_claims(folder, resolve(folder)).summary.matched_tag.startswith(
        "mean of 3 logged runs (seeds 1, 2, 3)"
    )


def test_number_that_is_no_subset_mean_is_unsupported():
    logs = {f"train_seed{s}.log": log(s, v) for s, v in FIVE.items()}
    f = findings(sub(logs, {"val_bpb": 1.1401}), "PG201")
    assert len(f) == 1 and "any set of the logged runs" in f[0].message


# --- caps on the record's runs ----------------------------------------------------------------------------
ADAPT = "adapt_on_val:epoch 1/2 time=260.0s\nadapt_on_val:done total_time=520.0s\npost_adapt val_loss:2.0 val_bpb:1.1400 eval_time:9000ms\n"


def test_adaptation_timed_apart_from_the_scored_stage_counts_as_evaluation():
    logs = {"train.log": log(1337, "1.15000000", eval_ms=115_000, before_score=ADAPT)}
    f = findings(sub(logs, {"val_bpb": 1.15}), "PG221")
    assert len(f) == 1 and f[0].category == "time_over_cap" and f[0].severity is Severity.ERROR
    assert "adapt_on_val (520.0 s)" in f[0].message and "635.0 s" in f[0].message
    assert any(e.snippet.startswith("adapt_on_val:done") for e in f[0].evidence)


def test_short_adaptation_with_the_score_fits():
    logs = {"train.log": log(1337, "1.15000000", eval_ms=115_000, before_score=ADAPT.replace("520.0", "400.0"))}
    assert findings(sub(logs, {"val_bpb": 1.15}), "PG221") == []


def test_score_first_pass_timed_by_the_scored_line_is_not_counted_twice():
    # legal neighbour: the TTT pass prints its own score and the scored line's timer covers it
    text = log(1337, "1.15000000", eval_ms=560_000)
    text += "ttt_sliding:done val_loss=2.0 val_bpb=1.1400 elapsed=559.0s\n"
    text += "legal_ttt val_loss:2.0000 val_bpb:1.1400 eval_time:560000ms\nlegal_ttt_exact val_loss:2.00000000 val_bpb:1.14000000\n"
    assert findings(sub({"train.log": text}, {"val_bpb": 1.14}), "PG221") == []


def test_scored_pass_duration_printed_twice_is_not_counted_twice():
    # legal neighbour: the pass's closing line and its score are printed apart, with another eval between them
    text = log(1337, "1.15000000", eval_ms=70_000)
    text += "ttt:done chunks=474 elapsed=400.2s\nfinal_int8_zlib val_loss:2.1 val_bpb:1.2100 eval_time:5000ms\n"
    text += "legal_ttt val_loss:2.0000 val_bpb:1.1400 eval_time:400000ms\nlegal_ttt_exact val_loss:2.00000000 val_bpb:1.14000000\n"
    assert findings(sub({"train.log": text}, {"val_bpb": 1.14}), "PG221") == []


def test_stage_right_before_the_scored_line_may_be_inside_its_timer():
    stage = "ngram_build:done elapsed=520.0s\n"
    text = log(1337, "1.15000000", eval_ms=115_000)
    lines = text.splitlines(keepends=True)
    lines.insert(len(lines) - 2, stage)  # between the roundtrip eval and the scored stage
    assert findings(sub({"train.log": "".join(lines)}, {"val_bpb": 1.15}), "PG221") == []


def test_artifact_work_after_the_clock_is_not_evaluation():
    gptq = "gptq:done total_time=540.0s\n"
    logs = {"train.log": log(1337, "1.15000000", eval_ms=115_000, before_score=gptq)}
    assert findings(sub(logs, {"val_bpb": 1.15}), "PG221") == []


def test_longer_run_on_fewer_gpus_that_scales_into_the_cap_is_off_the_record_hardware():
    logs = {"train.log": log(1337, "1.15000000", train_ms=1_357_000, world=1, wallclock="0", stop=False)}
    folder = sub(logs, {"val_bpb": 1.15})
    assert findings(folder, "PG220") == []
    f = findings(folder, "PG224")
    assert len(f) == 1 and f[0].category == "other" and f[0].severity is Severity.ERROR
    assert "1 GPU(s)" in f[0].message


def test_run_on_fewer_gpus_over_even_when_scaled_is_over_the_cap():
    logs = {"train.log": log(1337, "1.15000000", train_ms=10_800_000, world=1, wallclock="43200.000")}
    f = findings(sub(logs, {"val_bpb": 1.15}), "PG220")
    assert len(f) == 1 and f[0].category == "time_over_cap" and "over even at 1350 s on 8 GPUs" in f[0].message
    assert findings(sub(logs, {"val_bpb": 1.15}), "PG224") == []


def test_non_record_track_long_runs_are_informational():
    logs = {"train.log": log(1337, "1.15000000", train_ms=1_357_000, world=1, wallclock="0", stop=False)}
    f = findings(sub(logs, {"val_bpb": 1.15}, record=False), "PG224")
    assert len(f) == 1 and f[0].severity is Severity.INFO and f[0].category is None
